"""``teegate sim`` commands through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from teegate.commands.sim import sim
from teegate.dcap.collateral import Collateral
from teegate.sim import SimPlatform


def test_init_quote_collateral_tdreport(tmp_path: Path) -> None:
    runner = CliRunner()
    d = tmp_path / "plat"
    result = runner.invoke(sim, ["init", str(d), "--fmspc", "00a06f000000", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["fmspc"] == "00A06F000000" and info["simulated"] is True
    platform = SimPlatform.load(d)

    rd = "ab" * 64
    result = runner.invoke(
        sim, ["quote", "--platform", str(d), "--tee", "tdx", "--version", "5", "--report-data", rd]
    )
    assert result.exit_code == 0, result.output
    quote = bytes.fromhex(result.stdout.strip())
    assert quote[:2] == b"\x05\x00" and quote[574:638] == bytes.fromhex(rd)

    out, col = tmp_path / "q.bin", tmp_path / "c.json"
    result = runner.invoke(
        sim,
        [
            "quote",
            "--platform",
            str(d),
            "--tee",
            "sgx",
            "--report-data",
            "0x01",
            "--out",
            str(out),
            "--collateral-out",
            str(col),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:2] == b"\x03\x00"
    assert json.loads(Collateral.from_json(col.read_text()).qe_identity)["id"] == "QE"

    result = runner.invoke(
        sim, ["collateral", "--platform", str(d), "--tee", "tdx", "--tcb-status", "outofdate"]
    )
    assert result.exit_code == 0, result.output
    tcb = json.loads(Collateral.from_json(result.stdout).tcb_info)
    assert tcb["id"] == "TDX" and tcb["fmspc"] == "00A06F000000"
    assert tcb["tcbLevels"][1]["tcbStatus"] == "OutOfDate"

    result = runner.invoke(sim, ["tdreport", "--platform", str(d), "--report-data", "ff" * 64])
    assert result.exit_code == 0, result.output
    report = bytes.fromhex(result.stdout.strip())
    assert len(report) == 1024 and report[128:192] == b"\xff" * 64
    assert platform.quote_from_tdreport(report)[568:632] == b"\xff" * 64

    result = runner.invoke(sim, ["root", "--platform", str(d)])
    assert result.exit_code == 0 and "BEGIN CERTIFICATE" in result.stdout


def test_cli_errors(tmp_path: Path, platform_dir: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        sim, ["quote", "--platform", str(platform_dir), "--tee", "tdx", "--report-data", "zz"]
    )
    assert result.exit_code != 0 and "not valid hex" in result.output
    result = runner.invoke(sim, ["init", str(platform_dir)])
    assert result.exit_code != 0 and "refusing to overwrite" in str(result.exception)

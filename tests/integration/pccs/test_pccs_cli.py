"""``teegate pccs serve`` and ``teegate collateral fetch`` as processes/commands."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from teegate.collateral import PcsClient
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.sim import SimPlatform
from tests.integration.collateral.fake_pcs import serve, teepotpcs_fake
from tests.netutil import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

AT = "2025-06-11T19:23:55Z"


def _teegate(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teegate.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``teegate ARGS`` in this process: (exit code, stderr)."""
    from teegate.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_collateral_fetch_then_offline(
    vectors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, cache = tmp_path / "bundle.json", tmp_path / "cache"
    expected = Collateral.from_json(
        (vectors / "_collateral_sets" / "teepotpcs_tdx_00806F050000_2025-05.json").read_text()
    )
    common = [
        "collateral",
        "fetch",
        "--fmspc",
        "00806f050000",
        "--tee",
        "tdx",
        "--at",
        AT,
        "--cache-dir",
        str(cache),
    ]
    with serve(teepotpcs_fake(vectors).app()) as url:
        code, err = _main(capsys, *common, "--pccs", url, "--out", str(out))
    assert code == 0, err
    assert Collateral.from_json(out.read_text()) == expected
    code, err = _main(capsys, *common, "--offline", "--out", str(tmp_path / "again.json"))
    assert code == 0, err
    assert Collateral.from_json((tmp_path / "again.json").read_text()) == expected
    # A real process: the exit code and the one-line diagnosis.
    r = _teegate(*common, "--offline", "--out", str(tmp_path / "x.json"), "--ca", "processor")
    assert r.returncode == 1
    assert "offline: TDX collateral for FMSPC 00806F050000 (PCK processor CA) is not cached" in r.stderr
    code, err = _main(
        capsys, "collateral", "fetch", "--fmspc", "xyz", "--tee", "tdx", "--offline", "--out", "-"
    )
    assert code != 0 and "--fmspc" in err


async def test_pccs_serve_process(tmp_path: Path) -> None:
    platform = SimPlatform.create(tmp_path / "sim")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin-token").write_text("t0ken-admin\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "pccs",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "data"),
            "--sim-platform",
            str(tmp_path / "sim"),
            "--mode",
            "lazy",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"teegate pccs listening on http://127.0.0.1:{port}" in line
        assert "mode lazy" in line and "writes need a token" in line and "INSECURE" not in line
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                health = httpx.get(f"{url}/healthz")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert health.json()["status"] == "ok"
        from datetime import UTC, datetime

        key = CollateralKey("sgx", platform.fmspc, "platform")
        got = await PcsClient(url).get(key, now=datetime.now(UTC))
        assert got.tcb_info_issuer_chain.startswith("-----BEGIN CERTIFICATE-----")
    finally:
        proc.terminate()
        proc.wait(10)


def test_pccs_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    r = _teegate("pccs", "serve", "--listen", "0.0.0.0:1", "--data-dir", str(tmp_path), "--mode", "offline")
    assert r.returncode == 1
    assert "refusing plain HTTP on 0.0.0.0" in r.stderr and "--insecure-http" in r.stderr


def test_insecure_options_are_named(tmp_path: Path) -> None:
    from teegate.collateral import CollateralSettings
    from teegate.node.pccs import PccsSettings

    off_loopback = PccsSettings(host="0.0.0.0", insecure_http=True, mode="offline", data_dir=tmp_path)
    assert off_loopback.insecure == ["--insecure-http: plain HTTP off loopback"]
    upstream = PccsSettings(upstream=CollateralSettings(pccs_url="http://pcs.example"), data_dir=tmp_path)
    assert upstream.insecure == ["plain HTTP upstream"]
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "pccs",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path),
            "--upstream",
            "http://127.0.0.1:9",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        start = next(line for line in lines if "listening on" in line)
        assert "INSECURE: plain HTTP upstream" in start and "writes disabled" in start
    finally:
        proc.terminate()
        proc.wait(10)

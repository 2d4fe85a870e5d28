"""``teegate quote parse|show|verify`` run as a real process on the real vectors."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teegate.dcap.quote import TdReport15, parse_quote
from tests.conftest import vectors_dir

pytestmark = pytest.mark.timeout(120)

V = vectors_dir()
TDX = V / "dcap-qvl/tdx_quote"
TDX_COLLATERAL = V / "_collateral_sets/dcapqvl_tdx_B0C06F000000_2025-06.json"
TDX_AT = "2025-07-04T10:16:31Z"


def run(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "teegate.cli", "quote", *map(str, args)],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=60,
        check=False,
    )
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def _case(quote: str, status: str) -> dict[str, Any]:
    for case in json.loads((V / "cases.json").read_text()):
        if case["quote"] == quote and case["dcap_qvl"].get("status") == status:
            return dict(case)
    raise AssertionError(f"no case for {quote} with {status}")


def test_parse_text_table() -> None:
    r = run("parse", TDX)
    assert r.returncode == 0, r.stderr
    assert "B0C06F000000" in r.stdout
    q = parse_quote(TDX.read_bytes())
    assert q.report_data.hex() in r.stdout
    assert "rtmr3" in r.stdout and "Intel SGX PCK Platform CA" in r.stdout


def test_parse_json_matches_library() -> None:
    r = run("parse", "--json", V / "go-tdx-guest/quote_v5_sample.dat")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    q = parse_quote((V / "go-tdx-guest/quote_v5_sample.dat").read_bytes())
    assert d["version"] == 5 and d["body_type"] == 3 and d["tee"] == "tdx"
    assert isinstance(q.body, TdReport15)
    assert d["body"]["mr_td"] == q.body.mr_td.hex()
    assert d["body"]["mr_servicetd"] == q.body.mr_servicetd.hex()
    assert d["body"]["report_data"] == q.report_data.hex()
    assert d["fmspc"] == "90C06F000000" and d["pck_ca"] == "platform"
    assert d["pck"]["tcb"]["pcesvn"] == 13
    assert len(d["pck_chain"]) == 3


def test_show_alias_hex_and_stdin_base64() -> None:
    r = run("show", "--json", V / "dcap-qvl/tdx-quote.hex")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == 4
    raw = (V / "dcap-qvl/sgx_quote").read_bytes()
    r = run("parse", "--json", "-", stdin=base64.b64encode(raw))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["tee"] == "sgx" and d["pck_ca"] == "processor"
    assert d["body"]["report_data"] == raw[368:432].hex()


@pytest.mark.parametrize(
    ("stdin", "needle"),
    [
        (b"garbage!", "neither hex nor base64"),
        (b"05000200", "header"),
        (bytes.fromhex("0700020081000000") + bytes(600), "header.version at offset 0"),
        (bytes.fromhex("8800020081000000") + bytes(600), "header.version"),
    ],
)
def test_parse_bad_input_exits_2(stdin: bytes, needle: str) -> None:
    r = run("parse", "-", stdin=stdin)
    assert r.returncode == 2
    assert needle in r.stderr
    assert r.stdout == ""


def test_parse_binary_garbage_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(bytes.fromhex("0400030081000000") + bytes(700))
    r = run("parse", bad)
    assert r.returncode == 2
    assert "header.att_key_type at offset 2" in r.stderr
    r = run("parse", tmp_path / "missing.bin")
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_trailing_data_flag() -> None:
    path = V / "go-tdx-guest/tdx_prod_quote_SPR_E4.dat"
    r = run("parse", path)
    assert r.returncode == 2 and "not zero padding" in r.stderr
    r = run("parse", "--json", "--allow-trailing-data", path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["trailing_data"] == 39


def test_verify_up_to_date_json() -> None:
    case = _case("dcap-qvl/tdx_quote", "UpToDate")
    r = run("verify", TDX, "--collateral", V / case["collateral"], "--at", case["at_iso"], "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["verified"] is True
    assert d["status"] == case["dcap_qvl"]["status"]
    assert d["advisory_ids"] == case["dcap_qvl"]["advisories"]
    assert d["claims"]["tcb_status"] == "UpToDate"
    assert d["claims"]["quote"]["body"]["report_data"] == parse_quote(TDX.read_bytes()).report_data.hex()
    assert d["simulated"] is False


def test_verify_sgx_with_advisories_text() -> None:
    case = _case("dcap-qvl/sgx_quote", "ConfigurationAndSWHardeningNeeded")
    r = run("verify", V / case["quote"], "--collateral", V / case["collateral"], "--at", str(case["at"]))
    assert r.returncode == 0, r.stderr
    assert "ConfigurationAndSWHardeningNeeded" in r.stdout
    for advisory in case["dcap_qvl"]["advisories"]:
        assert advisory in r.stdout


def test_verify_failures_exit_1() -> None:
    # collateral long expired at this time
    r = run("verify", TDX, "--collateral", TDX_COLLATERAL, "--at", "2030-01-01T00:00:00Z")
    assert r.returncode == 1
    assert "did not verify" in r.stderr
    # wrong platform's collateral
    other = V / "_collateral_sets/dcapqvl_tdx_90C06F000000_2026-02.json"
    r = run("verify", TDX, "--collateral", other, "--at", "2026-03-05T10:50:03Z", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["verified"] is False


def test_verify_bad_input_exit_2(tmp_path: Path) -> None:
    r = run("verify", TDX, "--collateral", TDX_COLLATERAL, "--at", "yesterday")
    assert r.returncode == 2 and "--at" in r.stderr
    bad = tmp_path / "bundle.json"
    bad.write_text('{"tcb_info": 1}')
    r = run("verify", TDX, "--collateral", bad, "--at", TDX_AT)
    assert r.returncode == 2 and "bad collateral bundle" in r.stderr
    r = run("verify", TDX, "--collateral", tmp_path / "none.json", "--at", TDX_AT)
    assert r.returncode == 2
    garbage = tmp_path / "q.bin"
    garbage.write_bytes(b"\x04\x00" + bytes(10))
    r = run("verify", garbage, "--collateral", TDX_COLLATERAL, "--at", TDX_AT)
    assert r.returncode == 2 and "not a valid quote" in r.stderr


def test_verify_trust_root_is_announced() -> None:
    root = V / "raw/go-tdx-guest/trusted_root.pem"
    r = run("verify", TDX, "--collateral", TDX_COLLATERAL, "--at", TDX_AT, "--trust-root", root)
    assert r.returncode == 0, r.stderr
    assert "insecure" in r.stderr.lower()


def test_verify_simulated_quote_only_with_its_root(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from teegate.sim import SimPlatform

    platform = SimPlatform.create(tmp_path / "platform")
    now = datetime.now(UTC).replace(microsecond=0)
    quote = tmp_path / "quote.hex"
    quote.write_text(platform.tdx_quote(b"\x07" * 64).hex())
    bundle = tmp_path / "collateral.json"
    bundle.write_text(platform.collateral("tdx", now=now).to_json())
    root = tmp_path / "root.pem"
    root.write_bytes(x509.load_der_x509_certificate(platform.root_ca_der).public_bytes(Encoding.PEM))
    at = now.isoformat()
    r = run("verify", quote, "--collateral", bundle, "--at", at)
    assert r.returncode == 1, r.stdout + r.stderr
    r = run("verify", quote, "--collateral", bundle, "--at", at, "--trust-root", root, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["simulated"] is True
    assert d["claims"]["report_data"] == "07" * 64


def test_verify_with_bundle_directory(tmp_path: Path) -> None:
    case = _case("dcap-qvl/tdx_quote", "UpToDate")
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    r = run("verify", TDX, "--collateral", bundles, "--at", case["at_iso"])
    assert r.returncode == 1 and "no collateral for tdx FMSPC B0C06F000000" in r.stderr
    (bundles / "tdx-B0C06F000000-platform.json").write_text((V / case["collateral"]).read_text())
    r = run("verify", TDX, "--collateral", bundles, "--at", case["at_iso"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "UpToDate"


def test_verify_needs_exactly_one_collateral_option() -> None:
    r = run("verify", TDX, "--at", TDX_AT)
    assert r.returncode == 2 and "exactly one" in r.stderr
    r = run("verify", TDX, "--collateral", TDX_COLLATERAL, "--pccs", "https://127.0.0.1:1", "--at", TDX_AT)
    assert r.returncode == 2 and "exactly one" in r.stderr


def test_verify_with_pccs() -> None:
    from tests.integration.collateral.fake_pcs import serve, teepotpcs_fake

    quote = "go-tdx-guest/ccel/cos-113-tdx-quote.dat"
    case = next(
        c
        for c in json.loads((V / "cases.json").read_text())
        if c["quote"] == quote and "teepotpcs_tdx" in c["collateral"]
    )
    with serve(teepotpcs_fake(V).app()) as url:
        r = run("verify", V / quote, "--pccs", url, "--at", case["at_iso"], "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["status"] == case["dcap_qvl"]["status"]
    assert d["advisory_ids"] == case["dcap_qvl"]["advisories"]
    # nothing listens on port 9 of loopback: collateral unavailable is a failure, not bad input
    r = run("verify", V / quote, "--pccs", "http://127.0.0.1:9", "--at", case["at_iso"])
    assert r.returncode == 1 and "no collateral" in r.stderr

"""dcap-qvl (PyPI, an independent Rust implementation) parses and verifies simulated quotes.

dcap-qvl's ``verify_with_root_ca`` takes the root certificate as an argument, so it can check a
simulated quote against the simulated root; its plain ``verify`` (Intel's root) must refuse it.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dcap_qvl
import pytest

from teegate.dcap.collateral import Collateral
from teegate.sim import SimPlatform

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


def _col(c: Collateral) -> object:
    return dcap_qvl.QuoteCollateralV3.from_json(c.to_json())


def _verify(platform: SimPlatform, quote: bytes, tee: str, **scenario: object) -> tuple[str, list[str]]:
    collateral = platform.collateral(tee, now=NOW, **scenario)  # type: ignore[arg-type]
    report = dcap_qvl.verify_with_root_ca(quote, _col(collateral), platform.root_ca_der, NOW_S)
    return report.status, list(report.advisory_ids)


def _quotes(platform: SimPlatform) -> list[tuple[str, bytes]]:
    return [
        ("tdx", platform.tdx_quote(b"rd", version=4)),
        ("tdx", platform.tdx_quote(b"rd", version=5)),
        ("tdx", platform.tdx_quote(b"rd", version=5, body_type=2)),
        ("tdx", platform.quote_from_tdreport(platform.tdreport(b"rd"), version=5)),
        ("sgx", platform.sgx_quote(b"rd")),
    ]


def test_dcap_qvl_parses_quotes(platform: SimPlatform) -> None:
    q4 = dcap_qvl.parse_quote(platform.tdx_quote(b"\x01" * 64, mr_td=b"\x22" * 48))
    assert q4.header.version == 4 and q4.header.tee_type == 0x81 and q4.is_tdx()
    assert bytes(q4.report.report_data) == b"\x01" * 64
    assert bytes(q4.report.mr_td) == b"\x22" * 48
    assert q4.fmspc() == platform.fmspc
    assert q4.ca() == platform.pck_ca
    q5 = dcap_qvl.parse_quote(platform.tdx_quote(b"", version=5))
    assert q5.header.version == 5 and type(q5.report).__name__.endswith("TdReport15")
    assert bytes(q5.report.mr_service_td) == bytes(48)
    q3 = dcap_qvl.parse_quote(platform.sgx_quote(b"\x07"))
    assert q3.header.version == 3 and q3.is_sgx()
    assert bytes(q3.report.report_data)[:1] == b"\x07"


def test_pck_extension_read_by_dcap_qvl(platform: SimPlatform) -> None:
    ext = dcap_qvl.parse_pck_extension_from_pem(platform.pck_chain_pem.encode())
    assert bytes(ext.fmspc).hex().upper() == platform.fmspc
    assert bytes(ext.cpu_svn) == platform.platform_info()[3]
    assert ext.pce_svn == platform.platform_info()[1]
    assert bytes(ext.pce_id) == b"\0\0"
    assert ext.sgx_type == 1
    assert len(bytes(ext.platform_instance_id)) == 16


@pytest.mark.parametrize("tee", ["tdx", "sgx"])
def test_collateral_json_parses_in_dcap_qvl(platform: SimPlatform, tee: str) -> None:
    collateral = platform.collateral(tee, now=NOW)  # type: ignore[arg-type]
    parsed = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
    assert parsed.tcb_info == collateral.tcb_info
    assert Collateral.from_json(collateral.to_json()) == collateral


def test_all_quote_kinds_verify_up_to_date(platform: SimPlatform) -> None:
    for tee, quote in _quotes(platform):
        assert _verify(platform, quote, tee) == ("UpToDate", [])


@pytest.mark.parametrize(
    "status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded", "OutOfDateConfigurationNeeded"]
)
def test_tcb_status_scenarios(platform: SimPlatform, status: str) -> None:
    assert _verify(platform, platform.tdx_quote(b""), "tdx", tcb_status=status) == (status, ["SIM-SA-00001"])
    assert _verify(platform, platform.sgx_quote(b""), "sgx", tcb_status=status) == (status, ["SIM-SA-00001"])


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        ({"revoke_pck": True}, "CertRevoked"),
        ({"expired": True}, "Expired"),
        ({"fmspc": "112233445566"}, "Fmspc mismatch"),
        ({"tcb_status": "Revoked"}, "Revoked"),
    ],
)
def test_failure_scenarios(platform: SimPlatform, scenario: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _verify(platform, platform.tdx_quote(b""), "tdx", **scenario)


def test_debug_td_and_enclave_refused_by_dcap_qvl_policy(platform: SimPlatform) -> None:
    with pytest.raises(ValueError, match="Debug"):
        _verify(platform, platform.tdx_quote(b"", debug=True), "tdx")
    with pytest.raises(ValueError, match="Debug"):
        _verify(platform, platform.sgx_quote(b"", debug=True), "sgx")


def test_tampered_report_data_fails(platform: SimPlatform) -> None:
    quote = bytearray(platform.tdx_quote(b"\x00" * 64))
    quote[600] ^= 0x01  # inside report_data (568..632)
    with pytest.raises(ValueError, match="signature"):
        _verify(platform, bytes(quote), "tdx")


def test_intel_root_refuses_simulated_quotes(platform: SimPlatform) -> None:
    collateral = platform.collateral("tdx", now=NOW)
    with pytest.raises(ValueError):
        dcap_qvl.verify(platform.tdx_quote(b""), _col(collateral), NOW_S)


def test_another_platforms_root_refuses(platform: SimPlatform, tmp_path: object) -> None:
    from pathlib import Path

    other = SimPlatform.create(Path(str(tmp_path)) / "other")
    collateral = platform.collateral("tdx", now=NOW)
    with pytest.raises(ValueError):
        dcap_qvl.verify_with_root_ca(platform.tdx_quote(b""), _col(collateral), other.root_ca_der, NOW_S)


@pytest.mark.parametrize(("version", "status"), [(4, "OutOfDate"), (5, "TDRelaunchAdvised")])
def test_td_launched_on_old_module(platform: SimPlatform, version: int, status: str) -> None:
    quote = platform.tdx_quote(b"", version=version, tee_tcb_svn=bytes([3, 1, 2]) + bytes(13))
    assert _verify(platform, quote, "tdx") == (status, [])

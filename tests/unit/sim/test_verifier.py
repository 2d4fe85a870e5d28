"""teegate's own verifier on simulated quotes: accepted only with the simulated anchor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import VerificationError
from teegate.sim import SimPlatform

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def verifier(platform: SimPlatform) -> QuoteVerifier:
    return QuoteVerifier(TrustAnchors.intel().with_anchor(platform.anchor()))


def test_every_quote_kind_verifies_up_to_date(platform: SimPlatform, verifier: QuoteVerifier) -> None:
    cases = [
        ("tdx", platform.tdx_quote(b"rd")),
        ("tdx", platform.tdx_quote(b"rd", version=5)),
        ("tdx", platform.tdx_quote(b"rd", version=5, body_type=2)),
        ("tdx", platform.quote_from_tdreport(platform.tdreport(b"rd"), version=5)),
        ("sgx", platform.sgx_quote(b"rd")),
        ("sgx", platform.quote_from_sgx_report(platform.sgx_report(b"rd").encode())),
    ]
    for tee, quote in cases:
        verdict = verifier.verify(quote, platform.collateral(tee, now=NOW), now=NOW)  # type: ignore[arg-type]
        assert verdict.status == "UpToDate"
        assert verdict.anchor.simulated
        assert verdict.fmspc == platform.fmspc
        assert not verdict.debug
        assert verdict.quote.report_data[:2] == b"rd"


def test_refused_with_default_intel_anchors(platform: SimPlatform) -> None:
    with pytest.raises(VerificationError, match="UNTRUSTED"):
        QuoteVerifier().verify(platform.tdx_quote(b""), platform.collateral("tdx", now=NOW), now=NOW)
    with pytest.raises(VerificationError, match="UNTRUSTED"):
        QuoteVerifier(TrustAnchors.intel()).verify(
            platform.sgx_quote(b""), platform.collateral("sgx", now=NOW), now=NOW
        )


def test_tampered_report_data_fails(platform: SimPlatform, verifier: QuoteVerifier) -> None:
    quote = bytearray(platform.tdx_quote(bytes(64)))
    quote[600] ^= 0x01
    with pytest.raises(VerificationError, match="INVALID_QUOTE_SIGNATURE"):
        verifier.verify(bytes(quote), platform.collateral("tdx", now=NOW), now=NOW)


@pytest.mark.parametrize(
    "status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded", "Revoked"]
)
def test_tcb_status_scenarios(platform: SimPlatform, verifier: QuoteVerifier, status: str) -> None:
    verdict = verifier.verify(
        platform.tdx_quote(b""), platform.collateral("tdx", now=NOW, tcb_status=status), now=NOW
    )
    assert verdict.status == status
    assert "SIM-SA-00001" in verdict.advisory_ids


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ({"revoke_pck": True}, "PCK_REVOKED"),
        ({"expired": True}, "EXPIRED"),
        ({"fmspc": "112233445566"}, "TCB_INFO_MISMATCH"),
    ],
)
def test_failure_scenarios(
    platform: SimPlatform, verifier: QuoteVerifier, scenario: dict[str, object], code: str
) -> None:
    collateral = platform.collateral("tdx", now=NOW, **scenario)  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match=code):
        verifier.verify(platform.tdx_quote(b""), collateral, now=NOW)


def test_debug_td_is_reported(platform: SimPlatform, verifier: QuoteVerifier) -> None:
    verdict = verifier.verify(
        platform.tdx_quote(b"", debug=True), platform.collateral("tdx", now=NOW), now=NOW
    )
    assert verdict.debug
    verdict = verifier.verify(
        platform.sgx_quote(b"", debug=True), platform.collateral("sgx", now=NOW), now=NOW
    )
    assert verdict.debug


def test_measurements_survive_tdreport_round_trip(platform: SimPlatform, verifier: QuoteVerifier) -> None:
    rtmrs = (b"\x01" * 48, b"\x02" * 48, b"\x03" * 48, b"\x04" * 48)
    quote = platform.quote_from_tdreport(platform.tdreport(b"n", mr_td=b"\x09" * 48, rtmrs=rtmrs), version=4)
    body = verifier.verify(quote, platform.collateral("tdx", now=NOW), now=NOW).quote.body
    assert body.mr_td == b"\x09" * 48  # type: ignore[union-attr]
    assert body.rtmrs == rtmrs  # type: ignore[union-attr]


@pytest.mark.parametrize(("version", "status"), [(4, "OutOfDate"), (5, "TDRelaunchAdvised")])
def test_td_launched_on_old_module(
    platform: SimPlatform, verifier: QuoteVerifier, version: int, status: str
) -> None:
    """Launched on module SVN 3, updated in place to the current one: a TD 1.5 quote says relaunch."""
    quote = platform.tdx_quote(b"", version=version, tee_tcb_svn=bytes([3, 1, 2]) + bytes(13))
    verdict = verifier.verify(quote, platform.collateral("tdx", now=NOW), now=NOW)
    assert (verdict.status, verdict.tdx_module_status) == (status, "OutOfDate")

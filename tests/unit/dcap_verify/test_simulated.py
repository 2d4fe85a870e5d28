"""Scenarios that need a key we hold (a revoked PCK, another root): teegate.sim's test PKI.

Real Intel data cannot be re-signed, so revocation and trust-anchor choice are shown with the
simulated platform, whose quotes and collateral have the real formats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.quote import parse_quote
from teegate.dcap.verify import QuoteVerifier, verdict_claims
from teegate.errors import VerificationError
from teegate.sim import SimPlatform

from ._real import load

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform.create(tmp_path_factory.mktemp("sim") / "platform")


def _quote(platform: SimPlatform, tee: str, **kw: object) -> bytes:
    report_data = bytes(range(64))
    return platform.tdx_quote(report_data, **kw) if tee == "tdx" else platform.sgx_quote(report_data, **kw)


@pytest.mark.parametrize("tee", ["tdx", "sgx"])
def test_simulated_root_only_when_trusted(platform: SimPlatform, tee: str) -> None:
    quote = _quote(platform, tee)
    collateral = platform.collateral(tee, now=NOW)  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as info:
        QuoteVerifier().verify(quote, collateral, now=NOW)
    assert info.value.code == "ROOT_CA_UNTRUSTED"
    verdict = QuoteVerifier(TrustAnchors.intel().with_anchor(platform.anchor())).verify(
        quote, collateral, now=NOW
    )
    assert verdict.status == "UpToDate"
    assert verdict.anchor.simulated is True
    assert verdict_claims(verdict)["simulated"] is True
    assert parse_quote(quote).report_data == bytes(range(64))


@pytest.mark.parametrize("tee", ["tdx", "sgx"])
def test_revoked_pck(platform: SimPlatform, tee: str) -> None:
    collateral = platform.collateral(tee, now=NOW, revoke_pck=True)  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as info:
        QuoteVerifier(TrustAnchors((platform.anchor(),))).verify(_quote(platform, tee), collateral, now=NOW)
    assert info.value.code == "PCK_REVOKED"
    assert info.value.step == "3 CRLs"


@pytest.mark.parametrize("tee", ["tdx", "sgx"])
def test_wrong_fmspc(platform: SimPlatform, tee: str) -> None:
    collateral = platform.collateral(tee, now=NOW, fmspc="00906ED50000")  # type: ignore[arg-type]
    with pytest.raises(VerificationError) as info:
        QuoteVerifier(TrustAnchors((platform.anchor(),))).verify(_quote(platform, tee), collateral, now=NOW)
    assert info.value.code == "TCB_INFO_MISMATCH"
    assert "FMSPC" in str(info.value)


def test_expired_collateral(platform: SimPlatform) -> None:
    collateral = platform.collateral("tdx", now=NOW, expired=True)
    verifier = QuoteVerifier(TrustAnchors((platform.anchor(),)))
    with pytest.raises(VerificationError) as info:
        verifier.verify(_quote(platform, "tdx"), collateral, now=NOW)
    assert info.value.code.endswith("_EXPIRED")


@pytest.mark.parametrize("status", ["OutOfDate", "SWHardeningNeeded", "ConfigurationNeeded", "Revoked"])
def test_platform_statuses(platform: SimPlatform, status: str) -> None:
    collateral = platform.collateral("tdx", now=NOW, tcb_status=status)
    verdict = QuoteVerifier(TrustAnchors((platform.anchor(),))).verify(
        _quote(platform, "tdx"), collateral, now=NOW
    )
    assert verdict.status == status
    assert verdict.platform_status == status


def test_debug_td_reported_not_refused(platform: SimPlatform) -> None:
    quote = platform.quote_from_tdreport(platform.tdreport(bytes(64), debug=True))
    verdict = QuoteVerifier(TrustAnchors((platform.anchor(),))).verify(
        quote, platform.collateral("tdx", now=NOW), now=NOW
    )
    assert verdict.debug is True
    assert verdict_claims(verdict)["td_attributes"]["debug"] is True


def test_simulated_quote_with_intel_collateral_refused(platform: SimPlatform, vectors: Path) -> None:
    """Roots never mix: a simulated PCK chain against real Intel collateral is refused."""
    real = load(vectors, "tdx")
    anchors = TrustAnchors.intel().with_anchor(platform.anchor())
    with pytest.raises(VerificationError) as info:
        QuoteVerifier(anchors).verify(_quote(platform, "tdx"), real.collateral, now=real.now)
    assert info.value.code in {"ROOT_CA_MISMATCH", "CRL_MISSING"}


def test_warm_cache_respects_time(platform: SimPlatform) -> None:
    """A warm verifier re-checks collateral once ``now`` leaves the window it was valid for."""
    collateral = platform.collateral("tdx", now=NOW)
    verifier = QuoteVerifier(TrustAnchors((platform.anchor(),)))
    quote = _quote(platform, "tdx")
    verifier.verify(quote, collateral, now=NOW)
    with pytest.raises(VerificationError) as info:
        verifier.verify(quote, collateral, now=NOW + timedelta(days=400))
    assert info.value.code.endswith("EXPIRED")
    assert verifier.verify(quote, collateral, now=NOW).status == "UpToDate"


def test_leaf_key_cannot_issue(platform: SimPlatform) -> None:
    """A certificate signed by a (leaked) PCK key is refused: the PCK leaf is not a CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from teegate.dcap.certs import load_crl, load_pem_chain, verify_chain, verify_crl

    pck_key = serialization.load_pem_private_key((platform.directory / "pck.key.pem").read_bytes(), None)
    assert isinstance(pck_key, ec.EllipticCurvePrivateKey)
    chain = load_pem_chain(platform.pck_chain_pem, "pck")
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "forged SGX PCK Certificate")]))
        .issuer_name(chain[0].subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(pck_key, hashes.SHA256())
    )
    collateral = platform.collateral("tdx", now=NOW)
    root_crl = verify_crl(load_crl(collateral.root_ca_crl, "root"), chain[-1], what="root", step="t")
    pck_crl = verify_crl(load_crl(collateral.pck_crl, "pck"), chain[1], what="pck", step="t")
    # Revocation data for the forged link exists (a CRL "by" the PCK key would not help either).
    with pytest.raises(VerificationError) as info:
        verify_chain(
            (forged, *chain),
            TrustAnchors((platform.anchor(),)),
            NOW,
            what="forged",
            step="t",
            crls=(root_crl, pck_crl),
        )
    assert info.value.code == "CERT_CHAIN_BROKEN"
    assert "not a CA" in str(info.value)


def test_warm_tcb_evaluation_follows_each_quotes_tcb_and_collateral(platform: SimPlatform) -> None:
    """The per-platform TCB evaluation a warm verifier keeps is keyed by what it depends on."""
    anchors = TrustAnchors((platform.anchor(),))
    warm = QuoteVerifier(anchors)
    current = platform.collateral("tdx", now=NOW)
    revoked = platform.collateral("tdx", now=NOW, tcb_status="Revoked")
    older_module = bytes([4, 1, 2]) + bytes(13)
    cases = [
        (_quote(platform, "tdx"), current),
        (_quote(platform, "tdx", tee_tcb_svn=older_module), current),
        (_quote(platform, "tdx"), revoked),
        (_quote(platform, "tdx"), current),
        (_quote(platform, "tdx", tee_tcb_svn=older_module), current),
    ]
    outcomes = []
    for quote, collateral in cases:
        try:
            cold: object = QuoteVerifier(anchors).verify(quote, collateral, now=NOW).status
        except VerificationError as exc:
            cold = exc.code
        try:
            hot: object = warm.verify(quote, collateral, now=NOW).status
        except VerificationError as exc:
            hot = exc.code
        assert hot == cold
        outcomes.append(hot)
    assert outcomes[0] == outcomes[3] == "UpToDate" and outcomes[2] == "Revoked"
    assert outcomes[1] == outcomes[4] != "UpToDate"

"""Real quotes and collateral changed one byte at a time: every change is refused, each with its own error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from teegate.dcap.quote import parse_quote
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import CollateralError, EvidenceError, ParseError, VerificationError

from ._real import Vector, load


@pytest.fixture(params=["tdx", "sgx", "tdx-v5"])
def vector(request: pytest.FixtureRequest, vectors: Path) -> Vector:
    return load(vectors, request.param)


def _flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    return data[:offset] + bytes([data[offset] ^ mask]) + data[offset + 1 :]


def test_untouched_verifies(vector: Vector) -> None:
    assert QuoteVerifier().verify(vector.raw, vector.collateral, now=vector.now).status == vector.status


@pytest.mark.timeout(120)
def test_every_byte_of_signed_region_is_covered(vector: Vector) -> None:
    """Each single-byte change in header+body is refused (warm verifier: caches must not hide it)."""
    verifier = QuoteVerifier()
    verifier.verify(vector.raw, vector.collateral, now=vector.now)
    size = len(parse_quote(vector.raw).signed_region)
    codes: set[str] = set()
    for offset in range(size):
        with pytest.raises(EvidenceError) as info:
            verifier.verify(_flip(vector.raw, offset), vector.collateral, now=vector.now)
        codes.add(getattr(info.value, "code", type(info.value).__name__))
    assert "INVALID_QUOTE_SIGNATURE" in codes
    assert codes <= {"INVALID_QUOTE_SIGNATURE", "ParseError", "UNSUPPORTED_QE_VENDOR"}


def _offset(raw: bytes, part: bytes) -> int:
    offset = raw.find(part)
    assert offset > 0 and raw.find(part, offset + 1) == -1
    return offset


@pytest.mark.parametrize("field", ["signature", "qe_report_signature"])
def test_signature_bytes(vector: Vector, field: str) -> None:
    quote = parse_quote(vector.raw)
    start = _offset(vector.raw, getattr(quote, field))
    verifier = QuoteVerifier()
    verifier.verify(vector.raw, vector.collateral, now=vector.now)
    expected = "INVALID_QUOTE_SIGNATURE" if field == "signature" else "INVALID_QE_REPORT_SIGNATURE"
    for offset in (start, start + 31, start + 32, start + 63):
        with pytest.raises(VerificationError) as info:
            verifier.verify(_flip(vector.raw, offset), vector.collateral, now=vector.now)
        assert info.value.code == expected


@pytest.mark.timeout(60)
def test_every_byte_of_qe_report(vector: Vector) -> None:
    quote = parse_quote(vector.raw)
    start = _offset(vector.raw, quote.qe_report_raw)
    verifier = QuoteVerifier()
    verifier.verify(vector.raw, vector.collateral, now=vector.now)
    for offset in range(start, start + len(quote.qe_report_raw)):
        with pytest.raises(VerificationError) as info:
            verifier.verify(_flip(vector.raw, offset), vector.collateral, now=vector.now)
        assert info.value.code == "INVALID_QE_REPORT_SIGNATURE"
        assert info.value.step == "6 QE report signature"


def test_wrong_auth_data(vector: Vector) -> None:
    quote = parse_quote(vector.raw)
    start = _offset(vector.raw, quote.qe_auth_data)
    with pytest.raises(VerificationError) as info:
        QuoteVerifier().verify(_flip(vector.raw, start + 5), vector.collateral, now=vector.now)
    assert info.value.code == "INVALID_QE_REPORT_DATA"


def test_wrong_attestation_key(vector: Vector) -> None:
    """Another attestation key breaks the QE report data binding before the quote signature is tried."""
    quote = parse_quote(vector.raw)
    start = _offset(vector.raw, quote.attestation_key)
    with pytest.raises(VerificationError) as info:
        QuoteVerifier().verify(_flip(vector.raw, start + 10), vector.collateral, now=vector.now)
    assert info.value.code == "INVALID_QE_REPORT_DATA"


@pytest.mark.parametrize(
    ("field", "codes"),
    [
        ("tcb_info", {"INVALID_TCB_INFO_SIGNATURE"}),
        ("qe_identity", {"INVALID_QE_IDENTITY_SIGNATURE"}),
        ("tcb_info_signature", {"INVALID_TCB_INFO_SIGNATURE"}),
        ("qe_identity_signature", {"INVALID_QE_IDENTITY_SIGNATURE"}),
        ("root_ca_crl", {"CRL_INVALID_SIGNATURE", "CRL_ISSUER_MISMATCH", "CollateralError"}),
        ("pck_crl", {"CRL_INVALID_SIGNATURE", "CRL_ISSUER_MISMATCH", "CollateralError"}),
    ],
)
def test_collateral_byte_changes(vector: Vector, field: str, codes: set[str]) -> None:
    value = getattr(vector.collateral, field)
    data = value.encode() if isinstance(value, str) else value
    # A few positions spread over the item, each a single changed byte.
    for offset in sorted({len(data) // 7, len(data) // 3, len(data) // 2, len(data) - 10}):
        changed = _flip(data, offset, 0x02)
        if isinstance(value, str):
            try:
                new: str | bytes = changed.decode()
            except UnicodeDecodeError:
                continue
        else:
            new = changed
        collateral = dataclasses.replace(vector.collateral, **{field: new})
        with pytest.raises(EvidenceError) as info:
            QuoteVerifier().verify(vector.raw, collateral, now=vector.now)
        got = getattr(info.value, "code", type(info.value).__name__)
        assert got in codes, info.value


def test_crls_swapped(vector: Vector) -> None:
    collateral = dataclasses.replace(
        vector.collateral, root_ca_crl=vector.collateral.pck_crl, pck_crl=vector.collateral.root_ca_crl
    )
    with pytest.raises(VerificationError) as info:
        QuoteVerifier().verify(vector.raw, collateral, now=vector.now)
    assert info.value.code in {"CRL_ISSUER_MISMATCH", "CRL_INVALID_SIGNATURE"}


def test_other_tee_collateral(vectors: Path) -> None:
    """A TDX quote with SGX collateral (and the reverse) is refused naming the mismatch."""
    tdx, sgx = load(vectors, "tdx"), load(vectors, "sgx")
    with pytest.raises(VerificationError) as info:
        QuoteVerifier().verify(tdx.raw, sgx.collateral, now=sgx.now)
    assert info.value.code in {"TCB_INFO_MISMATCH", "CRL_MISSING"}
    with pytest.raises(VerificationError):
        QuoteVerifier().verify(sgx.raw, tdx.collateral, now=tdx.now)


@pytest.mark.parametrize(
    "field", ["pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"]
)
@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n",
    ],
)
def test_garbage_chains(vector: Vector, field: str, garbage: str) -> None:
    collateral = dataclasses.replace(vector.collateral, **{field: garbage})
    with pytest.raises(CollateralError):
        QuoteVerifier().verify(vector.raw, collateral, now=vector.now)


@pytest.mark.parametrize("garbage", [b"", b"\x30\x03\x02\x01", b"zz", b"-----BEGIN X509 CRL-----\nAA\n"])
def test_garbage_crls(vector: Vector, garbage: bytes) -> None:
    for field in ("root_ca_crl", "pck_crl"):
        collateral = dataclasses.replace(vector.collateral, **{field: garbage})
        with pytest.raises(CollateralError):
            QuoteVerifier().verify(vector.raw, collateral, now=vector.now)


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"version": 3}', '{"id": "SGX", "version": 3, "tcbLevels": 5}']
)
def test_garbage_documents(vector: Vector, text: str) -> None:
    for field in ("tcb_info", "qe_identity"):
        collateral = dataclasses.replace(vector.collateral, **{field: text})
        with pytest.raises(EvidenceError):
            QuoteVerifier().verify(vector.raw, collateral, now=vector.now)


def test_truncated_quotes_are_parse_errors(vector: Vector) -> None:
    verifier = QuoteVerifier()
    end = len(vector.raw) - parse_quote(vector.raw).padding  # zero padding after the quote is allowed
    for size in (0, 10, 48, 400, 700, end // 2, end - 1):
        with pytest.raises(ParseError):
            verifier.verify(vector.raw[:size], vector.collateral, now=vector.now)

"""teegate.dcap.certs on real Intel certificates and CRLs: encodings, chains, anchors, time."""

from __future__ import annotations

import binascii
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509 as _x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from teegate.dcap.anchors import INTEL_SGX_ROOT_CA_PUBLIC_KEY, TrustAnchor, TrustAnchors
from teegate.dcap.certs import (
    MAX_CHAIN_CERTS,
    MAX_CRL_BYTES,
    ec_point,
    load_crl,
    load_pem_chain,
    public_key_from_point,
    raw_signature_to_der,
    verify_chain,
    verify_crl,
)
from teegate.dcap.quote import parse_quote
from teegate.errors import CollateralError, ParseError, VerificationError

from ._real import Vector, load


@pytest.fixture
def real(vectors: Path) -> Vector:
    return load(vectors, "tdx")


def test_crl_encodings_agree(real: Vector) -> None:
    der = real.collateral.pck_crl
    from_der = load_crl(der, "der")
    pem = from_der.public_bytes(Encoding.PEM)
    assert load_crl(pem, "pem") == from_der
    assert load_crl(binascii.hexlify(der), "hex") == from_der
    assert load_crl(der.hex().upper(), "hex text") == from_der
    assert load_crl(der + b"\x00", "nul-terminated") == from_der


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00",
        b"\x30",
        b"\x30\x82\xff\xff",
        b"0g",
        b"-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "é".encode(),
        b"abcdef",
    ],
)
def test_bad_crls(data: bytes) -> None:
    with pytest.raises(CollateralError):
        load_crl(data, "crl")


def test_crl_size_bound() -> None:
    with pytest.raises(CollateralError, match="larger than"):
        load_crl(b"\x30" * (MAX_CRL_BYTES + 1), "crl")


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "garbage",
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        "€",
    ],
)
def test_bad_pem_chains(pem: str) -> None:
    with pytest.raises((CollateralError, ParseError)):
        load_pem_chain(pem, "chain")


def test_chain_length_bound(real: Vector) -> None:
    pem = real.collateral.tcb_info_issuer_chain
    too_many = pem * (MAX_CHAIN_CERTS // 2 + 1)
    with pytest.raises(CollateralError, match="at most"):
        load_pem_chain(too_many, "chain")


def test_real_chain_verifies_only_to_pinned_key(real: Vector) -> None:
    certs = load_pem_chain(real.collateral.tcb_info_issuer_chain, "tcb chain")
    root = certs[-1]
    assert ec_point(root) == INTEL_SGX_ROOT_CA_PUBLIC_KEY
    root_crl = verify_crl(load_crl(real.collateral.root_ca_crl, "root"), root, what="root CRL", step="t")
    chain = verify_chain(certs, TrustAnchors.intel(), real.now, what="tcb", step="t", crls=(root_crl,))
    assert chain.anchor.name == "Intel SGX Root CA"
    other = TrustAnchors(
        (TrustAnchor.from_key("other", ec.generate_private_key(ec.SECP256R1()).public_key()),)
    )
    with pytest.raises(VerificationError) as info:
        verify_chain(certs, other, real.now, what="tcb", step="t", crls=(root_crl,))
    assert info.value.code == "ROOT_CA_UNTRUSTED"


def test_chain_checks(real: Vector) -> None:
    certs = load_pem_chain(real.collateral.tcb_info_issuer_chain, "tcb chain")
    root_crl = verify_crl(load_crl(real.collateral.root_ca_crl, "root"), certs[-1], what="root CRL", step="t")
    anchors = TrustAnchors.intel()
    # Time: after the signing certificate's notAfter and before its notBefore.
    leaf = certs[0]
    for when, code in (
        (leaf.not_valid_after_utc + timedelta(seconds=1), "CERT_EXPIRED"),
        (leaf.not_valid_before_utc - timedelta(seconds=1), "CERT_NOT_YET_VALID"),
    ):
        with pytest.raises(VerificationError) as info:
            verify_chain(certs, anchors, when, what="tcb", step="t", crls=(root_crl,))
        assert info.value.code == code
    # No CRL for the issuer: unknown revocation status is refused.
    with pytest.raises(VerificationError) as info:
        verify_chain(certs, anchors, real.now, what="tcb", step="t", crls=())
    assert info.value.code == "CRL_MISSING"
    # Leaf only (root missing) and a leaf "issued" by itself.
    with pytest.raises(VerificationError) as info:
        verify_chain(certs[:1], anchors, real.now, what="tcb", step="t", crls=(root_crl,))
    assert info.value.code == "CERT_CHAIN_INCOMPLETE"
    pck = load_pem_chain(parse_quote(real.raw).pck_chain_pem, "pck")
    with pytest.raises(VerificationError) as info:
        verify_chain((pck[0], certs[-1]), anchors, real.now, what="mixed", step="t", crls=(root_crl,))
    assert info.value.code in {"CERT_CHAIN_BROKEN", "CERT_INVALID_SIGNATURE"}


def test_crl_by_wrong_issuer(real: Vector) -> None:
    tcb = load_pem_chain(real.collateral.tcb_info_issuer_chain, "tcb chain")
    with pytest.raises(VerificationError) as info:
        verify_crl(load_crl(real.collateral.pck_crl, "pck"), tcb[0], what="PCK CRL", step="t")
    assert info.value.code == "CRL_ISSUER_MISMATCH"


def test_raw_signatures_and_points() -> None:
    with pytest.raises(VerificationError):
        raw_signature_to_der(b"\x01" * 63)
    assert raw_signature_to_der(b"\x01" * 64).startswith(b"\x30")
    with pytest.raises(VerificationError) as info:
        public_key_from_point(b"\x00" * 64, "attestation key")
    assert info.value.code == "INVALID_PUBLIC_KEY"
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert public_key_from_point(point[1:], "k") == key
    assert public_key_from_point(point, "k") == key


@pytest.mark.parametrize("last", [0x00, 0x20, 0x0A])
def test_der_crl_whose_signature_ends_in_a_strippable_byte(last: int) -> None:
    """A DER CRL is never stripped: its last byte is signature data and may be NUL or blank."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime(2025, 1, 1, tzinfo=UTC)
    builder = (
        _x509.CertificateRevocationListBuilder()
        .issuer_name(_x509.Name([_x509.NameAttribute(NameOID.COMMON_NAME, "test CRL issuer")]))
        .last_update(now)
        .next_update(now + timedelta(days=1))
    )
    for _ in range(5000):
        der = builder.sign(key, hashes.SHA256()).public_bytes(Encoding.DER)
        if der[-1] == last:
            break
    else:
        pytest.fail(f"no signature ending in {last:#04x} in 5000 tries")
    crl = load_crl(der, "crl")
    assert crl.is_signature_valid(key.public_key())
    assert load_crl(der + b"\x00\x00", "nul-padded") == crl
    with pytest.raises(CollateralError, match="unexpected bytes after"):
        load_crl(der + b"\x01", "garbage-padded")


def test_crl_with_an_invalid_version_is_a_collateral_error(real: Vector) -> None:
    """cryptography raises InvalidVersion (not a ValueError) for version 0: found by hypothesis."""
    der = bytearray(real.collateral.root_ca_crl)
    start = der.index(b"\x02\x01\x01")  # tbsCertList.version INTEGER 1 (v2)
    der[start + 2] = 0
    with pytest.raises(CollateralError, match="malformed CRL"):
        load_crl(bytes(der), "root CA CRL")

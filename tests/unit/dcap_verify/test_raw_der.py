"""teegate.dcap.certs speed paths: raw DER slices, link and CRL checks without re-encoding, counted work."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from teegate.dcap import certs
from teegate.dcap.anchors import TrustAnchor, TrustAnchors
from teegate.dcap.certs import (
    CertInfo,
    CertMemo,
    cert_info,
    ec_point,
    load_crl,
    load_crl_der,
    load_pem_chain,
    raw_signature_to_der,
    verify_chain,
    verify_crl,
)
from teegate.dcap.quote import parse_quote
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import CollateralError, ParseError, VerificationError

from ._real import Vector, load

NOW = datetime(2025, 6, 1, tzinfo=UTC)
_Key = ec.EllipticCurvePrivateKey
_Hash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePublicKey,
    signer: _Key,
    *,
    ca: bool,
    algorithm: _Hash | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, algorithm or hashes.SHA256())


def _crl(issuer: x509.Name, signer: _Key, *, algorithm: _Hash | None = None) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=1))
        .sign(signer, algorithm or hashes.SHA256())
    )
    return crl.public_bytes(Encoding.DER)


class _Pki:
    def __init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = _cert(
            "Test Root CA", _name("Test Root CA"), self.root_key.public_key(), self.root_key, ca=True
        )
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("Test CA", self.root.subject, self.ca_key.public_key(), self.root_key, ca=True)
        self.anchors = TrustAnchors(
            (TrustAnchor.from_key("test root", self.root_key.public_key(), simulated=True),)
        )
        self.root_crl = verify_crl(
            load_crl(_crl(self.root.subject, self.root_key), "r"), self.root, what="r", step="t"
        )

    def leaf(self, **kwargs: object) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1()).public_key()
        return _cert("Test leaf", self.ca.subject, key, self.ca_key, ca=False, **kwargs)  # type: ignore[arg-type]

    def chain_check(self, leaf: x509.Certificate, ca: x509.Certificate | None = None) -> str:
        ca = ca or self.ca
        ca_crl = verify_crl(load_crl(_crl(ca.subject, self.ca_key), "c"), ca, what="c", step="t")
        try:
            verify_chain(
                (leaf, ca, self.root), self.anchors, NOW, what="t", step="t", crls=(self.root_crl, ca_crl)
            )
        except VerificationError as exc:
            return exc.code
        return "OK"


@pytest.fixture(scope="module")
def pki() -> _Pki:
    return _Pki()


@pytest.fixture
def real(vectors: Path) -> Vector:
    return load(vectors, "tdx")


def test_cert_info_slices_match_cryptography(real: Vector) -> None:
    quote = parse_quote(real.raw)
    memo = CertMemo()
    loaded = load_pem_chain(quote.pck_chain_pem, "pck", cache=memo)
    for cert in loaded:
        info = memo.info(cert)
        assert info.cert is cert
        assert info.der == cert.public_bytes(Encoding.DER)
        assert info.tbs == cert.tbs_certificate_bytes
        assert info.signature == cert.signature
        assert info.issuer == cert.issuer.public_bytes()
        assert info.subject == cert.subject.public_bytes()
        assert info.point == ec_point(cert)
        assert info.p256_key() == cert.public_key()
        # The slow path (re-encoding a certificate the memo has not seen) gives the same views.
        again = cert_info(cert)
        assert (again.tbs, again.issuer, again.subject, again.point) == (
            info.tbs,
            info.issuer,
            info.subject,
            info.point,
        )


def test_memo_parses_a_certificate_once_whatever_its_pem_line_breaks(real: Vector) -> None:
    pem = real.collateral.tcb_info_issuer_chain
    text = pem if isinstance(pem, str) else pem.decode()
    rewrapped = text.replace("\n", "\r\n")
    memo = CertMemo()
    first = load_pem_chain(text, "a", cache=memo)
    second = load_pem_chain(rewrapped, "b", cache=memo)
    assert first[0] is second[0] and first[1] is second[1]
    assert load_pem_chain(text, "c")[0] is not first[0]  # no memo: nothing shared


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN CERTIFICATE-----\nMIIB!A==\n-----END CERTIFICATE-----\n",  # not base64
        "-----BEGIN CERTIFICATE-----\nMIIBAA===\n-----END CERTIFICATE-----\n",  # bad padding
        "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_strict_pem_bodies(pem: str) -> None:
    with pytest.raises(ParseError):
        load_pem_chain(pem, "chain", error=ParseError)


def test_der_walk_is_strict() -> None:
    with pytest.raises(certs._DerError, match="not minimally encoded"):
        certs._tlv(b"\x30\x81\x05" + bytes(5), 0, 8, 0x30, "x")
    with pytest.raises(certs._DerError, match="runs past"):
        certs._tlv(b"\x30\x05\x00", 0, 3, 0x30, "x")
    with pytest.raises(certs._DerError, match="expected DER tag"):
        certs._tlv(b"\x31\x00", 0, 2, 0x30, "x")
    with pytest.raises(certs._DerError, match="bad DER length"):
        certs._tlv(b"\x30\x84\x00\x00\x00\x80", 0, 6, 0x30, "x")
    with pytest.raises(certs._DerError, match="after the DER element"):
        certs._signed_parts(b"\x30\x00\x00", "x")
    assert certs._tlv(b"\x04\x82\x01\x00" + bytes(256), 0, 260, 0x04, "x") == (4, 260)


def test_good_synthetic_chain(pki: _Pki) -> None:
    assert pki.chain_check(pki.leaf()) == "OK"


@pytest.mark.parametrize("algorithm", [hashes.SHA384(), hashes.SHA512()])
def test_only_ecdsa_with_sha256_certificates(pki: _Pki, algorithm: _Hash) -> None:
    assert pki.chain_check(pki.leaf(algorithm=algorithm)) == "UNSUPPORTED_SIGNATURE_ALGORITHM"


def test_issuer_name_must_be_the_issuers_subject(pki: _Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_name = _cert("Test leaf", _name("Test CA "), key, pki.ca_key, ca=False)  # right key, wrong name
    assert pki.chain_check(other_name) == "CERT_CHAIN_BROKEN"


def test_signature_by_another_key(pki: _Pki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    forged = _cert("Test leaf", pki.ca.subject, key.public_key(), key, ca=False)
    assert pki.chain_check(forged) == "CERT_INVALID_SIGNATURE"


def test_issuer_key_must_be_p256(pki: _Pki) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    ca = _cert("Test CA", pki.root.subject, p384.public_key(), pki.root_key, ca=True)
    leaf = _cert(
        "Test leaf", ca.subject, ec.generate_private_key(ec.SECP256R1()).public_key(), p384, ca=False
    )
    with pytest.raises(VerificationError) as info:
        verify_chain((leaf, ca, pki.root), pki.anchors, NOW, what="t", step="t", crls=(pki.root_crl,))
    assert info.value.code == "UNSUPPORTED_KEY"


def test_crl_checks(pki: _Pki) -> None:
    memo = CertMemo()
    good = load_crl(_crl(pki.ca.subject, pki.ca_key), "c", cache=memo)
    ok = verify_crl(good, pki.ca, what="c", step="t", memo=memo)
    assert ok.issuer_key == ec_point(pki.ca)
    for der, code in (
        (_crl(pki.ca.subject, pki.ca_key, algorithm=hashes.SHA384()), "UNSUPPORTED_SIGNATURE_ALGORITHM"),
        (_crl(_name("Someone else"), pki.ca_key), "CRL_ISSUER_MISMATCH"),  # right key, wrong name
        (_crl(pki.ca.subject, pki.root_key), "CRL_INVALID_SIGNATURE"),
    ):
        crl = load_crl(der, "c", cache=memo)
        assert memo.crl_der(crl) == der
        for used in (memo, None):  # over the original DER, and over the re-encoding
            with pytest.raises(VerificationError) as info:
                verify_crl(crl, pki.ca, what="c", step="t", memo=used)
            assert info.value.code == code


def test_memo_pairs_a_crl_only_with_the_der_it_was_parsed_from(pki: _Pki) -> None:
    memo = CertMemo()
    der = _crl(pki.ca.subject, pki.ca_key)
    loaded = load_crl(der, "c", cache=memo)
    assert memo.crl_der(loaded) == der
    assert memo.crl_der(load_crl(der, "c")) is None  # another object, not loaded with this memo
    assert CertMemo().crl_der(loaded) is None
    forged = load_crl(_crl(pki.ca.subject, pki.root_key), "f")
    with pytest.raises(VerificationError) as info:
        verify_crl(forged, pki.ca, what="c", step="t", memo=memo)
    assert info.value.code == "CRL_INVALID_SIGNATURE"


def test_load_crl_der_returns_the_der_of_every_encoding(real: Vector) -> None:
    der = real.collateral.pck_crl
    assert isinstance(der, bytes)
    for encoded in (der, der.hex(), load_crl(der, "x").public_bytes(Encoding.PEM), der + b"\x00\x00"):
        crl, raw = load_crl_der(encoded, "crl")
        assert raw == der
        assert crl == load_crl(der, "x")
    with pytest.raises(CollateralError):
        load_crl_der(b"\x30\x03\x00", "crl")


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the data of every ECDSA check (the real check still runs)."""
    seen: list[bytes] = []
    real_verify: Callable[[ec.EllipticCurvePublicKey, bytes, bytes], bool] = certs._ecdsa_verify

    def spy(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
        seen.append(key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) + data)
        return real_verify(key, signature, data)

    monkeypatch.setattr(certs, "_ecdsa_verify", spy)
    return seen


@pytest.mark.parametrize("tee", ["tdx", "sgx", "tdx-v5"])
def test_cold_verification_checks_nine_signatures_once_each(
    vectors: Path, tee: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    vector = load(vectors, tee)
    seen = _counting(monkeypatch)
    verifier = QuoteVerifier()
    verdict = verifier.verify(vector.raw, vector.collateral, now=vector.now)
    assert verdict.status == vector.status
    # PCK<-CA, CA<-root, TCB signing<-root, root CRL, PCK CRL, TCB Info, QE Identity, QE report, quote.
    assert len(seen) == 9
    assert len(set(seen)) == 9
    seen.clear()
    verifier.verify(vector.raw, vector.collateral, now=vector.now)
    assert len(seen) == 1  # warm: only the quote signature


def test_cert_info_refuses_non_der(pki: _Pki) -> None:
    der = pki.root.public_bytes(Encoding.DER)
    assert CertInfo(pki.root, der).subject == pki.root.subject.public_bytes()
    for bad in (b"\x30\x80\x00\x00", der + b"\x00", der[:-1], b"\x31" + der[1:]):
        with pytest.raises(certs._DerError):
            CertInfo(pki.root, bad)


@pytest.mark.parametrize(
    "raw",
    [
        bytes(64),
        b"\x80" + bytes(63),
        bytes(31) + b"\x01" + bytes(31) + b"\x7f",
        b"\xff" * 64,
        bytes(range(64)),
        bytes(range(128, 192)),
    ],
)
def test_raw_signature_to_der_is_canonical(raw: bytes) -> None:
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    assert raw_signature_to_der(raw) == encode_dss_signature(r, s)
    assert decode_dss_signature(raw_signature_to_der(raw)) == (r, s)


def _ca_flag(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def test_raw_basic_constraints_agree_with_cryptography(real: Vector, pki: _Pki) -> None:
    quote = parse_quote(real.raw)
    memo = CertMemo()
    found = list(load_pem_chain(quote.pck_chain_pem, "pck", cache=memo))
    found += load_pem_chain(real.collateral.tcb_info_issuer_chain, "tcb", cache=memo)
    found += [pki.root, pki.ca, pki.leaf()]
    key = ec.generate_private_key(ec.SECP256R1())
    base = (
        x509.CertificateBuilder()
        .subject_name(_name("x"))
        .issuer_name(_name("x"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
    )
    found.append(base.sign(key, hashes.SHA256()))  # no extensions at all
    found.append(
        base.add_extension(x509.BasicConstraints(ca=True, path_length=3), critical=True).sign(
            key, hashes.SHA256()
        )
    )
    found.append(
        base.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False).sign(
            key, hashes.SHA256()
        )
    )
    decided = 0
    for cert in found:
        info = memo.info(cert)
        raw = info.raw_is_ca()
        assert raw is None or raw == _ca_flag(cert), cert.subject
        decided += raw is not None
        assert certs._is_ca(info) == _ca_flag(cert)
    assert decided == len(found)  # plain certificates never need the fallback


def test_raw_basic_constraints_decline_oddities(pki: _Pki) -> None:
    info = cert_info(pki.ca)
    der = info.der
    bc = der.index(bytes.fromhex("0603551d13"))
    # cA encoded as an explicit FALSE is not DER: the raw reader declines, cryptography decides.
    value = der.index(b"\x30\x03\x01\x01\xff", bc) + 2
    odd = CertInfo(pki.ca, der[:value] + b"\x01\x01\x00" + der[value + 3 :])
    assert odd.raw_is_ca() is None
    critical = der.index(b"\x01\x01\xff", bc)  # the extension's critical flag
    assert critical < value
    odd = CertInfo(pki.ca, der[:critical] + b"\x01\x01\x00" + der[critical + 3 :])
    assert odd.raw_is_ca() is None
    truncated = CertInfo(pki.ca, der)
    truncated._rest = (truncated._rest[0], truncated._rest[1] - 1)
    assert truncated.raw_is_ca() is None


@pytest.mark.parametrize("error", [CollateralError, ParseError])
def test_unknown_certificate_version_is_a_clear_error(real: Vector, error: type[CollateralError]) -> None:
    der = load_pem_chain(real.collateral.tcb_info_issuer_chain, "tcb")[0].public_bytes(Encoding.DER)
    version = der.index(b"\xa0\x03\x02\x01\x02")
    bad = der[: version + 4] + b"\x6a" + der[version + 5 :]
    pem = "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(bad).decode() + "\n-----END CERTIFICATE-----\n"
    with pytest.raises(error, match="not a valid certificate"):
        load_pem_chain(pem, "chain", error=error)

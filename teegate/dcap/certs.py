"""X.509 for DCAP: PEM chains, CRLs and raw ECDSA signatures, checked at a caller-given time.

Every chain must end at a root whose *public key* is one of the caller's
:class:`~teegate.dcap.anchors.TrustAnchors` (the root certificate itself arrives in the
collateral or the quote and is never trusted for what it says about itself). Each link is
checked for issuer name, signature, CA flag and validity window at ``now``; every
non-root certificate must be covered by a verified CRL from its issuer (unknown revocation
status is refused, as Intel's QVL and dcap-qvl do).

Encodings accepted for a CRL are decided by its first bytes, never by trying parsers in
turn: ``-----BEGIN X509 CRL-----`` PEM, DER (starts with an ASN.1 SEQUENCE, 0x30), or the
hex text of DER (what PCCS's ``rootcacrl`` and Intel's collateral v3.0 carry).

Speed: signatures are checked over the TBS bytes sliced out of the original DER by a small
strict DER walk (:class:`CertInfo`), names are compared as raw DER, and only
ecdsa-with-SHA256 by a P-256 key is accepted. A :class:`CertMemo` (one per verifier, never
module-level) parses each certificate once and checks each (certificate, issuer) link once.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.dcap.anchors import TrustAnchor, TrustAnchors
from teegate.errors import CollateralError, EvidenceError, ParseError, VerificationError

__all__ = [
    "MAX_CHAIN_CERTS",
    "MAX_CRL_BYTES",
    "MAX_PEM_CHAIN_BYTES",
    "CertInfo",
    "CertMemo",
    "VerifiedChain",
    "VerifiedCrl",
    "cert_info",
    "ec_point",
    "find_anchor",
    "load_crl",
    "load_crl_der",
    "load_pem_chain",
    "public_key_from_point",
    "raw_signature_to_der",
    "verify_chain",
    "verify_crl",
    "verify_raw_signature",
]

#: Certificates accepted in one PEM chain (Intel chains hold 2 or 3).
MAX_CHAIN_CERTS = 5
#: Bytes accepted for one PEM chain (a PCK chain is about 3.7 KiB).
MAX_PEM_CHAIN_BYTES = 64 * 1024
#: Bytes accepted for one CRL in any encoding (Intel's processor PCK CRL is a few KiB).
MAX_CRL_BYTES = 512 * 1024

_MAX_MEMO = 256
_PEM_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_CERT_END = b"-----END CERTIFICATE-----"
_PEM_CRL_BEGIN = b"-----BEGIN X509 CRL-----"
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
#: DER AlgorithmIdentifier of ecdsa-with-SHA256 (1.2.840.10045.4.3.2, parameters absent).
_ECDSA_SHA256_ALG_DER = bytes.fromhex("300a06082a8648ce3d040302")
#: DER AlgorithmIdentifier of an EC public key on P-256 (id-ecPublicKey, prime256v1).
_P256_SPKI_ALG_DER = bytes.fromhex("301306072a8648ce3d020106082a8648ce3d030107")
#: DER of the basicConstraints extension's OID (2.5.29.19), tag and length included.
_BASIC_CONSTRAINTS_OID_DER = bytes.fromhex("0603551d13")


class _DerError(ValueError):
    """Malformed DER met by the strict walk below."""


def _tlv(data: bytes, offset: int, end: int, tag: int, name: str) -> tuple[int, int]:
    """(value start, value end) of the DER element with ``tag`` at ``offset``, inside ``end``.

    Strict DER: one-byte tag, definite and minimally encoded length (at most 3 length bytes,
    which covers :data:`MAX_CRL_BYTES`).
    """
    if offset + 2 > end:
        raise _DerError(f"{name}: truncated DER element at offset {offset}")
    if data[offset] != tag:
        raise _DerError(f"{name}: expected DER tag 0x{tag:02x} at offset {offset}, got 0x{data[offset]:02x}")
    length = data[offset + 1]
    pos = offset + 2
    if length >= 0x80:
        count = length - 0x80
        if not 1 <= count <= 3 or pos + count > end:
            raise _DerError(f"{name}: bad DER length at offset {offset + 1}")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise _DerError(f"{name}: DER length not minimally encoded at offset {offset + 1}")
        pos += count
    stop = pos + length
    if stop > end:
        raise _DerError(f"{name}: DER element at offset {offset} runs past its container")
    return pos, stop


def _signed_parts(der: bytes, name: str) -> tuple[int, int, bytes, bytes, bytes]:
    """Split a signed SEQUENCE {tbs, algorithm, BIT STRING}: (tbs value start, tbs value end,
    tbs DER, algorithm DER, signature bytes). Nothing may follow the outer element."""
    start, end = _tlv(der, 0, len(der), 0x30, name)
    if end != len(der):
        raise _DerError(f"{name}: {len(der) - end} bytes after the DER element")
    tbs_start, tbs_end = _tlv(der, start, end, 0x30, name + " TBS")
    _alg_start, alg_end = _tlv(der, tbs_end, end, 0x30, name + " signatureAlgorithm")
    bits_start, bits_end = _tlv(der, alg_end, end, 0x03, name + " signatureValue")
    if bits_end != end:
        raise _DerError(f"{name}: data after signatureValue")
    if bits_start == bits_end or der[bits_start] != 0:
        raise _DerError(f"{name}: signatureValue has unused bits")
    return tbs_start, tbs_end, der[start:tbs_end], der[tbs_end:alg_end], der[bits_start + 1 : bits_end]


class CertInfo:
    """Raw DER views of one parsed certificate, sliced from its original encoding (never re-encoded)."""

    __slots__ = (
        "_key",
        "_rest",
        "cert",
        "der",
        "issuer",
        "point",
        "signature",
        "signature_algorithm",
        "subject",
        "tbs",
        "tbs_signature_algorithm",
    )

    def __init__(self, cert: x509.Certificate, der: bytes) -> None:
        tbs_start, tbs_end, tbs, alg, sig = _signed_parts(der, "certificate")
        pos = tbs_start
        if pos < tbs_end and der[pos] == 0xA0:
            _s, pos = _tlv(der, pos, tbs_end, 0xA0, "version")
        _s, pos = _tlv(der, pos, tbs_end, 0x02, "serialNumber")
        _s, after = _tlv(der, pos, tbs_end, 0x30, "signature")
        inner_alg = der[pos:after]
        _s, pos = _tlv(der, after, tbs_end, 0x30, "issuer")
        issuer = der[after:pos]
        _s, after = _tlv(der, pos, tbs_end, 0x30, "validity")
        _s, pos = _tlv(der, after, tbs_end, 0x30, "subject")
        subject = der[after:pos]
        spki_start, spki_end = _tlv(der, pos, tbs_end, 0x30, "subjectPublicKeyInfo")
        _s, alg_end = _tlv(der, spki_start, spki_end, 0x30, "subjectPublicKeyInfo algorithm")
        point: bytes | None = None
        if der[spki_start:alg_end] == _P256_SPKI_ALG_DER:
            key_start, key_end = _tlv(der, alg_end, spki_end, 0x03, "subjectPublicKey")
            if (
                key_end == spki_end
                and key_end - key_start == 66
                and der[key_start : key_start + 2] == b"\x00\x04"
            ):
                point = der[key_start + 1 : key_end]
        self._rest = (spki_end, tbs_end)  # issuer/subject unique IDs and extensions
        self.cert = cert
        self.der = der
        self.tbs = tbs
        self.signature_algorithm = alg
        self.tbs_signature_algorithm = inner_alg
        self.signature = sig
        self.issuer = issuer
        self.subject = subject
        #: The uncompressed SEC1 point when the key is on P-256, else None.
        self.point = point
        self._key: ec.EllipticCurvePublicKey | None = None

    def raw_is_ca(self) -> bool | None:
        """basicConstraints cA read from the raw extensions; None when anything is unusual.

        Strict: extensions well formed, no OID twice, basicConstraints a SEQUENCE of an
        optional BOOLEAN TRUE and an optional INTEGER. None sends the caller to cryptography.
        """
        der = self.der
        pos, end = self._rest
        try:
            while pos < end and der[pos] in (0x81, 0x82):  # issuerUniqueID, subjectUniqueID
                _s, pos = _tlv(der, pos, end, der[pos], "uniqueIdentifier")
            if pos == end:
                return False  # no extensions: not a CA
            ext_start, ext_end = _tlv(der, pos, end, 0xA3, "extensions")
            seq_start, seq_end = _tlv(der, ext_start, ext_end, 0x30, "Extensions")
            if ext_end != end or seq_end != ext_end or seq_start == seq_end:
                return None
            seen: set[bytes] = set()
            ca = False
            pos = seq_start
            while pos < seq_end:
                item_start, item_end = _tlv(der, pos, seq_end, 0x30, "Extension")
                _s, oid_end = _tlv(der, item_start, item_end, 0x06, "extnID")
                oid = der[item_start:oid_end]
                if oid in seen:
                    return None
                seen.add(oid)
                at = oid_end
                if der[at] == 0x01:
                    if der[at : at + 3] != b"\x01\x01\xff":  # DER: FALSE is never encoded
                        return None
                    at += 3
                value_start, value_end = _tlv(der, at, item_end, 0x04, "extnValue")
                if value_end != item_end:
                    return None
                if oid == _BASIC_CONSTRAINTS_OID_DER:
                    bc_start, bc_end = _tlv(der, value_start, value_end, 0x30, "BasicConstraints")
                    if bc_end != value_end:
                        return None
                    at = bc_start
                    if at < bc_end and der[at] == 0x01:
                        if der[at : at + 3] != b"\x01\x01\xff":  # DER: FALSE is never encoded
                            return None
                        ca = True
                        at += 3
                    if at < bc_end:
                        _s, at = _tlv(der, at, bc_end, 0x02, "pathLenConstraint")
                    if at != bc_end:
                        return None
                pos = item_end
        except (_DerError, IndexError):
            return None
        return ca

    def p256_key(self) -> ec.EllipticCurvePublicKey:
        """The certificate's public key; UNSUPPORTED_KEY unless it is a valid P-256 key."""
        key = self._key
        if key is None:
            try:
                loaded = self.cert.public_key()
            except ValueError:
                loaded = None
            if (
                self.point is None
                or not isinstance(loaded, ec.EllipticCurvePublicKey)
                or not isinstance(loaded.curve, ec.SECP256R1)
            ):
                raise VerificationError(
                    "UNSUPPORTED_KEY", f"certificate {_cn(self.cert)!r} does not hold a P-256 EC key"
                )
            key = self._key = loaded
        return key


def cert_info(cert: x509.Certificate) -> CertInfo:
    """Raw DER views of ``cert`` (re-encodes it; a :class:`CertMemo` keeps the original DER)."""
    try:
        return CertInfo(cert, cert.public_bytes(Encoding.DER))
    except _DerError as exc:
        raise VerificationError("CERT_CHAIN_BROKEN", f"certificate not in strict DER: {exc}") from None


class CertMemo:
    """Per-verifier memory (bounded): certificates parsed once, (certificate, issuer) links checked once.

    Never module-level: a fresh verifier starts with an empty memo.
    """

    __slots__ = ("_by_der", "_by_id", "_by_pem", "_crl_der", "_issued")

    def __init__(self) -> None:
        self._by_pem: dict[bytes, CertInfo] = {}
        #: id(CRL) -> (CRL, the DER it was parsed from), filled only by :func:`load_crl`.
        self._crl_der: dict[int, tuple[x509.CertificateRevocationList, bytes]] = {}
        self._by_der: dict[bytes, CertInfo] = {}
        self._by_id: dict[int, CertInfo] = {}
        self._issued: set[tuple[CertInfo, CertInfo]] = set()

    def _add(self, info: CertInfo, pem: bytes | None) -> None:
        if len(self._by_der) >= _MAX_MEMO:
            self.clear()  # bounded: start over rather than grow
        self._by_der[info.der] = info
        self._by_id[id(info.cert)] = info  # the entry keeps the certificate (and its id) alive
        if pem is not None:
            self._by_pem[pem] = info

    def clear(self) -> None:
        self._by_pem.clear()
        self._by_der.clear()
        self._by_id.clear()
        self._issued.clear()
        self._crl_der.clear()

    def info(self, cert: x509.Certificate) -> CertInfo:
        found = self._by_id.get(id(cert))
        if found is not None and found.cert is cert:
            return found
        info = cert_info(cert)
        self._add(info, None)
        return info

    def _add_crl(self, crl: x509.CertificateRevocationList, der: bytes) -> None:
        if len(self._crl_der) >= _MAX_MEMO:
            self._crl_der.clear()
        self._crl_der[id(crl)] = (crl, der)  # the entry keeps the CRL (and its id) alive

    def crl_der(self, crl: x509.CertificateRevocationList) -> bytes | None:
        """The DER ``crl`` was parsed from, if :func:`load_crl` parsed it with this memo."""
        found = self._crl_der.get(id(crl))
        return found[1] if found is not None and found[0] is crl else None

    def link_checked(self, cert: CertInfo, issuer: CertInfo) -> bool:
        return (cert, issuer) in self._issued

    def remember_link(self, cert: CertInfo, issuer: CertInfo) -> None:
        if len(self._issued) >= _MAX_MEMO:
            self._issued.clear()
        self._issued.add((cert, issuer))


def _chain_error(error: type[EvidenceError], what: str, message: str) -> EvidenceError:
    """``error`` for ``what``; ParseError takes the field apart from the message."""
    if issubclass(error, ParseError):
        return error(what, message)
    return error(f"{what}: {message}")


def _pem_block_der(block: bytes) -> bytes:
    """The DER inside one ``-----BEGIN CERTIFICATE-----`` block (strict base64, whitespace ignored)."""
    body = block[len(_PEM_CERT_BEGIN) : -len(_PEM_CERT_END)]
    return binascii.a2b_base64(b"".join(body.split()), strict_mode=True)


def _as_bytes(data: str | bytes) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("ascii")
        except UnicodeEncodeError:
            raise CollateralError("CRL text contains non-ASCII characters") from None
    return data


def load_pem_chain(
    pem: str | bytes,
    what: str,
    *,
    error: type[EvidenceError] = CollateralError,
    cache: CertMemo | None = None,
) -> tuple[x509.Certificate, ...]:
    """Parse a concatenation of PEM certificates (leaf first); trailing NULs/whitespace allowed.

    Only whitespace may surround the blocks. ``cache`` remembers parsed certificates by PEM
    block and by DER: the root and CA certificates recur in every chain of one verification.
    """
    if isinstance(pem, str):
        if not pem.isascii():
            raise _chain_error(error, what, "PEM chain contains non-ASCII characters")
        data = pem.encode("ascii")
    else:
        data = pem
    if len(data) > MAX_PEM_CHAIN_BYTES:
        raise _chain_error(error, what, f"PEM chain larger than {MAX_PEM_CHAIN_BYTES} bytes")
    parts = data.rstrip(b"\x00 \t\r\n").split(_PEM_CERT_END)
    if parts[-1].strip():
        raise _chain_error(error, what, "text after the last PEM certificate or an unterminated block")
    blocks = parts[:-1]
    if not blocks:
        raise _chain_error(error, what, "no PEM certificate found")
    if len(blocks) > MAX_CHAIN_CERTS:
        raise _chain_error(error, what, f"{len(blocks)} certificates, at most {MAX_CHAIN_CERTS} accepted")
    certs = []
    memo = cache if cache is not None else CertMemo()
    for index, part in enumerate(blocks):
        block = part.strip() + _PEM_CERT_END
        if not block.startswith(_PEM_CERT_BEGIN) or block.count(_PEM_CERT_BEGIN) != 1:
            raise _chain_error(error, what, f"certificate {index} is not a single PEM CERTIFICATE block")
        info = memo._by_pem.get(block)
        if info is None:
            info = _load_block(block, memo, what, index, error)
        certs.append(info.cert)
    return tuple(certs)


def _load_block(block: bytes, memo: CertMemo, what: str, index: int, error: type[EvidenceError]) -> CertInfo:
    try:
        der = _pem_block_der(block)
    except binascii.Error as exc:
        raise _chain_error(error, what, f"certificate {index} is not valid base64: {exc}") from None
    info = memo._by_der.get(der)
    if info is None:
        try:
            cert = x509.load_der_x509_certificate(der)
            info = CertInfo(cert, der)
        except (ValueError, x509.InvalidVersion) as exc:  # _DerError is a ValueError, InvalidVersion not
            raise _chain_error(
                error, what, f"certificate {index} is not a valid certificate: {exc}"
            ) from None
    memo._add(info, block)
    return info


def load_crl(
    data: str | bytes, what: str, *, cache: CertMemo | None = None
) -> x509.CertificateRevocationList:
    """Parse a CRL given as DER, PEM or hex text of DER (decided by the first bytes).

    With ``cache``, the DER it came from is remembered for :func:`verify_crl` (no re-encoding).
    """
    crl, der = load_crl_der(data, what)
    if cache is not None:
        cache._add_crl(crl, der)
    return crl


def load_crl_der(data: str | bytes, what: str) -> tuple[x509.CertificateRevocationList, bytes]:
    """:func:`load_crl` and the CRL's DER (pass it to :func:`verify_crl` to avoid re-encoding)."""
    raw = _as_bytes(data) if isinstance(data, str) else data
    if len(raw) > MAX_CRL_BYTES:
        raise CollateralError(f"{what}: CRL larger than {MAX_CRL_BYTES} bytes")
    if not raw:
        raise CollateralError(f"{what}: empty CRL")
    try:
        if raw[0] == 0x30:
            # DER ends where its outer length says: its last bytes are signature bytes and may
            # be NUL or whitespace values, so nothing is stripped; only a NUL padding after the
            # DER (C structures such as sgx_ql_qve_collateral_t terminate items) is dropped.
            der = _der_prefix(raw, what)
            return x509.load_der_x509_crl(der), der
        body = raw.strip(b"\x00 \t\r\n")  # text forms only
        if not body:
            raise CollateralError(f"{what}: empty CRL")
        if body.startswith(_PEM_CRL_BEGIN):
            crl = x509.load_pem_x509_crl(body)
            return crl, crl.public_bytes(Encoding.DER)
        if set(body) <= _HEX_DIGITS:
            der = binascii.unhexlify(body)
            return x509.load_der_x509_crl(der), der
    except (ValueError, binascii.Error, x509.InvalidVersion) as exc:
        raise CollateralError(f"{what}: malformed CRL: {exc}") from None
    raise CollateralError(f"{what}: not a CRL (expected DER, PEM 'X509 CRL' or hex of DER)")


def _der_prefix(raw: bytes, what: str) -> bytes:
    """``raw`` cut at the end of its outer DER element; only NUL bytes may follow it."""
    if len(raw) < 2:
        raise CollateralError(f"{what}: truncated DER CRL")
    first = raw[1]
    if first < 0x80:
        end = 2 + first
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or len(raw) < 2 + count:
            raise CollateralError(f"{what}: bad DER length in CRL")
        end = 2 + count + int.from_bytes(raw[2 : 2 + count], "big")
    if end > len(raw):
        raise CollateralError(f"{what}: truncated DER CRL ({len(raw)} of {end} bytes)")
    if raw[end:].strip(b"\x00"):
        raise CollateralError(f"{what}: {len(raw) - end} unexpected bytes after the DER CRL")
    return raw[:end]


def ec_point(cert: x509.Certificate) -> bytes:
    """The certificate's P-256 public key as an uncompressed SEC1 point."""
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("UNSUPPORTED_KEY", f"certificate {_cn(cert)!r} does not hold a P-256 EC key")
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def public_key_from_point(point: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """A P-256 key from 64 raw bytes X||Y (as in quotes) or a 65-byte SEC1 point."""
    if len(point) == 64:
        point = b"\x04" + point
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise VerificationError("INVALID_PUBLIC_KEY", f"{what} is not a point on P-256") from None


def raw_signature_to_der(sig: bytes) -> bytes:
    """Raw big-endian r||s (64 bytes) → DER ECDSA-Sig-Value."""
    if len(sig) != 64:
        raise VerificationError(
            "INVALID_SIGNATURE_FORMAT", f"raw ECDSA signature is {len(sig)} bytes, not 64"
        )
    r = _der_integer(sig[:32])
    s = _der_integer(sig[32:])
    return b"\x30" + bytes([len(r) + len(s)]) + r + s


def _der_integer(value: bytes) -> bytes:
    """DER INTEGER of an unsigned big-endian value of at most 32 bytes (minimal, non-negative)."""
    value = value.lstrip(b"\x00") or b"\x00"
    if value[0] & 0x80:
        value = b"\x00" + value
    return b"\x02" + bytes([len(value)]) + value


def verify_raw_signature(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    """ECDSA-P256-SHA256 check of a raw r||s signature; False when it does not verify."""
    if len(sig) != 64:
        return False
    return _ecdsa_verify(key, raw_signature_to_der(sig), data)


def _cn(cert: x509.Certificate) -> str:
    try:
        attrs = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except ValueError:
        return cert.subject.rfc4514_string()
    return str(attrs[0].value) if attrs else cert.subject.rfc4514_string()


@dataclass(frozen=True)
class VerifiedCrl:
    """A CRL whose signature was checked against its issuer certificate."""

    crl: x509.CertificateRevocationList
    #: The issuer's public key (uncompressed SEC1): a certificate is covered by this CRL when
    #: its (verified) issuer certificate holds this key.
    issuer_key: bytes
    this_update: datetime
    next_update: datetime

    def is_revoked(self, cert: x509.Certificate) -> bool:
        return self.crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None


def verify_crl(
    crl: x509.CertificateRevocationList,
    issuer: x509.Certificate,
    *,
    what: str,
    step: str,
    memo: CertMemo | None = None,
) -> VerifiedCrl:
    """Check a CRL's algorithm, signature and issuer name against ``issuer``.

    The signature is checked over the DER the CRL was parsed from when ``memo`` holds it
    (:func:`load_crl` with the same memo), else over its re-encoding.
    Its time window is returned, not checked: callers decide what an expired CRL means.
    """
    info = (memo if memo is not None else CertMemo()).info(issuer)
    key = info.cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("UNSUPPORTED_KEY", f"{what} issuer does not hold an EC key", step=step)
    der = memo.crl_der(crl) if memo is not None else None
    if der is None:
        der = crl.public_bytes(Encoding.DER)
    try:
        tbs_start, tbs_end, tbs, alg, sig = _signed_parts(der, what)
        pos = tbs_start
        if pos < tbs_end and der[pos] == 0x02:
            _s, pos = _tlv(der, pos, tbs_end, 0x02, "version")
        _s, after = _tlv(der, pos, tbs_end, 0x30, "signature")
        inner_alg = der[pos:after]
        _s, pos = _tlv(der, after, tbs_end, 0x30, "issuer")
        crl_issuer = der[after:pos]
    except _DerError as exc:
        raise VerificationError("CRL_INVALID", f"{what} is not strict DER: {exc}", step=step) from None
    if alg != _ECDSA_SHA256_ALG_DER:
        raise VerificationError(
            "UNSUPPORTED_SIGNATURE_ALGORITHM",
            f"{what} is signed with {crl.signature_algorithm_oid.dotted_string}; "
            "only ecdsa-with-SHA256 is accepted",
            step=step,
        )
    valid = inner_alg == alg and _ecdsa_verify(info.p256_key(), sig, tbs)
    if not valid or crl_issuer != info.subject:
        # Name objects are built only to explain the failure (they are slow).
        if crl_issuer != info.subject:
            raise VerificationError(
                "CRL_ISSUER_MISMATCH",
                f"{what} is issued by {crl.issuer.rfc4514_string()!r}, "
                f"not {issuer.subject.rfc4514_string()!r}",
                step=step,
            )
        raise VerificationError("CRL_INVALID_SIGNATURE", f"{what} signature does not verify", step=step)
    next_update = crl.next_update_utc
    if next_update is None:
        raise VerificationError("CRL_INVALID", f"{what} has no nextUpdate", step=step)
    assert info.point is not None  # p256_key() checked it
    return VerifiedCrl(
        crl=crl,
        issuer_key=info.point,
        this_update=crl.last_update_utc,
        next_update=next_update,
    )


def _ecdsa_verify(key: ec.EllipticCurvePublicKey, der_signature: bytes, data: bytes) -> bool:
    """The one place every ECDSA-P256-SHA256 check of a verification goes through."""
    try:
        key.verify(der_signature, data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class VerifiedChain:
    """A chain (leaf first) that ends at ``anchor``; valid for any time in [not_before, not_after]."""

    certs: tuple[x509.Certificate, ...]
    anchor: TrustAnchor
    not_before: datetime
    not_after: datetime

    @property
    def leaf(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def root(self) -> x509.Certificate:
        return self.certs[-1]


def find_anchor(root: x509.Certificate, anchors: TrustAnchors, *, what: str, step: str) -> TrustAnchor:
    """The trust anchor whose key the (self-signed) ``root`` holds, else ROOT_CA_UNTRUSTED."""
    return _find_anchor(root, ec_point(root), anchors, what=what, step=step)


def _find_anchor(
    root: x509.Certificate, point: bytes | None, anchors: TrustAnchors, *, what: str, step: str
) -> TrustAnchor:
    if point is None:
        raise VerificationError("UNSUPPORTED_KEY", f"certificate {_cn(root)!r} does not hold a P-256 EC key")
    anchor = anchors.find(point)
    if anchor is None:
        raise VerificationError(
            "ROOT_CA_UNTRUSTED",
            f"{what} ends at {_cn(root)!r} whose public key is not a trusted root key",
            step=step,
        )
    return anchor


def verify_chain(
    certs: Sequence[x509.Certificate],
    anchors: TrustAnchors,
    now: datetime,
    *,
    what: str,
    step: str,
    crls: Sequence[VerifiedCrl],
    leaf_revoked_code: str = "CERT_REVOKED",
    min_length: int = 2,
    memo: CertMemo | None = None,
    revocation_step: str | None = None,
) -> VerifiedChain:
    """Check ``certs`` (leaf first, root last) up to a pinned root at time ``now``.

    ``memo`` remembers (certificate, issuer) links whose signature already verified: the
    same root and CA certificates recur in every chain of a collateral bundle and quote.
    """
    if len(certs) < min_length:
        raise VerificationError(
            "CERT_CHAIN_INCOMPLETE", f"{what} has {len(certs)} certificate(s), need {min_length}", step=step
        )
    if len(certs) > MAX_CHAIN_CERTS:
        raise VerificationError("CERT_CHAIN_TOO_LONG", f"{what} has {len(certs)} certificates", step=step)
    if memo is None:
        memo = CertMemo()
    infos = [memo.info(cert) for cert in certs]
    root = certs[-1]
    anchor = _find_anchor(root, infos[-1].point, anchors, what=what, step=step)
    starts = [cert.not_valid_before_utc for cert in certs]
    ends = [cert.not_valid_after_utc for cert in certs]
    not_before = max(starts)
    not_after = min(ends)
    for cert, start, end in zip(certs, starts, ends, strict=True):
        if now < start:
            raise VerificationError(
                "CERT_NOT_YET_VALID", f"{what}: {_cn(cert)!r} is valid from {start.isoformat()}", step=step
            )
        if now > end:
            raise VerificationError(
                "CERT_EXPIRED", f"{what}: {_cn(cert)!r} expired at {end.isoformat()}", step=step
            )
    # The root is trusted because its key is pinned; like webpki (dcap-qvl) we do not check
    # its self-signature, which would prove nothing more.
    for index, cert in enumerate(certs[:-1]):
        issuer = certs[index + 1]
        info = infos[index]
        issuer_info = infos[index + 1]
        if not memo.link_checked(info, issuer_info):
            # The root is trusted for its key alone; any other issuer must be a CA, so that
            # a leaked leaf key (say a PCK key) cannot issue certificates of its own.
            if issuer is not root and not _is_ca(issuer_info):
                raise VerificationError(
                    "CERT_CHAIN_BROKEN", f"{what}: issuer {_cn(issuer)!r} is not a CA", step=step
                )
            _check_issued_by(info, issuer_info, what=what, step=step)
            memo.remember_link(info, issuer_info)
        issuer_key = issuer_info.point  # P-256 (checked with the link's signature)
        covering = [crl for crl in crls if crl.issuer_key == issuer_key]
        if not covering:
            raise VerificationError(
                "CRL_MISSING",
                f"{what}: no CRL from {_cn(issuer)!r} to check {_cn(cert)!r} against",
                step=revocation_step or step,
            )
        if any(crl.is_revoked(cert) for crl in covering):
            code = leaf_revoked_code if index == 0 else "INTERMEDIATE_CA_REVOKED"
            raise VerificationError(
                code,
                f"{what}: {_cn(cert)!r} (serial {cert.serial_number:X}) is revoked",
                step=revocation_step or step,
            )
    return VerifiedChain(certs=tuple(certs), anchor=anchor, not_before=not_before, not_after=not_after)


def _is_ca(info: CertInfo) -> bool:
    raw = info.raw_is_ca()
    if raw is not None:
        return raw
    cert = info.cert
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(ext.value.ca)


def _check_issued_by(cert: CertInfo, issuer: CertInfo, *, what: str, step: str) -> None:
    """``cert`` is signed by ``issuer``: algorithm, issuer name (raw DER), P-256 key, signature."""
    if cert.signature_algorithm != _ECDSA_SHA256_ALG_DER:
        raise VerificationError(
            "UNSUPPORTED_SIGNATURE_ALGORITHM",
            f"{what}: {_cn(cert.cert)!r} is signed with "
            f"{cert.cert.signature_algorithm_oid.dotted_string}; only ecdsa-with-SHA256 is accepted",
            step=step,
        )
    if cert.tbs_signature_algorithm != cert.signature_algorithm:
        raise VerificationError(
            "CERT_CHAIN_BROKEN",
            f"{what}: {_cn(cert.cert)!r} names different inner and outer signature algorithms",
            step=step,
        )
    if cert.issuer != issuer.subject:
        raise VerificationError(
            "CERT_CHAIN_BROKEN",
            f"{what}: {_cn(cert.cert)!r} is not issued by {_cn(issuer.cert)!r}: "
            "its issuer name is not that certificate's subject",
            step=step,
        )
    if not _ecdsa_verify(issuer.p256_key(), cert.signature, cert.tbs):
        raise VerificationError(
            "CERT_INVALID_SIGNATURE",
            f"{what}: signature of {_cn(cert.cert)!r} by {_cn(issuer.cert)!r} does not verify",
            step=step,
        )

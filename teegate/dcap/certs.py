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
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.dcap.anchors import TrustAnchor, TrustAnchors
from teegate.errors import CollateralError, EvidenceError, VerificationError

__all__ = [
    "MAX_CHAIN_CERTS",
    "MAX_CRL_BYTES",
    "MAX_PEM_CHAIN_BYTES",
    "VerifiedChain",
    "VerifiedCrl",
    "ec_point",
    "find_anchor",
    "load_crl",
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
    cache: dict[bytes, x509.Certificate] | None = None,
) -> tuple[x509.Certificate, ...]:
    """Parse a concatenation of PEM certificates (leaf first); trailing NULs/whitespace allowed.

    Only whitespace may surround the blocks. ``cache`` maps a PEM block to its parsed
    certificate: the root and CA certificates recur in every chain of one verification.
    """
    if isinstance(pem, str):
        if not pem.isascii():
            raise error(f"{what}: PEM chain contains non-ASCII characters")
        data = pem.encode("ascii")
    else:
        data = pem
    if len(data) > MAX_PEM_CHAIN_BYTES:
        raise error(f"{what}: PEM chain larger than {MAX_PEM_CHAIN_BYTES} bytes")
    parts = data.rstrip(b"\x00 \t\r\n").split(_PEM_CERT_END)
    if parts[-1].strip():
        raise error(f"{what}: text after the last PEM certificate or an unterminated block")
    blocks = parts[:-1]
    if not blocks:
        raise error(f"{what}: no PEM certificate found")
    if len(blocks) > MAX_CHAIN_CERTS:
        raise error(f"{what}: {len(blocks)} certificates, at most {MAX_CHAIN_CERTS} accepted")
    certs = []
    for index, part in enumerate(blocks):
        block = part.strip() + _PEM_CERT_END
        if not block.startswith(_PEM_CERT_BEGIN) or block.count(_PEM_CERT_BEGIN) != 1:
            raise error(f"{what}: certificate {index} is not a single PEM CERTIFICATE block")
        cert = cache.get(block) if cache is not None else None
        if cert is None:
            try:
                cert = x509.load_pem_x509_certificate(block)
            except ValueError as exc:
                raise error(f"{what}: certificate {index} is not a valid certificate: {exc}") from None
            if cache is not None:
                if len(cache) >= _MAX_MEMO:
                    cache.clear()  # bounded: start over rather than grow
                cache[block] = cert
        certs.append(cert)
    return tuple(certs)


def load_crl(data: str | bytes, what: str) -> x509.CertificateRevocationList:
    """Parse a CRL given as DER, PEM or hex text of DER (decided by the first bytes)."""
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
            return x509.load_der_x509_crl(_der_prefix(raw, what))
        body = raw.strip(b"\x00 \t\r\n")  # text forms only
        if not body:
            raise CollateralError(f"{what}: empty CRL")
        if body.startswith(_PEM_CRL_BEGIN):
            return x509.load_pem_x509_crl(body)
        if set(body) <= _HEX_DIGITS:
            return x509.load_der_x509_crl(binascii.unhexlify(body))
    except (ValueError, binascii.Error) as exc:
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
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


def verify_raw_signature(key: ec.EllipticCurvePublicKey, sig: bytes, data: bytes) -> bool:
    """ECDSA-P256-SHA256 check of a raw r||s signature; False when it does not verify."""
    if len(sig) != 64:
        return False
    try:
        key.verify(raw_signature_to_der(sig), data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


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
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, *, what: str, step: str
) -> VerifiedCrl:
    """Check a CRL's issuer name and signature against ``issuer``.

    Its time window is returned, not checked: callers decide what an expired CRL means.
    """
    key = issuer.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("UNSUPPORTED_KEY", f"{what} issuer does not hold an EC key", step=step)
    if not crl.is_signature_valid(key):
        # Names are compared only to explain the failure (building Name objects is slow).
        if crl.issuer != issuer.subject:
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
    return VerifiedCrl(
        crl=crl,
        issuer_key=key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        this_update=crl.last_update_utc,
        next_update=next_update,
    )


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
    anchor = anchors.find(ec_point(root))
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
    memo: set[tuple[x509.Certificate, x509.Certificate]] | None = None,
    revocation_step: str | None = None,
) -> VerifiedChain:
    """Check ``certs`` (leaf first, root last) up to a pinned root at time ``now``.

    ``memo`` remembers (certificate, issuer) pairs whose signature already verified: the
    same root and CA certificates recur in every chain of a collateral bundle and quote.
    """
    if len(certs) < min_length:
        raise VerificationError(
            "CERT_CHAIN_INCOMPLETE", f"{what} has {len(certs)} certificate(s), need {min_length}", step=step
        )
    if len(certs) > MAX_CHAIN_CERTS:
        raise VerificationError("CERT_CHAIN_TOO_LONG", f"{what} has {len(certs)} certificates", step=step)
    root = certs[-1]
    anchor = find_anchor(root, anchors, what=what, step=step)
    not_before = max(cert.not_valid_before_utc for cert in certs)
    not_after = min(cert.not_valid_after_utc for cert in certs)
    for cert in certs:
        if now < cert.not_valid_before_utc:
            raise VerificationError(
                "CERT_NOT_YET_VALID",
                f"{what}: {_cn(cert)!r} is valid from {cert.not_valid_before_utc.isoformat()}",
                step=step,
            )
        if now > cert.not_valid_after_utc:
            raise VerificationError(
                "CERT_EXPIRED",
                f"{what}: {_cn(cert)!r} expired at {cert.not_valid_after_utc.isoformat()}",
                step=step,
            )
    # The root is trusted because its key is pinned; like webpki (dcap-qvl) we do not check
    # its self-signature, which would prove nothing more.
    for index, cert in enumerate(certs[:-1]):
        issuer = certs[index + 1]
        if memo is None or (cert, issuer) not in memo:
            # The root is trusted for its key alone; any other issuer must be a CA, so that
            # a leaked leaf key (say a PCK key) cannot issue certificates of its own.
            if issuer is not root and not _is_ca(issuer):
                raise VerificationError(
                    "CERT_CHAIN_BROKEN", f"{what}: issuer {_cn(issuer)!r} is not a CA", step=step
                )
            _check_issued_by(cert, issuer, what=what, step=step)
            if memo is not None:
                if len(memo) >= _MAX_MEMO:
                    memo.clear()  # bounded: start over rather than grow
                memo.add((cert, issuer))
        issuer_key = ec_point(issuer)
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


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        ext = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    except x509.ExtensionNotFound:
        return False
    return bool(ext.value.ca)


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, *, what: str, step: str) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except ValueError as exc:
        raise VerificationError(
            "CERT_CHAIN_BROKEN", f"{what}: {_cn(cert)!r} is not issued by {_cn(issuer)!r}: {exc}", step=step
        ) from None
    except (InvalidSignature, TypeError):
        raise VerificationError(
            "CERT_INVALID_SIGNATURE",
            f"{what}: signature of {_cn(cert)!r} by {_cn(issuer)!r} does not verify",
            step=step,
        ) from None

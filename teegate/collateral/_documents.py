"""Reading collateral documents as PCS serves them, without ever re-serialising signed text.

Shared by the PCS client, the file sources, the cache and the PCCS server: the exact signed
``tcbInfo`` / ``enclaveIdentity`` substring of a PCS body, CRLs in DER, PEM or hex, issuer
chains, and the earliest ``nextUpdate`` of a bundle. Errors name the document they are about.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from cryptography import x509

from teegate.dcap.certs import load_crl_der, load_pem_chain
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralError, CollateralUnavailable, EvidenceError, ParseError

__all__ = [
    "MAX_CHAIN_BYTES",
    "MAX_DOCUMENT_BYTES",
    "BundleInfo",
    "SignedDocument",
    "bundle_info",
    "crl_to_der",
    "document_next_update",
    "issuer_chain",
    "pcs_body",
    "signed_document",
]

#: Upper bound on one PCS document (TCB Info, QE Identity, CRL); real ones are < 20 KiB.
MAX_DOCUMENT_BYTES = 1 << 20
#: Upper bound on an issuer-chain header or file (real ones are ~2 KiB).
MAX_CHAIN_BYTES = 64 * 1024
#: Upper bound on certificates in one issuer chain.
MAX_CHAIN_CERTS = 8

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A signed PCS document: the exact signed JSON text and the raw r||s signature."""

    text: str
    signature: bytes


def _members(body: str, what: str) -> dict[str, tuple[int, int]]:
    """Spans (start, end) of each top-level member value of a JSON object, in ``body``."""
    pos = _WS.match(body, 0).end()  # type: ignore[union-attr]
    if body[pos : pos + 1] != "{":
        raise ParseError(what, "not a JSON object")
    pos += 1
    spans: dict[str, tuple[int, int]] = {}
    while True:
        pos = _WS.match(body, pos).end()  # type: ignore[union-attr]
        if body[pos : pos + 1] == "}" and not spans:
            pos += 1
            break
        try:
            name, pos = _DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError) as exc:
            raise ParseError(what, f"bad JSON member name: {exc}") from None
        if not isinstance(name, str):
            raise ParseError(what, "member name is not a string")
        if name in spans:
            raise ParseError(what, f"duplicate member {name!r}")
        pos = _WS.match(body, pos).end()  # type: ignore[union-attr]
        if body[pos : pos + 1] != ":":
            raise ParseError(what, f"expected ':' after {name!r}")
        pos = _WS.match(body, pos + 1).end()  # type: ignore[union-attr]
        try:
            _value, end = _DECODER.raw_decode(body, pos)
        except (ValueError, RecursionError) as exc:
            raise ParseError(what, f"bad JSON value of {name!r}: {exc}") from None
        spans[name] = (pos, end)
        pos = _WS.match(body, end).end()  # type: ignore[union-attr]
        sep = body[pos : pos + 1]
        pos += 1
        if sep == "}":
            break
        if sep != ",":
            raise ParseError(what, "expected ',' or '}' between members")
    if body[pos:].strip(" \t\r\n\x00"):
        raise ParseError(what, "trailing data after the JSON object")
    return spans


def signed_document(body: str | bytes, member: Literal["tcbInfo", "enclaveIdentity"]) -> SignedDocument:
    """Split a PCS body ``{"<member>":{…},"signature":"<hex>"}`` into exact signed text and signature."""
    what = f"{member} document"
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ParseError(what, f"larger than MAX_DOCUMENT_BYTES ({MAX_DOCUMENT_BYTES})")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(what, "not UTF-8 text") from None
    spans = _members(body, what)
    extra = sorted(set(spans) - {member, "signature"})
    if extra:
        raise ParseError(what, f"unexpected member(s) {', '.join(extra)}")
    if member not in spans or "signature" not in spans:
        missing = [m for m in (member, "signature") if m not in spans]
        raise ParseError(what, f"missing member(s) {', '.join(missing)}")
    start, end = spans[member]
    text = body[start:end]
    if not text.startswith("{"):
        raise ParseError(f"{what}.{member}", "not a JSON object")
    sig_start, sig_end = spans["signature"]
    sig_hex = json.loads(body[sig_start:sig_end])
    if not isinstance(sig_hex, str) or len(sig_hex) != 128:
        raise ParseError(f"{what}.signature", "expected 128 hex digits (ECDSA P-256 r||s)")
    try:
        signature = bytes.fromhex(sig_hex)
    except ValueError:
        raise ParseError(f"{what}.signature", "not hex") from None
    return SignedDocument(text, signature)


def pcs_body(member: Literal["tcbInfo", "enclaveIdentity"], text: str, signature: bytes) -> str:
    """The PCS body for a signed document, exactly as Intel PCS lays it out."""
    return f'{{"{member}":{text},"signature":"{signature.hex()}"}}'


def crl_to_der(data: bytes, what: str) -> bytes:
    """A CRL as DER, from DER, PEM or hex-encoded DER (PCCS serves all three); checked to parse.

    The decoding is the verifier's own (:func:`teegate.dcap.certs.load_crl_der`), so a source
    accepts exactly what verification will.
    """
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ParseError(what, f"larger than MAX_DOCUMENT_BYTES ({MAX_DOCUMENT_BYTES})")
    try:
        _crl, der = load_crl_der(data, what)
    except CollateralError as exc:
        raise ParseError(what, str(exc).removeprefix(f"{what}: ")) from None
    return der


def issuer_chain(text: str | bytes, what: str) -> str:
    """A PEM issuer chain, checked (by the verifier's own :func:`load_pem_chain`) to hold
    1..MAX_CHAIN_CERTS parseable certificates; returned as is."""
    if len(text) > MAX_CHAIN_BYTES:
        raise ParseError(what, f"larger than MAX_CHAIN_BYTES ({MAX_CHAIN_BYTES})")
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise ParseError(what, "not ASCII PEM") from None
    certs = load_pem_chain(text, what, error=ParseError)
    if len(certs) > MAX_CHAIN_CERTS:
        raise ParseError(what, f"{len(certs)} certificates, more than MAX_CHAIN_CERTS ({MAX_CHAIN_CERTS})")
    return text


@dataclass(frozen=True, slots=True)
class BundleInfo:
    """What a bundle says about itself: which key it serves and when each item expires."""

    tee: Literal["sgx", "tdx"]
    fmspc: str
    ca: Literal["platform", "processor"] | None
    next_updates: dict[str, datetime]

    @property
    def next_update(self) -> datetime:
        """The earliest nextUpdate of TCB Info, QE Identity and the CRLs."""
        return min(self.next_updates.values())

    def stale_items(self, now: datetime) -> list[str]:
        """Items whose nextUpdate is at or before ``now``, each with its time."""
        return [
            f"{name} (nextUpdate {when.isoformat()})"
            for name, when in self.next_updates.items()
            if when <= now
        ]

    def matches(self, key: CollateralKey) -> bool:
        return self.tee == key.tee and self.fmspc == key.fmspc and self.ca in (None, key.ca)


def _json_time(obj: dict[str, object], name: str, what: str) -> datetime:
    value = obj.get(name)
    if not isinstance(value, str):
        raise ParseError(f"{what}.{name}", "missing or not a string")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ParseError(f"{what}.{name}", f"{value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ParseError(f"{what}.{name}", f"{value!r} has no time zone")
    return when


def _crl_next_update(der: bytes, what: str) -> tuple[datetime, x509.CertificateRevocationList]:
    try:
        crl = x509.load_der_x509_crl(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise ParseError(what, f"not a DER CRL: {exc}") from None
    when = crl.next_update_utc
    if when is None:
        raise ParseError(f"{what}.nextUpdate", "missing")
    return when, crl


def bundle_info(collateral: Collateral) -> BundleInfo:
    """Parse just enough of a bundle to key and expire it (the verifier checks everything else)."""
    try:
        tcb = json.loads(collateral.tcb_info)
        qe = json.loads(collateral.qe_identity)
    except (ValueError, RecursionError) as exc:
        raise ParseError("collateral.tcb_info/qe_identity", f"not JSON: {exc}") from None
    if not isinstance(tcb, dict) or not isinstance(qe, dict):
        raise ParseError("collateral.tcb_info/qe_identity", "expected JSON objects")
    tcb_id = tcb.get("id", "SGX")  # TCB Info v2 has no id: SGX
    if tcb_id not in ("SGX", "TDX"):
        raise ParseError("collateral.tcb_info.id", f"{tcb_id!r}, expected SGX or TDX")
    fmspc = tcb.get("fmspc")
    if not isinstance(fmspc, str) or len(fmspc) != 12:
        raise ParseError("collateral.tcb_info.fmspc", "missing or not 12 hex digits")
    pck_next, pck_crl = _crl_next_update(collateral.pck_crl, "collateral.pck_crl")
    root_next, _ = _crl_next_update(collateral.root_ca_crl, "collateral.root_ca_crl")
    issuer = pck_crl.issuer.rfc4514_string()
    ca: Literal["platform", "processor"] | None = None
    if "PCK Platform CA" in issuer:
        ca = "platform"
    elif "PCK Processor CA" in issuer:
        ca = "processor"
    return BundleInfo(
        tee="tdx" if tcb_id == "TDX" else "sgx",
        fmspc=fmspc.upper(),
        ca=ca,
        next_updates={
            "TCB Info": _json_time(tcb, "nextUpdate", "collateral.tcb_info"),
            "QE Identity": _json_time(qe, "nextUpdate", "collateral.qe_identity"),
            "PCK CRL": pck_next,
            "Root CA CRL": root_next,
        },
    )


def document_next_update(text: str, what: str) -> datetime:
    """``nextUpdate`` of a signed TCB Info / QE Identity JSON text."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ParseError(what, f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ParseError(what, "expected a JSON object")
    return _json_time(obj, "nextUpdate", what)


def utc(now: datetime) -> datetime:
    """``now`` as an aware UTC time (naive times are taken as UTC)."""
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def check_bundle_key(collateral: Collateral, key: CollateralKey, origin: str) -> None:
    """Refuse (CollateralUnavailable) a bundle not for ``key``; ``origin`` names where it came from."""
    try:
        info = bundle_info(collateral)
    except EvidenceError as exc:
        raise CollateralUnavailable(f"collateral in {origin}: {exc}") from None
    if not info.matches(key):
        raise CollateralUnavailable(
            f"{origin} holds collateral for {info.tee} FMSPC {info.fmspc} CA {info.ca}, "
            f"not {key.tee} FMSPC {key.fmspc} CA {key.ca}"
        )

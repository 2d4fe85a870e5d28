"""The raw collateral bundle one quote needs, in dcap-qvl's ``QuoteCollateralV3`` layout.

This is what collateral *sources* produce and the verifier consumes. It holds the documents
exactly as Intel signed them: the TCB Info and QE Identity members are the exact signed JSON
text of the ``tcbInfo`` / ``enclaveIdentity`` objects (never re-serialized), CRLs are DER and
signatures raw ``r||s``. Parsing and checking those documents is the verifier's job
(teegate.dcap.tcb_info, teegate.dcap.identity, teegate.dcap.verify); this module only moves
bytes in and out of the JSON bundle format, refusing missing, extra or mistyped members.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from typing import Any, Literal

from teegate.errors import ParseError

__all__ = ["MAX_BUNDLE_BYTES", "Collateral", "CollateralKey"]

#: Upper bound on a JSON collateral bundle (real ones are ~15-25 KiB).
MAX_BUNDLE_BYTES = 1 << 20

_STR_FIELDS = (
    "pck_crl_issuer_chain",
    "tcb_info_issuer_chain",
    "tcb_info",
    "qe_identity_issuer_chain",
    "qe_identity",
)
_HEX_FIELDS = ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature")
_OPTIONAL_STR_FIELDS = ("pck_certificate_chain",)


@dataclass(frozen=True)
class CollateralKey:
    """What a collateral bundle is for: TEE type, platform FMSPC and the PCK issuing CA.

    Derived from the quote's PCK certificate (FMSPC extension, issuer CN) by
    ``teegate.dcap.pck``; collateral sources and caches are keyed by it.
    """

    tee: Literal["sgx", "tdx"]
    fmspc: str  # 12 upper-case hex digits
    ca: Literal["platform", "processor"]

    def __post_init__(self) -> None:
        if len(self.fmspc) != 12 or self.fmspc.upper() != self.fmspc:
            raise ValueError(f"FMSPC must be 12 upper-case hex digits, got {self.fmspc!r}")
        int(self.fmspc, 16)


@dataclass(frozen=True)
class Collateral:
    """Verification collateral for one platform (FMSPC, PCK CA) and one TEE type."""

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: str
    qe_identity_signature: bytes
    pck_certificate_chain: str | None = None

    @classmethod
    def from_json(cls, text: str | bytes) -> Collateral:
        """Parse dcap-qvl's JSON layout (byte fields as hex strings)."""
        if len(text) > MAX_BUNDLE_BYTES:
            raise ParseError("collateral bundle", f"larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError("collateral bundle", f"not JSON: {exc}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> Collateral:
        if not isinstance(obj, dict):
            raise ParseError("collateral bundle", "expected a JSON object")
        known = set(_STR_FIELDS) | set(_HEX_FIELDS) | set(_OPTIONAL_STR_FIELDS)
        extra = sorted(set(obj) - known)
        if extra:
            raise ParseError("collateral bundle", f"unknown member(s): {', '.join(extra)}")
        missing = sorted((set(_STR_FIELDS) | set(_HEX_FIELDS)) - set(obj))
        if missing:
            raise ParseError("collateral bundle", f"missing member(s): {', '.join(missing)}")
        values: dict[str, Any] = {}
        for name in _STR_FIELDS:
            value = obj[name]
            if not isinstance(value, str):
                raise ParseError(f"collateral.{name}", "expected a string")
            values[name] = value
        for name in _HEX_FIELDS:
            value = obj[name]
            if not isinstance(value, str):
                raise ParseError(f"collateral.{name}", "expected a hex string")
            try:
                values[name] = binascii.unhexlify(value.strip())
            except (binascii.Error, ValueError):
                raise ParseError(f"collateral.{name}", "not valid hex") from None
        chain = obj.get("pck_certificate_chain")
        if chain is not None and not isinstance(chain, str):
            raise ParseError("collateral.pck_certificate_chain", "expected a string")
        values["pck_certificate_chain"] = chain
        return cls(**values)

    def to_dict(self) -> dict[str, str]:
        out: dict[str, str] = {name: getattr(self, name) for name in _STR_FIELDS}
        for name in _HEX_FIELDS:
            out[name] = getattr(self, name).hex()
        if self.pck_certificate_chain is not None:
            out["pck_certificate_chain"] = self.pck_certificate_chain
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

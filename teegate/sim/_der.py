"""A minimal DER encoder: just what the PCK certificate's SGX extension needs.

Only definite-length, short-form tags (universal, primitive or constructed) are produced; the
output is byte-for-byte what Intel's PCK certificates carry for the same values.
"""

from __future__ import annotations

from teegate.dcap.pck import encode_oid

__all__ = ["boolean", "enumerated", "integer", "octet_string", "oid", "sequence"]

_BOOLEAN = 0x01
_INTEGER = 0x02
_OCTET_STRING = 0x04
_OID = 0x06
_ENUMERATED = 0x0A
_SEQUENCE = 0x30


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _length(len(value)) + value


def _twos_complement(value: int) -> bytes:
    size = max(1, (value.bit_length() + 8) // 8)  # room for the sign bit
    return value.to_bytes(size, "big", signed=True)


def integer(value: int) -> bytes:
    return _tlv(_INTEGER, _twos_complement(value))


def enumerated(value: int) -> bytes:
    return _tlv(_ENUMERATED, _twos_complement(value))


def boolean(value: bool) -> bytes:
    return _tlv(_BOOLEAN, b"\xff" if value else b"\x00")


def octet_string(value: bytes) -> bytes:
    return _tlv(_OCTET_STRING, value)


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2:
        raise ValueError(f"not an object identifier: {dotted!r}")
    return _tlv(_OID, encode_oid(dotted))


def sequence(*items: bytes) -> bytes:
    return _tlv(_SEQUENCE, b"".join(items))

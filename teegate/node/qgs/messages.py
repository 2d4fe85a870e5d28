"""QGS wire messages (``qgs_msg_lib.h``): pure encode/decode, no I/O.

Framing: a 4-byte big-endian length, then a qgs_msg — a 16-byte little-endian header
``(u16 major, u16 minor, u32 type, u32 size, u32 error_code)`` and a type-specific body.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from teegate.dcap.tdreport import TDREPORT_SIZE, check_tdreport
from teegate.errors import ParseError

__all__ = [
    "FRAME_PREFIX_SIZE",
    "HEADER_SIZE",
    "MAJOR_VERSION",
    "MAX_MESSAGE_SIZE",
    "MAX_QUOTE_SIZE",
    "MINOR_VERSION",
    "TDREPORT_SIZE",
    "CollateralRequest",
    "CollateralResponse",
    "ErrorCode",
    "Header",
    "MessageType",
    "PlatformInfoResponse",
    "QuoteRequest",
    "QuoteResponse",
    "check_tdreport",
    "decode_collateral_request",
    "decode_collateral_response",
    "decode_header",
    "decode_platform_info_response",
    "decode_quote_request",
    "decode_quote_response",
    "encode_collateral_request",
    "encode_collateral_response",
    "encode_error_response",
    "encode_platform_info_request",
    "encode_platform_info_response",
    "encode_quote_request",
    "encode_quote_response",
    "frame",
]

MAJOR_VERSION = 1
MINOR_VERSION = 1
FRAME_PREFIX_SIZE = 4
HEADER_SIZE = 16
#: Largest qgs_msg accepted or produced (QEMU caps the guest buffer at 128 KiB).
MAX_MESSAGE_SIZE = 128 * 1024
#: Largest quote a response may carry.
MAX_QUOTE_SIZE = MAX_MESSAGE_SIZE - HEADER_SIZE - 8
#: Largest att-key-id list a GET_QUOTE_REQ may carry.
MAX_ID_LIST_SIZE = 4096
_FMSPC_SIZE = 6
_MAX_PCK_CA_SIZE = 16

_HEADER = struct.Struct("<HHIII")
_U32X2 = struct.Struct("<II")
_COLLATERAL_FIXED = struct.Struct("<HH7I")
_PLATFORM_FIXED = struct.Struct("<HHII")


class MessageType(enum.IntEnum):
    """qgs_msg_type_t."""

    GET_QUOTE_REQ = 0
    GET_QUOTE_RESP = 1
    GET_COLLATERAL_REQ = 2
    GET_COLLATERAL_RESP = 3
    GET_PLATFORM_INFO_REQ = 4
    GET_PLATFORM_INFO_RESP = 5


class ErrorCode(enum.IntEnum):
    """qgs_msg_error_t."""

    SUCCESS = 0
    UNEXPECTED = 0x12001
    OUT_OF_MEMORY = 0x12002
    INVALID_PARAMETER = 0x12003
    INVALID_VERSION = 0x12004
    INVALID_TYPE = 0x12005
    INVALID_SIZE = 0x12006
    INVALID_CODE = 0x12007


#: Fixed body length of each response type (an error reply is header + this many zeros).
_RESPONSE_FIXED_BODY = {
    MessageType.GET_QUOTE_RESP: _U32X2.size,
    MessageType.GET_COLLATERAL_RESP: _COLLATERAL_FIXED.size,
    MessageType.GET_PLATFORM_INFO_RESP: _PLATFORM_FIXED.size,
}


@dataclass(frozen=True, slots=True)
class Header:
    """qgs_msg_header_t."""

    major_version: int
    minor_version: int
    type: int
    size: int
    error_code: int


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    """GET_QUOTE_REQ body."""

    report: bytes
    id_list: bytes = b""


@dataclass(frozen=True, slots=True)
class QuoteResponse:
    """GET_QUOTE_RESP body."""

    quote: bytes
    selected_id: bytes = b""


@dataclass(frozen=True, slots=True)
class CollateralRequest:
    """GET_COLLATERAL_REQ body: FMSPC (6 bytes) and PCK CA name (``processor``/``platform``)."""

    fmspc: bytes
    pck_ca: str


@dataclass(frozen=True, slots=True)
class CollateralResponse:
    """GET_COLLATERAL_RESP body (``sgx_ql_qve_collateral_t`` items, raw bytes as QGS sends them)."""

    major_version: int
    minor_version: int
    pck_crl_issuer_chain: bytes
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: bytes
    tcb_info: bytes
    qe_identity_issuer_chain: bytes
    qe_identity: bytes

    def items(self) -> tuple[bytes, ...]:
        """The seven payloads in wire order."""
        return (
            self.pck_crl_issuer_chain,
            self.root_ca_crl,
            self.pck_crl,
            self.tcb_info_issuer_chain,
            self.tcb_info,
            self.qe_identity_issuer_chain,
            self.qe_identity,
        )


@dataclass(frozen=True, slots=True)
class PlatformInfoResponse:
    """GET_PLATFORM_INFO_RESP body."""

    tdqe_isvsvn: int
    pce_isvsvn: int
    platform_id: bytes
    cpusvn: bytes


def frame(message: bytes) -> bytes:
    """Prefix ``message`` with its 4-byte big-endian length."""
    return struct.pack(">I", len(message)) + message


def _message(msg_type: MessageType, body: bytes, *, error: int = 0, minor: int = MINOR_VERSION) -> bytes:
    size = HEADER_SIZE + len(body)
    if size > MAX_MESSAGE_SIZE:
        raise ParseError("qgs_msg", f"message of {size} bytes exceeds MAX_MESSAGE_SIZE {MAX_MESSAGE_SIZE}")
    return _HEADER.pack(MAJOR_VERSION, minor, msg_type, size, error) + body


def decode_header(message: bytes) -> Header:
    """Parse the 16-byte header; checks only that it is present and ``size`` matches the frame."""
    if len(message) < HEADER_SIZE:
        raise ParseError("qgs_msg.header", f"{len(message)} bytes, need {HEADER_SIZE}", offset=0)
    header = Header(*_HEADER.unpack_from(message))
    if header.size != len(message):
        raise ParseError("qgs_msg.header.size", f"says {header.size}, frame holds {len(message)}", offset=8)
    return header


def _expect(message: bytes, msg_type: MessageType) -> Header:
    header = decode_header(message)
    if header.major_version != MAJOR_VERSION:
        raise ParseError("qgs_msg.header.major_version", f"{header.major_version}, expected 1", offset=0)
    if header.type != msg_type:
        raise ParseError("qgs_msg.header.type", f"{header.type}, expected {msg_type.name}", offset=4)
    return header


def _sized(body: bytes, offset: int, sizes: tuple[int, ...], what: tuple[str, ...]) -> list[bytes]:
    out: list[bytes] = []
    for size, name in zip(sizes, what, strict=True):
        if offset + size > len(body):
            raise ParseError(
                name, f"{size} bytes declared, only {len(body) - offset} left", offset=HEADER_SIZE + offset
            )
        out.append(body[offset : offset + size])
        offset += size
    if offset != len(body):
        raise ParseError("qgs_msg", f"{len(body) - offset} trailing bytes", offset=HEADER_SIZE + offset)
    return out


def encode_quote_request(report: bytes, id_list: bytes = b"") -> bytes:
    """GET_QUOTE_REQ (unframed)."""
    return _message(MessageType.GET_QUOTE_REQ, _U32X2.pack(len(report), len(id_list)) + report + id_list)


def decode_quote_request(message: bytes) -> QuoteRequest:
    """Parse GET_QUOTE_REQ; the report must be a 1024-byte TDREPORT."""
    _expect(message, MessageType.GET_QUOTE_REQ)
    body = message[HEADER_SIZE:]
    if len(body) < _U32X2.size:
        raise ParseError("get_quote_req", "body shorter than its 8-byte fixed part", offset=HEADER_SIZE)
    report_size, id_list_size = _U32X2.unpack_from(body)
    if report_size != TDREPORT_SIZE:
        raise ParseError(
            "get_quote_req.report_size", f"{report_size}, expected {TDREPORT_SIZE}", offset=HEADER_SIZE
        )
    if id_list_size > MAX_ID_LIST_SIZE:
        raise ParseError(
            "get_quote_req.id_list_size", f"{id_list_size} > {MAX_ID_LIST_SIZE}", offset=HEADER_SIZE + 4
        )
    report, id_list = _sized(body, _U32X2.size, (report_size, id_list_size), ("report", "id_list"))
    check_tdreport(report)
    return QuoteRequest(report, id_list)


def encode_quote_response(quote: bytes, selected_id: bytes = b"") -> bytes:
    """GET_QUOTE_RESP (unframed)."""
    if len(quote) > MAX_QUOTE_SIZE:
        raise ParseError("quote", f"{len(quote)} bytes exceeds MAX_QUOTE_SIZE {MAX_QUOTE_SIZE}")
    return _message(
        MessageType.GET_QUOTE_RESP, _U32X2.pack(len(selected_id), len(quote)) + selected_id + quote
    )


def decode_quote_response(message: bytes) -> tuple[Header, QuoteResponse]:
    """Parse GET_QUOTE_RESP (any error code; the caller decides)."""
    header = _expect(message, MessageType.GET_QUOTE_RESP)
    body = message[HEADER_SIZE:]
    if len(body) < _U32X2.size:
        raise ParseError("get_quote_resp", "body shorter than its 8-byte fixed part", offset=HEADER_SIZE)
    id_size, quote_size = _U32X2.unpack_from(body)
    selected, quote = _sized(body, _U32X2.size, (id_size, quote_size), ("selected_id", "quote"))
    return header, QuoteResponse(quote, selected)


def encode_collateral_request(fmspc: bytes, pck_ca: str) -> bytes:
    """GET_COLLATERAL_REQ (unframed); ``pck_ca`` is sent NUL-terminated as qgsd expects."""
    ca = pck_ca.encode() + b"\0"
    return _message(MessageType.GET_COLLATERAL_REQ, _U32X2.pack(len(fmspc), len(ca)) + fmspc + ca)


def decode_collateral_request(message: bytes) -> CollateralRequest:
    """Parse GET_COLLATERAL_REQ."""
    _expect(message, MessageType.GET_COLLATERAL_REQ)
    body = message[HEADER_SIZE:]
    if len(body) < _U32X2.size:
        raise ParseError("get_collateral_req", "body shorter than its 8-byte fixed part", offset=HEADER_SIZE)
    fmspc_size, ca_size = _U32X2.unpack_from(body)
    if fmspc_size != _FMSPC_SIZE:
        raise ParseError(
            "get_collateral_req.fmspc_size", f"{fmspc_size}, expected {_FMSPC_SIZE}", offset=HEADER_SIZE
        )
    if ca_size > _MAX_PCK_CA_SIZE:
        raise ParseError(
            "get_collateral_req.pckca_size", f"{ca_size} > {_MAX_PCK_CA_SIZE}", offset=HEADER_SIZE + 4
        )
    fmspc, ca = _sized(body, _U32X2.size, (fmspc_size, ca_size), ("fmspc", "pckca"))
    name = ca.rstrip(b"\0").decode("ascii", "replace")
    if name not in ("processor", "platform"):
        raise ParseError("get_collateral_req.pckca", f"{name!r}, expected 'processor' or 'platform'")
    return CollateralRequest(fmspc, name)


def encode_collateral_response(collateral: CollateralResponse) -> bytes:
    """GET_COLLATERAL_RESP (unframed)."""
    items = collateral.items()
    fixed = _COLLATERAL_FIXED.pack(
        collateral.major_version, collateral.minor_version, *(len(i) for i in items)
    )
    return _message(MessageType.GET_COLLATERAL_RESP, fixed + b"".join(items))


def decode_collateral_response(message: bytes) -> tuple[Header, CollateralResponse]:
    """Parse GET_COLLATERAL_RESP."""
    header = _expect(message, MessageType.GET_COLLATERAL_RESP)
    body = message[HEADER_SIZE:]
    if len(body) < _COLLATERAL_FIXED.size:
        raise ParseError(
            "get_collateral_resp", "body shorter than its 32-byte fixed part", offset=HEADER_SIZE
        )
    major, minor, *sizes = _COLLATERAL_FIXED.unpack_from(body)
    names = ("pck_crl_issuer_chain", "root_ca_crl", "pck_crl", "tcb_info_issuer_chain", "tcb_info",
             "qe_identity_issuer_chain", "qe_identity")  # fmt: skip
    items = _sized(body, _COLLATERAL_FIXED.size, tuple(sizes), names)
    return header, CollateralResponse(major, minor, *items)


def encode_platform_info_request() -> bytes:
    """GET_PLATFORM_INFO_REQ (unframed; header only)."""
    return _message(MessageType.GET_PLATFORM_INFO_REQ, b"")


def encode_platform_info_response(info: PlatformInfoResponse) -> bytes:
    """GET_PLATFORM_INFO_RESP (unframed)."""
    fixed = _PLATFORM_FIXED.pack(info.tdqe_isvsvn, info.pce_isvsvn, len(info.platform_id), len(info.cpusvn))
    return _message(MessageType.GET_PLATFORM_INFO_RESP, fixed + info.platform_id + info.cpusvn)


def decode_platform_info_response(message: bytes) -> tuple[Header, PlatformInfoResponse]:
    """Parse GET_PLATFORM_INFO_RESP."""
    header = _expect(message, MessageType.GET_PLATFORM_INFO_RESP)
    body = message[HEADER_SIZE:]
    if len(body) < _PLATFORM_FIXED.size:
        raise ParseError(
            "get_platform_info_resp", "body shorter than its 12-byte fixed part", offset=HEADER_SIZE
        )
    tdqe, pce, id_size, cpusvn_size = _PLATFORM_FIXED.unpack_from(body)
    platform_id, cpusvn = _sized(
        body, _PLATFORM_FIXED.size, (id_size, cpusvn_size), ("platform_id", "cpusvn")
    )
    return header, PlatformInfoResponse(tdqe, pce, platform_id, cpusvn)


def encode_error_response(response_type: MessageType, error: ErrorCode) -> bytes:
    """An error reply as qgsd sends it: header with ``error`` and the type's fixed body zeroed."""
    return _message(response_type, bytes(_RESPONSE_FIXED_BODY[response_type]), error=error)

"""QGS client that speaks and validates exactly as QEMU's ``tdx_handle_get_quote`` does."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from teegate.errors import CollateralUnavailable, ParseError
from teegate.node.qgs import messages as m

__all__ = [
    "LINUX_QUOTE_BUFFER_SIZE",
    "QgsErrorReply",
    "QgsUnavailable",
    "VsockAddress",
    "get_collateral",
    "get_platform_info",
    "get_quote",
    "get_quote_raw",
]

#: The guest's shared GetQuote buffer in Linux's tdx-guest driver (8 KiB incl. 24-byte header).
LINUX_QUOTE_BUFFER_SIZE = 8192
_GETQUOTE_HEADER_SIZE = 24
#: QEMU's per-request timeout.
DEFAULT_TIMEOUT = 30.0
_QEMU_BUFFER_LIMIT = 128 * 1024


class QgsUnavailable(CollateralUnavailable):
    """QGS could not be reached, refused, or answered outside the protocol; retry later."""


class QgsErrorReply(QgsUnavailable):
    """QGS answered a well-formed reply carrying a non-zero error code."""

    def __init__(self, what: str, code: int) -> None:
        self.code = code
        name = m.ErrorCode(code).name if code in m.ErrorCode._value2member_map_ else "unknown"
        super().__init__(f"QGS refused the {what}: error 0x{code:x} ({name})")


@dataclass(frozen=True, slots=True)
class VsockAddress:
    """An AF_VSOCK endpoint (QGS on the host is CID 2, port 4050 by default)."""

    cid: int = 2
    port: int = 4050


Address = str | Path | VsockAddress


def _connect(address: Address, timeout: float) -> socket.socket:
    if isinstance(address, VsockAddress):
        family = getattr(socket, "AF_VSOCK", None)
        if family is None:
            raise QgsUnavailable("AF_VSOCK is not supported here; use the QGS Unix socket")
        sock = socket.socket(family, socket.SOCK_STREAM)
        target: object = (address.cid, address.port)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = str(address)
    sock.settimeout(timeout)
    try:
        sock.connect(target)  # type: ignore[arg-type]
    except OSError as exc:
        sock.close()
        raise QgsUnavailable(f"cannot connect to QGS at {address}: {exc}") from exc
    return sock


def _recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        chunk = sock.recv(min(remaining, 65536))
        if not chunk:
            raise QgsUnavailable(f"QGS closed the connection with {remaining} of {n} {what} bytes unread")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _exchange(address: Address, message: bytes, max_reply: int, timeout: float) -> bytes:
    """Send one framed message, return the reply's qgs_msg (length prefix checked as QEMU does)."""
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(m.frame(message))
            (length,) = struct.unpack(">I", _recv_exact(sock, m.FRAME_PREFIX_SIZE, "length"))
            if length == 0 or length > max_reply:
                raise QgsUnavailable(f"QGS reply length {length} outside (0, {max_reply}]")
            return _recv_exact(sock, length, "reply")
    except TimeoutError as exc:
        raise QgsUnavailable(f"QGS at {address} did not answer within {timeout}s") from exc
    except OSError as exc:
        raise QgsUnavailable(f"QGS at {address}: {exc}") from exc


def get_quote(
    address: Address,
    tdreport: bytes,
    *,
    buffer_size: int = LINUX_QUOTE_BUFFER_SIZE,
    timeout: float = DEFAULT_TIMEOUT,
) -> bytes:
    """GET_QUOTE_REQ for a 1024-byte TDREPORT → the bare quote, validated as QEMU does.

    ``buffer_size`` is the guest's shared GetQuote buffer (QEMU caps it at 128 KiB); the reply
    must fit in it after QEMU's 24-byte header and 4-byte length prefix.
    """
    m.check_tdreport(tdreport)
    if not _GETQUOTE_HEADER_SIZE < buffer_size <= _QEMU_BUFFER_LIMIT:
        raise ValueError(
            f"buffer_size {buffer_size} outside QEMU's ({_GETQUOTE_HEADER_SIZE}, {_QEMU_BUFFER_LIMIT}]"
        )
    max_reply = buffer_size - _GETQUOTE_HEADER_SIZE - m.FRAME_PREFIX_SIZE
    reply = _exchange(address, m.encode_quote_request(tdreport), max_reply, timeout)
    if len(reply) < m.HEADER_SIZE + 8:
        raise QgsUnavailable(f"QGS reply of {len(reply)} bytes is shorter than a GET_QUOTE_RESP")
    major, minor, msg_type, size, error = struct.unpack_from("<HHIII", reply)
    if (major, minor) != (m.MAJOR_VERSION, m.MINOR_VERSION):
        raise QgsUnavailable(f"QGS reply version {major}.{minor}, QEMU requires 1.1")
    if msg_type != m.MessageType.GET_QUOTE_RESP:
        raise QgsUnavailable(f"QGS reply type {msg_type}, expected GET_QUOTE_RESP")
    if size > len(reply):
        raise QgsUnavailable(f"QGS reply header size {size} exceeds the {len(reply)} bytes received")
    if error != m.ErrorCode.SUCCESS:
        raise QgsErrorReply("quote request", error)
    selected_id_size, quote_size = struct.unpack_from("<II", reply, m.HEADER_SIZE)
    if selected_id_size != 0:
        raise QgsUnavailable(f"QGS reply selected_id_size {selected_id_size}, QEMU requires 0")
    if quote_size != len(reply) - m.HEADER_SIZE - 8:
        raise QgsUnavailable(
            f"QGS reply quote_size {quote_size} != {len(reply) - m.HEADER_SIZE - 8} bytes carried"
        )
    return reply[m.HEADER_SIZE + 8 :]


def get_quote_raw(address: Address, tdreport: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """QGS raw mode: send the bare TDREPORT, read the bare quote until QGS closes."""
    m.check_tdreport(tdreport)
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(tdreport)
            sock.shutdown(socket.SHUT_WR)
            chunks: list[bytes] = []
            total = 0
            while chunk := sock.recv(65536):
                total += len(chunk)
                if total > m.MAX_QUOTE_SIZE:
                    raise QgsUnavailable(f"raw QGS reply exceeds MAX_QUOTE_SIZE {m.MAX_QUOTE_SIZE}")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise QgsUnavailable(f"QGS at {address} did not answer within {timeout}s") from exc
    except OSError as exc:
        raise QgsUnavailable(f"QGS at {address}: {exc}") from exc
    if not chunks:
        raise QgsUnavailable("QGS closed the raw-mode connection without a quote (report refused)")
    return b"".join(chunks)


def _checked(header: m.Header, what: str) -> None:
    if header.error_code != m.ErrorCode.SUCCESS:
        raise QgsErrorReply(what, header.error_code)


def get_platform_info(address: Address, *, timeout: float = DEFAULT_TIMEOUT) -> m.PlatformInfoResponse:
    """GET_PLATFORM_INFO_REQ → TD-QE/PCE SVNs, platform id, CPUSVN."""
    reply = _exchange(address, m.encode_platform_info_request(), m.MAX_MESSAGE_SIZE, timeout)
    try:
        header, info = m.decode_platform_info_response(reply)
    except ParseError as exc:
        raise QgsUnavailable(f"malformed GET_PLATFORM_INFO_RESP: {exc}") from exc
    _checked(header, "platform info request")
    return info


def get_collateral(
    address: Address, fmspc: bytes, pck_ca: str, *, timeout: float = DEFAULT_TIMEOUT
) -> m.CollateralResponse:
    """GET_COLLATERAL_REQ → the seven collateral items."""
    reply = _exchange(address, m.encode_collateral_request(fmspc, pck_ca), m.MAX_MESSAGE_SIZE, timeout)
    try:
        header, collateral = m.decode_collateral_response(reply)
    except ParseError as exc:
        raise QgsUnavailable(f"malformed GET_COLLATERAL_RESP: {exc}") from exc
    _checked(header, "collateral request")
    return collateral

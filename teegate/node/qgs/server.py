"""The QGS daemon: one request per connection, framed qgs_msg or raw TDREPORT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from teegate.errors import ParseError, TeegateError
from teegate.node._daemon import DaemonMetrics, InFlight, Listen, start_listener
from teegate.node.qgs import messages as m
from teegate.node.qgs.backend import QuotingBackend

__all__ = ["DEFAULT_READ_TIMEOUT", "DEFAULT_UNIX_SOCKET", "QgsServer", "QgsSettings"]

_log = logging.getLogger("teegate.node.qgs")
_T = TypeVar("_T")

DEFAULT_UNIX_SOCKET = Path("/var/run/tdx-qgs/qgs.socket")
DEFAULT_VSOCK_PORT = 4050
#: Seconds a client may take to send its whole request (QEMU sends at once).
DEFAULT_READ_TIMEOUT = 5.0
#: Seconds a client may take to accept the reply.
_WRITE_TIMEOUT = 10.0
#: Concurrent quote signings (qgsd's number_threads default is 4).
DEFAULT_WORKERS = 4

_RESPONSE_FOR = {
    m.MessageType.GET_QUOTE_REQ: m.MessageType.GET_QUOTE_RESP,
    m.MessageType.GET_COLLATERAL_REQ: m.MessageType.GET_COLLATERAL_RESP,
    m.MessageType.GET_PLATFORM_INFO_REQ: m.MessageType.GET_PLATFORM_INFO_RESP,
}


@dataclass(frozen=True, slots=True)
class QgsSettings:
    """Everything ``teegate qgs serve`` is configured with."""

    listen: Listen
    backend_name: str = "sim"
    platform_dir: Path | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    workers: int = DEFAULT_WORKERS
    metrics_listen: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.read_timeout <= 300:
            raise TeegateError(f"read timeout {self.read_timeout}s must be in (0, 300]")
        if not 0 < self.workers <= 64:
            raise TeegateError(f"workers {self.workers} must be in 1..64")

    def insecure(self, backend: QuotingBackend) -> list[str]:
        """Insecure options in force, for the start line."""
        return [] if backend.hardware else ["simulated quoting backend: quotes are NOT hardware-backed"]


@dataclass(slots=True)
class QgsServer:
    """Serves the QGS protocol with a quoting backend."""

    settings: QgsSettings
    backend: QuotingBackend
    metrics: DaemonMetrics = field(default_factory=lambda: DaemonMetrics("qgs"))
    inflight: InFlight = field(default_factory=InFlight)
    _server: asyncio.Server | None = None
    _signing: asyncio.Semaphore | None = None

    async def start(self) -> asyncio.Server:
        """Bind the listener; returns the asyncio server (caller runs it)."""
        self._signing = asyncio.Semaphore(self.settings.workers)
        self._server = await start_listener(self.settings.listen, self.inflight.wrap(self.handle))
        return self._server

    async def _backend_call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._signing is None:
            raise RuntimeError("QgsServer.start() was not called")
        async with self._signing:
            return await asyncio.to_thread(fn, *args)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: read one request, write one reply, close."""
        self.metrics.connections.inc()
        started = time.perf_counter()
        kind = "invalid"
        try:
            reply, kind = await asyncio.wait_for(self._read_and_answer(reader), self.settings.read_timeout)
        except TimeoutError:
            _log.warning(
                "qgs: client sent no complete request within %.1fs; closing", self.settings.read_timeout
            )
            self.metrics.requests.labels("timeout", "closed").inc()
            reply = None
        except (asyncio.IncompleteReadError, ConnectionError):
            self.metrics.requests.labels("truncated", "closed").inc()
            reply = None
        try:
            if reply is not None:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT)
                self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        except (TimeoutError, ConnectionError):
            _log.warning("qgs: client did not take its %s reply; dropped", kind)
        finally:
            writer.close()
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[bytes | None, str]:
        prefix = await reader.readexactly(m.FRAME_PREFIX_SIZE)
        if prefix[0] == 0x81 and prefix[3] == 0:
            # Raw mode: a bare TDREPORT (its REPORTTYPE 81 00 00|01 00 is never a sane length).
            report = prefix + await reader.readexactly(m.TDREPORT_SIZE - m.FRAME_PREFIX_SIZE)
            return await self._raw(report), "raw_quote"
        (length,) = struct.unpack(">I", prefix)
        if not m.HEADER_SIZE <= length <= m.MAX_MESSAGE_SIZE:
            _log.warning(
                "qgs: frame length %d outside [%d, %d]; closing", length, m.HEADER_SIZE, m.MAX_MESSAGE_SIZE
            )
            self.metrics.requests.labels("bad_length", "closed").inc()
            return None, "bad_length"
        message = await reader.readexactly(length)
        return await self._framed(message)

    async def _raw(self, report: bytes) -> bytes | None:
        try:
            m.check_tdreport(report)
            quote = await self._backend_call(self.backend.quote_from_tdreport, report)
        except TeegateError as exc:
            _log.warning("qgs: raw request refused: %s", exc)
            self.metrics.requests.labels("raw_quote", "error").inc()
            return None  # raw mode has no error reply: the connection closes
        self.metrics.requests.labels("raw_quote", "ok").inc()
        return quote

    async def _framed(self, message: bytes) -> tuple[bytes | None, str]:
        try:
            header = m.decode_header(message)
        except ParseError:
            self.metrics.requests.labels("unknown", "error").inc()
            return m.frame(
                m.encode_error_response(m.MessageType.GET_QUOTE_RESP, m.ErrorCode.INVALID_SIZE)
            ), "unknown"
        try:
            msg_type = m.MessageType(header.type)
            response_type = _RESPONSE_FOR[msg_type]
        except (ValueError, KeyError):
            self.metrics.requests.labels("unknown", "error").inc()
            return m.frame(
                m.encode_error_response(m.MessageType.GET_QUOTE_RESP, m.ErrorCode.INVALID_TYPE)
            ), "unknown"
        kind = msg_type.name.lower()
        if header.major_version != m.MAJOR_VERSION:
            self.metrics.requests.labels(kind, "error").inc()
            return m.frame(m.encode_error_response(response_type, m.ErrorCode.INVALID_VERSION)), kind
        try:
            reply = await self._dispatch(msg_type, message)
        except ParseError as exc:
            _log.warning("qgs: %s refused: %s", kind, exc)
            self.metrics.requests.labels(kind, "error").inc()
            return m.frame(m.encode_error_response(response_type, m.ErrorCode.INVALID_PARAMETER)), kind
        except TeegateError as exc:
            _log.error("qgs: %s failed in backend %s: %s", kind, self.backend.name, exc)
            self.metrics.requests.labels(kind, "error").inc()
            return m.frame(m.encode_error_response(response_type, m.ErrorCode.UNEXPECTED)), kind
        self.metrics.requests.labels(kind, "ok").inc()
        return m.frame(reply), kind

    async def _dispatch(self, msg_type: m.MessageType, message: bytes) -> bytes:
        if msg_type is m.MessageType.GET_QUOTE_REQ:
            request = m.decode_quote_request(message)
            quote = await self._backend_call(self.backend.quote_from_tdreport, request.report)
            return m.encode_quote_response(quote)
        if msg_type is m.MessageType.GET_PLATFORM_INFO_REQ:
            m.decode_header(message)
            if len(message) != m.HEADER_SIZE:
                raise ParseError(
                    "get_platform_info_req", f"{len(message) - m.HEADER_SIZE} unexpected body bytes"
                )
            info = await self._backend_call(self.backend.platform_info)
            return m.encode_platform_info_response(info)
        request_c = m.decode_collateral_request(message)
        collateral = await self._backend_call(self.backend.collateral, request_c.fmspc, request_c.pck_ca)
        return m.encode_collateral_response(collateral)

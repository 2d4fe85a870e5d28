"""uvicorn's httptools protocol with each response written in one send.

uvicorn writes a response's head and its body with two ``transport.write`` calls, so every KBS
response costs two ``send`` system calls and two TCP segments, and the client usually wakes up
twice (once for the head, once for the body). :class:`CoalescingHttpToolsProtocol` hands uvicorn a
transport that gathers the writes made in one event-loop step and sends them together at the
end of that step (``loop.call_soon``): same bytes, same order, one segment for a small response.
Closing the connection sends what is gathered first. Everything else is uvicorn's.

Used by ``teegate kbs serve`` (``http=`` of the uvicorn config) when httptools is installed.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpToolsProtocol"]


class _CoalescingTransport:
    """A transport proxy whose ``write`` gathers data until the current loop step ends."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        pending = self._pending
        pending.append(bytes(data))
        if len(pending) == 1:
            self._loop.call_soon(self._flush)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(chunk) for chunk in self._pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`_CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; both have what is used here.
        proxy = _CoalescingTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(proxy)  # type: ignore[arg-type]

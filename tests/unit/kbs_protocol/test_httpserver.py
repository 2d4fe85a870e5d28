"""The coalescing HTTP protocol: one send per response, same bytes, nothing lost on close."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from teegate.kbs.httpserver import CoalescingHttpToolsProtocol, _CoalescingTransport


class _FakeTransport:
    """Records writes; what uvicorn asks of a transport besides."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    await receive()
    body = b'{"ok":true}'
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"11")]})
    await send({"type": "http.response.body", "body": body})


async def _serve_one(request: bytes) -> _FakeTransport:
    config = uvicorn.Config(_app, lifespan="off", log_level="warning")
    protocol = CoalescingHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    transport = _FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(request)
    for _ in range(20):
        await asyncio.sleep(0)
    return transport


async def test_a_response_goes_out_in_one_write() -> None:
    transport = await _serve_one(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
    assert len(transport.writes) == 1
    head, _, body = transport.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 11" in head and body == b'{"ok":true}'


async def test_connection_close_sends_the_response_before_closing() -> None:
    transport = await _serve_one(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert transport.closed and len(transport.writes) == 1
    assert transport.writes[0].endswith(b'{"ok":true}')


async def test_transport_gathers_one_loop_step() -> None:
    inner = _FakeTransport()
    proxy = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"a")
    proxy.write(bytearray(b"b"))
    proxy.write(b"")
    assert inner.writes == [] and proxy.get_write_buffer_size() == 2
    await asyncio.sleep(0)
    assert inner.writes == [b"ab"]
    proxy.writelines([b"c", b"d"])
    proxy.close()  # flushes first
    assert inner.writes == [b"ab", b"cd"] and inner.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert inner.writes == [b"ab", b"cd"]


async def test_abort_drops_what_is_gathered() -> None:
    inner = _FakeTransport()
    proxy = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"never sent")
    proxy.abort()
    await asyncio.sleep(0)
    assert inner.writes == [] and inner.aborted
    assert proxy.get_extra_info("peername") == ("127.0.0.1", 50000)  # the rest is the transport's


async def test_nothing_written_to_a_transport_closed_meanwhile() -> None:
    inner = _FakeTransport()
    proxy = _CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"late")
    inner.closed = True  # the peer went away before the step ended
    await asyncio.sleep(0)
    assert inner.writes == []

"""The round-robin proxy (teegate.kbs.lb) against small raw-HTTP backends on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import ConfigError
from teegate.kbs.lb import MAX_BODY_BYTES, MAX_HEAD_BYTES, RoundRobinProxy, _HttpError, parse_backend
from tests.integration.scaleout.topology import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _reply(name: str) -> Handler:
    """A keep-alive backend answering every request with its name and the request it saw."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                text = f"{name}|{head.split(b' ')[1].decode()}|{len(body)}|{b'host:' in head.lower()}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nset-cookie: a=1\r\nset-cookie: b=2\r\n"
                    + f"content-length: {len(text)}\r\n\r\n{text}".encode()
                )
                await writer.drain()
        writer.close()

    return handle


async def _chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    await writer.drain()
    writer.close()


async def _dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
    await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _backend(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def _proxy(backends: list[str]) -> AsyncIterator[str]:
    proxy = RoundRobinProxy(backends, timeout=5)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(proxy.serve("127.0.0.1", 0, ready=bound.set_result))
    port = await asyncio.wait_for(bound, 5)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_round_robin_per_request_on_one_connection() -> None:
    async with (
        _backend(_reply("a")) as a,
        _backend(_reply("b")) as b,
        _proxy([a, b]) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        names = [(await client.post("/kbs/v0/auth", content=b"{}")).text.split("|")[0] for _ in range(6)]
        response = await client.get("/x?y=1")
    assert names == ["a", "b", "a", "b", "a", "b"]
    assert response.text.split("|")[1] == "/x?y=1"
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert response.text.endswith("|True")  # the proxy set Host for the replica


async def test_refused_backend_is_skipped() -> None:
    dead = f"127.0.0.1:{free_port()}"
    async with (
        _backend(_reply("a")) as a,
        _proxy([dead, a]) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        names = {(await client.get("/")).text.split("|")[0] for _ in range(4)}
    assert names == {"a"}


async def test_no_backend_503_with_reason() -> None:
    async with _proxy([f"127.0.0.1:{free_port()}"]) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/kbs/v0/auth")
    assert response.status_code == 503
    assert response.json()["type"].endswith("/ServiceUnavailable")
    assert "no KBS replica accepted" in response.json()["detail"]


async def test_backend_dying_mid_response_is_502() -> None:
    async with _backend(_dies) as a, _proxy([a]) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/")
    assert response.status_code == 502
    assert "failed mid-request" in response.json()["detail"]


def _answers_once_then_dies_holding(seen: list[str]) -> Handler:
    """Answers the first request on a connection; takes the second and closes without a byte
    (a replica killed while it held the request)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            for count in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                seen.append(head.split(b" ")[0].decode() + " " + head.split(b" ")[1].decode())
                if count == 1:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()

    return handle


@pytest.mark.parametrize(
    ("method", "path", "resent"),
    [
        ("POST", "/kbs/v0/attest", False),  # its challenge may be consumed: never sent twice
        ("POST", "/kbs/v0/resource-policy", False),
        ("GET", "/kbs/v0/resource/a/b/c", True),
        ("POST", "/kbs/v0/auth", True),  # a new challenge: harmless twice
    ],
)
async def test_a_request_the_replica_died_holding_is_resent_only_if_harmless(
    method: str, path: str, resent: bool
) -> None:
    seen: list[str] = []
    async with (
        _backend(_answers_once_then_dies_holding(seen)) as a,
        _proxy([a]) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/warm")).status_code == 200  # leaves a kept-alive upstream connection
        response = await client.request(method, path, content=b"{}" if method == "POST" else None)
    held = f"{method} {path}"
    if resent:
        assert seen.count(held) == 2 and response.status_code == 200
    else:
        assert seen.count(held) == 1 and response.status_code == 502
        assert "closed before answering" in response.json()["detail"]


async def test_chunked_response_relayed() -> None:
    async with _backend(_chunked) as a, _proxy([a]) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/")
    assert response.status_code == 200 and response.text == "hello world"


async def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    answer = await reader.read(4096)
    writer.close()
    return answer


async def test_bounds_and_refusals() -> None:
    async with _backend(_reply("a")) as a, _proxy([a]) as url:
        big = await _raw(url, f"POST / HTTP/1.1\r\ncontent-length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        assert big.startswith(b"HTTP/1.1 413") and b"PayloadTooLarge" in big
        chunked = await _raw(
            url, b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        assert chunked.startswith(b"HTTP/1.1 501")
        assert (await _raw(url, b"GARBAGE\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await _raw(url, b"GET / HTTP/1.1\r\n bad: fold\r\n\r\n")).startswith(b"HTTP/1.1 400")
        huge_head = b"GET / HTTP/1.1\r\nx: " + b"a" * (70 * 1024) + b"\r\n\r\n"
        assert (await _raw(url, huge_head)).startswith(b"HTTP/1.1 431")


def test_backends_must_be_loopback_http() -> None:
    assert parse_backend("http://127.0.0.1:8081") == ("127.0.0.1", 8081)
    with pytest.raises(ConfigError, match="loopback"):
        parse_backend("10.0.0.1:8080")
    with pytest.raises(ConfigError, match="plain HTTP"):
        parse_backend("https://127.0.0.1:8080")
    with pytest.raises(ConfigError, match="at least one"):
        RoundRobinProxy([])


_heads = st.one_of(
    st.binary(max_size=512),
    st.lists(
        st.sampled_from(
            [
                b"GET / HTTP/1.1",
                b"POST /kbs/v0/auth HTTP/1.0",
                b"content-length: 3",
                b"content-length: x",
                b"content-length: 1",
                b"transfer-encoding: chunked",
                b"connection: close, te",
                b" fold: x",
                b"host: a",
                b"nocolon",
                b":",
                b"x:" + b"y" * 100,
                b"GET  HTTP/1.1",
                b"",
            ]
        ),
        max_size=6,
    ).map(lambda lines: b"\r\n".join(lines) + b"\r\n\r\n"),
)


@settings(max_examples=300, deadline=None)
@given(head=_heads, body=st.binary(max_size=8))
def test_request_parser_only_refuses_clearly(head: bytes, body: bytes) -> None:
    # Whatever a client sends, the proxy answers with a request to forward, a clear HTTP error,
    # or nothing (connection closed): never an unexpected exception.
    async def parse() -> None:
        reader = asyncio.StreamReader(limit=MAX_HEAD_BYTES)
        reader.feed_data(head + body)
        reader.feed_eof()
        proxy = RoundRobinProxy(["127.0.0.1:9"])
        try:
            result = await proxy._read_request(reader)
        except (_HttpError, asyncio.IncompleteReadError):
            return
        if result is not None:
            method, wire, _keep = result
            assert wire.startswith(method + b" ") and b"\r\n\r\n" in wire
            assert b"transfer-encoding" not in wire.lower()

    asyncio.run(parse())

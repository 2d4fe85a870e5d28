"""QGS server on a real Unix socket: round trips, raw mode, concurrency, malformed frames."""

from __future__ import annotations

import asyncio
import os
import shutil
import struct
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from teegate.node._daemon import Listen
from teegate.node.qgs import client
from teegate.node.qgs import messages as m
from teegate.node.qgs.server import QgsServer, QgsSettings
from tests.unit.node.backend import FakeBackend, expected_quote, make_tdreport


@dataclass
class Running:
    path: Path
    server: QgsServer
    backend: FakeBackend


@pytest.fixture
async def qgs() -> AsyncIterator[Running]:
    directory = Path(tempfile.mkdtemp(prefix="qgs", dir="/tmp"))
    path = directory / "qgs.socket"
    backend = FakeBackend()
    server = QgsServer(QgsSettings(Listen(unix_path=path), read_timeout=0.5, workers=8), backend)
    listener = await server.start()
    try:
        yield Running(path, server, backend)
    finally:
        listener.close()
        await listener.wait_closed()
        await server.inflight.wait(2.0)
        shutil.rmtree(directory)


def _report(i: int) -> bytes:
    return make_tdreport(i.to_bytes(2, "big") * 32)


async def test_get_quote_round_trip(qgs: Running) -> None:
    report = _report(1)
    assert await asyncio.to_thread(client.get_quote, qgs.path, report) == expected_quote(report)


async def test_raw_mode_round_trip(qgs: Running) -> None:
    report = _report(2)
    assert await asyncio.to_thread(client.get_quote_raw, qgs.path, report) == expected_quote(report)


async def test_platform_info_and_collateral_round_trip(qgs: Running) -> None:
    info = await asyncio.to_thread(client.get_platform_info, qgs.path)
    assert info == qgs.backend.platform_info()
    fmspc = bytes.fromhex("00806f050000")
    col = await asyncio.to_thread(client.get_collateral, qgs.path, fmspc, "platform")
    assert col == qgs.backend.collateral(fmspc, "platform")


async def test_backend_failure_is_unexpected_error_reply(qgs: Running) -> None:
    qgs.backend.fail = True
    with pytest.raises(client.QgsUnavailable, match="0x12001"):
        await asyncio.to_thread(client.get_quote, qgs.path, _report(3))


async def test_hundred_clients_at_once(qgs: Running) -> None:
    loop = asyncio.get_running_loop()
    reports = [_report(i) for i in range(100)]
    with ThreadPoolExecutor(max_workers=100) as pool:
        quotes = await asyncio.gather(
            *(loop.run_in_executor(pool, client.get_quote, qgs.path, r) for r in reports)
        )
    assert quotes == [expected_quote(r) for r in reports]
    assert qgs.backend.calls == 100


async def test_slow_and_dead_clients_do_not_block_others(qgs: Running) -> None:
    # One client sends half a frame and stalls; another connects and sends nothing.
    slow_r, slow_w = await asyncio.open_unix_connection(str(qgs.path))
    slow_w.write(m.frame(m.encode_quote_request(_report(5)))[:100])
    await slow_w.drain()
    dead_r, dead_w = await asyncio.open_unix_connection(str(qgs.path))
    report = _report(6)
    started = asyncio.get_running_loop().time()
    assert await asyncio.to_thread(client.get_quote, qgs.path, report) == expected_quote(report)
    assert asyncio.get_running_loop().time() - started < 0.4  # well before the stalled ones time out
    # Both stalled connections are closed by the server's read timeout, with no reply.
    assert await asyncio.wait_for(slow_r.read(), 3) == b""
    assert await asyncio.wait_for(dead_r.read(), 3) == b""
    slow_w.close()
    dead_w.close()


async def _send(path: Path, data: bytes, *, close_write: bool = True) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if close_write:
        writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    return reply


def _error_of(reply: bytes) -> tuple[int, int]:
    (length,) = struct.unpack(">I", reply[:4])
    assert length == len(reply) - 4
    header = m.decode_header(reply[4:])
    return header.type, header.error_code


async def test_malformed_frames(qgs: Running) -> None:
    good = m.encode_quote_request(_report(7))
    # short length (< header) and huge length: connection closed without reply
    assert await _send(qgs.path, struct.pack(">I", 4) + b"abcd") == b""
    assert await _send(qgs.path, struct.pack(">I", 0x7FFFFFFF) + good) == b""
    # truncated body: frame says more than arrives, client closes → closed, no reply
    assert await _send(qgs.path, struct.pack(">I", len(good)) + good[:100]) == b""
    # short prefix
    assert await _send(qgs.path, b"\x00\x00") == b""
    # wrong major version → INVALID_VERSION in a GET_QUOTE_RESP
    wrong = struct.pack("<H", 2) + good[2:]
    assert _error_of(await _send(qgs.path, m.frame(wrong))) == (1, m.ErrorCode.INVALID_VERSION)
    # unknown type
    unknown = good[:4] + struct.pack("<I", 9) + good[8:]
    assert _error_of(await _send(qgs.path, m.frame(unknown))) == (1, m.ErrorCode.INVALID_TYPE)
    # header.size disagrees with the frame length
    mis = good[:8] + struct.pack("<I", len(good) - 1) + good[12:]
    assert _error_of(await _send(qgs.path, m.frame(mis))) == (1, m.ErrorCode.INVALID_SIZE)
    # report_size wrong → INVALID_PARAMETER
    bad_param = m.encode_quote_request(_report(8)[:1000])
    assert _error_of(await _send(qgs.path, m.frame(bad_param))) == (1, m.ErrorCode.INVALID_PARAMETER)
    # collateral request with a bad FMSPC size → a GET_COLLATERAL_RESP error
    bad_col = m.encode_collateral_request(b"\x00" * 5, "processor")
    assert _error_of(await _send(qgs.path, m.frame(bad_col))) == (3, m.ErrorCode.INVALID_PARAMETER)
    # raw mode with a report whose reserved byte is set → closed
    raw_bad = bytearray(_report(9))
    raw_bad[2] = 7
    assert await _send(qgs.path, bytes(raw_bad[:3]) + b"\x00" + bytes(raw_bad[4:])) == b""
    # after all that, the server still quotes
    report = _report(10)
    assert await asyncio.to_thread(client.get_quote, qgs.path, report) == expected_quote(report)


async def test_client_validates_like_qemu(tmp_path: Path) -> None:
    """Replies QEMU would reject are rejected by the client (bad version, oversize, wrong type)."""
    directory = Path(tempfile.mkdtemp(prefix="qgsc", dir="/tmp"))
    path = directory / "s"
    replies: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        (n,) = struct.unpack(">I", await reader.readexactly(4))
        await reader.readexactly(n)
        writer.write(replies.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(handler, path=str(path))
    ok = m.encode_quote_response(b"Q" * 10)
    cases = [
        (m.frame(struct.pack("<HH", 1, 0) + ok[4:]), "version 1.0"),
        (m.frame(m.encode_platform_info_response(m.PlatformInfoResponse(0, 0, b"", b""))), "type 5"),
        (m.frame(m.encode_quote_response(b"Q" * 9000)), "outside"),
        (m.frame(ok[:16] + struct.pack("<II", 4, 6) + b"Q" * 10), "selected_id_size"),
        (struct.pack(">I", 0), "outside"),
    ]
    try:
        for reply, match in cases:
            replies.append(reply)
            with pytest.raises(client.QgsUnavailable, match=match):
                await asyncio.to_thread(client.get_quote, path, _report(1))
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(directory)


async def test_unreachable_socket_is_unavailable() -> None:
    with pytest.raises(client.QgsUnavailable, match="cannot connect"):
        await asyncio.to_thread(client.get_quote, "/nonexistent/qgs.socket", _report(1))


async def test_vsock_listener_when_kernel_supports_it() -> None:
    import socket as _socket

    probe = _socket.socket(_socket.AF_VSOCK, _socket.SOCK_STREAM)
    try:
        probe.bind((_socket.VMADDR_CID_ANY, 0))
        supported = True
    except OSError:
        supported = False
    finally:
        probe.close()
    server = QgsServer(QgsSettings(Listen(vsock_port=40500 + os.getpid() % 1000)), FakeBackend())
    if supported:
        listener = await server.start()
        listener.close()
        await listener.wait_closed()
    else:
        # No vsock transport here: the daemon must refuse with a clear configuration error.
        from teegate.errors import ConfigError

        with pytest.raises(ConfigError, match="vsock"):
            await server.start()


async def test_metrics_count_requests_and_serve_http(qgs: Running) -> None:
    import socket as _socket

    import httpx

    report = _report(11)
    await asyncio.to_thread(client.get_quote, qgs.path, report)
    with _socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qgs.server.metrics.serve(f"127.0.0.1:{port}")
    text = (await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/metrics")).text
    assert 'teegate_qgs_requests_total{outcome="ok",type="get_quote_req"} 1.0' in text
    assert "teegate_qgs_request_seconds_bucket" in text

"""AESM quote helper on a real Unix socket, driven by the libsgx-quote-ex-compatible client."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import struct
import sys
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from teegate.node.aesm import messages_pb2 as pb
from teegate.node.aesm import protocol as p
from teegate.node.aesm.client import AesmClient, AesmFailure
from teegate.node.aesm.server import AesmServer, AesmSettings
from tests.unit.node.backend import ATTEST_KEY, QE_MRENCLAVE, FakeBackend, fake_sgx_quote


@pytest.fixture
async def aesm() -> AsyncIterator[tuple[AesmClient, FakeBackend, Path]]:
    directory = Path(tempfile.mkdtemp(prefix="aesm", dir="/tmp"))
    path = directory / "aesm.socket"
    backend = FakeBackend()
    server = AesmServer(AesmSettings(socket_path=path, read_timeout=0.5), backend)
    listener = await server.start()
    try:
        yield AesmClient(path, timeout_ms=3000), backend, path
    finally:
        listener.close()
        await listener.wait_closed()
        await server.inflight.wait(2.0)
        shutil.rmtree(directory)


def _report(i: int) -> bytes:
    body = bytearray(384)
    body[320:384] = hashlib.sha512(i.to_bytes(4, "big")).digest()
    return bytes(body) + bytes(48)


async def test_libsgx_quote_ex_sequence(aesm: tuple[AesmClient, FakeBackend, Path]) -> None:
    client, _backend, _path = aesm
    key_id = await asyncio.to_thread(client.select_att_key_id)
    assert key_id == p.ECDSA_ATT_KEY_ID
    target = await asyncio.to_thread(client.init_quote_ex, key_id)
    assert target.target_info[:32] == QE_MRENCLAVE and target.target_info[32:48] == b"\x11" * 16
    assert target.pub_key_id == hashlib.sha256(ATTEST_KEY).digest()
    size = await asyncio.to_thread(client.get_quote_size_ex, key_id)
    report = _report(1)
    quote = await asyncio.to_thread(client.get_quote_ex, report, size, key_id)
    assert quote == fake_sgx_quote(report) and len(quote) == size


async def test_errors_come_back_as_aesm_error_codes(aesm: tuple[AesmClient, FakeBackend, Path]) -> None:
    client, backend, _path = aesm
    epid = bytearray(p.ECDSA_ATT_KEY_ID)
    epid[154:158] = struct.pack("<I", 0)  # EPID algorithm: not served
    with pytest.raises(AesmFailure, match="UNSUPPORTED_ATT_KEY_ID"):
        await asyncio.to_thread(client.get_quote_size_ex, bytes(epid))
    with pytest.raises(AesmFailure, match="PARAMETER_ERROR"):
        await asyncio.to_thread(client.get_quote_ex, _report(2), 10)
    backend.fail = True
    size = await asyncio.to_thread(client.get_quote_size_ex)
    with pytest.raises(AesmFailure, match="UNEXPECTED_ERROR"):
        await asyncio.to_thread(client.get_quote_ex, _report(2), size)


async def test_many_enclaves_at_once(aesm: tuple[AesmClient, FakeBackend, Path]) -> None:
    client, _backend, _path = aesm
    loop = asyncio.get_running_loop()
    reports = [_report(i) for i in range(100)]
    with ThreadPoolExecutor(max_workers=100) as pool:
        quotes = await asyncio.gather(*(loop.run_in_executor(pool, client.quote, r) for r in reports))
    assert quotes == [fake_sgx_quote(r) for r in reports]


async def _send(path: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    reply = await asyncio.wait_for(reader.read(), 3)
    writer.close()
    return reply


async def test_malformed_frames(aesm: tuple[AesmClient, FakeBackend, Path]) -> None:
    client, _backend, path = aesm
    size = lambda n: n.to_bytes(4, sys.byteorder)  # noqa: E731
    assert await _send(path, size(0)) == b""  # zero length → closed
    assert await _send(path, size(0x7FFFFFFF) + b"x") == b""  # huge → closed
    assert await _send(path, size(100) + b"x" * 10) == b""  # truncated → closed
    assert await _send(path, b"\x01") == b""  # short prefix → closed
    # not a protobuf Request → unsupportedRequestResponse(PARAMETER)
    reply = await _send(path, p.frame(b"\xff\xff\xff"))
    response = pb.Response.FromString(reply[4:])
    assert response.unsupportedRequestResponse.errorCode == p.AesmError.PARAMETER_ERROR
    # an empty Request (no sub-message): unsupported
    reply = await _send(path, size(2) + b"\x08\x01")  # unknown field 1 varint
    assert (
        pb.Response.FromString(reply[4:]).unsupportedRequestResponse.errorCode == p.AesmError.UNEXPECTED_ERROR
    )
    # a slow client does not block others
    _r, stalled = await asyncio.open_unix_connection(str(path))
    stalled.write(size(50))
    assert await asyncio.to_thread(client.select_att_key_id) == p.ECDSA_ATT_KEY_ID
    stalled.close()


async def test_key_id_list_and_qe_report_info(aesm: tuple[AesmClient, FakeBackend, Path]) -> None:
    client, _backend, _path = aesm
    epid_only = struct.pack("<HHI", 0, 0, 1) + bytes(158)  # one entry, algorithm_id 0 (EPID)
    with pytest.raises(AesmFailure, match="UNSUPPORTED_ATT_KEY_ID"):
        await asyncio.to_thread(client.select_att_key_id, epid_only)
    ecdsa = struct.pack("<HHI", 0, 0, 1) + p.ECDSA_ATT_KEY_ID[:158]
    assert await asyncio.to_thread(client.select_att_key_id, ecdsa) == p.ECDSA_ATT_KEY_ID
    # A QE report for the app enclave needs a real QE's report key: refused, not faked.
    request = pb.Request()
    request.getQuoteExReq.report = _report(3)
    request.getQuoteExReq.buf_size = 1 << 16
    request.getQuoteExReq.qe_report_info = bytes(p.QE_REPORT_INFO_SIZE)
    reply = await _send(_path, p.frame(request.SerializeToString()))
    assert pb.Response.FromString(reply[4:]).getQuoteExRes.errorCode == p.AesmError.PARAMETER_ERROR

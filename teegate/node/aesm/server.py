"""The AESM quote helper daemon: one protobuf Request per connection, one Response back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from teegate.errors import ParseError, TeegateError
from teegate.node._daemon import DaemonMetrics, InFlight, Listen, start_listener
from teegate.node.aesm import messages_pb2 as pb
from teegate.node.aesm import protocol as p
from teegate.node.qgs.backend import QuotingBackend

__all__ = ["AesmServer", "AesmSettings"]

_log = logging.getLogger("teegate.node.aesm")
_ERR = p.AesmError
#: Seconds a client may take to send its request.
DEFAULT_READ_TIMEOUT = 5.0
_PROBE_REPORT = bytes(p.SGX_REPORT_SIZE)


@dataclass(frozen=True, slots=True)
class AesmSettings:
    """Everything ``teegate aesm serve`` is configured with."""

    socket_path: Path = Path(p.DEFAULT_SOCKET)
    platform_dir: Path | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    workers: int = 4
    metrics_listen: str | None = None
    socket_mode: int = 0o666  # every enclave container on the node connects, as with aesmd

    def __post_init__(self) -> None:
        if not 0 < self.read_timeout <= 300:
            raise TeegateError(f"read timeout {self.read_timeout}s must be in (0, 300]")
        if not 0 < self.workers <= 64:
            raise TeegateError(f"workers {self.workers} must be in 1..64")

    @property
    def listen(self) -> Listen:
        """The Unix listener."""
        return Listen(unix_path=self.socket_path, unix_mode=self.socket_mode)


@dataclass(slots=True)
class AesmServer:
    """Serves SelectAttKeyID, InitQuoteEx, GetQuoteSizeEx, GetQuoteEx (ECDSA-P256 only)."""

    settings: AesmSettings
    backend: QuotingBackend
    metrics: DaemonMetrics = field(default_factory=lambda: DaemonMetrics("aesm"))
    inflight: InFlight = field(default_factory=InFlight)
    _identity: tuple[bytes, bytes, int] | None = None
    _signing: asyncio.Semaphore | None = None

    async def start(self) -> asyncio.Server:
        """Learn the QE's identity and quote size from one probe quote, then bind the socket."""
        self._signing = asyncio.Semaphore(self.settings.workers)
        probe = await asyncio.to_thread(self.backend.quote_from_sgx_report, _PROBE_REPORT)
        target_info, pub_key_id = p.qe_identity_from_quote(probe)
        self._identity = (target_info, pub_key_id, len(probe))
        return await start_listener(self.settings.listen, self.inflight.wrap(self.handle))

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: one Request, one Response, close."""
        self.metrics.connections.inc()
        started = time.perf_counter()
        reply: bytes | None = None
        kind = "invalid"
        try:
            payload = await asyncio.wait_for(self._read(reader), self.settings.read_timeout)
            if payload is not None:
                kind, response = await self.answer(payload)
                reply = p.frame(response.SerializeToString())
        except TimeoutError:
            _log.warning("aesm: no complete request within %.1fs; closing", self.settings.read_timeout)
            self.metrics.requests.labels("timeout", "closed").inc()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.metrics.requests.labels("truncated", "closed").inc()
        try:
            if reply is not None:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), 10.0)
                self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        except (TimeoutError, ConnectionError):
            _log.warning("aesm: client did not take its %s reply", kind)
        finally:
            writer.close()
            with contextlib.suppress(TimeoutError, ConnectionError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            length = p.decode_length(await reader.readexactly(4))
        except ParseError as exc:
            _log.warning("aesm: %s; closing", exc)
            self.metrics.requests.labels("bad_length", "closed").inc()
            return None
        return await reader.readexactly(length)

    async def answer(self, payload: bytes) -> tuple[str, pb.Response]:
        """Decode one serialized Request and build its Response (pure protocol logic + backend)."""
        response = pb.Response()
        request = pb.Request()
        try:
            request.ParseFromString(payload)
        except DecodeError:
            response.unsupportedRequestResponse.errorCode = _ERR.PARAMETER_ERROR
            self.metrics.requests.labels("undecodable", "error").inc()
            return "undecodable", response
        kind = self._which(request)
        if kind == "selectAttKeyIDReq":
            self._select(request.selectAttKeyIDReq, response.selectAttKeyIDRes)
        elif kind == "initQuoteExReq":
            self._init_quote(request.initQuoteExReq, response.initQuoteExRes)
        elif kind == "getQuoteSizeExReq":
            self._quote_size(request.getQuoteSizeExReq, response.getQuoteSizeExRes)
        elif kind == "getQuoteExReq":
            await self._get_quote(request.getQuoteExReq, response.getQuoteExRes)
        elif kind == "getSupportedAttKeyIDNumReq":
            response.getSupportedAttKeyIDNumRes.errorCode = _ERR.SUCCESS
            response.getSupportedAttKeyIDNumRes.att_key_id_num = 1
        elif kind == "getSupportedAttKeyIDsReq":
            res = response.getSupportedAttKeyIDsRes
            if request.getSupportedAttKeyIDsReq.buf_size < p.ATT_KEY_ID_SIZE:
                res.errorCode = _ERR.PARAMETER_ERROR
            else:
                res.errorCode = _ERR.SUCCESS
                res.att_key_ids = p.ECDSA_ATT_KEY_ID
        else:
            response.unsupportedRequestResponse.errorCode = _ERR.UNEXPECTED_ERROR
            kind = "unsupported"
        code = self._code(response)
        self.metrics.requests.labels(kind, "ok" if code == 0 else "error").inc()
        return kind, response

    @staticmethod
    def _which(request: pb.Request) -> str | None:
        present = [fd.name for fd, _ in request.ListFields()]
        return present[0] if len(present) == 1 else None

    @staticmethod
    def _code(response: pb.Response) -> int:
        fields = response.ListFields()
        return int(fields[0][1].errorCode) if fields else _ERR.UNEXPECTED_ERROR

    @staticmethod
    def _supported(att_key_id: bytes) -> bool:
        try:
            return p.att_key_algorithm(att_key_id) == p.att_key_algorithm(p.ECDSA_ATT_KEY_ID)
        except ParseError:
            return False

    def _select(self, req: pb.Request.SelectAttKeyIDRequest, res: pb.Response.SelectAttKeyIDResponse) -> None:
        id_list = req.att_key_id_list
        # An empty list means "the default"; otherwise it is a sgx_ql_att_key_id_list_t whose
        # entries we scan for the ECDSA-P256 algorithm (the only one this helper signs with).
        if id_list and not self._list_has_ecdsa(id_list):
            res.errorCode = _ERR.UNSUPPORTED_ATT_KEY_ID
            return
        res.errorCode = _ERR.SUCCESS
        res.selected_att_key_id = p.ECDSA_ATT_KEY_ID

    @staticmethod
    def _list_has_ecdsa(id_list: bytes) -> bool:
        # sgx_ql_att_key_id_list_t: header {u16 id, u16 version, u32 num_att_ids}, then 158-B ids.
        if len(id_list) < 8:
            return False
        num = int.from_bytes(id_list[4:8], "little")
        entries = id_list[8:]
        if num > 16 or len(entries) < num * 158:
            return False
        algos = {int.from_bytes(entries[i * 158 + 154 : i * 158 + 158], "little") for i in range(num)}
        return 2 in algos

    def _init_quote(self, req: pb.Request.InitQuoteExRequest, res: pb.Response.InitQuoteExResponse) -> None:
        assert self._identity is not None
        target_info, pub_key_id, _size = self._identity
        if not self._supported(req.att_key_id):
            res.errorCode = _ERR.UNSUPPORTED_ATT_KEY_ID
            return
        if req.b_pub_key_id:
            if req.buf_size < len(pub_key_id):
                res.errorCode = _ERR.PARAMETER_ERROR
                return
            res.pub_key_id = pub_key_id
        res.errorCode = _ERR.SUCCESS
        res.target_info = target_info
        res.pub_key_id_size = len(pub_key_id)

    def _quote_size(
        self, req: pb.Request.GetQuoteSizeExRequest, res: pb.Response.GetQuoteSizeExResponse
    ) -> None:
        assert self._identity is not None
        if not self._supported(req.att_key_id):
            res.errorCode = _ERR.UNSUPPORTED_ATT_KEY_ID
            return
        res.errorCode = _ERR.SUCCESS
        res.quote_size = self._identity[2]

    async def _get_quote(
        self, req: pb.Request.GetQuoteExRequest, res: pb.Response.GetQuoteExResponse
    ) -> None:
        assert self._identity is not None and self._signing is not None
        if len(req.report) != p.SGX_REPORT_SIZE:
            res.errorCode = _ERR.INVALID_REPORT
            return
        if req.HasField("att_key_id") and not self._supported(req.att_key_id):
            res.errorCode = _ERR.UNSUPPORTED_ATT_KEY_ID
            return
        if req.HasField("qe_report_info"):
            # The QE report targeted at the app enclave needs the QE's report key; the simulated
            # platform has none, so a caller asking for it is told the request is unsupported.
            _log.warning("aesm: qe_report_info requested; the simulated QE cannot produce a QE report")
            res.errorCode = _ERR.PARAMETER_ERROR
            return
        if req.buf_size < self._identity[2]:
            res.errorCode = _ERR.PARAMETER_ERROR
            return
        try:
            async with self._signing:
                quote = await asyncio.to_thread(self.backend.quote_from_sgx_report, req.report)
        except TeegateError as exc:
            _log.error("aesm: backend %s could not quote: %s", self.backend.name, exc)
            res.errorCode = _ERR.UNEXPECTED_ERROR
            return
        if len(quote) > req.buf_size:
            res.errorCode = _ERR.PARAMETER_ERROR
            return
        res.errorCode = _ERR.SUCCESS
        res.quote = quote

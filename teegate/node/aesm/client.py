"""AESM client that sends exactly what libsgx-quote-ex sends (one Request per connection)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from teegate.errors import CollateralUnavailable, EvidenceError
from teegate.node.aesm import messages_pb2 as pb
from teegate.node.aesm import protocol as p

__all__ = ["AesmClient", "AesmFailure", "AesmUnavailable", "QuoteTarget"]


class AesmUnavailable(CollateralUnavailable):
    """The AESM socket could not be reached or answered outside the protocol; retry later."""


class AesmFailure(EvidenceError):
    """AESM answered with an ``aesm_error_t`` other than SUCCESS."""

    def __init__(self, call: str, code: int) -> None:
        self.code = code
        name = p.AesmError(code).name if code in p.AesmError._value2member_map_ else "unknown"
        super().__init__(f"AESM {call} failed: aesm_error_t {code} ({name})")


@dataclass(frozen=True, slots=True)
class QuoteTarget:
    """What ``sgx_init_quote_ex`` yields: the QE's target info and its public key id."""

    target_info: bytes
    pub_key_id: bytes


@dataclass(frozen=True, slots=True)
class AesmClient:
    """Talks to ``/var/run/aesmd/aesm.socket`` (or ``path``) as libsgx-quote-ex does."""

    path: Path | str = p.DEFAULT_SOCKET
    timeout_ms: int = p.IPC_LATENCY_MS

    def _transact(self, request: pb.Request) -> pb.Response:
        payload = p.frame(request.SerializeToString())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout_ms / 1000)
                sock.connect(str(self.path))
                sock.sendall(payload)
                length = p.decode_length(self._recv(sock, 4))
                body = self._recv(sock, length)
        except TimeoutError as exc:
            raise AesmUnavailable(f"AESM at {self.path} did not answer within {self.timeout_ms} ms") from exc
        except OSError as exc:
            raise AesmUnavailable(f"cannot talk to AESM at {self.path}: {exc}") from exc
        except EvidenceError as exc:
            raise AesmUnavailable(f"AESM at {self.path} sent a bad frame: {exc}") from exc
        response = pb.Response()
        try:
            response.ParseFromString(body)
        except DecodeError as exc:
            raise AesmUnavailable(f"AESM reply is not a Response message: {exc}") from exc
        return response

    @staticmethod
    def _recv(sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise AesmUnavailable(f"AESM closed the connection after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def _expect(self, response: pb.Response, field: str, call: str) -> None:
        if response.HasField("unsupportedRequestResponse"):
            raise AesmFailure(call, response.unsupportedRequestResponse.errorCode)
        if not response.HasField(field):
            raise AesmUnavailable(f"AESM answered {call} without {field}")
        code = getattr(response, field).errorCode
        if code != p.AesmError.SUCCESS:
            raise AesmFailure(call, int(code))

    def select_att_key_id(self, att_key_id_list: bytes = b"") -> bytes:
        """``sgx_select_att_key_id``: the attestation key id AESM will use."""
        request = pb.Request()
        request.selectAttKeyIDReq.timeout = self.timeout_ms
        if att_key_id_list:
            request.selectAttKeyIDReq.att_key_id_list = att_key_id_list
        response = self._transact(request)
        self._expect(response, "selectAttKeyIDRes", "SelectAttKeyID")
        return bytes(response.selectAttKeyIDRes.selected_att_key_id)

    def init_quote_ex(self, att_key_id: bytes = p.ECDSA_ATT_KEY_ID) -> QuoteTarget:
        """``sgx_init_quote_ex`` as two calls: learn pub_key_id_size, then fetch target info + key id."""
        request = pb.Request()
        request.initQuoteExReq.att_key_id = att_key_id
        request.initQuoteExReq.b_pub_key_id = False
        request.initQuoteExReq.timeout = self.timeout_ms
        response = self._transact(request)
        self._expect(response, "initQuoteExRes", "InitQuoteEx")
        size = response.initQuoteExRes.pub_key_id_size
        request.initQuoteExReq.b_pub_key_id = True
        request.initQuoteExReq.buf_size = size
        response = self._transact(request)
        self._expect(response, "initQuoteExRes", "InitQuoteEx")
        res = response.initQuoteExRes
        if len(res.target_info) != p.TARGET_INFO_SIZE or len(res.pub_key_id) != size:
            raise AesmUnavailable("AESM InitQuoteEx returned target info or pub key id of the wrong size")
        return QuoteTarget(bytes(res.target_info), bytes(res.pub_key_id))

    def get_quote_size_ex(self, att_key_id: bytes = p.ECDSA_ATT_KEY_ID) -> int:
        """``sgx_get_quote_size_ex``."""
        request = pb.Request()
        request.getQuoteSizeExReq.att_key_id = att_key_id
        request.getQuoteSizeExReq.timeout = self.timeout_ms
        response = self._transact(request)
        self._expect(response, "getQuoteSizeExRes", "GetQuoteSizeEx")
        return int(response.getQuoteSizeExRes.quote_size)

    def get_quote_ex(self, report: bytes, buf_size: int, att_key_id: bytes = p.ECDSA_ATT_KEY_ID) -> bytes:
        """``sgx_get_quote_ex`` for a 432-byte ``sgx_report_t`` (no QE report requested)."""
        if len(report) != p.SGX_REPORT_SIZE:
            raise EvidenceError(f"sgx_report_t must be {p.SGX_REPORT_SIZE} bytes, got {len(report)}")
        request = pb.Request()
        request.getQuoteExReq.report = report
        request.getQuoteExReq.att_key_id = att_key_id
        request.getQuoteExReq.buf_size = buf_size
        request.getQuoteExReq.timeout = self.timeout_ms
        response = self._transact(request)
        self._expect(response, "getQuoteExRes", "GetQuoteEx")
        quote = bytes(response.getQuoteExRes.quote)
        if not 0 < len(quote) <= buf_size:
            raise AesmUnavailable(f"AESM returned a {len(quote)}-byte quote for a {buf_size}-byte buffer")
        return quote

    def quote(self, report: bytes) -> bytes:
        """The whole libsgx-quote-ex sequence for one enclave report: select, init, size, quote."""
        key_id = self.select_att_key_id()
        self.init_quote_ex(key_id)
        return self.get_quote_ex(report, self.get_quote_size_ex(key_id), key_id)

"""AESM messages: the generated protobuf classes produce the wire bytes messages.proto defines."""

from __future__ import annotations

import struct
import sys

import pytest

from teegate.errors import ParseError
from teegate.node.aesm import messages_pb2 as pb
from teegate.node.aesm import protocol as p


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _len_field(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


KEY = p.ECDSA_ATT_KEY_ID
REPORT = bytes(range(256)) + bytes(176)


def test_att_key_id_layout() -> None:
    assert len(KEY) == 256
    assert struct.unpack_from("<I", KEY, 154)[0] == 2  # algorithm_id = SGX_QL_ALG_ECDSA_P256
    assert struct.unpack_from("<H", KEY, 4)[0] == 32  # mrsigner_length


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda r: setattr(r.selectAttKeyIDReq, "timeout", 15000), _len_field(19, _int_field(2, 15000))),
        (
            lambda r: (
                setattr(r.initQuoteExReq, "att_key_id", KEY),
                setattr(r.initQuoteExReq, "b_pub_key_id", True),
                setattr(r.initQuoteExReq, "buf_size", 32),
                setattr(r.initQuoteExReq, "timeout", 15000),
            ),
            _len_field(15, _len_field(1, KEY) + _int_field(3, 1) + _int_field(4, 32) + _int_field(9, 15000)),
        ),
        (
            lambda r: (
                setattr(r.getQuoteSizeExReq, "att_key_id", KEY),
                setattr(r.getQuoteSizeExReq, "timeout", 15000),
            ),
            _len_field(16, _len_field(1, KEY) + _int_field(9, 15000)),
        ),
        (
            lambda r: (
                setattr(r.getQuoteExReq, "report", REPORT),
                setattr(r.getQuoteExReq, "att_key_id", KEY),
                setattr(r.getQuoteExReq, "buf_size", 5000),
                setattr(r.getQuoteExReq, "timeout", 15000),
            ),
            _len_field(
                17, _len_field(1, REPORT) + _len_field(2, KEY) + _int_field(4, 5000) + _int_field(9, 15000)
            ),
        ),
        (lambda r: setattr(r.getSupportedAttKeyIDNumReq, "timeout", 1), _len_field(21, _int_field(9, 1))),
        (lambda r: setattr(r.getSupportedAttKeyIDsReq, "buf_size", 256), _len_field(22, _int_field(1, 256))),
    ],
)
def test_request_bytes(build: object, expected: bytes) -> None:
    request = pb.Request()
    build(request)  # type: ignore[operator]
    assert request.SerializeToString() == expected
    assert pb.Request.FromString(expected) == request


def test_response_bytes() -> None:
    response = pb.Response()
    response.getQuoteExRes.errorCode = 0
    response.getQuoteExRes.quote = b"Q" * 3
    assert response.SerializeToString() == _len_field(17, _int_field(1, 0) + _len_field(2, b"QQQ"))
    response = pb.Response()
    response.initQuoteExRes.errorCode = 0
    response.initQuoteExRes.target_info = bytes(512)
    response.initQuoteExRes.pub_key_id_size = 32
    expected = _len_field(15, _int_field(1, 0) + _len_field(2, bytes(512)) + _int_field(3, 32))
    assert response.SerializeToString() == expected
    response = pb.Response()
    response.getQuoteSizeExRes.errorCode = 0
    response.getQuoteSizeExRes.quote_size = 4600
    assert response.SerializeToString() == _len_field(16, _int_field(1, 0) + _int_field(2, 4600))
    response = pb.Response()
    response.selectAttKeyIDRes.errorCode = 0
    response.selectAttKeyIDRes.selected_att_key_id = KEY
    assert response.SerializeToString() == _len_field(19, _int_field(1, 0) + _len_field(2, KEY))
    response = pb.Response()
    response.unsupportedRequestResponse.errorCode = 1
    assert response.SerializeToString() == _len_field(20, _int_field(1, 1))


def test_framing_is_host_order() -> None:
    assert p.frame(b"abc") == (3).to_bytes(4, sys.byteorder) + b"abc"
    assert p.decode_length((3).to_bytes(4, sys.byteorder)) == 3
    with pytest.raises(ParseError):
        p.decode_length(bytes(4))
    with pytest.raises(ParseError):
        p.decode_length((p.MAX_MESSAGE_SIZE + 1).to_bytes(4, sys.byteorder))

"""Byte-level fixtures for every qgs_msg type, built from qgs_msg_lib.h's packed structs."""

from __future__ import annotations

import pytest

from teegate.errors import ParseError
from teegate.node.qgs import messages as m
from tests.unit.node.backend import make_tdreport

REPORT = make_tdreport(bytes(range(64)))


def test_frame_is_big_endian_length() -> None:
    assert m.frame(b"abc") == bytes.fromhex("00000003") + b"abc"


def test_get_quote_req_bytes() -> None:
    msg = m.encode_quote_request(REPORT)
    # u16 major=1, u16 minor=1, u32 type=0, u32 size=16+8+1024, u32 error=0 (all LE)
    assert msg[:16] == bytes.fromhex("01000100000000001804000000000000")
    assert msg[16:24] == bytes.fromhex("0004000000000000")  # report_size=1024, id_list_size=0
    assert msg[24:] == REPORT
    assert m.decode_quote_request(msg) == m.QuoteRequest(REPORT, b"")


def test_get_quote_resp_bytes() -> None:
    msg = m.encode_quote_response(b"QUOTE")
    assert msg == bytes.fromhex("01000100010000001d000000000000000000000005000000") + b"QUOTE"
    header, resp = m.decode_quote_response(msg)
    assert (header.type, header.error_code, resp.quote, resp.selected_id) == (1, 0, b"QUOTE", b"")


def test_get_collateral_req_bytes() -> None:
    msg = m.encode_collateral_request(bytes.fromhex("00906ed50000"), "processor")
    assert msg[:16] == bytes.fromhex("01000100020000002800000000000000")
    assert msg[16:24] == bytes.fromhex("060000000a000000")
    assert msg[24:] == bytes.fromhex("00906ed50000") + b"processor\0"
    assert m.decode_collateral_request(msg) == m.CollateralRequest(bytes.fromhex("00906ed50000"), "processor")


def test_get_collateral_resp_bytes() -> None:
    col = m.CollateralResponse(3, 1, b"a", b"bb", b"ccc", b"", b"t", b"q", b"i")
    msg = m.encode_collateral_response(col)
    fixed = bytes.fromhex("03000100") + bytes.fromhex(
        "01000000020000000300000000000000010000000100000001000000"
    )
    assert msg[:16] == bytes.fromhex("0100010003000000") + (16 + 32 + 9).to_bytes(4, "little") + bytes(4)
    assert msg[16:48] == fixed
    assert msg[48:] == b"abbccctqi"
    assert m.decode_collateral_response(msg)[1] == col


def test_get_platform_info_bytes() -> None:
    assert m.encode_platform_info_request() == bytes.fromhex("01000100040000001000000000000000")
    info = m.PlatformInfoResponse(4, 13, b"\xaa" * 16, b"\x01" * 16)
    msg = m.encode_platform_info_response(info)
    assert msg[:16] == bytes.fromhex("01000100050000003c00000000000000")
    assert msg[16:28] == bytes.fromhex("04000d001000000010000000")
    assert m.decode_platform_info_response(msg)[1] == info


@pytest.mark.parametrize(
    ("response_type", "body_len"),
    [
        (m.MessageType.GET_QUOTE_RESP, 8),
        (m.MessageType.GET_COLLATERAL_RESP, 32),
        (m.MessageType.GET_PLATFORM_INFO_RESP, 12),
    ],
)
def test_error_reply_is_header_plus_zeroed_fixed_body(response_type: m.MessageType, body_len: int) -> None:
    msg = m.encode_error_response(response_type, m.ErrorCode.INVALID_PARAMETER)
    assert len(msg) == 16 + body_len
    assert msg[12:16] == bytes.fromhex("03200100")
    assert msg[16:] == bytes(body_len)


def test_rejects_trailing_bytes_and_bad_report() -> None:
    msg = m.encode_quote_request(REPORT)
    bad_size = msg[:8] + (len(msg) + 1).to_bytes(4, "little") + msg[12:] + b"X"
    with pytest.raises(ParseError, match="trailing"):
        m.decode_quote_request(bad_size)
    with pytest.raises(ParseError, match=r"header\.size"):
        m.decode_quote_request(msg + b"X")
    not_td = bytearray(REPORT)
    not_td[0] = 0x80
    with pytest.raises(ParseError, match="report_type"):
        m.decode_quote_request(m.encode_quote_request(bytes(not_td)))
    with pytest.raises(ParseError, match="report_size"):
        m.decode_quote_request(m.encode_quote_request(REPORT[:512]))


def test_declared_sizes_beyond_body_are_refused() -> None:
    msg = bytearray(m.encode_quote_response(b"QUOTE"))
    msg[20:24] = (10_000).to_bytes(4, "little")
    with pytest.raises(ParseError, match="declared"):
        m.decode_quote_response(bytes(msg))


def test_collateral_request_unknown_ca_refused() -> None:
    with pytest.raises(ParseError, match="pckca"):
        m.decode_collateral_request(m.encode_collateral_request(bytes(6), "nonsense"))

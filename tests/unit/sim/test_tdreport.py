"""TDREPORT layout (shared/spec/dcap.md §1.6) and the TDREPORT → quote round trip."""

from __future__ import annotations

import hashlib
import struct

import pytest

from teegate.errors import ParseError
from teegate.node.qgs.messages import check_tdreport
from teegate.sim import SimPlatform

MR_TD = b"\x01" * 48
RTMRS = (b"\x10" * 48, b"\x11" * 48, b"\x12" * 48, b"\x13" * 48)
REPORT_DATA = hashlib.sha512(b"nonce").digest()


def test_tdreport_layout(platform: SimPlatform) -> None:
    report = platform.tdreport(REPORT_DATA, mr_td=MR_TD, rtmrs=RTMRS, mr_config_id=b"\x05" * 48)
    assert len(report) == 1024
    check_tdreport(report)  # what QGS accepts
    assert report[0:4] == bytes((0x81, 0, 0, 0))
    assert report[16:32] == platform.platform_info()[3]  # cpusvn
    tee_tcb_info, td_info = report[256:495], report[512:1024]
    assert report[32:80] == hashlib.sha384(tee_tcb_info).digest()
    assert report[80:128] == hashlib.sha384(td_info).digest()
    assert report[128:192] == REPORT_DATA
    assert td_info[16:64] == MR_TD
    assert td_info[64:112] == b"\x05" * 48
    assert td_info[208:400] == b"".join(RTMRS)
    attributes, _xfam = struct.unpack_from("<QQ", td_info)
    assert attributes == 1 << 28


@pytest.mark.parametrize(("version", "body_off"), [(4, 48), (5, 54)])
def test_round_trip_keeps_measurements(platform: SimPlatform, version: int, body_off: int) -> None:
    report = platform.tdreport(REPORT_DATA, mr_td=MR_TD, rtmrs=RTMRS, mr_owner=b"\x07" * 48)
    quote = platform.quote_from_tdreport(report, version=version)
    direct = platform.tdx_quote(REPORT_DATA, version=version, mr_td=MR_TD, rtmrs=RTMRS, mr_owner=b"\x07" * 48)
    signed = body_off + (584 if version == 4 else 648)
    assert quote[:signed] == direct[:signed]
    body = quote[body_off:]
    assert body[136:184] == MR_TD
    assert body[232:280] == b"\x07" * 48
    assert body[328:520] == b"".join(RTMRS)
    assert body[520:584] == REPORT_DATA


def test_debug_tdreport_quotes_as_debug(platform: SimPlatform) -> None:
    quote = platform.quote_from_tdreport(platform.tdreport(b"", debug=True))
    assert quote[168] & 0x01


def test_bad_tdreports_refused(platform: SimPlatform) -> None:
    with pytest.raises(ParseError, match="1024"):
        platform.quote_from_tdreport(bytes(1023))
    with pytest.raises(ParseError, match="report_type"):
        platform.quote_from_tdreport(bytes(1024))


def test_tdreport_model_round_trip(platform: SimPlatform) -> None:
    from teegate.sim.layout import TdReport

    model = platform.td_report(REPORT_DATA, mr_td=MR_TD, rtmrs=RTMRS, mr_servicetd=b"\x03" * 48)
    report = platform.tdreport(REPORT_DATA, mr_td=MR_TD, rtmrs=RTMRS, mr_servicetd=b"\x03" * 48)
    assert report[2] == 1  # REPORTTYPE.version 1 when a service TD is bound
    assert TdReport.from_tdreport(report) == model

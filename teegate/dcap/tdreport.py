"""The TDX TDREPORT (TDG.MR.REPORT output) as quoting services receive it: size and type check.

A TDREPORT is what a TD hands to the Quote Generation Service (QGS) and what the QE turns into a
quote; the simulated platform makes them, the QGS and its clients check them.
"""

from __future__ import annotations

from typing import Final

from teegate.errors import ParseError

__all__ = ["TDREPORT_SIZE", "check_tdreport"]

#: Bytes in a TDREPORT_STRUCT (REPORTMACSTRUCT 256 + TEE_TCB_INFO 239 + reserved 17 + TDINFO 512).
TDREPORT_SIZE: Final = 1024


def check_tdreport(report: bytes) -> None:
    """Check a TDREPORT's size and REPORTTYPE (type 0x81, subtype 0, version 0|1, reserved 0)."""
    if len(report) != TDREPORT_SIZE:
        raise ParseError("tdreport", f"{len(report)} bytes, expected {TDREPORT_SIZE}")
    if report[0] != 0x81 or report[1] != 0 or report[2] not in (0, 1) or report[3] != 0:
        raise ParseError(
            "tdreport.report_type", f"{report[:4].hex()} is not a TDX TDREPORT (81 00 00|01 00)", offset=0
        )

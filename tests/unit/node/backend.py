"""A small deterministic quoting backend for node-service tests (until/besides teegate.sim).

Its "quotes" are NOT DCAP quotes: ``b"TESTQ" ‖ version ‖ REPORTDATA ‖ SHA-384(report)`` —
enough to check that the right report reached the backend and the right bytes came back.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from teegate.errors import CollateralUnavailable
from teegate.node.qgs.messages import CollateralResponse, PlatformInfoResponse

REPORT_DATA_OFFSET = 128


def make_tdreport(report_data: bytes, *, version: int = 0) -> bytes:
    """A structurally valid 1024-byte TDREPORT (MAC not meaningful) carrying ``report_data``."""
    assert len(report_data) == 64
    report = bytearray(1024)
    report[0:4] = bytes([0x81, 0, version, 0])
    report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + 64] = report_data
    report[512 + 16 : 512 + 64] = hashlib.sha384(report_data).digest()  # an MRTD-ish value
    return bytes(report)


def expected_quote(report: bytes) -> bytes:
    return (
        b"TESTQ\x04" + report[REPORT_DATA_OFFSET : REPORT_DATA_OFFSET + 64] + hashlib.sha384(report).digest()
    )


QE_MRENCLAVE = bytes(range(32, 64))
ATTEST_KEY = bytes(range(64, 128))


def fake_sgx_quote(report: bytes) -> bytes:
    """SGX v3-shaped bytes: header, the report body, sig_len, signature, attest key, QE report."""
    qe_report = bytearray(384)
    qe_report[64:96] = QE_MRENCLAVE
    qe_report[48:64] = b"\x11" * 16
    sig_data = hashlib.sha512(report).digest() + ATTEST_KEY + bytes(qe_report) + bytes(64) + bytes(2)
    header = b"\x03\x00\x02\x00" + bytes(44)
    return header + report[:384] + len(sig_data).to_bytes(4, "little") + sig_data


@dataclass
class FakeBackend:
    delay: float = 0.0
    fail: bool = False
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    name = "test"
    hardware = False

    def quote_from_tdreport(self, tdreport: bytes) -> bytes:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise CollateralUnavailable("test backend told to fail")
        return expected_quote(tdreport)

    def quote_from_sgx_report(self, report: bytes) -> bytes:
        with self._lock:
            self.calls += 1
        if self.fail:
            raise CollateralUnavailable("test backend told to fail")
        return fake_sgx_quote(report)

    def platform_info(self) -> PlatformInfoResponse:
        return PlatformInfoResponse(
            tdqe_isvsvn=4, pce_isvsvn=13, platform_id=bytes(range(16)), cpusvn=b"\x01" * 16
        )

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        return CollateralResponse(
            3, 1, b"chain-a\0", b"\x30\x01root", b"\x30\x02pck", b"chain-b\0",
            b'{"tcbInfo":{"fmspc":"' + fmspc.hex().encode() + b'"},"signature":"00"}\0',
            b"chain-c\0", b'{"enclaveIdentity":{},"signature":"00"}\0',
        )  # fmt: skip

"""Byte layouts the simulated platform writes: SGX report body, TD report bodies, TDREPORT.

Offsets follow shared/spec/dcap.md §1.3, §1.4 and §1.6 (Intel's ``sgx_report_body_t``,
``sgx_report2_body_t`` / ``tdx_report_body_v1_5``, ``sgx_report2_t``). Everything here is pure.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field, replace

from teegate.dcap.tdreport import TDREPORT_SIZE, check_tdreport
from teegate.errors import ParseError

__all__ = [
    "SGX_REPORT_BODY_SIZE",
    "TDREPORT_SIZE",
    "TD_ATTR_DEBUG",
    "TD_ATTR_SEPT_VE_DISABLE",
    "TD_REPORT10_SIZE",
    "TD_REPORT15_SIZE",
    "EnclaveReport",
    "TdReport",
    "TeeTcb",
    "check_tdreport",
    "pad_report_data",
    "td_body_from_tdreport",
]

SGX_REPORT_BODY_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
REPORT_DATA_SIZE = 64

#: TD attributes: bit 0 DEBUG, bit 28 SEPT_VE_DISABLE (set in production TDs).
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
#: SGX enclave attribute flags: INIT | MODE64BIT; DEBUG is bit 1.
SGX_ATTR_INIT_MODE64 = 0x05
SGX_ATTR_DEBUG = 0x02

_ZERO48 = bytes(48)


def pad_report_data(data: bytes) -> bytes:
    """Right-pad ``data`` to the 64-byte REPORTDATA; longer input is refused."""
    if len(data) > REPORT_DATA_SIZE:
        raise ParseError("report_data", f"{len(data)} bytes; at most {REPORT_DATA_SIZE} fit in REPORTDATA")
    return data + bytes(REPORT_DATA_SIZE - len(data))


def _fixed(name: str, value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise ParseError(name, f"{len(value)} bytes, expected {size}")
    return value


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """An SGX REPORT body (384 bytes): an app enclave's, or the QE's own."""

    report_data: bytes = bytes(64)
    cpu_svn: bytes = bytes(16)
    misc_select: int = 0
    isv_ext_prod_id: bytes = bytes(16)
    attributes: bytes = bytes([SGX_ATTR_INIT_MODE64]) + bytes(7) + bytes([0xE7]) + bytes(7)
    mr_enclave: bytes = bytes(32)
    mr_signer: bytes = bytes(32)
    config_id: bytes = bytes(64)
    isv_prod_id: int = 0
    isv_svn: int = 0
    config_svn: int = 0
    isv_family_id: bytes = bytes(16)

    def encode(self) -> bytes:
        out = b"".join(
            (
                _fixed("cpu_svn", self.cpu_svn, 16),
                struct.pack("<I", self.misc_select),
                bytes(12),
                _fixed("isv_ext_prod_id", self.isv_ext_prod_id, 16),
                _fixed("attributes", self.attributes, 16),
                _fixed("mr_enclave", self.mr_enclave, 32),
                bytes(32),
                _fixed("mr_signer", self.mr_signer, 32),
                bytes(32),
                _fixed("config_id", self.config_id, 64),
                struct.pack("<HHH", self.isv_prod_id, self.isv_svn, self.config_svn),
                bytes(42),
                _fixed("isv_family_id", self.isv_family_id, 16),
                _fixed("report_data", self.report_data, 64),
            )
        )
        assert len(out) == SGX_REPORT_BODY_SIZE
        return out


@dataclass(frozen=True, slots=True)
class TeeTcb:
    """The TDX module's part of a TD report (TEE_TCB_INFO): the platform, not the TD."""

    tee_tcb_svn: bytes = bytes(16)
    mr_seam: bytes = _ZERO48
    mr_signer_seam: bytes = _ZERO48
    seam_attributes: bytes = bytes(8)
    tee_tcb_svn2: bytes = bytes(16)


@dataclass(frozen=True, slots=True)
class TdReport:
    """Everything a TD quote body says: the module (``tcb``) and the TD's own measurements."""

    tcb: TeeTcb
    report_data: bytes = bytes(64)
    td_attributes: int = TD_ATTR_SEPT_VE_DISABLE
    xfam: int = 0x000602E7
    mr_td: bytes = _ZERO48
    mr_config_id: bytes = _ZERO48
    mr_owner: bytes = _ZERO48
    mr_owner_config: bytes = _ZERO48
    rtmrs: tuple[bytes, bytes, bytes, bytes] = field(default=(_ZERO48, _ZERO48, _ZERO48, _ZERO48))
    mr_servicetd: bytes = _ZERO48

    def with_report_data(self, report_data: bytes) -> TdReport:
        return replace(self, report_data=pad_report_data(report_data))

    def body(self, *, tdx15: bool) -> bytes:
        """The quote body: TD report 1.0 (584 bytes) or, with ``tdx15``, 1.5 (648 bytes)."""
        if len(self.rtmrs) != 4:
            raise ParseError("rtmrs", f"{len(self.rtmrs)} values, expected 4")
        parts = [
            _fixed("tee_tcb_svn", self.tcb.tee_tcb_svn, 16),
            _fixed("mr_seam", self.tcb.mr_seam, 48),
            _fixed("mr_signer_seam", self.tcb.mr_signer_seam, 48),
            _fixed("seam_attributes", self.tcb.seam_attributes, 8),
            struct.pack("<QQ", self.td_attributes, self.xfam),
            _fixed("mr_td", self.mr_td, 48),
            _fixed("mr_config_id", self.mr_config_id, 48),
            _fixed("mr_owner", self.mr_owner, 48),
            _fixed("mr_owner_config", self.mr_owner_config, 48),
            *(_fixed(f"rtmr{i}", r, 48) for i, r in enumerate(self.rtmrs)),
            _fixed("report_data", self.report_data, 64),
        ]
        if tdx15:
            parts += [
                _fixed("tee_tcb_svn2", self.tcb.tee_tcb_svn2, 16),
                _fixed("mr_servicetd", self.mr_servicetd, 48),
            ]
        return b"".join(parts)

    # --- TDREPORT (sgx_report2_t, 1024 bytes) -------------------------------------------------

    def tdreport(self, *, cpu_svn: bytes, mac_key: bytes) -> bytes:
        """The 1024-byte TDREPORT a TD gets from TDG.MR.REPORT for this report data."""
        tee_tcb_info = b"".join(
            (
                struct.pack("<Q", 0x1FF if any(self.tcb.tee_tcb_svn2) else 0xFF),  # valid fields bitmap
                _fixed("tee_tcb_svn", self.tcb.tee_tcb_svn, 16),
                _fixed("mr_seam", self.tcb.mr_seam, 48),
                _fixed("mr_signer_seam", self.tcb.mr_signer_seam, 48),
                _fixed("seam_attributes", self.tcb.seam_attributes, 8),
                _fixed("tee_tcb_svn2", self.tcb.tee_tcb_svn2, 16),
                bytes(95),
            )
        )
        td_info = b"".join(
            (
                struct.pack("<QQ", self.td_attributes, self.xfam),
                _fixed("mr_td", self.mr_td, 48),
                _fixed("mr_config_id", self.mr_config_id, 48),
                _fixed("mr_owner", self.mr_owner, 48),
                _fixed("mr_owner_config", self.mr_owner_config, 48),
                *(_fixed(f"rtmr{i}", r, 48) for i, r in enumerate(self.rtmrs)),
                _fixed("mr_servicetd", self.mr_servicetd, 48),
                bytes(64),
            )
        )
        version = 1 if any(self.mr_servicetd) else 0
        mac_input = b"".join(
            (
                bytes((0x81, 0, version, 0)),
                bytes(12),
                _fixed("cpu_svn", cpu_svn, 16),
                hashlib.sha384(tee_tcb_info).digest(),
                hashlib.sha384(td_info).digest(),
                _fixed("report_data", self.report_data, 64),
                bytes(32),
            )
        )
        mac = hmac.new(mac_key, mac_input, hashlib.sha256).digest()
        out = mac_input + mac + tee_tcb_info + bytes(17) + td_info
        assert len(out) == TDREPORT_SIZE
        return out

    @classmethod
    def from_tdreport(cls, report: bytes) -> TdReport:
        """Read the fields a TD-QE copies into the quote body. The MAC is not checked."""
        check_tdreport(report)
        tcb = report[256:495]
        info = report[512:1024]
        td_attributes, xfam = struct.unpack_from("<QQ", info, 0)
        rtmrs = tuple(info[208 + 48 * i : 256 + 48 * i] for i in range(4))
        return cls(
            tcb=TeeTcb(
                tee_tcb_svn=tcb[8:24],
                mr_seam=tcb[24:72],
                mr_signer_seam=tcb[72:120],
                seam_attributes=tcb[120:128],
                tee_tcb_svn2=tcb[128:144],
            ),
            report_data=report[128:192],
            td_attributes=td_attributes,
            xfam=xfam,
            mr_td=info[16:64],
            mr_config_id=info[64:112],
            mr_owner=info[112:160],
            mr_owner_config=info[160:208],
            rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]),
            mr_servicetd=info[400:448],
        )


def td_body_from_tdreport(report: bytes, *, tdx15: bool) -> bytes:
    """The quote body straight from a TDREPORT's bytes, as the TD-QE copies them.

    TEE_TCB_INFO[8:128] is tee_tcb_svn ‖ mr_seam ‖ mr_signer_seam ‖ seam_attributes and
    TDINFO[0:400] is attributes ‖ xfam ‖ mr_td ‖ … ‖ rtmr3: both already in body order.
    """
    check_tdreport(report)
    body = report[264:384] + report[512:912] + report[128:192]
    if tdx15:
        body += report[384:400] + report[912:960]
    return body

"""``/dev/tdx_guest``: the TDREPORT via ``TDX_CMD_GET_REPORT0``, quoted by the host's QGS.

This is the pre-configfs path of Intel's ``libtdx_attest`` in vsock mode: the guest gets its
1024-byte TDREPORT from the TDX module through the ioctl, then sends it to QGS (vsock CID 2,
port 4050 by default) and receives the quote. It is also where MRCONFIGID and the RTMRs are
read when configfs-tsm lacks measurements (kernels before 6.16).
"""

from __future__ import annotations

import base64
import fcntl
from pathlib import Path
from typing import Any, Final

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.base import pad_report_data
from teegate.attester.providers.eventlog import CCEL_PATH, read_eventlog
from teegate.errors import CollateralUnavailable, EvidenceError
from teegate.node.qgs.client import Address, VsockAddress, get_quote

__all__ = [
    "DEFAULT_QGS",
    "TDREPORT_SIZE",
    "TDX_CMD_GET_REPORT0",
    "TDX_GUEST_DEVICE",
    "TDX_MEASUREMENTS",
    "TdxGuestProvider",
    "check_init_data",
    "mr_config_id",
    "quote_tdreport",
    "read_tdreport",
]

TDX_GUEST_DEVICE: Final = Path("/dev/tdx_guest")
#: tsm-mr measurement registers of the tdx_guest device (Linux >= 6.16).
TDX_MEASUREMENTS: Final = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
TDREPORT_SIZE: Final = 1024
#: ``_IOWR('T', 1, struct tdx_report_req)`` with ``sizeof = 64 + 1024``.
TDX_CMD_GET_REPORT0: Final = (3 << 30) | ((64 + TDREPORT_SIZE) << 16) | (ord("T") << 8) | 1
#: libtdx_attest's vsock default (``/etc/tdx-attest.conf`` ``port=4050``).
DEFAULT_QGS: Final = VsockAddress(cid=2, port=4050)
#: TDINFO starts at 512 in a TDREPORT; MRCONFIGID follows ATTRIBUTES, XFAM (8 B each) and MRTD.
_MRCONFIGID_OFFSET: Final = 512 + 8 + 8 + 48
_MR_SIZE: Final = 48


def read_tdreport(report_data: bytes, device: Path = TDX_GUEST_DEVICE) -> bytes:
    """The TD's TDREPORT for 64 bytes of report data via ``TDX_CMD_GET_REPORT0``."""
    request = bytearray(pad_report_data(report_data) + bytes(TDREPORT_SIZE))
    try:
        with device.open("rb", buffering=0) as handle:
            fcntl.ioctl(handle.fileno(), TDX_CMD_GET_REPORT0, request, True)
    except PermissionError:
        raise EvidenceUnavailable(f"tdx-guest: permission denied opening {device} (run as root)") from None
    except FileNotFoundError:
        raise EvidenceUnavailable(f"tdx-guest: {device} does not exist (not a TDX guest)") from None
    except OSError as exc:
        raise EvidenceUnavailable(
            f"tdx-guest: TDX_CMD_GET_REPORT0 on {device} failed: {exc.strerror}"
        ) from None
    return bytes(request[64:])


def mr_config_id(tdreport: bytes) -> bytes:
    """MRCONFIGID (48 bytes) from a TDREPORT: where a TD's init-data digest is measured."""
    return tdreport[_MRCONFIGID_OFFSET : _MRCONFIGID_OFFSET + _MR_SIZE]


def check_init_data(
    digest: bytes, *, measurements: Path = TDX_MEASUREMENTS, device: Path = TDX_GUEST_DEVICE
) -> bool:
    """Check the init-data digest against MRCONFIGID, as guest-components' ``bind_init_data``.

    MRCONFIGID comes from sysfs (kernel >= 6.16) or a TDREPORT via ``/dev/tdx_guest``. Returns
    False when neither can be read (the KBS still checks); raises when they differ, because the
    KBS would refuse the evidence and the operator should learn why here.
    """
    expected = digest[:_MR_SIZE].ljust(_MR_SIZE, b"\0")
    actual: bytes | None = None
    sysfs = measurements / "mrconfigid"
    try:
        if sysfs.exists():
            actual = sysfs.read_bytes()[:_MR_SIZE]
        elif device.exists():
            actual = mr_config_id(read_tdreport(b"", device))
    except (OSError, EvidenceUnavailable):
        actual = None
    if actual is None:
        return False
    if actual != expected:
        raise EvidenceUnavailable(
            f"--initdata digest {expected.hex()[:16]}… does not match this TD's MRCONFIGID "
            f"{actual.hex()[:16]}…: the TD was launched with other init-data"
        )
    return True


def quote_tdreport(qgs: Address, tdreport: bytes, *, timeout: float = 30.0) -> bytes:
    """Ask QGS to quote ``tdreport`` as QEMU does; QGS being down is retryable."""
    try:
        return get_quote(qgs, tdreport, timeout=timeout)
    except CollateralUnavailable as exc:
        raise EvidenceUnavailable(f"quote service: {exc}", retryable=True) from None
    except EvidenceError as exc:
        raise EvidenceUnavailable(f"quote service refused the TDREPORT: {exc}") from None


def tdx_evidence(quote: bytes, eventlog: str | None) -> dict[str, Any]:
    """Trustee's ``TdxEvidence``: ``{"cc_eventlog": b64|null, "quote": b64}``."""
    return {"cc_eventlog": eventlog, "quote": base64.b64encode(quote).decode("ascii")}


class TdxGuestProvider:
    """TDREPORT from ``/dev/tdx_guest``, quote from QGS (vsock or a Unix socket)."""

    name = "tdx-guest"
    tee = "tdx"

    def __init__(
        self, device: Path = TDX_GUEST_DEVICE, qgs: Address = DEFAULT_QGS, *, ccel_path: Path = CCEL_PATH
    ) -> None:
        if not device.exists():
            raise EvidenceUnavailable(f"tdx-guest: {device} does not exist (not a TDX guest)")
        self._device = device
        self._qgs = qgs
        self._ccel_path = ccel_path

    def describe(self) -> str:
        return f"{self._device} + QGS at {self._qgs}"

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        tdreport = read_tdreport(report_data, self._device)
        if init_data_digest is not None and mr_config_id(tdreport) != init_data_digest[:_MR_SIZE].ljust(
            _MR_SIZE, b"\0"
        ):
            raise EvidenceUnavailable("--initdata digest does not match this TD's MRCONFIGID")
        return tdx_evidence(quote_tdreport(self._qgs, tdreport), read_eventlog(self._ccel_path))

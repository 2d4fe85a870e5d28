"""The CC event log Trustee's TDX attester attaches: CCEL (trimmed) + AAEL, 8×0xFF terminated."""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path
from typing import Final

from teegate.attester.errors import EvidenceUnavailable

__all__ = ["CCEL_PATH", "DEFAULT_AAEL_PATH", "MAX_EVENTLOG_BYTES", "read_eventlog", "trim_ccel"]

CCEL_PATH: Final = Path("/sys/firmware/acpi/tables/data/CCEL")
DEFAULT_AAEL_PATH: Final = Path("/run/attestation-agent/eventlog")
#: Bound on the event log we read and send.
MAX_EVENTLOG_BYTES: Final = 4 * 1024 * 1024
_EV_NO_ACTION: Final = 3
_END_FLAG: Final = b"\xff" * 8
#: TCG spec-ID header prepended to an AAEL when there is no CCEL (guest-components EL_HEADER).
_EL_HEADER: Final = bytes.fromhex(
    "0000000003000000" + "00" * 20 + "25000000" + "00" * 24 + "02000000" + "0c003000" + "12002000" + "00"
)
#: TCG algorithm id -> digest size.
_DIGEST_SIZES: Final = {0x0B: 32, 0x0C: 48, 0x0D: 64, 0x12: 32}


def trim_ccel(ccel: bytes) -> bytes:
    """Cut the CCEL ACPI table at its terminator (an all-0xFF or all-zero 8-byte word)."""

    def u32(at: int) -> int:
        if at + 4 > len(ccel):
            raise EvidenceUnavailable(f"CCEL truncated at offset {at}")
        return int(struct.unpack_from("<I", ccel, at)[0])

    index = 4
    event_type = u32(index)
    index += 4 + 20
    if event_type == _EV_NO_ACTION:
        index += 4 + u32(index)
    while True:
        if index + 8 > len(ccel):
            raise EvidenceUnavailable("CCEL has no end marker")
        if ccel[index : index + 8] in (_END_FLAG, b"\0" * 8):
            return ccel[:index]
        index += 8  # target MR index, event type
        count = u32(index)
        index += 4
        for _ in range(count):
            if index + 2 > len(ccel):
                raise EvidenceUnavailable(f"CCEL digest truncated at offset {index}")
            (algorithm,) = struct.unpack_from("<H", ccel, index)
            size = _DIGEST_SIZES.get(algorithm)
            if size is None:
                raise EvidenceUnavailable(
                    f"CCEL digest algorithm 0x{algorithm:x} at offset {index} is unknown"
                )
            index += 2 + size
        index += 4 + u32(index)


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_EVENTLOG_BYTES + 1)
    if len(data) > MAX_EVENTLOG_BYTES:
        raise EvidenceUnavailable(f"event log {path} exceeds {MAX_EVENTLOG_BYTES} bytes")
    return data


def read_eventlog(ccel_path: Path = CCEL_PATH, aael_path: Path | None = None) -> str | None:
    """``cc_eventlog`` for TDX evidence: base64 of CCEL (+ AAEL) + end flag, or None when neither exists."""
    if aael_path is None:
        aael_path = Path(os.environ.get("AAEL_PATH", str(DEFAULT_AAEL_PATH)))
    log = b""
    try:
        if ccel_path.exists():
            log = trim_ccel(_read_bounded(ccel_path))
        if aael_path.exists():
            log = (log or _EL_HEADER) + _read_bounded(aael_path)
    except OSError as exc:
        raise EvidenceUnavailable(f"cannot read the CC event log: {exc}") from exc
    if not log:
        return None
    return base64.b64encode(log + _END_FLAG).decode("ascii")

"""CC event log (CCEL) parsing and RTMR replay for TDX — pure: no I/O.

Format: TCG PC Client Platform Firmware Profile §10 ("crypto agile" log), as exposed by the ACPI
CCEL table and sent by guest-components as TDX evidence ``cc_eventlog``
(shared/spec/kbs-protocol.md §4.4): one SHA-1 format ``TCG_PCClientPCREvent`` whose data is the
``TCG_EfiSpecIdEvent`` ("Spec ID Event03", listing the digest algorithms and sizes), then
``TCG_PCR_EVENT2`` entries up to an end marker (eight 0xFF or eight 0x00 bytes, or the end of
the data). Everything after the end marker must be that padding byte.

CC measurement register index 1..4 maps to TDX RTMR 0..3 (UEFI 2.10 §38.4.1); each event's
SHA-384 digest extends its RTMR as ``RTMR = SHA384(RTMR || digest)``. ``EV_NO_ACTION`` events
are informational and not extended (TCG PFP §10.4.5).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Any, Final

from teegate.errors import ParseError

__all__ = [
    "ALG_SHA384",
    "EV_NO_ACTION",
    "MAX_ALGORITHMS",
    "MAX_EVENTLOG_BYTES",
    "MAX_EVENTS",
    "MAX_EVENT_DATA_BYTES",
    "Event",
    "EventLog",
    "event_type_name",
    "eventlog_claims",
    "parse_cc_eventlog",
    "replay_rtmrs",
]

#: Largest event log accepted (the CCEL area of common firmware is 64–256 KiB).
MAX_EVENTLOG_BYTES: Final = 1024 * 1024
#: Most TCG_PCR_EVENT2 entries in one log.
MAX_EVENTS: Final = 8192
#: Largest event data of one entry.
MAX_EVENT_DATA_BYTES: Final = 256 * 1024
#: Most digest algorithms the Spec ID event may declare.
MAX_ALGORITHMS: Final = 8

EV_NO_ACTION: Final = 0x3
ALG_SHA384: Final = 0x000C
#: TPM_ALG_ID → (name used in claims, digest size). Unknown algorithms are refused.
_ALGORITHMS: Final[dict[int, tuple[str, int]]] = {
    0x0004: ("SHA-1", 20),
    0x000B: ("SHA-256", 32),
    0x000C: ("SHA-384", 48),
    0x000D: ("SHA-512", 64),
    0x0012: ("SM3", 32),
}
_EVENT_TYPES: Final[dict[int, str]] = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000000: "EV_EFI_EVENT_BASE",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}
#: Events whose data is a plain string (Trustee's EvSimpleParser).
_STRING_EVENTS: Final = frozenset({0x1, 0x5, 0xC, 0x12, 0x80000007})
#: Events whose data starts with a length-prefixed description (UEFI_PLATFORM_FIRMWARE_BLOB2,
#: UEFI_HANDOFF_TABLE_POINTERS2; TCG PFP §10.2.5).
_DESCRIBED_EVENTS: Final = frozenset({0x8000000A, 0x8000000B})
_EV_IPL: Final = 0xD
_SPEC_ID_SIGNATURE: Final = b"Spec ID Event03\x00"
_HEADER_FIXED: Final = 4 + 4 + 20 + 4  # pcrIndex, eventType, SHA-1 digest, eventSize
_SPEC_ID_FIXED: Final = 16 + 4 + 1 + 1 + 1 + 1 + 4  # signature … numberOfAlgorithms
_END_MARKERS: Final = (b"\xff" * 8, b"\x00" * 8)
_RTMR_COUNT: Final = 4
_WHAT: Final = "cc_eventlog"


@dataclass(frozen=True, slots=True)
class Event:
    """One TCG_PCR_EVENT2 entry; ``digests`` maps TPM_ALG_ID → digest, in log order."""

    offset: int
    mr_index: int
    event_type: int
    digests: tuple[tuple[int, bytes], ...]
    data: bytes

    def digest(self, alg_id: int) -> bytes | None:
        """This event's digest for ``alg_id``, or None if the entry does not carry one."""
        for alg, value in self.digests:
            if alg == alg_id:
                return value
        return None


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed CC event log: the declared algorithms (TPM_ALG_ID, size) and the events."""

    algorithms: tuple[tuple[int, int], ...]
    events: tuple[Event, ...]
    #: Bytes up to and including the last event (the end marker and padding excluded).
    length: int


def event_type_name(event_type: int) -> str:
    """The TCG name (``EV_…``) of an event type, or ``EV_UNKNOWN_0x…`` for an unlisted one."""
    return _EVENT_TYPES.get(event_type, f"EV_UNKNOWN_{event_type:#x}")


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, size: int, what: str) -> bytes:
        end = self.offset + size
        if end > len(self.data):
            raise ParseError(
                f"{_WHAT}.{what}",
                f"needs {size} bytes but only {len(self.data) - self.offset} remain (truncated log)",
                offset=self.offset,
            )
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value


def _parse_spec_id(data: bytes, base: int) -> tuple[tuple[int, int], ...]:
    r = _Reader(data, 0)
    if r.take(16, "spec_id.signature") != _SPEC_ID_SIGNATURE:
        raise ParseError(
            f"{_WHAT}.spec_id.signature", 'must be "Spec ID Event03" (crypto-agile log)', offset=base
        )
    r.take(8, "spec_id.version")  # platformClass, version minor/major, errata, uintnSize
    count_at = base + r.offset
    count = r.u32("spec_id.number_of_algorithms")
    if not 1 <= count <= MAX_ALGORITHMS:
        raise ParseError(
            f"{_WHAT}.spec_id.number_of_algorithms",
            f"is {count}, must be 1..{MAX_ALGORITHMS}",
            offset=count_at,
        )
    algorithms: list[tuple[int, int]] = []
    for _ in range(count):
        at = base + r.offset
        alg = r.u16("spec_id.algorithm_id")
        size = r.u16("spec_id.digest_size")
        known = _ALGORITHMS.get(alg)
        if known is None:
            raise ParseError(f"{_WHAT}.spec_id.algorithm_id", f"unknown TPM_ALG_ID {alg:#06x}", offset=at)
        if size != known[1]:
            raise ParseError(
                f"{_WHAT}.spec_id.digest_size",
                f"{known[0]} digests are {known[1]} bytes, not {size}",
                offset=at + 2,
            )
        if any(a == alg for a, _ in algorithms):
            raise ParseError(f"{_WHAT}.spec_id.algorithm_id", f"{known[0]} listed twice", offset=at)
        algorithms.append((alg, size))
    vendor_size = r.u8("spec_id.vendor_info_size")
    r.take(vendor_size, "spec_id.vendor_info")
    if r.offset != len(data):
        raise ParseError(
            f"{_WHAT}.spec_id",
            f"event data is {len(data)} bytes but the Spec ID event uses {r.offset}",
            offset=base,
        )
    return tuple(algorithms)


def _is_padding(rest: bytes) -> bool:
    return rest == b"\xff" * len(rest) or rest == b"\x00" * len(rest)


def parse_cc_eventlog(data: bytes) -> EventLog:
    """Parse a crypto-agile CC event log; raises :class:`ParseError` naming the field and offset."""
    if len(data) > MAX_EVENTLOG_BYTES:
        raise ParseError(_WHAT, f"is {len(data)} bytes, more than {MAX_EVENTLOG_BYTES}")
    r = _Reader(data, 0)
    r.u32("header.mr_index")
    type_at = r.offset
    if r.u32("header.event_type") != EV_NO_ACTION:
        raise ParseError(f"{_WHAT}.header.event_type", "first event must be EV_NO_ACTION", offset=type_at)
    r.take(20, "header.digest")
    size_at = r.offset
    size = r.u32("header.event_size")
    if not _SPEC_ID_FIXED <= size <= MAX_EVENT_DATA_BYTES:
        raise ParseError(f"{_WHAT}.header.event_size", f"{size} is out of range", offset=size_at)
    algorithms = _parse_spec_id(r.take(size, "header.event"), _HEADER_FIXED)
    sizes = dict(algorithms)
    events: list[Event] = []
    while True:
        rest = data[r.offset : r.offset + 8]
        if not rest or (len(rest) < 8 and _is_padding(rest)) or rest in _END_MARKERS:
            break
        if len(events) >= MAX_EVENTS:
            raise ParseError(_WHAT, f"more than {MAX_EVENTS} events", offset=r.offset)
        events.append(_parse_event(r, sizes))
    end = r.offset
    tail = data[end:]
    if tail and not _is_padding(tail):
        raise ParseError(_WHAT, "non-padding bytes after the end-of-log marker", offset=end)
    return EventLog(algorithms=algorithms, events=tuple(events), length=end)


def _parse_event(r: _Reader, sizes: dict[int, int]) -> Event:
    start = r.offset
    mr_index = r.u32("event.mr_index")
    event_type = r.u32("event.event_type")
    count_at = r.offset
    count = r.u32("event.digest_count")
    if count != len(sizes):
        raise ParseError(
            f"{_WHAT}.event.digest_count",
            f"is {count}; the Spec ID event declares {len(sizes)} algorithms",
            offset=count_at,
        )
    digests: list[tuple[int, bytes]] = []
    for _ in range(count):
        alg_at = r.offset
        alg = r.u16("event.algorithm_id")
        size = sizes.get(alg)
        if size is None:
            raise ParseError(
                f"{_WHAT}.event.algorithm_id",
                f"{alg:#06x} is not declared by the Spec ID event",
                offset=alg_at,
            )
        if any(a == alg for a, _ in digests):
            raise ParseError(f"{_WHAT}.event.algorithm_id", f"{alg:#06x} appears twice", offset=alg_at)
        digests.append((alg, r.take(size, "event.digest")))
    size_at = r.offset
    size = r.u32("event.event_size")
    if size > MAX_EVENT_DATA_BYTES:
        raise ParseError(
            f"{_WHAT}.event.event_size", f"{size} is more than {MAX_EVENT_DATA_BYTES}", offset=size_at
        )
    data = r.take(size, "event.event")
    return Event(start, mr_index, event_type, tuple(digests), data)


def replay_rtmrs(log: EventLog) -> tuple[bytes, bytes, bytes, bytes]:
    """Replay the SHA-384 digests into RTMR 0..3 (CC MR index 1..4); other indices are refused."""
    if ALG_SHA384 not in dict(log.algorithms):
        raise ParseError(f"{_WHAT}.spec_id", "declares no SHA-384 digests, so RTMRs cannot be replayed")
    rtmrs = [bytes(48) for _ in range(_RTMR_COUNT)]
    for event in log.events:
        if event.event_type == EV_NO_ACTION:
            continue
        if not 1 <= event.mr_index <= _RTMR_COUNT:
            raise ParseError(
                f"{_WHAT}.event.mr_index",
                f"{event.mr_index} is not a TDX RTMR (CC MR index must be 1..4)",
                offset=event.offset,
            )
        digest = event.digest(ALG_SHA384)
        if digest is None:  # unreachable: digest_count is checked against the declared list
            raise ParseError(f"{_WHAT}.event.digest", "has no SHA-384 digest", offset=event.offset)
        i = event.mr_index - 1
        rtmrs[i] = hashlib.sha384(rtmrs[i] + digest).digest()
    return rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]


def _details(event: Event) -> dict[str, str]:
    """``{"string": …}`` for the string-bearing event types, else ``{}`` (never raises)."""
    data = event.data
    if event.event_type in _DESCRIBED_EVENTS:
        data = data[1 : data[0] + 1].removesuffix(b"\x00") if data else b"\xff"
    elif event.event_type == _EV_IPL:
        data = data.split(b"\x00", 1)[0]
    elif event.event_type not in _STRING_EVENTS:
        return {}
    try:
        return {"string": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {}


def eventlog_claims(log: EventLog) -> list[dict[str, Any]]:
    """Trustee's ``uefi_event_logs`` entries (deps/eventlog ``EventlogEntry``), simplified.

    Each entry: ``index`` (CC MR index), ``type_name`` (``EV_…``), ``digests``
    (``[{"alg": "SHA-384", "digest": hex}]``), ``event`` (base64 of the event data),
    ``digest_matches_event`` (the event's SHA-384 digest equals SHA-384 of its data — Trustee
    decides this per event type; we use this one generic rule) and ``details``: ``{"string": …}``
    for string events (EV_ACTION, EV_EFI_ACTION, EV_POST_CODE…), EV_IPL (up to the first NUL) and
    the BLOB2/HANDOFF_TABLES2 descriptions, else ``{}`` — Trustee's other per-type decoding
    (UEFI variables, device paths, event tags) is not done here.
    """
    names = {alg: _ALGORITHMS[alg][0] for alg, _ in log.algorithms}
    claims: list[dict[str, Any]] = []
    for event in log.events:
        sha384 = event.digest(ALG_SHA384)
        matches = sha384 is not None and hmac.compare_digest(sha384, hashlib.sha384(event.data).digest())
        claims.append(
            {
                "details": _details(event),
                "digest_matches_event": matches,
                "digests": [{"alg": names[alg], "digest": value.hex()} for alg, value in event.digests],
                "event": base64.b64encode(event.data).decode("ascii"),
                "index": event.mr_index,
                "type_name": event_type_name(event.event_type),
            }
        )
    return claims

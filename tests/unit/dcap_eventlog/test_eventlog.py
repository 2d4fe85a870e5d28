"""CC event log parsing and RTMR replay on go-tdx-guest's real CCEL and its quote."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.dcap.eventlog import (
    ALG_SHA384,
    MAX_EVENTLOG_BYTES,
    EventLog,
    eventlog_claims,
    parse_cc_eventlog,
    replay_rtmrs,
)
from teegate.dcap.quote import TdReport10, parse_quote
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import ParseError, VerificationError
from teegate.kbs.protocol import Tee
from teegate.verifiers.dcap import DcapVerifier

_CCEL = "raw/go-tdx-guest/ccel/ccel_data.dat"
_QUOTE = "go-tdx-guest/ccel/cos-113-tdx-quote.dat"


def _ccel(vectors: Path) -> bytes:
    return (vectors / _CCEL).read_bytes()


def _rtmrs(vectors: Path) -> tuple[bytes, ...]:
    body = parse_quote((vectors / _QUOTE).read_bytes()).body
    assert isinstance(body, TdReport10)
    return body.rtmrs


def _tamper_digest(data: bytes, log: EventLog, event_no: int) -> bytes:
    """Flip one bit of event ``event_no``'s SHA-384 digest (alg id follows the 12-byte head)."""
    at = log.events[event_no].offset + 12
    assert struct.unpack_from("<H", data, at)[0] == ALG_SHA384
    out = bytearray(data)
    out[at + 2] ^= 0x01
    return bytes(out)


def test_real_ccel_replays_to_the_quote_rtmrs(vectors: Path) -> None:
    data = _ccel(vectors)
    log = parse_cc_eventlog(data)
    assert log.algorithms == ((ALG_SHA384, 48),)
    assert len(log.events) == 43 and log.length == 18101
    assert data[log.length :] == b"\xff" * (len(data) - log.length)
    assert replay_rtmrs(log) == _rtmrs(vectors)
    # guest-components trims the CCEL at its terminator and appends 8×0xFF: same events.
    trimmed = parse_cc_eventlog(data[: log.length] + b"\xff" * 8)
    assert trimmed.events == log.events
    assert parse_cc_eventlog(data[: log.length]).events == log.events


def test_claims_shape(vectors: Path) -> None:
    log = parse_cc_eventlog(_ccel(vectors))
    claims = eventlog_claims(log)
    assert len(claims) == 43
    assert json.loads(json.dumps(claims)) == claims
    first = claims[0]
    assert set(first) == {"details", "digest_matches_event", "digests", "event", "index", "type_name"}
    assert first["digests"][0]["alg"] == "SHA-384" and len(first["digests"][0]["digest"]) == 96
    assert base64.b64decode(first["event"]) == log.events[0].data
    separators = [c for c in claims if c["type_name"] == "EV_SEPARATOR"]
    assert {c["index"] for c in separators} == {1, 2}
    assert all(c["digest_matches_event"] for c in separators)
    assert all(c["event"] == "AAAAAA==" for c in separators)
    assert {c["index"] for c in claims} <= {1, 2, 3, 4}
    assert any(c["type_name"] == "EV_EFI_BOOT_SERVICES_APPLICATION" for c in claims)
    assert claims[0]["details"] == {"string": "TdxTable"}  # EV_EFI_HANDOFF_TABLES2 description
    assert claims[-1]["details"] == {"string": "Exit Boot Services Returned with Success"}
    assert claims[-1]["digest_matches_event"] is True
    ipl = [c["details"]["string"] for c in claims if c["type_name"] == "EV_IPL"]
    assert "/efi/boot/grub.cfg" in ipl and any(x.startswith("kernel_cmdline: ") for x in ipl)
    assert all(c["details"] == {} for c in claims if c["type_name"] == "EV_EFI_VARIABLE_BOOT")


def test_tampered_digest_changes_only_its_rtmr(vectors: Path) -> None:
    data = _ccel(vectors)
    log = parse_cc_eventlog(data)
    quoted = _rtmrs(vectors)
    for event_no in (0, len(log.events) - 1):
        rtmr = log.events[event_no].mr_index - 1
        replayed = replay_rtmrs(parse_cc_eventlog(_tamper_digest(data, log, event_no)))
        assert replayed[rtmr] != quoted[rtmr]
        assert [r == q for r, q in zip(replayed, quoted, strict=True)].count(False) == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d[:10], "cc_eventlog.header.digest"),
        (lambda d: d[:40], "cc_eventlog.header.event"),
        (lambda d: d[:200], "cc_eventlog.event"),
        (lambda d: b"\x00\x00\x00\x00\x01\x00\x00\x00" + d[8:], "cc_eventlog.header.event_type"),
        (lambda d: d[:32] + b"Spec ID Event02\x00" + d[48:], "cc_eventlog.spec_id.signature"),
        (lambda d: d[:18101] + b"\x01" + d[18102:], "cc_eventlog"),
        (lambda d: d + b"\xff" * MAX_EVENTLOG_BYTES, "cc_eventlog"),
    ],
)
def test_bad_logs_name_the_field(vectors: Path, mutate: Any, field: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_cc_eventlog(mutate(_ccel(vectors)))
    assert info.value.field.startswith(field), info.value


def test_event_outside_rtmrs_is_refused(vectors: Path) -> None:
    data = bytearray(_ccel(vectors))
    log = parse_cc_eventlog(bytes(data))
    struct.pack_into("<I", data, log.events[5].offset, 9)
    with pytest.raises(ParseError, match="not a TDX RTMR"):
        replay_rtmrs(parse_cc_eventlog(bytes(data)))


def _fuzz_check(data: bytes) -> None:
    try:
        log = parse_cc_eventlog(data)
        replay_rtmrs(log)
        eventlog_claims(log)
    except ParseError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=512))
def test_garbage_raises_parse_error_only(data: bytes) -> None:
    _fuzz_check(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 18200), at=st.integers(0, 18100), value=st.integers(0, 255))
def test_mutated_real_log_raises_parse_error_only(vectors: Path, cut: int, at: int, value: int) -> None:
    data = bytearray(_ccel(vectors)[:18200])
    data[at] = value
    _fuzz_check(bytes(data[:cut]))
    _fuzz_check(bytes(data))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tail=st.binary(max_size=256))
def test_real_header_then_garbage_raises_parse_error_only(vectors: Path, tail: bytes) -> None:
    data = _ccel(vectors)
    header = data[: parse_cc_eventlog(data).events[0].offset]
    _fuzz_check(header + tail)


# --- through the KBS verifier, with real collateral --------------------------------------------


class _OneSet:
    def __init__(self, collateral: Collateral) -> None:
        self.collateral = collateral

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        return self.collateral


def _verify(vectors: Path, eventlog: Any) -> dict[str, Any]:
    cases = json.loads((vectors / "cases.json").read_text())
    case = next(c for c in cases if c["quote"] == _QUOTE and c["dcap_qvl"].get("status") == "UpToDate")
    source = _OneSet(Collateral.from_json((vectors / case["collateral"]).read_text()))
    verifier = DcapVerifier(Tee.TDX, QuoteVerifier(TrustAnchors.intel()), source)
    quote = base64.b64encode((vectors / _QUOTE).read_bytes()).decode()
    now = datetime.fromtimestamp(case["at"], UTC)
    result = asyncio.run(verifier.verify({"cc_eventlog": eventlog, "quote": quote}, now=now))
    return result.claims


def test_verifier_adds_uefi_event_logs(vectors: Path) -> None:
    data = _ccel(vectors)
    claims = _verify(vectors, base64.b64encode(data).decode())  # the whole 256 KiB CCEL area
    assert claims["uefi_event_logs"] == eventlog_claims(parse_cc_eventlog(data))
    assert len(claims["uefi_event_logs"]) == 43
    assert "uefi_event_logs" not in _verify(vectors, None)


def test_verifier_refuses_mismatching_eventlog(vectors: Path) -> None:
    data = _ccel(vectors)
    log = parse_cc_eventlog(data)
    last = len(log.events) - 1
    tampered = base64.b64encode(_tamper_digest(data, log, last)).decode()
    rtmr = log.events[last].mr_index - 1
    with pytest.raises(
        VerificationError, match=f"EVENTLOG_RTMR_MISMATCH: replaying cc_eventlog gives RTMR{rtmr}"
    ):
        _verify(vectors, tampered)
    with pytest.raises(ParseError, match="cc_eventlog"):
        _verify(vectors, "not base64!")
    with pytest.raises(ParseError, match="cc_eventlog"):
        _verify(vectors, base64.b64encode(data[:300]).decode())
    with pytest.raises(ParseError, match="at most"):
        _verify(vectors, "A" * (2 * MAX_EVENTLOG_BYTES))

"""TDX and SGX evidence through the DCAP core (``teegate.dcap``).

Evidence shapes as guest-components sends them: TDX ``{"cc_eventlog": <b64|null>, "quote":
"<b64>"}``, SGX ``{"quote": "<b64>"}`` (hex and binary-as-text are accepted by
``decode_quote_text``). Collateral comes from a ``teegate.collateral`` source through a small
in-memory memo (one fetch per platform per ``collateral_ttl``), so a warm KBS verifies a quote
with no I/O. A simulated quote verifies only when the verifier's anchors include the simulated
root (``SimPlatform.anchor()``), which only the ``sim`` configuration adds.

A TDX ``cc_eventlog`` is parsed (``teegate.dcap.eventlog``) and replayed into RTMR 0..3; evidence
whose replayed RTMRs differ from the quote's is refused, otherwise the events become the
``uefi_event_logs`` claim (shared/spec/kbs-protocol.md §3.4).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from datetime import datetime
from typing import Any, Final

from teegate.collateral.source import CollateralSource
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.dcap.eventlog import MAX_EVENTLOG_BYTES, eventlog_claims, parse_cc_eventlog, replay_rtmrs
from teegate.dcap.pck import collateral_key
from teegate.dcap.quote import Quote, TdReport10, decode_quote_text, parse_quote
from teegate.dcap.verify import QuoteVerifier, verdict_claims
from teegate.errors import ParseError, VerificationError
from teegate.kbs.protocol import REPORT_DATA_BYTES, Tee
from teegate.verifiers.base import MAX_EVIDENCE_CHARS, VerifiedEvidence

__all__ = ["DEFAULT_COLLATERAL_TTL_SECONDS", "MAX_CC_EVENTLOG_CHARS", "DcapVerifier"]

#: How long fetched collateral is reused before asking the source again.
DEFAULT_COLLATERAL_TTL_SECONDS: Final = 600.0
_MAX_MEMO: Final = 256
#: Longest base64 text of a TDX ``cc_eventlog`` (a whole CCEL area of MAX_EVENTLOG_BYTES fits).
MAX_CC_EVENTLOG_CHARS: Final = 4 * ((MAX_EVENTLOG_BYTES + 2) // 3)


def _eventlog_claims(text: str, quote: Quote) -> list[dict[str, Any]]:
    """Parse and replay ``cc_eventlog``; refuse it unless it reproduces the quote's RTMRs."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError("tdx evidence.cc_eventlog", f"is not standard base64: {exc}") from None
    log = parse_cc_eventlog(raw)
    body = quote.body
    if not isinstance(body, TdReport10):  # unreachable: the caller checked quote.tee == "tdx"
        raise VerificationError("TEE_MISMATCH", "cc_eventlog sent with a quote that has no RTMRs")
    for i, (replayed, quoted) in enumerate(zip(replay_rtmrs(log), body.rtmrs, strict=True)):
        if not hmac.compare_digest(replayed, quoted):
            raise VerificationError(
                "EVENTLOG_RTMR_MISMATCH",
                f"replaying cc_eventlog gives RTMR{i} {replayed.hex()} but the quote has {quoted.hex()}; "
                "the event log does not belong to this TD or was altered",
            )
    return eventlog_claims(log)


class _CollateralMemo:
    """Per-key collateral reuse with a TTL; concurrent misses for one key share one fetch."""

    def __init__(self, source: CollateralSource, ttl: float) -> None:
        self._source = source
        self._ttl = ttl
        self._entries: dict[CollateralKey, tuple[float, Collateral]] = {}
        self._inflight: dict[CollateralKey, asyncio.Future[Collateral]] = {}

    async def get(self, key: CollateralKey, now: datetime) -> Collateral:
        entry = self._entries.get(key)
        mono = time.monotonic()
        if entry is not None and entry[0] > mono:
            return entry[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Collateral] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            collateral = await self._source.get(key, now=now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        future.set_result(collateral)
        if len(self._entries) >= _MAX_MEMO:
            self._entries.clear()
        self._entries[key] = (mono + self._ttl, collateral)
        return collateral

    def forget(self, key: CollateralKey) -> None:
        self._entries.pop(key, None)


class DcapVerifier:
    """Verifies TDX (``Tee.TDX``) or SGX (``Tee.SGX``) quotes with a warm :class:`QuoteVerifier`."""

    def __init__(
        self,
        tee: Tee,
        quote_verifier: QuoteVerifier,
        source: CollateralSource,
        *,
        collateral_ttl: float = DEFAULT_COLLATERAL_TTL_SECONDS,
    ) -> None:
        if tee not in (Tee.TDX, Tee.SGX):
            raise ValueError(f"DcapVerifier serves tdx/sgx, not {tee.value}")
        self.tee: Tee = tee
        self._verifier = quote_verifier
        self._memo = _CollateralMemo(source, collateral_ttl)
        # PCK chain text → collateral key: saves decoding the PCK extensions once per quote.
        self._keys: dict[str, CollateralKey] = {}

    async def verify(self, evidence: Any, *, now: datetime) -> VerifiedEvidence:
        """Parse the quote, fetch collateral (memoised), verify, and map to Trustee's claims."""
        name = self.tee.value
        if not isinstance(evidence, dict):
            raise ParseError(f"{name} evidence", 'must be a JSON object {"quote": "<base64>", …}')
        text = evidence.get("quote")
        if not isinstance(text, str) or not text:
            raise ParseError(f"{name} evidence.quote", "is required and must be a base64 string")
        if len(text) > MAX_EVIDENCE_CHARS:
            raise ParseError(f"{name} evidence.quote", f"longer than {MAX_EVIDENCE_CHARS} characters")
        if self.tee is Tee.TDX:
            eventlog = evidence.get("cc_eventlog")
            if eventlog is not None and (
                not isinstance(eventlog, str) or len(eventlog) > MAX_CC_EVENTLOG_CHARS
            ):
                raise ParseError(
                    "tdx evidence.cc_eventlog", f"must be base64 of at most {MAX_CC_EVENTLOG_CHARS} chars"
                )
        else:
            eventlog = None
        quote = parse_quote(decode_quote_text(text))
        if quote.tee != name:
            raise VerificationError(
                "TEE_MISMATCH", f"the session is for {name} but the quote is a {quote.tee} quote"
            )
        key = self._keys.get(quote.pck_chain_pem)
        if key is None:
            key = collateral_key(quote)
            if len(self._keys) >= _MAX_MEMO:
                self._keys.clear()
            self._keys[quote.pck_chain_pem] = key
        collateral = await self._memo.get(key, now)
        verdict = self._verifier.verify(quote, collateral, now=now)
        claims = verdict_claims(verdict)
        if eventlog:  # null or "" (no event log) → as before
            claims["uefi_event_logs"] = _eventlog_claims(eventlog, quote)
        init_data = claims.get("init_data")
        return VerifiedEvidence(
            tee=self.tee,
            tee_class="cpu",
            claims=claims,
            report_data=quote.report_data,
            init_data=bytes.fromhex(init_data) if isinstance(init_data, str) else None,
            binding_width=REPORT_DATA_BYTES,
            simulated=verdict.anchor.simulated,
        )

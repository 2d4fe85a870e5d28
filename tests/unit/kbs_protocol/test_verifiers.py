"""The KBS verifiers on real Intel vectors (tdx/sgx via the DCAP core) and on sample evidence."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import CollateralUnavailable, ParseError, VerificationError
from teegate.kbs.protocol import Tee
from teegate.verifiers import UnsupportedTee, VerifierSet, check_binding
from teegate.verifiers.dcap import DcapVerifier
from teegate.verifiers.sample import SampleVerifier


class _OneSet:
    """A collateral source holding one real collateral set; counts fetches."""

    def __init__(self, collateral: Collateral) -> None:
        self.collateral = collateral
        self.fetches = 0

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        self.fetches += 1
        return self.collateral


class _Down:
    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        raise CollateralUnavailable(f"PCCS down for {key.fmspc}")


def _cases(vectors: Path, tee: str) -> list[dict[str, Any]]:
    cases = json.loads((vectors / "cases.json").read_text())
    chosen = []
    for case in cases:
        status = case["dcap_qvl"].get("status")
        if status in ("UpToDate", "OutOfDate", "SWHardeningNeeded") and tee in case["collateral"].lower():
            chosen.append(case)
    assert chosen, f"no {tee} cases with a dcap-qvl status in the vectors"
    return chosen


@pytest.mark.parametrize("tee", ["tdx", "sgx"])
def test_real_quote_claims_match_dcap_qvl(vectors: Path, tee: str) -> None:
    case = _cases(vectors, tee)[0]
    quote = (vectors / case["quote"]).read_bytes()
    if case["quote"].endswith((".hex", ".txt")):
        quote = bytes.fromhex(quote.decode().strip().removeprefix("0x"))
    source = _OneSet(Collateral.from_json((vectors / case["collateral"]).read_text()))
    verifier = DcapVerifier(Tee(tee), QuoteVerifier(TrustAnchors.intel()), source)
    now = datetime.fromtimestamp(case["at"], UTC)
    evidence = {"quote": base64.b64encode(quote).decode()}
    if tee == "tdx":
        evidence["cc_eventlog"] = None  # type: ignore[assignment]
    result = asyncio.run(verifier.verify(evidence, now=now))
    assert result.claims["tcb_status"] == case["dcap_qvl"]["status"]
    assert sorted(result.claims["advisory_ids"]) == sorted(case["dcap_qvl"]["advisories"])
    assert result.claims["simulated"] is False and not result.simulated
    assert result.binding_width == 64 and len(result.report_data) == 64 and result.tee_class == "cpu"
    asyncio.run(verifier.verify(evidence, now=now))
    assert source.fetches == 1  # collateral memoised per platform
    # The real quote does not bind our runtime data.
    with pytest.raises(VerificationError, match="REPORT_DATA_MISMATCH"):
        check_binding(result, b"\xa5" * 48)
    # Wrong session TEE, and unavailable collateral, are told apart.
    other = Tee.SGX if tee == "tdx" else Tee.TDX
    with pytest.raises(VerificationError, match="TEE_MISMATCH"):
        asyncio.run(DcapVerifier(other, QuoteVerifier(), source).verify(evidence, now=now))
    with pytest.raises(CollateralUnavailable):
        asyncio.run(DcapVerifier(Tee(tee), QuoteVerifier(), _Down()).verify(evidence, now=now))


def test_dcap_evidence_shape_errors() -> None:
    verifier = DcapVerifier(Tee.TDX, QuoteVerifier(), _Down())
    now = datetime.now(UTC)
    for bad, match in (
        ("quote", "JSON object"),
        ({}, "quote"),
        ({"quote": "zz"}, "truncated"),
        ({"quote": "AAAA", "cc_eventlog": 5}, "cc_eventlog"),
    ):
        with pytest.raises(ParseError, match=match):
            asyncio.run(verifier.verify(bad, now=now))


def test_sample_verifier_and_set() -> None:
    verifier = SampleVerifier()
    digest = bytes(range(48))
    result = asyncio.run(
        verifier.verify({"svn": "1", "report_data": base64.b64encode(digest).decode()}, now=datetime.now(UTC))
    )
    assert result.claims["launch_digest"] == "abcde" and result.binding_width is None
    check_binding(result, digest)
    with pytest.raises(VerificationError):
        check_binding(result, digest[:-1] + b"\x00")
    with pytest.raises(ParseError, match="base64"):
        asyncio.run(verifier.verify({"svn": "1", "report_data": "!!"}, now=datetime.now(UTC)))
    verifiers = VerifierSet({Tee.SAMPLE: verifier})
    assert verifiers.enabled == ["sample"] and verifiers.get(Tee.SAMPLE) is verifier
    with pytest.raises(UnsupportedTee, match="'tdx' is not accepted"):
        verifiers.get(Tee.TDX)

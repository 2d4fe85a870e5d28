"""Every real (quote, collateral, time) case in shared/vectors/cases.json, against dcap-qvl in the same test.

* dcap-qvl gives a status → teegate's status and advisory IDs equal it (and dcap-qvl is run here).
* dcap-qvl refuses by its own appraisal policy (debug, SEPT_VE_DISABLE, MR service TD) → teegate
  returns Intel's QVL status and reports the attribute; policy decides later.
* TCB Info v2 (dcap-qvl cannot decode it) → teegate supports v2 and returns Intel's QVL status.
* "No matching TCB level found" → teegate fails too (TCB_NOT_SUPPORTED).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dcap_qvl
import pytest

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.certs import load_crl
from teegate.dcap.collateral import Collateral
from teegate.dcap.qe_identity import parse_qe_identity
from teegate.dcap.quote import Quote, decode_quote_text, parse_quote
from teegate.dcap.tcb_info import parse_tcb_info
from teegate.dcap.verify import QuoteVerifier, verdict_claims, verify_collateral, verify_quote
from teegate.errors import VerificationError
from tests.conftest import vectors_dir

_CASES: list[dict[str, Any]] = json.loads((vectors_dir() / "cases.json").read_text())
_POLICY_ERRORS = ("Debug mode is enabled", "SEPT_VE_DISABLE is not enabled", "Invalid MR service TD")
#: go-tdx-guest appends a text line to this quote on purpose; teegate's parser refuses it by default.
_NONZERO_TRAILING = frozenset({"go-tdx-guest/tdx_prod_quote_SPR_E4.dat"})


def _id(case: dict[str, Any]) -> str:
    return f"{case['quote']}@{Path(case['collateral']).stem}"


def _load(vectors: Path, case: dict[str, Any]) -> tuple[bytes, str, datetime]:
    raw = decode_quote_text((vectors / case["quote"]).read_bytes())
    text = (vectors / case["collateral"]).read_text()
    return raw, text, datetime.fromtimestamp(case["at"], UTC)


def _quote(raw: bytes, case: dict[str, Any]) -> Quote:
    return parse_quote(raw, allow_trailing_data=case["quote"] in _NONZERO_TRAILING)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", _CASES, ids=_id)
def test_case(vectors: Path, case: dict[str, Any]) -> None:
    raw, text, now = _load(vectors, case)
    collateral = Collateral.from_json(text)
    expected = case["dcap_qvl"]
    intel = case["intel_qvl_logic"]
    quote = _quote(raw, case)

    # dcap-qvl, in this test, on the same input.
    peer: Any = None
    peer_error = ""
    try:
        peer = dcap_qvl.verify(raw, dcap_qvl.QuoteCollateralV3.from_json(text), case["at"])
    except ValueError as exc:
        peer_error = str(exc)

    if "status" in expected:
        assert peer is not None, peer_error
        verdict = verify_quote(quote, collateral, now=now)
        assert verdict.status == peer.status == expected["status"]
        assert list(verdict.advisory_ids) == list(peer.advisory_ids) == expected["advisories"]
        assert verdict.anchor.simulated is False
        claims = verdict_claims(verdict)
        assert claims["tcb_status"] == verdict.status
        assert claims["advisory_ids"] == list(verdict.advisory_ids)
        assert claims["collateral_expired"] is False
        return

    assert peer is None
    if "No matching TCB level found" in expected["error"]:
        assert "No matching TCB level found" in peer_error
        with pytest.raises(VerificationError) as info:
            verify_quote(quote, collateral, now=now)
        assert info.value.code == "TCB_NOT_SUPPORTED"
        assert "error" in intel
        return

    verdict = verify_quote(quote, collateral, now=now)
    assert verdict.status == intel["status"]
    assert list(verdict.advisory_ids) == intel["advisories"]
    if "Failed to decode TcbInfo" in expected["error"]:
        assert parse_tcb_info(collateral.tcb_info).version == 2  # supported by teegate
        return
    assert any(reason in expected["error"] for reason in _POLICY_ERRORS), expected["error"]
    body: Any = verdict.quote.body
    if "Debug mode" in expected["error"]:
        assert verdict.debug is True
        assert body.debug is True
    elif "SEPT_VE_DISABLE" in expected["error"]:
        assert body.sept_ve_disable is False
    else:
        assert body.mr_servicetd != bytes(48)


def test_trailing_text_refused_by_default(vectors: Path) -> None:
    """The quote with a text line appended is refused by the parser (a ParseError), never verified."""
    case = next(c for c in _CASES if c["quote"] in _NONZERO_TRAILING)
    raw, text, now = _load(vectors, case)
    with pytest.raises(Exception) as info:
        verify_quote(raw, Collateral.from_json(text), now=now)
    assert type(info.value).__name__ == "ParseError"


_SETS = sorted({c["collateral"] for c in _CASES})


def _window(vectors: Path, collateral_path: str) -> tuple[Collateral, datetime, datetime]:
    """The set's own validity window: latest issue/thisUpdate to earliest nextUpdate."""
    collateral = Collateral.from_json((vectors / collateral_path).read_text())
    crls = [load_crl(collateral.root_ca_crl, "root"), load_crl(collateral.pck_crl, "pck")]
    tcb = parse_tcb_info(collateral.tcb_info)
    qe = parse_qe_identity(collateral.qe_identity)
    start = max(tcb.issue_date, qe.issue_date, *(crl.last_update_utc for crl in crls))
    end = min(tcb.next_update, qe.next_update, *(crl.next_update_utc for crl in crls if crl.next_update_utc))
    case = next(c for c in _CASES if c["collateral"] == collateral_path)
    assert start <= datetime.fromtimestamp(case["at"], UTC) <= end
    return collateral, start, end


@pytest.mark.parametrize("collateral_path", _SETS, ids=lambda p: Path(p).stem)
def test_collateral_window(vectors: Path, collateral_path: str) -> None:
    """verify_collateral passes inside the set's window and fails just outside it."""
    collateral, start, end = _window(vectors, collateral_path)
    anchors = TrustAnchors.intel()
    verify_collateral(collateral, anchors=anchors, now=start)
    verify_collateral(collateral, anchors=anchors, now=end)
    with pytest.raises(VerificationError) as late:
        verify_collateral(collateral, anchors=anchors, now=end + timedelta(seconds=1))
    assert late.value.code.endswith("_EXPIRED")
    with pytest.raises(VerificationError) as early:
        verify_collateral(collateral, anchors=anchors, now=start - timedelta(seconds=1))
    assert early.value.code.endswith("_NOT_YET_VALID")
    # Intel QvE style: expired collateral reported, not refused, when the caller opts in.
    verify_collateral(collateral, anchors=anchors, now=end + timedelta(days=1), accept_expired=True)


def test_expired_collateral_fails_and_can_be_flagged(vectors: Path) -> None:
    case = next(c for c in _CASES if c["quote"] == "dcap-qvl/tdx_quote")
    raw, _text, _ = _load(vectors, case)
    collateral, _start, end = _window(vectors, case["collateral"])
    later = end + timedelta(hours=1)
    with pytest.raises(VerificationError) as info:
        verify_quote(raw, collateral, now=later)
    assert info.value.code.endswith("_EXPIRED")
    verdict = verify_quote(raw, collateral, now=later, accept_expired_collateral=True)
    assert verdict.collateral_expired is True
    assert verdict_claims(verdict)["collateral_expiration_status"] == "1"
    assert verdict.status == "UpToDate"


@pytest.mark.timeout(60)
def test_warm_verifier_matches_cold(vectors: Path) -> None:
    """One verifier across every passing case gives the same verdicts as fresh ones, twice over."""
    warm = QuoteVerifier()
    for _ in range(2):
        for case in _CASES:
            if case["quote"] in _NONZERO_TRAILING:
                continue
            raw, text, now = _load(vectors, case)
            collateral = Collateral.from_json(text)
            try:
                cold = verify_quote(raw, collateral, now=now)
            except VerificationError as exc:
                with pytest.raises(VerificationError) as info:
                    warm.verify(raw, collateral, now=now)
                assert info.value.code == exc.code
                continue
            hot = warm.verify(raw, collateral, now=now)
            assert (hot.status, hot.advisory_ids, hot.tcb_date, hot.fmspc) == (
                cold.status,
                cold.advisory_ids,
                cold.tcb_date,
                cold.fmspc,
            )

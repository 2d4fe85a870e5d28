"""The verifier contract: TEE evidence in, claims and the bound report data out."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

from teegate.errors import VerificationError
from teegate.kbs.protocol import Tee, pad_report_data

__all__ = [
    "MAX_EVIDENCE_CHARS",
    "VerifiedEvidence",
    "Verifier",
    "check_binding",
]

#: Longest base64 text of one piece of evidence (a quote with its certification data fits easily).
MAX_EVIDENCE_CHARS: Final = 256 * 1024


@dataclass(frozen=True, slots=True)
class VerifiedEvidence:
    """What a verifier proved.

    ``claims`` use Trustee's names (shared/spec/kbs-protocol.md §3.3/§3.4); ``tee_class`` names
    the EAR submodule family (``cpu``, ``gpu``); ``binding_width`` is the width the expected
    digest is zero-padded to before comparison (64 for TDX/SGX REPORTDATA) or None to compare
    the raw digest (sample TEE).
    """

    tee: Tee
    tee_class: str
    claims: dict[str, Any]
    report_data: bytes
    init_data: bytes | None = None
    binding_width: int | None = None
    simulated: bool = False


class Verifier(Protocol):
    """Verifies one TEE's evidence; raises EvidenceError subclasses (or CollateralUnavailable)."""

    tee: Tee

    async def verify(self, evidence: Any, *, now: datetime) -> VerifiedEvidence:
        """Verify ``evidence`` (the TEE-specific JSON) at time ``now``."""
        ...


def check_binding(result: VerifiedEvidence, expected_digest: bytes) -> None:
    """Refuse evidence whose report data is not the runtime-data digest (constant-time compare)."""
    expected = (
        pad_report_data(expected_digest, result.binding_width)
        if result.binding_width is not None
        else expected_digest
    )
    if not hmac.compare_digest(expected, result.report_data):
        raise VerificationError(
            "REPORT_DATA_MISMATCH",
            f"{result.tee.value} evidence report data does not bind the session nonce and TEE key "
            "(expected the hash of the JCS runtime data"
            + (f" zero-padded to {result.binding_width} bytes)" if result.binding_width else ")"),
        )

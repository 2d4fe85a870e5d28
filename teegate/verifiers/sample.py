"""Trustee's ``sample`` TEE (shared/spec/kbs-protocol.md §3.3): no hardware, no security.

Evidence ``{"svn": "1", "report_data": "<base64 of the raw digest>"}``. Accepted only when the
operator turns it on; claims are Trustee's sample claims so Trustee's policies treat it alike.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any, Final

from teegate.errors import ParseError
from teegate.kbs.protocol import Tee
from teegate.verifiers.base import VerifiedEvidence

__all__ = ["SampleVerifier"]

_MAX_FIELD_CHARS: Final = 1024


class SampleVerifier:
    """Verifies (parses) sample evidence; the binding is the only check that means anything."""

    def __init__(self, tee: Tee = Tee.SAMPLE) -> None:
        if tee not in (Tee.SAMPLE, Tee.SAMPLE_DEVICE):
            raise ValueError(f"SampleVerifier serves sample/sampledevice, not {tee.value}")
        self.tee: Tee = tee

    async def verify(self, evidence: Any, *, now: datetime) -> VerifiedEvidence:
        """Parse sample evidence into Trustee's sample claims."""
        if not isinstance(evidence, dict):
            raise ParseError(f"{self.tee.value} evidence", "must be a JSON object {svn, report_data}")
        svn = evidence.get("svn")
        report_data = evidence.get("report_data")
        if not isinstance(svn, str) or len(svn) > _MAX_FIELD_CHARS:
            raise ParseError(f"{self.tee.value} evidence.svn", "is required and must be a short string")
        if not isinstance(report_data, str) or len(report_data) > _MAX_FIELD_CHARS:
            raise ParseError(f"{self.tee.value} evidence.report_data", "is required and must be base64")
        try:
            raw = base64.b64decode(report_data, validate=True)
        except (binascii.Error, ValueError):
            raise ParseError(f"{self.tee.value} evidence.report_data", "is not base64 (standard)") from None
        claims: dict[str, Any] = {
            "svn": svn,
            "report_data": report_data,
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        }
        return VerifiedEvidence(
            tee=self.tee,
            tee_class="cpu" if self.tee is Tee.SAMPLE else "gpu",
            claims=claims,
            report_data=raw,
            simulated=True,
        )

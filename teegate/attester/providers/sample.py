"""Trustee's ``sample`` TEE: no hardware, no security. Only ever chosen explicitly."""

from __future__ import annotations

import base64
from typing import Any

__all__ = ["SampleProvider"]


class SampleProvider:
    """Evidence ``{"svn": "1", "report_data": base64(digest)}`` (no padding), as guest-components sends."""

    name = "sample"
    tee = "sample"

    def describe(self) -> str:
        return "sample TEE (INSECURE: no hardware evidence, for testing only)"

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode("ascii")}

"""Trustee's KBS error bodies and status codes (shared/spec/kbs-protocol.md §1.10).

Every protocol error answers ``{"type": "https://github.com/confidential-containers/kbs/errors/
<Variant>", "detail": "<text>"}``. Trustee answers 404 for ``InvalidRequestPath`` and
``PluginNotFound`` and 401 for everything else (policy denials and missing resources included);
teegate keeps those codes so Trustee guests react the same way (re-handshake on 401). Two
teegate additions keep the wire honest: an oversized body is 413 and a dependency that is down
(collateral, storage) is 503, both with the same body shape.
"""

from __future__ import annotations

import json
from typing import Final

from teegate.errors import TeegateError

__all__ = [
    "ERROR_TYPE_PREFIX",
    "KbsError",
    "error_body",
    "status_for",
]

ERROR_TYPE_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors"

#: Trustee variants answered with 404; every other Trustee variant is 401.
_NOT_FOUND_VARIANTS: Final = frozenset({"InvalidRequestPath", "PluginNotFound"})
#: teegate additions (not Trustee variants) with their own status.
_EXTRA_STATUS: Final = {"PayloadTooLarge": 413, "ServiceUnavailable": 503, "MethodNotAllowed": 405}


def status_for(variant: str) -> int:
    """The HTTP status Trustee (or teegate, for its additions) answers for ``variant``."""
    if variant in _NOT_FOUND_VARIANTS:
        return 404
    return _EXTRA_STATUS.get(variant, 401)


def error_body(variant: str, detail: str) -> bytes:
    """The JSON body for an error, byte-compatible with Trustee (``type`` then ``detail``)."""
    return json.dumps(
        {"type": f"{ERROR_TYPE_PREFIX}/{variant}", "detail": detail}, separators=(",", ":")
    ).encode()


class KbsError(TeegateError):
    """A protocol error with its Trustee variant name; the HTTP layer turns it into a body."""

    def __init__(self, variant: str, detail: str) -> None:
        self.variant = variant
        self.detail = detail
        self.http_status = status_for(variant)
        super().__init__(detail)

    def body(self) -> bytes:
        """The error body bytes."""
        return error_body(self.variant, self.detail)

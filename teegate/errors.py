"""One error root for teegate; each subclass says who is at fault.

* :class:`EvidenceError` — the input (a quote, a collateral document, a request) is bad.
  Never retried; a server answers 4xx.
* :class:`CollateralUnavailable` — a dependency (PCS, PCCS, storage) did not answer.
  Retried with backoff; a server answers 503.
* :class:`PolicyDenied` — the evidence verified but a policy refused it.
* :class:`ConfigError` — the operator's configuration is wrong; fail at start.
"""

from __future__ import annotations

__all__ = [
    "CollateralError",
    "CollateralUnavailable",
    "ConfigError",
    "EvidenceError",
    "ParseError",
    "PolicyDenied",
    "StorageUnavailable",
    "TeegateError",
    "VerificationError",
]


class TeegateError(Exception):
    """Root of every error teegate raises on purpose."""

    #: HTTP status a server maps this error to.
    http_status: int = 500

    def diagnostics(self) -> str:
        """A human explanation: what was wrong and, where known, what would fix it."""
        return str(self)


class EvidenceError(TeegateError):
    """The evidence (or any client input) is malformed or does not verify."""

    http_status = 400


class ParseError(EvidenceError):
    """Input could not be parsed; names the field and the byte offset when known."""

    def __init__(self, what: str, message: str, *, offset: int | None = None) -> None:
        self.field = what
        self.offset = offset
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{what}{where}: {message}")


class VerificationError(EvidenceError):
    """Parsed evidence failed a verification step.

    ``code`` is a stable machine-readable name (mostly Intel QVL's status names such as
    ``INVALID_QUOTE_SIGNATURE`` or ``PCK_REVOKED``); ``step`` the numbered step of the algorithm.
    """

    def __init__(self, code: str, message: str, *, step: str | None = None) -> None:
        self.code = code
        self.step = step
        prefix = f"[step {step}] " if step else ""
        super().__init__(f"{prefix}{code}: {message}")


class CollateralError(EvidenceError):
    """Collateral (TCB Info, QE Identity, CRLs, chains) is malformed, expired or badly signed."""


class CollateralUnavailable(TeegateError):
    """Collateral or another dependency could not be fetched now; retry later."""

    http_status = 503


class PolicyDenied(TeegateError):
    """Evidence verified, but a policy refused it."""

    http_status = 401


class ConfigError(TeegateError):
    """The configuration is invalid; raised at start, never per request."""


class StorageUnavailable(CollateralUnavailable):
    """The KBS store (SQLite, PostgreSQL, Vault, a directory) could not be read or written now."""

    http_status = 503

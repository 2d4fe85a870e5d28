"""What can go wrong for the guest attester, each with its own exit code.

An operator at a VM console reads one line and the exit status; the class says who is at
fault (the network, the KBS's verdict, the KBS's data, the local TEE) and whether retrying
could help.
"""

from __future__ import annotations

from enum import IntEnum

from teegate.errors import TeegateError

__all__ = [
    "AttestationRefused",
    "AttesterError",
    "EvidenceUnavailable",
    "ExitCode",
    "KbsProtocolError",
    "KbsTlsError",
    "KbsUnreachable",
    "ResourceMissing",
]


class ExitCode(IntEnum):
    """Exit status of ``teegate-attester`` (documented in docs/attester.md)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    KBS_UNREACHABLE = 3
    ATTESTATION_REFUSED = 4
    RESOURCE_MISSING = 5
    EVIDENCE_UNAVAILABLE = 6
    KBS_PROTOCOL = 7
    KBS_TLS = 8


class AttesterError(TeegateError):
    """Root of the attester's errors; ``retryable`` says whether another attempt may succeed."""

    exit_code: ExitCode = ExitCode.ERROR
    label = "error"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class KbsUnreachable(AttesterError):
    """The KBS did not answer (connection refused, timeout) or answered 5xx; retried."""

    exit_code = ExitCode.KBS_UNREACHABLE
    label = "KBS unreachable"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class KbsTlsError(AttesterError):
    """The KBS's TLS certificate did not verify against the trusted CA; never retried."""

    exit_code = ExitCode.KBS_TLS
    label = "KBS TLS certificate not trusted"


class AttestationRefused(AttesterError):
    """The KBS refused the handshake, the evidence or the resource policy; ``detail`` is its reason."""

    exit_code = ExitCode.ATTESTATION_REFUSED
    label = "attestation refused"

    def __init__(self, stage: str, detail: str, error_type: str | None = None) -> None:
        self.stage = stage
        self.detail = detail
        self.error_type = error_type
        kind = f" ({error_type})" if error_type else ""
        super().__init__(f"KBS refused {stage}{kind}: {detail}")


class ResourceMissing(AttesterError):
    """The KBS has no resource at the requested path."""

    exit_code = ExitCode.RESOURCE_MISSING
    label = "resource missing"


class EvidenceUnavailable(AttesterError):
    """No evidence could be produced: no TEE interface, or its quote service is down (retryable)."""

    exit_code = ExitCode.EVIDENCE_UNAVAILABLE
    label = "evidence unavailable"


class KbsProtocolError(AttesterError):
    """The KBS answered outside the protocol: bad JSON, oversized body, a JWE we cannot open."""

    exit_code = ExitCode.KBS_PROTOCOL
    label = "KBS protocol violation"

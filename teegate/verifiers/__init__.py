"""Per-TEE verifiers: evidence in, Trustee-named claims and the bound report data out.

``tdx``/``sgx`` go through the DCAP core (:mod:`teegate.verifiers.dcap`); ``sample`` is
Trustee's no-hardware TEE (:mod:`teegate.verifiers.sample`); ``sim`` is the tdx/sgx verifier
with the simulated platform's root added to its anchors (:mod:`teegate.verifiers.sim`). Sample
and simulated evidence are refused unless the operator turns them on.
"""

from __future__ import annotations

from collections.abc import Mapping

from teegate.errors import EvidenceError
from teegate.kbs.protocol import Tee
from teegate.verifiers.base import MAX_EVIDENCE_CHARS, VerifiedEvidence, Verifier, check_binding

__all__ = [
    "MAX_EVIDENCE_CHARS",
    "UnsupportedTee",
    "VerifiedEvidence",
    "Verifier",
    "VerifierSet",
    "check_binding",
]


class UnsupportedTee(EvidenceError):
    """Evidence for a TEE this KBS has no (enabled) verifier for."""

    http_status = 401


class VerifierSet:
    """The verifiers a KBS accepts, by TEE."""

    def __init__(self, verifiers: Mapping[Tee, Verifier]) -> None:
        self._verifiers = dict(verifiers)

    @property
    def enabled(self) -> list[str]:
        """Names of the accepted TEEs, sorted."""
        return sorted(t.value for t in self._verifiers)

    def accepts(self, tee: Tee) -> bool:
        """Whether evidence of ``tee`` can be verified here."""
        return tee in self._verifiers

    def get(self, tee: Tee) -> Verifier:
        """The verifier for ``tee``; a clear error naming the enabled TEEs otherwise."""
        verifier = self._verifiers.get(tee)
        if verifier is None:
            hint = ""
            if tee in (Tee.SAMPLE, Tee.SAMPLE_DEVICE):
                hint = " (sample evidence is insecure and off unless [verifiers] sample = true or --dev)"
            raise UnsupportedTee(
                f"TEE {tee.value!r} is not accepted by this KBS{hint}; accepted: {self.enabled or 'none'}"
            )
        return verifier

"""The evidence-provider interface every TEE source implements."""

from __future__ import annotations

from typing import Any, Final, Protocol, runtime_checkable

from teegate.attester.errors import EvidenceUnavailable

__all__ = ["REPORT_DATA_SIZE", "EvidenceProvider", "pad_report_data"]

#: TDX REPORTDATA / SGX report_data / configfs-tsm inblob size.
REPORT_DATA_SIZE: Final = 64


@runtime_checkable
class EvidenceProvider(Protocol):
    """Turns the KBS binding digest into Trustee-format evidence for one TEE."""

    @property
    def name(self) -> str:
        """The ``--evidence`` name (``configfs-tsm``, ``tdx-guest``, ``sgx-aesm``, ``sim``, ``sample``)."""
        ...

    @property
    def tee(self) -> str:
        """The KBS ``Request.tee`` value (``tdx``, ``snp``, ``sgx``, ``sample``)."""
        ...

    def describe(self) -> str:
        """One line for the log: what this provider talks to."""
        ...

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        """The ``primary_evidence`` JSON for ``report_data`` (the raw binding digest).

        ``init_data_digest`` is the digest of ``--initdata``: real TEEs have it measured at launch
        (MRCONFIGID) and ignore it here; the simulated TD is launched with it.
        Raises :class:`EvidenceUnavailable` (``retryable`` when a quote service may come back).
        """
        ...


def pad_report_data(report_data: bytes) -> bytes:
    """Zero-pad the binding digest to 64 bytes as Trustee's TDX/SGX attesters do."""
    if len(report_data) > REPORT_DATA_SIZE:
        raise EvidenceUnavailable(f"report data of {len(report_data)} bytes exceeds {REPORT_DATA_SIZE}")
    return report_data.ljust(REPORT_DATA_SIZE, b"\0")

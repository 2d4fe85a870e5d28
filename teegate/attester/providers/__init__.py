"""Evidence providers and the ``auto`` choice among them.

``auto`` tries, in order: configfs-tsm, ``/dev/tdx_guest``, SGX out-of-process (when
``SGX_AESM_ADDR`` is set), the simulated TD (only when a simulated platform was given).
``sample`` is never chosen automatically: it must be asked for by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.aesm import AesmProvider
from teegate.attester.providers.base import EvidenceProvider
from teegate.attester.providers.sample import SampleProvider
from teegate.attester.providers.sim import DEFAULT_QGS_SOCKET, SimTdProvider
from teegate.attester.providers.tdx_guest import DEFAULT_QGS, TDX_GUEST_DEVICE, TdxGuestProvider
from teegate.attester.providers.tsm import DEFAULT_TSM_ROOT, TsmProvider

__all__ = ["EVIDENCE_CHOICES", "EvidenceProvider", "ProviderOptions", "select_provider"]

EVIDENCE_CHOICES: Final = ("auto", "configfs-tsm", "tdx-guest", "sgx-aesm", "sim", "sample")


@dataclass(frozen=True, slots=True)
class ProviderOptions:
    """Where each provider looks; defaults are the real system paths."""

    tsm_root: Path = DEFAULT_TSM_ROOT
    tdx_device: Path = TDX_GUEST_DEVICE
    qgs_socket: Path | None = None
    sim_platform: Path | None = None
    aesm_socket: Path | None = None


def _build(name: str, options: ProviderOptions) -> EvidenceProvider:
    if name == "configfs-tsm":
        return TsmProvider(options.tsm_root)
    if name == "tdx-guest":
        return TdxGuestProvider(options.tdx_device, options.qgs_socket or DEFAULT_QGS)
    if name == "sgx-aesm":
        return AesmProvider(options.sim_platform, options.aesm_socket)
    if name == "sim":
        if options.sim_platform is None:
            raise EvidenceUnavailable(
                "sim: needs --sim-platform DIR (a directory made by `teegate sim init`)"
            )
        return SimTdProvider(options.sim_platform, options.qgs_socket or DEFAULT_QGS_SOCKET)
    if name == "sample":
        return SampleProvider()
    raise EvidenceUnavailable(
        f"unknown evidence provider {name!r}; choose from {', '.join(EVIDENCE_CHOICES)}"
    )


def select_provider(name: str, options: ProviderOptions | None = None) -> tuple[EvidenceProvider, str]:
    """The provider called ``name`` (or the first that works for ``auto``) and why it was chosen."""
    options = options or ProviderOptions()
    if name != "auto":
        return _build(name, options), "requested"
    reasons: list[str] = []
    candidates: list[tuple[str, bool, str]] = [
        ("configfs-tsm", options.tsm_root.is_dir(), f"{options.tsm_root} absent"),
        ("tdx-guest", options.tdx_device.exists(), f"{options.tdx_device} absent"),
        ("sgx-aesm", AesmProvider.requested(), "SGX_AESM_ADDR not set"),
        ("sim", options.sim_platform is not None, "no --sim-platform"),
    ]
    for candidate, present, absent in candidates:
        if not present:
            reasons.append(f"{candidate}: {absent}")
            continue
        try:
            return _build(candidate, options), f"auto ({'; '.join(reasons) or 'first found'})"
        except EvidenceUnavailable as exc:
            reasons.append(f"{candidate}: {exc}")
    raise EvidenceUnavailable(
        "no TEE evidence source found ("
        + "; ".join(reasons)
        + "); pass --evidence sample explicitly to test "
        "without a TEE"
    )

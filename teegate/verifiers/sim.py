"""teegate's simulated TDX/SGX platform: the DCAP verifiers with the simulated root trusted.

INSECURE by design: whoever holds the platform directory can make quotes for any measurement.
Only built when configured (``[verifiers] trust_simulated`` with ``sim_platform``, or ``--dev``).
The claims carry ``"simulated": true`` so policies can tell.
"""

from __future__ import annotations

from teegate.collateral.sim import SimSource
from teegate.collateral.source import CollateralSource
from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.verify import QuoteVerifier
from teegate.kbs.protocol import Tee
from teegate.sim import SimPlatform
from teegate.verifiers.dcap import DEFAULT_COLLATERAL_TTL_SECONDS, DcapVerifier

__all__ = ["sim_verifiers"]


def sim_verifiers(
    platform: SimPlatform,
    *,
    anchors: TrustAnchors | None = None,
    source: CollateralSource | None = None,
    collateral_ttl: float = DEFAULT_COLLATERAL_TTL_SECONDS,
) -> dict[Tee, DcapVerifier]:
    """tdx and sgx verifiers that also trust ``platform``'s root (collateral from the platform
    unless ``source`` is given)."""
    trusted = (anchors if anchors is not None else TrustAnchors.intel()).with_anchor(platform.anchor())
    quote_verifier = QuoteVerifier(trusted)
    src = source if source is not None else SimSource(platform)
    return {
        tee: DcapVerifier(tee, quote_verifier, src, collateral_ttl=collateral_ttl)
        for tee in (Tee.TDX, Tee.SGX)
    }

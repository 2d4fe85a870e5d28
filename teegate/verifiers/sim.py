"""teegate's simulated platform: the DCAP verifiers with the simulated root trusted.

INSECURE by design: whoever holds the platform directory can make quotes for any measurement.
Only built when configured (``[verifiers] trust_simulated`` with ``sim_platform``, or ``--dev``).
The claims carry ``"simulated": true`` so policies can tell. Real quotes still verify against
Intel's root, with collateral from the real source when one is configured.
"""

from __future__ import annotations

from datetime import datetime

from teegate.collateral.sim import SimSource
from teegate.collateral.source import CollateralSource
from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import CollateralUnavailable
from teegate.kbs.protocol import Tee
from teegate.sim import SimPlatform
from teegate.verifiers.dcap import DEFAULT_COLLATERAL_TTL_SECONDS, DcapVerifier

__all__ = ["SimOrRealSource", "sim_verifiers"]


class SimOrRealSource:
    """Collateral from the simulated platform for its own FMSPC/CA, from ``real`` otherwise.

    With ``from_source`` every key, the simulated platform's included, goes to ``real`` (a
    PCCS that the simulated platform registered with serves its collateral like a real one's).
    """

    def __init__(
        self, platform: SimPlatform, real: CollateralSource | None, *, from_source: bool = False
    ) -> None:
        if from_source and real is None:
            raise ValueError("collateral from the source needs a source")
        self._platform = platform
        self._sim = SimSource(platform)
        self._real = real
        self._from_source = from_source

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        """The collateral for ``key``; CollateralUnavailable when no source has it."""
        own = key.fmspc == self._platform.fmspc and key.ca == self._platform.pck_ca
        if own and not self._from_source:
            return await self._sim.get(key, now=now)
        if self._real is None:
            raise CollateralUnavailable(
                f"no collateral source configured for FMSPC {key.fmspc} (only the simulated platform's)"
            )
        return await self._real.get(key, now=now)


def sim_verifiers(
    platform: SimPlatform,
    *,
    real_source: CollateralSource | None = None,
    collateral_from_source: bool = False,
    anchors: TrustAnchors | None = None,
    collateral_ttl: float = DEFAULT_COLLATERAL_TTL_SECONDS,
) -> dict[Tee, DcapVerifier]:
    """tdx and sgx verifiers that also trust ``platform``'s root."""
    trusted = (anchors if anchors is not None else TrustAnchors.intel()).with_anchor(platform.anchor())
    quote_verifier = QuoteVerifier(trusted)
    source = SimOrRealSource(platform, real_source, from_source=collateral_from_source)
    return {
        tee: DcapVerifier(tee, quote_verifier, source, collateral_ttl=collateral_ttl)
        for tee in (Tee.TDX, Tee.SGX)
    }

"""Collateral of a simulated platform (``teegate.sim``): signed by its test PKI, valid around ``now``.

Only a verifier given the platform's ``anchor()`` accepts it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from teegate.collateral._documents import utc
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable

if TYPE_CHECKING:
    from teegate.sim import SimPlatform

__all__ = ["RegisteredPlatform", "SimSource"]


@dataclass(frozen=True, slots=True)
class RegisteredPlatform:
    """What a PCCS learns about a registered platform: its FMSPC, PCK CA and PCK chain."""

    fmspc: str
    ca: str
    pck_chain_pem: str


class SimSource:
    """Serves the simulated platform's collateral for its own FMSPC and CA only."""

    def __init__(self, platform: SimPlatform) -> None:
        self.platform = platform

    def __repr__(self) -> str:
        return f"SimSource({str(self.platform.directory)!r})"

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        p = self.platform
        if key.fmspc != p.fmspc or key.ca != p.pck_ca:
            raise CollateralUnavailable(
                f"simulated platform {p.directory} has FMSPC {p.fmspc} (PCK {p.pck_ca} CA); "
                f"no {key.tee.upper()} collateral for FMSPC {key.fmspc} (PCK {key.ca} CA)"
            )
        return await asyncio.to_thread(p.collateral, key.tee, now=utc(now))

    def available_keys(self) -> list[CollateralKey]:
        p = self.platform
        return [CollateralKey("tdx", p.fmspc, "platform"), CollateralKey("sgx", p.fmspc, "platform")]

    def lookup_platform(self, registration: dict[str, Any]) -> RegisteredPlatform | None:
        """The platform a PCCS registration is for, when it is this simulated one."""
        reg = self.platform.registration()
        if str(registration.get("qe_id", "")).lower() != str(reg["qe_id"]).lower():
            return None
        return RegisteredPlatform(self.platform.fmspc, self.platform.pck_ca, self.platform.pck_chain_pem)

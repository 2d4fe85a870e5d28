"""The one interface every collateral source implements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from teegate.dcap.collateral import Collateral, CollateralKey

__all__ = ["CollateralSource"]


@runtime_checkable
class CollateralSource(Protocol):
    """Gives the verification collateral for one (TEE, FMSPC, PCK CA).

    Raises :class:`teegate.errors.CollateralUnavailable` naming the missing or stale item
    (URL, FMSPC, what) when it cannot. ``now`` is the caller's clock: sources never read it.
    """

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral: ...

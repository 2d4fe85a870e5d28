"""Collateral sources: Intel PCS / PCCS, files, bundles, an on-disk cache, the simulator.

All implement :class:`CollateralSource` (``async get(key, *, now) -> Collateral``) and raise
:class:`teegate.errors.CollateralUnavailable` naming the missing or stale item.
"""

from __future__ import annotations

from teegate.collateral.cache import CachedSource
from teegate.collateral.files import BundleSource, DirectorySource
from teegate.collateral.pcs import INTEL_PCS_URL, PcsClient
from teegate.collateral.qcnl import QcnlConfig
from teegate.collateral.settings import CollateralSettings, source_from_config, source_from_settings
from teegate.collateral.sim import SimSource
from teegate.collateral.source import CollateralSource

__all__ = [
    "INTEL_PCS_URL",
    "BundleSource",
    "CachedSource",
    "CollateralSettings",
    "CollateralSource",
    "DirectorySource",
    "PcsClient",
    "QcnlConfig",
    "SimSource",
    "source_from_config",
    "source_from_settings",
]

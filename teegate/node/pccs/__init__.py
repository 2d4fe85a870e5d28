"""A PCCS (Provisioning Certificate Caching Service) speaking Intel PCS v4's collateral API."""

from __future__ import annotations

from teegate.node.pccs.app import Mode, PccsService, build_app
from teegate.node.pccs.settings import PccsSettings, build_service

__all__ = ["Mode", "PccsService", "PccsSettings", "build_app", "build_service"]

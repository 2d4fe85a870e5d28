"""One typed settings object for "where does collateral come from", and the factory using it.

Used by ``teegate collateral fetch``, the KBS and the PCCS. Exactly one upstream
(``pccs_url``, ``qcnl_conf``, ``directory``, ``bundle``, ``sim_platform``) unless the source
is an offline cache; ``cache_dir`` wraps the upstream in a :class:`CachedSource`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from teegate.collateral.cache import CachedSource
from teegate.collateral.files import BundleSource, DirectorySource
from teegate.collateral.pcs import PcsClient
from teegate.collateral.qcnl import QcnlConfig
from teegate.collateral.sim import SimSource
from teegate.collateral.source import CollateralSource
from teegate.dcap.anchors import TrustAnchors
from teegate.errors import ConfigError

__all__ = ["CollateralSettings", "source_from_config", "source_from_settings"]

_UPSTREAMS = ("pccs_url", "qcnl_conf", "directory", "bundle", "sim_platform")


@dataclass(frozen=True, slots=True)
class CollateralSettings:
    """Where collateral comes from. ``api_key`` is a secret: never logged or shown."""

    pccs_url: str | None = None
    qcnl_conf: Path | None = None
    directory: Path | None = None
    bundle: Path | None = None
    sim_platform: Path | None = None
    cache_dir: Path | None = None
    offline: bool = False
    api_key: str | None = None
    verify_tls: bool | str = True
    timeout: float = 30.0

    def __post_init__(self) -> None:
        chosen = [name for name in _UPSTREAMS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise ConfigError(f"collateral: give one source, not {' and '.join(chosen)}")
        if self.offline and self.cache_dir is None:
            raise ConfigError("collateral: offline mode needs a cache directory (cache_dir)")
        if not chosen and not self.offline:
            raise ConfigError(f"collateral: give one of {', '.join(_UPSTREAMS)} (or cache_dir with offline)")
        if not 0 < self.timeout <= 600:
            raise ConfigError("collateral: timeout must be within (0, 600] seconds")

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "api_key"}
        shown["api_key"] = "***" if self.api_key else None
        return f"CollateralSettings({shown})"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CollateralSettings:
        """From a configuration table; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"collateral: unknown setting(s) {', '.join(unknown)}")
        values = dict(raw)
        for name in ("qcnl_conf", "directory", "bundle", "sim_platform", "cache_dir"):
            if values.get(name) is not None:
                values[name] = Path(values[name])
        return cls(**values)


def _upstream(settings: CollateralSettings) -> CollateralSource | None:
    if settings.pccs_url is not None:
        return PcsClient(
            settings.pccs_url, api_key=settings.api_key, verify=settings.verify_tls, timeout=settings.timeout
        )
    if settings.qcnl_conf is not None:
        return QcnlConfig.load(settings.qcnl_conf).client(api_key=settings.api_key, timeout=settings.timeout)
    if settings.directory is not None:
        return DirectorySource(settings.directory)
    if settings.bundle is not None:
        return BundleSource(settings.bundle)
    if settings.sim_platform is not None:
        from teegate.sim import SimPlatform

        return SimSource(SimPlatform.load(settings.sim_platform))
    return None


def source_from_settings(
    settings: CollateralSettings, *, anchors: TrustAnchors | None = None
) -> CollateralSource:
    """Build the source ``settings`` describe. ``anchors`` re-verify cached collateral (default:
    Intel's root, plus the simulated root when the source is a simulated platform)."""
    upstream = _upstream(settings)
    if settings.cache_dir is None:
        assert upstream is not None
        return upstream
    if anchors is None:
        anchors = TrustAnchors.intel()
        if isinstance(upstream, SimSource):
            anchors = anchors.with_anchor(upstream.platform.anchor())
    return CachedSource(upstream, settings.cache_dir, offline=settings.offline, verifier_anchors=anchors)


#: The ADR's name for :func:`source_from_settings`.
source_from_config = source_from_settings

"""The PCCS daemon's one typed settings object, and building the service from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from teegate.collateral.settings import CollateralSettings, source_from_settings
from teegate.errors import ConfigError
from teegate.net import is_loopback
from teegate.node.pccs.app import Mode, PccsService
from teegate.node.pccs.store import open_store

__all__ = ["DEFAULT_LISTEN", "PccsSettings", "build_service"]

DEFAULT_LISTEN = "127.0.0.1:8081"


@dataclass(frozen=True, slots=True)
class PccsSettings:
    """Configuration of ``teegate pccs serve``."""

    host: str = "127.0.0.1"
    port: int = 8081
    data_dir: Path = Path("/var/lib/teegate/pccs")
    mode: Mode = "lazy"
    upstream: CollateralSettings | None = None
    admin_token_file: Path | None = None
    user_token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    database_url: str | None = None  # PostgreSQL DSN; may hold a password: never logged

    def __post_init__(self) -> None:
        if self.mode not in ("lazy", "req", "offline"):
            raise ConfigError(f"--mode {self.mode!r} must be lazy, req or offline")
        if self.mode != "offline" and self.upstream is None:
            raise ConfigError(f"mode {self.mode} needs --upstream URL, --sim-platform DIR or --directory D")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("give both --tls-cert and --tls-key, or neither")
        if self.tls_cert is None and not is_loopback(self.host) and not self.insecure_http:
            raise ConfigError(
                f"refusing plain HTTP on {self.host}: give --tls-cert/--tls-key, listen on loopback, "
                "or pass --insecure-http"
            )
        if self.upstream is not None and self.upstream.cache_dir is not None:
            raise ConfigError("the PCCS is the cache: its upstream takes no cache_dir")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"port {self.port} out of range")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def insecure(self) -> list[str]:
        """Insecure options in force, named for the start line."""
        out = []
        if not self.tls and not is_loopback(self.host):
            out.append("--insecure-http: plain HTTP off loopback")
        if self.upstream is not None and self.upstream.verify_tls is False:
            out.append("upstream TLS verification disabled")
        if self.upstream is not None and (self.upstream.pccs_url or "").startswith("http://"):
            out.append("plain HTTP upstream")
        return out

    def describe_storage(self) -> str:
        return "postgresql" if self.database_url else f"sqlite {self.data_dir / 'pccs.db'}"

    def __repr__(self) -> str:
        return f"PccsSettings({self.host}:{self.port}, mode={self.mode}, storage={self.describe_storage()})"

    def describe_upstream(self) -> str:
        u = self.upstream
        if u is None:
            return "none (offline)"
        for name in ("pccs_url", "qcnl_conf", "directory", "bundle", "sim_platform"):
            value = getattr(u, name)
            if value is not None:
                return f"{name}={value}"
        return "none"


def build_service(settings: PccsSettings) -> PccsService:
    """Open storage and the upstream source; tokens default to files in the data directory."""
    source = source_from_settings(settings.upstream) if settings.upstream is not None else None
    store = open_store(settings.data_dir, settings.database_url)
    admin = settings.admin_token_file
    if admin is None and (settings.data_dir / "admin-token").is_file():
        admin = settings.data_dir / "admin-token"
    user = settings.user_token_file
    if user is None and (settings.data_dir / "user-token").is_file():
        user = settings.data_dir / "user-token"
    return PccsService(store, source, mode=settings.mode, admin_token_file=admin, user_token_file=user)

"""Typed KBS settings from ``kbs.toml`` (Trustee-like sections), built once at start.

With no file every setting has a safe default: SQLite under the data directory, loopback plain
HTTP only, tdx/sgx verification with collateral from Intel PCS, sample and simulated evidence
refused. Unknown sections and keys are refused, naming them. Sections:

* ``[http_server]`` (Trustee): ``sockets = ["HOST:PORT"]``, ``insecure_http``,
  ``private_key``/``certificate`` (TLS), ``payload_request_size`` (MiB).
* ``[attestation_token]`` (Trustee): ``trusted_certs_paths`` / ``trusted_key_paths`` (PEM
  public keys or certificates whose keys sign Bearer tokens we accept, besides our own),
  ``insecure_header_jwk`` (alias ``insecure_key``), ``duration_min``, ``signer_key_path`` (a P-256
  PEM shared by replicas; default a key generated under the data dir), ``signer_cert_path`` (its
  certificate chain, sent as ``x5c``).
* ``[attestation_service]`` (Trustee): ``timeout`` (session minutes), ``type`` (only
  ``coco_as_builtin``), ``policy_id`` (attestation policy family, default ``default``).
* ``[policy_engine]`` (Trustee): ``policy_path`` (resource policy Rego loaded at start);
  teegate: ``policy_vm`` (``builtin`` | ``all`` | ``off``: which policies run on regorus's
  compiled VM, ADR 0008), ``refresh_seconds`` (how long a policy version or reference value read
  from storage is reused, default 1; 0 reads on every request).
* ``[admin]`` (Trustee, see :mod:`teegate.kbs.admin_auth`); ``[storage]`` (ADR 0002).
* teegate: ``[kbs] data_dir, insecure_allow_rsa1_5``; ``[session] key_file``;
  ``[verifiers] tdx, sgx, sample, trust_simulated, sim_platform, sim_collateral, collateral_ttl_seconds``;
  ``[collateral]`` (``teegate.collateral.settings.CollateralSettings``).

Environment (used by the Kubernetes operator): ``TEEGATE_KBS_RESOURCES_DIR`` (directory
resource backend), ``TEEGATE_KBS_POSTGRES_URL`` (PostgreSQL state), ``TEEGATE_KBS_SESSION_KEY_FILE``,
``TEEGATE_KBS_TOKEN_KEY_FILE`` (the token signing key every replica shares).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from teegate.errors import ConfigError
from teegate.files import read_bounded
from teegate.kbs.admin_auth import AdminAuthConfig
from teegate.kbs.paths import default_data_dir
from teegate.kbs.policy import PolicyVm
from teegate.kbs.session import DEFAULT_SESSION_TIMEOUT_SECONDS, SESSION_KEY_ENV
from teegate.kbs.storage.base import Backend, StateBackend, StorageSettings
from teegate.net import is_loopback

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_BODY_BYTES",
    "KbsSettings",
    "is_loopback",
    "load_settings",
    "parse_listen",
]

DEFAULT_LISTEN: Final = ("127.0.0.1", 8080)
#: Largest request body accepted (Trustee's default ``payload_request_size`` is 2 MiB).
DEFAULT_MAX_BODY_BYTES: Final = 2 * 1024 * 1024
_MAX_BODY_MIB: Final = 64
_MAX_CONFIG_BYTES: Final = 1024 * 1024

#: [policy_engine] policy_vm values.
_POLICY_VM_MODES: Final = tuple(mode.value for mode in PolicyVm)

_SECTIONS: Final[dict[str, frozenset[str]]] = {
    "http_server": frozenset(
        {"sockets", "insecure_http", "private_key", "certificate", "payload_request_size", "worker_count"}
    ),
    "attestation_token": frozenset(
        {
            "trusted_certs_paths",
            "trusted_key_paths",
            "insecure_header_jwk",
            "insecure_key",
            "duration_min",
            "signer_key_path",
            "signer_cert_path",
        }
    ),
    "attestation_service": frozenset({"timeout", "type", "policy_id"}),
    "policy_engine": frozenset({"policy_path", "policy_vm", "refresh_seconds"}),
    "kbs": frozenset({"data_dir", "insecure_allow_rsa1_5"}),
    "session": frozenset({"key_file"}),
    "verifiers": frozenset(
        {
            "tdx",
            "sgx",
            "sample",
            "trust_simulated",
            "sim_platform",
            "sim_collateral",
            "collateral_ttl_seconds",
        }
    ),
    "collateral": frozenset(),  # validated by CollateralSettings
    "admin": frozenset(),  # validated by AdminAuthConfig
    "storage": frozenset(),  # validated by StorageSettings
}


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) → (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"listen address {text!r} must be HOST:PORT")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"listen address {text!r}: port {port!r} is not a number") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"listen address {text!r}: port out of range")
    return host.strip("[]"), number


@dataclass(frozen=True, slots=True)
class KbsSettings:
    """Everything ``build_app`` and ``kbs serve`` need; immutable once built."""

    data_dir: Path
    storage: StorageSettings
    admin: AdminAuthConfig | None = None  # None: a generated key under data_dir (ADR 0002)
    listen: tuple[str, int] = DEFAULT_LISTEN
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure_http: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    session_timeout_seconds: int = DEFAULT_SESSION_TIMEOUT_SECONDS
    session_key_file: Path | None = None
    token_ttl_seconds: int = 300
    trusted_token_keys: tuple[Path, ...] = ()
    token_key_file: Path | None = None
    token_cert_file: Path | None = None
    insecure_header_jwk: bool = False
    attestation_policy_id: str = "default"
    resource_policy_path: Path | None = None
    #: Which policies run on regorus's compiled VM: "builtin", "all" or "off" (PolicyVm).
    policy_vm: str = "builtin"
    #: How long a policy version or reference value read from storage is reused (seconds; a
    #: change made through another replica applies here within this time; 0: every request).
    policy_refresh_seconds: float = 1.0
    verify_tdx: bool = True
    verify_sgx: bool = True
    allow_sample: bool = False
    trust_simulated: bool = False
    sim_platform: Path | None = None
    #: Where the simulated platform's collateral comes from: "platform" (made by the simulator
    #: in process) or "source" (the configured [collateral] source, e.g. a PCCS the simulated
    #: platform registered with, as a real platform's collateral does).
    sim_collateral: str = "platform"
    collateral_ttl_seconds: float = 600.0
    collateral: Mapping[str, Any] = field(default_factory=dict)
    insecure_allow_rsa1_5: bool = False
    dev: bool = False

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and a key")
        if not 1 <= self.session_timeout_seconds <= 24 * 3600:
            raise ConfigError("attestation_service.timeout must be between 1 minute and 24 hours")
        if not 1 <= self.token_ttl_seconds <= 7 * 24 * 3600:
            raise ConfigError("attestation_token.duration_min must be between 1 minute and 7 days")
        if not 1024 <= self.max_body_bytes <= _MAX_BODY_MIB * 1024 * 1024:
            raise ConfigError(f"http_server.payload_request_size must be 1..{_MAX_BODY_MIB} MiB")
        if self.trust_simulated and self.sim_platform is None:
            raise ConfigError(
                "verifiers.trust_simulated needs verifiers.sim_platform (a teegate sim directory)"
            )
        if self.sim_collateral not in ("platform", "source"):
            raise ConfigError(
                f"verifiers.sim_collateral must be 'platform' or 'source', not {self.sim_collateral!r}"
            )
        if self.sim_collateral == "source" and not self.collateral:
            raise ConfigError("verifiers.sim_collateral = 'source' needs a [collateral] section")
        if not 1 <= self.collateral_ttl_seconds <= 86400:
            raise ConfigError("verifiers.collateral_ttl_seconds must be between 1 and 86400")
        if self.policy_vm not in _POLICY_VM_MODES:
            raise ConfigError(
                f"policy_engine.policy_vm must be one of {list(_POLICY_VM_MODES)}, not {self.policy_vm!r}"
            )
        if not 0 <= self.policy_refresh_seconds <= 300:
            raise ConfigError("policy_engine.refresh_seconds must be between 0 and 300")
        if self.dev and not is_loopback(self.listen[0]):
            raise ConfigError(f"--dev listens on loopback only, not {self.listen[0]}")

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    def insecure_options(self) -> list[str]:
        """Every insecure option that is on (for the start line and the banner)."""
        found: list[str] = []
        if self.dev:
            found.append("dev-profile")
        if not self.tls and not is_loopback(self.listen[0]):
            found.append("insecure_http (plain HTTP off loopback)")
        if self.allow_sample:
            found.append("sample-evidence")
        if self.trust_simulated:
            found.append(f"trust-simulated ({self.sim_platform})")
        if self.insecure_header_jwk:
            found.append("insecure_header_jwk")
        if self.insecure_allow_rsa1_5:
            found.append("insecure_allow_rsa1_5")
        if self.admin is not None and self.admin.mode.value == "InsecureAllowAll":
            found.append("admin InsecureAllowAll")
        return found

    def check_transport(self) -> None:
        """Refuse plain HTTP off loopback unless ``insecure_http`` says so."""
        if not self.tls and not is_loopback(self.listen[0]) and not self.insecure_http:
            raise ConfigError(
                f"refusing plain HTTP on {self.listen[0]}: give --tls-cert/--tls-key, listen on loopback, "
                "or set [http_server] insecure_http = true (TLS terminated elsewhere)"
            )


def _check_keys(doc: Mapping[str, Any]) -> None:
    for section, value in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(f"kbs config: unknown section [{section}]; known: {sorted(_SECTIONS)}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"kbs config: [{section}] must be a table")
        known = _SECTIONS[section]
        if known:
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigError(
                    f"kbs config: unknown keys {unknown} in [{section}]; known: {sorted(known)}"
                )


def _typed(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float, (int, float))):
        raise ConfigError(f"kbs config: [{where}] {key} has the wrong type")
    return value


def _path(value: str | None, base: Path | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() or base is None else base / path


def load_settings(
    config_path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> KbsSettings:
    """Settings from ``config_path`` (or embedded defaults), the environment and CLI overrides.

    ``overrides`` are KbsSettings field values given on the command line (they win).
    """
    env = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    base: Path | None = None
    if config_path is not None:
        raw = read_bounded(config_path, _MAX_CONFIG_BYTES, "KBS config", ConfigError)
        try:
            doc = tomllib.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"KBS config {config_path}: {exc}") from None
        base = config_path.parent
    _check_keys(doc)
    over = dict(overrides or {})

    kbs = doc.get("kbs", {})
    data_dir = (
        over.pop("data_dir", None)
        or _path(_typed(kbs, "data_dir", str, "kbs"), base)
        or default_data_dir(env)
    )
    data_dir = Path(data_dir)

    http = doc.get("http_server", {})
    values: dict[str, Any] = {}
    sockets = http.get("sockets")
    if sockets is not None:
        if not isinstance(sockets, list) or len(sockets) != 1 or not isinstance(sockets[0], str):
            raise ConfigError("kbs config: [http_server] sockets must list exactly one HOST:PORT")
        values["listen"] = parse_listen(sockets[0])
    if (flag := _typed(http, "insecure_http", bool, "http_server")) is not None:
        values["insecure_http"] = flag
    values["tls_key"] = _path(_typed(http, "private_key", str, "http_server"), base)
    values["tls_cert"] = _path(_typed(http, "certificate", str, "http_server"), base)
    if (size := _typed(http, "payload_request_size", int, "http_server")) is not None:
        values["max_body_bytes"] = size * 1024 * 1024

    token = doc.get("attestation_token", {})
    paths = list(token.get("trusted_certs_paths", [])) + list(token.get("trusted_key_paths", []))
    if not all(isinstance(p, str) for p in paths):
        raise ConfigError("kbs config: [attestation_token] trusted paths must be strings")
    values["trusted_token_keys"] = tuple(p for p in (_path(s, base) for s in paths) if p is not None)
    insecure_jwk = _typed(token, "insecure_header_jwk", bool, "attestation_token")
    legacy_jwk = _typed(token, "insecure_key", bool, "attestation_token")
    values["insecure_header_jwk"] = bool(insecure_jwk or legacy_jwk)
    values["token_key_file"] = _path(_typed(token, "signer_key_path", str, "attestation_token"), base)
    values["token_cert_file"] = _path(_typed(token, "signer_cert_path", str, "attestation_token"), base)
    if (minutes := _typed(token, "duration_min", int, "attestation_token")) is not None:
        values["token_ttl_seconds"] = minutes * 60

    service = doc.get("attestation_service", {})
    if (kind := _typed(service, "type", str, "attestation_service")) not in (None, "coco_as_builtin"):
        raise ConfigError(
            f"kbs config: [attestation_service] type {kind!r}: only coco_as_builtin (in-process)"
        )
    if (minutes := _typed(service, "timeout", int, "attestation_service")) is not None:
        values["session_timeout_seconds"] = minutes * 60
    if (policy_id := _typed(service, "policy_id", str, "attestation_service")) is not None:
        values["attestation_policy_id"] = policy_id

    values["resource_policy_path"] = _path(
        _typed(doc.get("policy_engine", {}), "policy_path", str, "policy_engine"), base
    )
    if (vm := _typed(doc.get("policy_engine", {}), "policy_vm", str, "policy_engine")) is not None:
        values["policy_vm"] = vm
    refresh = _typed(doc.get("policy_engine", {}), "refresh_seconds", (int, float), "policy_engine")
    if refresh is not None:
        values["policy_refresh_seconds"] = float(refresh)
    if (flag := _typed(kbs, "insecure_allow_rsa1_5", bool, "kbs")) is not None:
        values["insecure_allow_rsa1_5"] = flag

    session = doc.get("session", {})
    key_file = _path(_typed(session, "key_file", str, "session"), base)
    if key_file is None and env.get(SESSION_KEY_ENV):
        key_file = Path(env[SESSION_KEY_ENV])
    values["session_key_file"] = key_file

    verifiers = doc.get("verifiers", {})
    for key, name in (("tdx", "verify_tdx"), ("sgx", "verify_sgx"), ("sample", "allow_sample")):
        if (flag := _typed(verifiers, key, bool, "verifiers")) is not None:
            values[name] = flag
    if (flag := _typed(verifiers, "trust_simulated", bool, "verifiers")) is not None:
        values["trust_simulated"] = flag
    values["sim_platform"] = _path(_typed(verifiers, "sim_platform", str, "verifiers"), base)
    if (where := _typed(verifiers, "sim_collateral", str, "verifiers")) is not None:
        values["sim_collateral"] = where
    if (ttl := _typed(verifiers, "collateral_ttl_seconds", (int, float), "verifiers")) is not None:
        values["collateral_ttl_seconds"] = float(ttl)
    values["collateral"] = dict(doc.get("collateral", {}))

    admin_table = doc.get("admin")
    values["admin"] = (
        AdminAuthConfig.from_mapping(admin_table, base_dir=base) if admin_table is not None else None
    )

    storage_table = dict(doc.get("storage", {}))
    resources_dir = env.get("TEEGATE_KBS_RESOURCES_DIR")
    postgres_url = env.get("TEEGATE_KBS_POSTGRES_URL")
    storage = StorageSettings.from_mapping(storage_table, data_dir=data_dir)
    if resources_dir:
        storage = replace(storage, backend=Backend.DIRECTORY, directory_root=Path(resources_dir))
    if postgres_url:
        storage = replace(storage, state_backend=StateBackend.POSTGRES, postgres_dsn=postgres_url)
        if not resources_dir and storage.backend is Backend.SQLITE and "backend" not in storage_table:
            # Replicas configured by the environment alone must share their resources too.
            storage = replace(storage, backend=Backend.POSTGRES)
    if (token_key := env.get("TEEGATE_KBS_TOKEN_KEY_FILE")) and values.get("token_key_file") is None:
        values["token_key_file"] = Path(token_key)
    values["storage"] = storage

    values.update({k: v for k, v in over.items() if v is not None})
    return KbsSettings(data_dir=data_dir, **values)

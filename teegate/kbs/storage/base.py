"""The KBS storage contract: resources, policies and reference values behind async protocols.

Every backend (SQLite, PostgreSQL, a Secret-mount directory tree, Vault KV) implements these
protocols. Names are validated here, once, so no backend ever sees a traversal or an oversized
value. Writes are atomic: a reader sees the old value or the new one, never part of one.

Errors: missing items raise a :class:`NotFoundError` subclass (404); bad names raise
:class:`InvalidName` (400); oversized values :class:`ValueTooLarge` (413); writes to a read-only
backend :class:`StorageReadOnly` (405); a backend that does not answer
:class:`teegate.errors.StorageUnavailable` (503, retry).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from teegate.errors import EvidenceError, StorageUnavailable, TeegateError

__all__ = [
    "MAX_LIST_ITEMS",
    "MAX_POLICY_BYTES",
    "MAX_POLICY_ID_CHARS",
    "MAX_REFERENCE_VALUE_BYTES",
    "MAX_REFERENCE_VALUE_NAME_CHARS",
    "MAX_RESOURCE_BYTES",
    "MAX_SEGMENT_CHARS",
    "RESOURCE_POLICY_ID",
    "Backend",
    "ChallengeLedgerStore",
    "InvalidName",
    "NotFoundError",
    "PolicyKind",
    "PolicyNotFound",
    "PolicyStore",
    "ReferenceValueNotFound",
    "ReferenceValueStore",
    "ResourceNotFound",
    "ResourcePath",
    "ResourceStore",
    "StateBackend",
    "Storage",
    "StorageReadOnly",
    "StorageSettings",
    "StorageUnavailable",
    "StoredPolicy",
    "ValueTooLarge",
    "check_policy_text",
    "check_reference_value",
    "check_resource",
    "open_storage",
    "validate_policy_id",
    "validate_reference_value_name",
]

#: Largest resource (secret) a client may store, in bytes.
MAX_RESOURCE_BYTES = 1024 * 1024
#: Largest policy (Rego source) in bytes of UTF-8.
MAX_POLICY_BYTES = 256 * 1024
#: Largest stored reference-value document, in bytes.
MAX_REFERENCE_VALUE_BYTES = 256 * 1024
#: Longest repo, type or tag segment of a resource path.
MAX_SEGMENT_CHARS = 128
#: Longest policy id.
MAX_POLICY_ID_CHARS = 64
#: Longest reference-value name.
MAX_REFERENCE_VALUE_NAME_CHARS = 256
#: Most items a list call returns; a store holding more refuses to list rather than truncate.
MAX_LIST_ITEMS = 100_000

#: The id under which the (single) KBS resource policy is stored, as Trustee names it.
RESOURCE_POLICY_ID = "resource-policy"

# A segment is what Kubernetes allows as a Secret key ([-._a-zA-Z0-9]+), minus names made of
# dots only and the ``..`` prefix Kubernetes reserves for its own mount bookkeeping (..data).
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_POLICY_ID_RE = re.compile(r"[A-Za-z0-9_.\-]+")
_RV_NAME_RE = re.compile(r"[A-Za-z0-9_.:\-]+(/[A-Za-z0-9_.:\-]+)*")


class InvalidName(EvidenceError):
    """A resource path, policy id or reference-value name is malformed or unsafe."""

    http_status = 400


class ValueTooLarge(EvidenceError):
    """A value exceeds its named size bound."""

    http_status = 413


class NotFoundError(EvidenceError):
    """The named item does not exist."""

    http_status = 404


class ResourceNotFound(NotFoundError):
    """No resource is stored at this path."""


class PolicyNotFound(NotFoundError):
    """No policy is stored under this id."""


class ReferenceValueNotFound(NotFoundError):
    """No reference value is stored under this name."""


class StorageReadOnly(TeegateError):
    """The backend is configured read-only (e.g. a mounted Secret tree)."""

    http_status = 405


def _check_segment(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} is empty")
    if len(value) > MAX_SEGMENT_CHARS:
        raise InvalidName(f"{what} is {len(value)} characters; at most {MAX_SEGMENT_CHARS} allowed")
    if not _SEGMENT_RE.fullmatch(value):
        raise InvalidName(f"{what} {value!r} has characters outside [A-Za-z0-9_.-]")
    if value.strip(".") == "" or value.startswith(".."):
        raise InvalidName(f"{what} {value!r} is a dot name (traversal or reserved)")


@dataclass(frozen=True, slots=True)
class ResourcePath:
    """A validated resource path ``repo/type/tag`` (all three segments required)."""

    repo: str
    type: str
    tag: str

    def __post_init__(self) -> None:
        _check_segment("resource repository", self.repo)
        _check_segment("resource type", self.type)
        _check_segment("resource tag", self.tag)

    @classmethod
    def parse(cls, text: str) -> ResourcePath:
        """Parse ``repo/type/tag``; anything else raises :class:`InvalidName`."""
        if not isinstance(text, str) or len(text) > 3 * MAX_SEGMENT_CHARS + 2:
            raise InvalidName("resource path is missing or too long")
        parts = text.split("/")
        if len(parts) != 3:
            raise InvalidName(
                f"resource path {text[:100]!r} must have exactly three segments repo/type/tag, "
                f"got {len(parts)}"
            )
        return cls(parts[0], parts[1], parts[2])

    def __str__(self) -> str:
        return f"{self.repo}/{self.type}/{self.tag}"


def validate_policy_id(policy_id: str) -> str:
    """Return ``policy_id`` if it is a safe id, else raise :class:`InvalidName`."""
    if not isinstance(policy_id, str) or not policy_id:
        raise InvalidName("policy id is empty")
    if len(policy_id) > MAX_POLICY_ID_CHARS:
        raise InvalidName(f"policy id is {len(policy_id)} characters; at most {MAX_POLICY_ID_CHARS}")
    if not _POLICY_ID_RE.fullmatch(policy_id) or policy_id.strip(".") == "" or policy_id.startswith(".."):
        raise InvalidName(f"policy id {policy_id!r} must match [A-Za-z0-9_.-]+ and not be a dot name")
    return policy_id


def validate_reference_value_name(name: str) -> str:
    """Return ``name`` if it is a safe reference-value name, else raise :class:`InvalidName`."""
    if not isinstance(name, str) or not name:
        raise InvalidName("reference value name is empty")
    if len(name) > MAX_REFERENCE_VALUE_NAME_CHARS:
        raise InvalidName(
            f"reference value name is {len(name)} characters; at most {MAX_REFERENCE_VALUE_NAME_CHARS}"
        )
    if not _RV_NAME_RE.fullmatch(name) or any(
        part.strip(".") == "" or part.startswith("..") for part in name.split("/")
    ):
        raise InvalidName(f"reference value name {name[:100]!r} has unsafe characters or dot segments")
    return name


def check_resource(data: bytes) -> bytes:
    """Refuse a resource larger than :data:`MAX_RESOURCE_BYTES`."""
    if len(data) > MAX_RESOURCE_BYTES:
        raise ValueTooLarge(f"resource is {len(data)} bytes; at most {MAX_RESOURCE_BYTES} allowed")
    return bytes(data)


def check_policy_text(text: str) -> str:
    """Refuse a policy larger than :data:`MAX_POLICY_BYTES` of UTF-8."""
    size = len(text.encode("utf-8"))
    if size > MAX_POLICY_BYTES:
        raise ValueTooLarge(f"policy is {size} bytes; at most {MAX_POLICY_BYTES} allowed")
    return text


def check_reference_value(document: bytes) -> bytes:
    """Refuse a reference-value document larger than :data:`MAX_REFERENCE_VALUE_BYTES`."""
    if len(document) > MAX_REFERENCE_VALUE_BYTES:
        raise ValueTooLarge(
            f"reference value is {len(document)} bytes; at most {MAX_REFERENCE_VALUE_BYTES} allowed"
        )
    return bytes(document)


class PolicyKind(enum.Enum):
    """Which policy namespace: the AS attestation policies or the KBS resource policy."""

    ATTESTATION = "attestation"
    RESOURCE = "resource"


@dataclass(frozen=True, slots=True)
class StoredPolicy:
    """A policy's text and its version; ``version`` grows by one on every set of that id."""

    kind: PolicyKind
    id: str
    text: str
    version: int


@runtime_checkable
class ResourceStore(Protocol):
    """Secrets addressed by ``repo/type/tag``."""

    async def get(self, path: ResourcePath) -> bytes:
        """The resource's bytes; :class:`ResourceNotFound` if absent."""
        ...

    async def set(self, path: ResourcePath, data: bytes) -> None:
        """Create or replace atomically; :class:`ValueTooLarge`, :class:`StorageReadOnly`."""
        ...

    async def delete(self, path: ResourcePath) -> None:
        """Remove; :class:`ResourceNotFound` if absent."""
        ...

    async def list_paths(self) -> Sequence[ResourcePath]:
        """Every stored path, sorted by ``str(path)``."""
        ...


@runtime_checkable
class PolicyStore(Protocol):
    """Attestation policies by id and the resource policy (id :data:`RESOURCE_POLICY_ID`)."""

    async def get(self, kind: PolicyKind, policy_id: str) -> StoredPolicy:
        """The policy; :class:`PolicyNotFound` if absent."""
        ...

    async def version(self, kind: PolicyKind, policy_id: str) -> int | None:
        """The current version without the text (cheap check for a compiled-policy cache)."""
        ...

    async def set(self, kind: PolicyKind, policy_id: str, text: str) -> StoredPolicy:
        """Create or replace atomically; returns the stored policy with its new version."""
        ...

    async def set_if_absent(self, kind: PolicyKind, policy_id: str, text: str) -> StoredPolicy:
        """Store ``text`` only when no policy has this id; returns whichever is stored."""
        ...

    async def delete(self, kind: PolicyKind, policy_id: str) -> None:
        """Remove; :class:`PolicyNotFound` if absent."""
        ...

    async def list_ids(self, kind: PolicyKind) -> Sequence[str]:
        """Every stored policy id of this kind, sorted."""
        ...


@runtime_checkable
class ReferenceValueStore(Protocol):
    """RVPS reference values: one opaque JSON document (the RVPS ``ReferenceValue``) per name."""

    async def get(self, name: str) -> bytes:
        """The stored document; :class:`ReferenceValueNotFound` if absent."""
        ...

    async def set(self, name: str, document: bytes) -> None:
        """Create or replace atomically."""
        ...

    async def delete(self, name: str) -> None:
        """Remove; :class:`ReferenceValueNotFound` if absent."""
        ...

    async def list_names(self) -> Sequence[str]:
        """Every stored name, sorted."""
        ...


class Backend(enum.Enum):
    """Which backend holds resources."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"
    DIRECTORY = "directory"
    VAULT = "vault"


class StateBackend(enum.Enum):
    """Which database holds policies and reference values (directory and Vault hold resources only)."""

    SQLITE = "sqlite"
    POSTGRES = "postgres"


_SETTINGS_KEYS = frozenset(
    {
        "backend",
        "state_backend",
        "sqlite_path",
        "postgres_dsn",
        "postgres_pool_size",
        "directory_root",
        "directory_writable",
        "vault_url",
        "vault_token_file",
        "vault_mount",
        "vault_kv_version",
        "vault_ca_file",
        "vault_timeout_seconds",
    }
)


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """Typed storage configuration (the ``[storage]`` table of kbs.toml).

    ``backend`` holds resources. Policies and reference values live in ``state_backend``
    (SQLite under ``data_dir`` by default; PostgreSQL when ``backend`` is postgres or when
    ``state_backend = "postgres"``). Vault uses token auth; TLS is always verified
    (``vault_ca_file`` adds a CA bundle); plain ``http://`` is accepted only for loopback.
    """

    data_dir: Path
    backend: Backend = Backend.SQLITE
    state_backend: StateBackend | None = None
    sqlite_path: Path | None = None
    postgres_dsn: str | None = None
    postgres_pool_size: int = 10
    directory_root: Path | None = None
    directory_writable: bool = False
    vault_url: str | None = None
    vault_token_file: Path | None = None
    vault_mount: str = "secret"
    vault_kv_version: int = 2
    vault_ca_file: Path | None = None
    vault_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        from teegate.errors import ConfigError

        uses_postgres = (
            self.backend is Backend.POSTGRES or self.effective_state_backend is StateBackend.POSTGRES
        )
        if uses_postgres and not self.postgres_dsn:
            raise ConfigError("storage: postgres_dsn is required for the postgres backend")
        if not 1 <= self.postgres_pool_size <= 100:
            raise ConfigError("storage: postgres_pool_size must be between 1 and 100")
        if self.backend is Backend.DIRECTORY and self.directory_root is None:
            raise ConfigError("storage: directory_root is required for the directory backend")
        if self.backend is Backend.VAULT:
            if not self.vault_url or self.vault_token_file is None:
                raise ConfigError("storage: vault_url and vault_token_file are required for vault")
            if self.vault_kv_version not in (1, 2):
                raise ConfigError(f"storage: vault_kv_version must be 1 or 2, not {self.vault_kv_version}")
            _check_segment("storage: vault_mount", self.vault_mount)
        if not 0 < self.vault_timeout_seconds <= 300:
            raise ConfigError("storage: vault_timeout_seconds must be in (0, 300]")

    @property
    def effective_state_backend(self) -> StateBackend:
        """Where policies and reference values live."""
        if self.state_backend is not None:
            return self.state_backend
        return StateBackend.POSTGRES if self.backend is Backend.POSTGRES else StateBackend.SQLITE

    @property
    def effective_sqlite_path(self) -> Path:
        """The SQLite file (default ``<data_dir>/kbs.sqlite3``)."""
        return self.sqlite_path if self.sqlite_path is not None else self.data_dir / "kbs.sqlite3"

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], *, data_dir: Path) -> StorageSettings:
        """Build from a parsed TOML table; unknown keys and wrong types raise ConfigError."""
        from teegate.errors import ConfigError

        unknown = sorted(set(table) - _SETTINGS_KEYS)
        if unknown:
            raise ConfigError(f"storage: unknown keys {unknown}; known: {sorted(_SETTINGS_KEYS)}")

        def _str(key: str) -> str | None:
            value = table.get(key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"storage: {key} must be a string")
            return value

        def _path(key: str) -> Path | None:
            value = _str(key)
            return Path(value).expanduser() if value is not None else None

        try:
            backend = Backend(table.get("backend", "sqlite"))
            state = table.get("state_backend")
            state_backend = StateBackend(state) if state is not None else None
        except ValueError as exc:
            raise ConfigError(f"storage: {exc}") from None
        writable = table.get("directory_writable", False)
        pool = table.get("postgres_pool_size", 10)
        version = table.get("vault_kv_version", 2)
        timeout = table.get("vault_timeout_seconds", 10.0)
        if not isinstance(writable, bool):
            raise ConfigError("storage: directory_writable must be a boolean")
        if not isinstance(pool, int) or isinstance(pool, bool):
            raise ConfigError("storage: postgres_pool_size must be an integer")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ConfigError("storage: vault_kv_version must be an integer")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool):
            raise ConfigError("storage: vault_timeout_seconds must be a number")
        return cls(
            data_dir=data_dir,
            backend=backend,
            state_backend=state_backend,
            sqlite_path=_path("sqlite_path"),
            postgres_dsn=_str("postgres_dsn"),
            postgres_pool_size=pool,
            directory_root=_path("directory_root"),
            directory_writable=writable,
            vault_url=_str("vault_url"),
            vault_token_file=_path("vault_token_file"),
            vault_mount=_str("vault_mount") or "secret",
            vault_kv_version=version,
            vault_ca_file=_path("vault_ca_file"),
            vault_timeout_seconds=float(timeout),
        )


@dataclass(frozen=True, slots=True)
class Storage:
    """The three stores a KBS needs, plus a close hook for their connections.

    ``challenges`` is the shared one-time-challenge ledger when the state lives in a database
    several replicas share (PostgreSQL); None when one process owns the state (SQLite), where
    the in-process ledger is enough.
    """

    resources: ResourceStore
    policies: PolicyStore
    reference_values: ReferenceValueStore
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()
    challenges: ChallengeLedgerStore | None = None

    async def close(self) -> None:
        """Close every backend connection (idempotent per backend)."""
        for closer in self.closers:
            await closer()


class ChallengeLedgerStore(Protocol):
    """Records consumed handshake challenges where every replica sees them."""

    async def consume(self, session_id: str, expires_at: int, *, now: float) -> bool: ...


async def open_storage(settings: StorageSettings) -> Storage:
    """Open the configured backends (creating schema/files as needed); raises StorageUnavailable."""
    from teegate.kbs.storage.sql import open_postgres, open_sqlite

    closers: list[Callable[[], Awaitable[None]]] = []
    challenges: ChallengeLedgerStore | None = None
    if settings.effective_state_backend is StateBackend.POSTGRES:
        assert settings.postgres_dsn is not None  # checked in __post_init__
        state = await open_postgres(settings.postgres_dsn, pool_size=settings.postgres_pool_size)
        challenges = state.challenge_ledger()
    else:
        state = await open_sqlite(settings.effective_sqlite_path)
    closers.append(state.close)
    resources: ResourceStore
    try:
        if settings.backend is Backend.DIRECTORY:
            from teegate.kbs.storage.directory import DirectoryResourceStore

            assert settings.directory_root is not None
            resources = DirectoryResourceStore(settings.directory_root, writable=settings.directory_writable)
        elif settings.backend is Backend.VAULT:
            from teegate.kbs.storage.vault import VaultResourceStore

            assert settings.vault_url is not None and settings.vault_token_file is not None
            vault = VaultResourceStore.from_token_file(
                settings.vault_url,
                settings.vault_token_file,
                mount=settings.vault_mount,
                kv_version=settings.vault_kv_version,
                ca_file=settings.vault_ca_file,
                timeout=settings.vault_timeout_seconds,
            )
            closers.append(vault.close)
            resources = vault
        else:
            resources = state.resources
    except BaseException:
        await state.close()
        raise
    return Storage(
        resources=resources,
        policies=state.policies,
        reference_values=state.reference_values,
        closers=tuple(closers),
        challenges=challenges,
    )

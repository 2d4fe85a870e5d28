"""SQL backends: SQLite (default, WAL, one file) and PostgreSQL (psycopg 3 async pool).

Both hold all three stores in three tables. Every write is one statement or one transaction,
so readers never see part of a write. Policy versions survive deletes (a delete leaves a
tombstone with a bumped version) so a compiled-policy cache keyed on (id, version) is never
fooled by a delete followed by a re-create.
"""

from __future__ import annotations

import abc
import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from teegate.errors import StorageUnavailable
from teegate.kbs.storage.base import (
    MAX_LIST_ITEMS,
    PolicyKind,
    PolicyNotFound,
    ReferenceValueNotFound,
    ResourceNotFound,
    ResourcePath,
    StoredPolicy,
    check_policy_text,
    check_reference_value,
    check_resource,
    validate_policy_id,
    validate_reference_value_name,
)

__all__ = [
    "SqlChallengeLedger",
    "SqlState",
    "open_postgres",
    "open_sqlite",
]

_T = TypeVar("_T")

#: Seconds a SQLite writer waits for another writer's lock before reporting unavailable.
_SQLITE_BUSY_TIMEOUT_MS = 5000
#: Milliseconds a reader (on the event loop) may wait; WAL readers only wait during recovery.
_SQLITE_READ_TIMEOUT_MS = 200
#: Seconds to wait for a PostgreSQL connection from the pool.
_PG_POOL_TIMEOUT = 10.0

_SCHEMA_SQLITE = (
    """CREATE TABLE IF NOT EXISTS kbs_resources (
        repo TEXT NOT NULL, type TEXT NOT NULL, tag TEXT NOT NULL, data BLOB NOT NULL,
        PRIMARY KEY (repo, type, tag))""",
    """CREATE TABLE IF NOT EXISTS kbs_policies (
        kind TEXT NOT NULL, id TEXT NOT NULL, text TEXT, version INTEGER NOT NULL,
        PRIMARY KEY (kind, id))""",
    """CREATE TABLE IF NOT EXISTS kbs_reference_values (
        name TEXT NOT NULL PRIMARY KEY, document BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS kbs_used_challenges (
        id TEXT NOT NULL PRIMARY KEY, expires_at INTEGER NOT NULL)""",
)

_SCHEMA_PG = (
    """CREATE TABLE IF NOT EXISTS kbs_resources (
        repo TEXT NOT NULL, type TEXT NOT NULL, tag TEXT NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (repo, type, tag))""",
    """CREATE TABLE IF NOT EXISTS kbs_policies (
        kind TEXT NOT NULL, id TEXT NOT NULL, text TEXT, version BIGINT NOT NULL,
        PRIMARY KEY (kind, id))""",
    """CREATE TABLE IF NOT EXISTS kbs_reference_values (
        name TEXT NOT NULL PRIMARY KEY, document BYTEA NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS kbs_used_challenges (
        id TEXT NOT NULL PRIMARY KEY, expires_at BIGINT NOT NULL)""",
)

# Statements in a neutral form; "?" is rewritten to "%s" for psycopg.
_GET_RESOURCE = "SELECT data FROM kbs_resources WHERE repo = ? AND type = ? AND tag = ?"
_SET_RESOURCE = (
    "INSERT INTO kbs_resources (repo, type, tag, data) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (repo, type, tag) DO UPDATE SET data = excluded.data"
)
_DELETE_RESOURCE = "DELETE FROM kbs_resources WHERE repo = ? AND type = ? AND tag = ? RETURNING 1"
_LIST_RESOURCES = "SELECT repo, type, tag FROM kbs_resources ORDER BY repo, type, tag LIMIT ?"
_GET_POLICY = "SELECT text, version FROM kbs_policies WHERE kind = ? AND id = ? AND text IS NOT NULL"
_POLICY_VERSION = "SELECT version FROM kbs_policies WHERE kind = ? AND id = ? AND text IS NOT NULL"
_SET_POLICY = (
    "INSERT INTO kbs_policies (kind, id, text, version) VALUES (?, ?, ?, 1) "
    "ON CONFLICT (kind, id) DO UPDATE SET text = excluded.text, version = kbs_policies.version + 1 "
    "RETURNING version"
)
_SET_POLICY_IF_ABSENT = (
    "INSERT INTO kbs_policies (kind, id, text, version) VALUES (?, ?, ?, 1) "
    "ON CONFLICT (kind, id) DO UPDATE SET text = excluded.text, version = kbs_policies.version + 1 "
    "WHERE kbs_policies.text IS NULL"
)
_DELETE_POLICY = (
    "UPDATE kbs_policies SET text = NULL, version = version + 1 "
    "WHERE kind = ? AND id = ? AND text IS NOT NULL RETURNING 1"
)
_LIST_POLICIES = "SELECT id FROM kbs_policies WHERE kind = ? AND text IS NOT NULL ORDER BY id LIMIT ?"
_GET_RV = "SELECT document FROM kbs_reference_values WHERE name = ?"
_SET_RV = (
    "INSERT INTO kbs_reference_values (name, document) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET document = excluded.document"
)
_DELETE_RV = "DELETE FROM kbs_reference_values WHERE name = ? RETURNING 1"
_LIST_RV = "SELECT name FROM kbs_reference_values ORDER BY name LIMIT ?"
_USE_CHALLENGE = (
    "INSERT INTO kbs_used_challenges (id, expires_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING RETURNING 1"
)
_PURGE_CHALLENGES = "DELETE FROM kbs_used_challenges WHERE expires_at < ?"
#: Expired challenge records are purged once every this many consumptions (per replica).
_PURGE_EVERY = 512


class _Executor(abc.ABC):
    """How a state object runs one statement; SQLite and PostgreSQL differ only here."""

    @abc.abstractmethod
    async def read_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Backend-specific."""

    @abc.abstractmethod
    async def read_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Backend-specific."""

    @abc.abstractmethod
    async def write_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        """Backend-specific."""

    @abc.abstractmethod
    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        """Backend-specific."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Backend-specific."""


def _limited(rows: list[tuple[Any, ...]], what: str) -> list[tuple[Any, ...]]:
    if len(rows) > MAX_LIST_ITEMS:
        raise StorageUnavailable(f"{what}: more than {MAX_LIST_ITEMS} items stored; refusing to list")
    return rows


class _SqlResources:
    def __init__(self, db: _Executor) -> None:
        self._db = db

    async def get(self, path: ResourcePath) -> bytes:
        row = await self._db.read_one(_GET_RESOURCE, (path.repo, path.type, path.tag))
        if row is None:
            raise ResourceNotFound(f"resource {path} not found")
        return bytes(row[0])

    async def set(self, path: ResourcePath, data: bytes) -> None:
        await self._db.execute(_SET_RESOURCE, (path.repo, path.type, path.tag, check_resource(data)))

    async def delete(self, path: ResourcePath) -> None:
        if await self._db.write_one(_DELETE_RESOURCE, (path.repo, path.type, path.tag)) is None:
            raise ResourceNotFound(f"resource {path} not found")

    async def list_paths(self) -> Sequence[ResourcePath]:
        rows = _limited(await self._db.read_all(_LIST_RESOURCES, (MAX_LIST_ITEMS + 1,)), "resources")
        return sorted((ResourcePath(r[0], r[1], r[2]) for r in rows), key=str)


class _SqlPolicies:
    def __init__(self, db: _Executor) -> None:
        self._db = db

    async def get(self, kind: PolicyKind, policy_id: str) -> StoredPolicy:
        validate_policy_id(policy_id)
        row = await self._db.read_one(_GET_POLICY, (kind.value, policy_id))
        if row is None:
            raise PolicyNotFound(f"{kind.value} policy {policy_id!r} not found")
        return StoredPolicy(kind=kind, id=policy_id, text=str(row[0]), version=int(row[1]))

    async def version(self, kind: PolicyKind, policy_id: str) -> int | None:
        validate_policy_id(policy_id)
        row = await self._db.read_one(_POLICY_VERSION, (kind.value, policy_id))
        return None if row is None else int(row[0])

    async def set(self, kind: PolicyKind, policy_id: str, text: str) -> StoredPolicy:
        validate_policy_id(policy_id)
        check_policy_text(text)
        row = await self._db.write_one(_SET_POLICY, (kind.value, policy_id, text))
        if row is None:
            raise StorageUnavailable(f"storing {kind.value} policy {policy_id!r} returned no version")
        return StoredPolicy(kind=kind, id=policy_id, text=text, version=int(row[0]))

    async def set_if_absent(self, kind: PolicyKind, policy_id: str, text: str) -> StoredPolicy:
        validate_policy_id(policy_id)
        check_policy_text(text)
        await self._db.execute(_SET_POLICY_IF_ABSENT, (kind.value, policy_id, text))
        return await self.get(kind, policy_id)

    async def delete(self, kind: PolicyKind, policy_id: str) -> None:
        validate_policy_id(policy_id)
        if await self._db.write_one(_DELETE_POLICY, (kind.value, policy_id)) is None:
            raise PolicyNotFound(f"{kind.value} policy {policy_id!r} not found")

    async def list_ids(self, kind: PolicyKind) -> Sequence[str]:
        rows = _limited(await self._db.read_all(_LIST_POLICIES, (kind.value, MAX_LIST_ITEMS + 1)), "policies")
        return sorted(str(r[0]) for r in rows)


class _SqlReferenceValues:
    def __init__(self, db: _Executor) -> None:
        self._db = db

    async def get(self, name: str) -> bytes:
        validate_reference_value_name(name)
        row = await self._db.read_one(_GET_RV, (name,))
        if row is None:
            raise ReferenceValueNotFound(f"reference value {name!r} not found")
        return bytes(row[0])

    async def set(self, name: str, document: bytes) -> None:
        validate_reference_value_name(name)
        await self._db.execute(_SET_RV, (name, check_reference_value(document)))

    async def delete(self, name: str) -> None:
        validate_reference_value_name(name)
        if await self._db.write_one(_DELETE_RV, (name,)) is None:
            raise ReferenceValueNotFound(f"reference value {name!r} not found")

    async def list_names(self) -> Sequence[str]:
        rows = _limited(await self._db.read_all(_LIST_RV, (MAX_LIST_ITEMS + 1,)), "reference values")
        return sorted(str(r[0]) for r in rows)


class SqlChallengeLedger:
    """One-time use of a handshake challenge across every replica sharing the database.

    ``consume`` records the session id until its expiry; a second consumption anywhere fails.
    Expired records are purged as consumptions go by.
    """

    def __init__(self, db: _Executor) -> None:
        self._db = db
        self._count = 0

    async def consume(self, session_id: str, expires_at: int, *, now: float) -> bool:
        """Mark ``session_id`` used; False when some replica already used it."""
        self._count += 1
        if self._count % _PURGE_EVERY == 0:
            await self._db.execute(_PURGE_CHALLENGES, (int(now),))
        return await self._db.write_one(_USE_CHALLENGE, (session_id, int(expires_at))) is not None


@dataclass(frozen=True, slots=True)
class SqlState:
    """The three stores over one SQL database."""

    resources: _SqlResources
    policies: _SqlPolicies
    reference_values: _SqlReferenceValues
    _db: _Executor

    def challenge_ledger(self) -> SqlChallengeLedger:
        """The cross-replica one-time-challenge ledger over this database."""
        return SqlChallengeLedger(self._db)

    async def close(self) -> None:
        """Close the connection or pool."""
        await self._db.close()


def _state(db: _Executor) -> SqlState:
    return SqlState(_SqlResources(db), _SqlPolicies(db), _SqlReferenceValues(db), db)


# --- SQLite -----------------------------------------------------------------------------------


class _SqliteExecutor(_Executor):
    """A writer connection on worker threads (serialised by a lock) and a reader on the loop.

    Reads run inline on the event loop: in WAL mode a reader never waits for a writer, and a
    point lookup in a page-cached file costs microseconds where a thread hop costs ~100 µs.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None

    def _open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=_SQLITE_BUSY_TIMEOUT_MS / 1000
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        for statement in _SCHEMA_SQLITE:
            conn.execute(statement)
        self._conn = conn
        reader = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=_SQLITE_READ_TIMEOUT_MS / 1000
        )
        reader.execute(f"PRAGMA busy_timeout={_SQLITE_READ_TIMEOUT_MS}")
        reader.execute("PRAGMA query_only=ON")
        self._reader = reader

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._reader is None:
            raise StorageUnavailable(f"SQLite store {self._path} is closed")
        try:
            return [tuple(row) for row in self._reader.execute(sql, tuple(params)).fetchall()]
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"SQLite store {self._path}: {exc}") from exc

    async def read_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    async def read_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._read(sql, params)

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            with self._lock:
                if self._conn is None:
                    raise StorageUnavailable(f"SQLite store {self._path} is closed")
                try:
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    raise StorageUnavailable(f"SQLite store {self._path}: {exc}") from exc

        return await asyncio.to_thread(call)

    async def write_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        def fn(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            # A write with RETURNING runs in an explicit transaction so the row is committed
            # only after it was read back.
            conn.execute("BEGIN IMMEDIATE")
            try:
                rows = conn.execute(sql, tuple(params)).fetchall()
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return tuple(rows[0]) if rows else None

        return await self._run(fn)

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        def fn(conn: sqlite3.Connection) -> None:
            conn.execute(sql, tuple(params))

        await self._run(fn)

    async def close(self) -> None:
        def fn() -> None:
            with self._lock:
                for conn in (self._conn, self._reader):
                    if conn is not None:
                        conn.close()
                self._conn = self._reader = None

        await asyncio.to_thread(fn)


async def open_sqlite(path: Path) -> SqlState:
    """Open (creating if needed) the SQLite store at ``path`` in WAL mode, file mode 0600."""
    db = _SqliteExecutor(path)
    try:
        await asyncio.to_thread(db._open)
    except (sqlite3.Error, OSError) as exc:
        raise StorageUnavailable(f"cannot open SQLite store {path}: {exc}") from exc
    return _state(db)


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_sql(sql: str) -> str:
    return sql.replace("?", "%s")


class _PostgresExecutor(_Executor):
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def _run(self, sql: str, params: Sequence[Any], fetch: str) -> Any:
        import psycopg
        import psycopg_pool

        try:
            async with self._pool.connection(timeout=_PG_POOL_TIMEOUT) as conn, conn.cursor() as cur:
                await cur.execute(_pg_sql(sql), tuple(params))
                if fetch == "one":
                    row = await cur.fetchone()
                    return None if row is None else tuple(row)
                if fetch == "all":
                    return [tuple(r) for r in await cur.fetchall()]
                return None
        except (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout) as exc:
            raise StorageUnavailable(f"PostgreSQL store: {type(exc).__name__}: {exc}") from exc
        except psycopg.Error as exc:
            raise StorageUnavailable(f"PostgreSQL store error: {type(exc).__name__}: {exc}") from exc

    async def read_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        result: tuple[Any, ...] | None = await self._run(sql, params, "one")
        return result

    async def write_one(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        result: tuple[Any, ...] | None = await self._run(sql, params, "one")
        return result

    async def read_all(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = await self._run(sql, params, "all")
        return result

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self._run(sql, params, "none")

    async def close(self) -> None:
        await self._pool.close()


async def open_postgres(dsn: str, *, pool_size: int = 10) -> SqlState:
    """Open a pool to ``dsn`` and create the schema; raises StorageUnavailable if unreachable."""
    import psycopg
    import psycopg_pool

    # autocommit: every statement is its own transaction, committed when it returns.
    pool = psycopg_pool.AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"autocommit": True},
        timeout=_PG_POOL_TIMEOUT,
        # A connection is checked as it leaves the pool, so after a PostgreSQL restart the
        # stale ones are replaced instead of each costing a client one 503.
        check=psycopg_pool.AsyncConnectionPool.check_connection,
    )
    try:
        await pool.open(wait=True, timeout=_PG_POOL_TIMEOUT)
        # The advisory lock serialises schema creation across replicas starting together.
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(7470617465)")
            for statement in _SCHEMA_PG:
                await conn.execute(statement)
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        await pool.close()
        raise StorageUnavailable(f"cannot open PostgreSQL store: {type(exc).__name__}: {exc}") from exc
    return _state(_PostgresExecutor(pool))

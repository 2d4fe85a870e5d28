"""Persistent PCCS storage (SQLite by default, or PostgreSQL).

Holds collateral items as PCS serves them, and registered platforms.
"""

from __future__ import annotations

import abc
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from teegate.errors import StorageUnavailable

__all__ = ["Item", "PostgresStore", "SqlStore", "SqliteStore", "open_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    name TEXT PRIMARY KEY,
    body BLOB NOT NULL,
    chain TEXT,
    next_update TEXT NOT NULL,
    stored_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS platforms (
    qe_id TEXT NOT NULL,
    pce_id TEXT NOT NULL,
    registration TEXT NOT NULL,
    fmspc TEXT,
    ca TEXT,
    pck_chain TEXT,
    registered_at TEXT NOT NULL,
    PRIMARY KEY (qe_id, pce_id)
);
"""


@dataclass(frozen=True, slots=True)
class Item:
    """One stored document: ``tcb/tdx/<FMSPC>``, ``qe/sgx``, ``pckcrl/platform``, ``rootcacrl``.

    ``body`` is what PCS serves for it: the JSON body ``{"tcbInfo":…,"signature":…}`` (exact
    signed text inside) for TCB Info and QE Identity, DER for CRLs; ``chain`` its issuer chain.
    """

    name: str
    body: bytes
    chain: str | None
    next_update: datetime


class SqlStore(abc.ABC):
    """Queries shared by the SQLite and PostgreSQL stores (``?`` placeholders, upserts)."""

    path: str
    _lock: threading.Lock

    @abc.abstractmethod
    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Backend-specific."""

    @abc.abstractmethod
    def close(self) -> None:
        """Backend-specific."""

    def put(self, item: Item, now: datetime) -> None:
        self._run(
            "INSERT INTO items (name, body, chain, next_update, stored_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET body = excluded.body, chain = excluded.chain, "
            "next_update = excluded.next_update, stored_at = excluded.stored_at",
            (item.name, item.body, item.chain, item.next_update.isoformat(), now.isoformat()),
        )

    def get(self, name: str) -> Item | None:
        rows = self._run("SELECT name, body, chain, next_update FROM items WHERE name = ?", (name,))
        if not rows:
            return None
        n, body, chain, nxt = rows[0]
        return Item(n, bytes(body), chain, datetime.fromisoformat(nxt))

    def names(self, prefix: str) -> list[str]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._run(
            "SELECT name FROM items WHERE name LIKE ? ESCAPE '\\' ORDER BY name", (escaped + "%",)
        )
        return [r[0] for r in rows]

    def register(
        self,
        registration: dict[str, Any],
        fmspc: str | None,
        ca: str | None,
        pck_chain: str | None,
        now: datetime,
    ) -> None:
        self._run(
            "INSERT INTO platforms (qe_id, pce_id, registration, fmspc, ca, pck_chain, registered_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (qe_id, pce_id) DO UPDATE SET "
            "registration = excluded.registration, fmspc = excluded.fmspc, ca = excluded.ca, "
            "pck_chain = excluded.pck_chain, registered_at = excluded.registered_at",
            (
                str(registration["qe_id"]).lower(),
                str(registration["pce_id"]).lower(),
                json.dumps(registration, sort_keys=True),
                fmspc,
                ca,
                pck_chain,
                now.isoformat(),
            ),
        )

    def platform(self, qe_id: str, pce_id: str | None) -> tuple[str | None, str | None, str | None] | None:
        """(fmspc, ca, pck_chain) of a registered platform."""
        if pce_id is None:
            rows = self._run("SELECT fmspc, ca, pck_chain FROM platforms WHERE qe_id = ?", (qe_id.lower(),))
        else:
            rows = self._run(
                "SELECT fmspc, ca, pck_chain FROM platforms WHERE qe_id = ? AND pce_id = ?",
                (qe_id.lower(), pce_id.lower()),
            )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def platform_count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM platforms")[0][0])

    def known_fmspcs(self) -> list[tuple[str, str]]:
        """(fmspc, ca) of registered platforms."""
        rows = self._run("SELECT DISTINCT fmspc, ca FROM platforms WHERE fmspc IS NOT NULL")
        return [(r[0], r[1] or "platform") for r in rows]


class SqliteStore(SqlStore):
    """SQLite (the default): one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise StorageUnavailable(f"PCCS database {path}: {exc}") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"PCCS database {self.path}: {exc}") from exc


class PostgresStore(SqlStore):
    """PostgreSQL (``postgresql://…`` or a libpq key=value DSN); reconnects after a lost connection."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self.path = "postgresql database"  # the DSN may hold a password: never shown
        self._lock = threading.Lock()
        self._conn: Any = None
        with self._lock:
            self._connect()
            for statement in _SCHEMA.replace("BLOB", "BYTEA").split(";"):
                if statement.strip():
                    self._execute(statement, ())

    def _connect(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=5)
            except psycopg.Error as exc:
                raise StorageUnavailable(f"PCCS {self.path}: cannot connect: {type(exc).__name__}") from None
        return self._conn

    def _execute(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        import psycopg

        try:
            cursor = self._connect().execute(sql.replace("?", "%s"), args)
            return list(cursor.fetchall()) if cursor.description is not None else []
        except psycopg.OperationalError as exc:
            self._conn = None
            raise StorageUnavailable(f"PCCS {self.path}: {type(exc).__name__}: {exc}") from None
        except psycopg.Error as exc:
            raise StorageUnavailable(f"PCCS {self.path}: {type(exc).__name__}: {exc}") from None

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._execute(sql, args)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def open_store(data_dir: Path, database_url: str | None = None) -> SqliteStore | PostgresStore:
    """PostgreSQL when a database URL is given, else SQLite at ``<data_dir>/pccs.db``."""
    if database_url:
        return PostgresStore(database_url)
    return SqliteStore(data_dir / "pccs.db")

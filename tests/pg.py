"""A real PostgreSQL 15 server for tests, started from Debian's binaries on loopback.

Reuse it from any test package::

    from tests.pg import postgres_server  # noqa: F401  (the session fixture)

    def test_x(postgres_server: PostgresServer) -> None:
        dsn = postgres_server.dsn(postgres_server.create_database("mine"))

Needs the ``postgresql`` Debian package (``.ci/apt-packages.txt``); a missing server fails
the test with a message saying so, never skips. As root the server runs as the ``postgres``
user through ``runuser``; otherwise as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import free_port

__all__ = ["PG_BIN", "PostgresServer", "postgres_server"]

PG_BIN = Path(os.environ.get("TEEGATE_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    """One throwaway cluster in a temp directory; ``start``/``stop``/``restart`` keep the data."""

    def __init__(self) -> None:
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (PG_BIN / tool).is_file():
                raise RuntimeError(
                    f"PostgreSQL not found at {PG_BIN}/{tool}: add 'postgresql' to .ci/apt-packages.txt "
                    "and run `bash .ci/apt-install` (or set TEEGATE_PG_BIN)"
                )
        self.root = Path(tempfile.mkdtemp(prefix="teegate-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "postgres"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.root.chmod(0o700)
        self._run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )

    def _run(self, argv: list[str]) -> None:
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{argv} failed ({result.returncode}): {result.stderr.strip()}\n{log}")

    def start(self) -> None:
        """Start on 127.0.0.1:<port>, socket in the temp directory; waits until it accepts."""
        options = f"-k {self.root} -p {self.port} -h 127.0.0.1 -c fsync=on"
        self._run(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"]
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop (``fast`` by default, ``immediate`` simulates a crash)."""
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop"])

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for ``database``."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database} connect_timeout=5"

    def create_database(self, prefix: str = "t") -> str:
        """Create a fresh database and return its name."""
        import psycopg

        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def destroy(self) -> None:
        """Stop if running and delete the cluster directory."""
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL 15 for the whole test session; stopped and deleted at teardown."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()

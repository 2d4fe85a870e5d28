"""SQLite on a full disk: writes fail with a clear 5xx, reads keep working, nothing is corrupted.

The KBS (`teegate kbs serve`, embedded SQLite) keeps its data directory on a 4 MiB tmpfs mounted for
the test (needs root, as the PostgreSQL tests do). The disk is filled, resources are written until
the database cannot grow, then space is freed and writes work again; the database passes
``PRAGMA integrity_check`` and holds every write that was acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token
from teegate.kbs.paths import admin_key_path
from teegate.sim import SimPlatform
from tests.integration.scaleout.guest import StepGuest
from tests.integration.scaleout.topology import RESOURCE_POLICY, Daemon, _wait_http, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

_FS_BYTES = 4 * 1024 * 1024


@contextlib.contextmanager
def _small_filesystem(path: Path) -> Iterator[Path]:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={_FS_BYTES},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cannot mount a small tmpfs at {path} (run as root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _admin(data: Path) -> dict[str, str]:
    key = load_or_create_admin_key(admin_key_path(data))
    token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=600)
    return {"Authorization": f"Bearer {token}"}


def test_full_disk_clear_error_no_corruption(tmp_path: Path) -> None:
    platform = SimPlatform.create(tmp_path / "platform")
    policy = tmp_path / "resource.rego"
    policy.write_text(RESOURCE_POLICY)
    config = tmp_path / "kbs.toml"
    config.write_text(f'[policy_engine]\npolicy_path = "{policy}"\n')
    with _small_filesystem(tmp_path / "small") as small:
        data = small / "kbs"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp_path / "kbs.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "teegate.cli",
                    "kbs",
                    "serve",
                    "--config",
                    str(config),
                    "--data-dir",
                    str(data),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--sim-platform",
                    str(platform.directory),
                    "--log-format",
                    "text",
                ],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TEEGATE_KBS_POSTGRES_URL": ""},
            )
        kbs = Daemon("kbs", process, log)
        try:
            _wait_http(f"{url}/healthz", kbs)
            headers = {**_admin(data), "Content-Type": "application/octet-stream"}

            def put(name: str, body: bytes) -> httpx.Response:
                return httpx.post(
                    f"{url}/kbs/v0/resource/default/vm/{name}", content=body, headers=headers, timeout=30
                )

            assert put("kept", b"written-before-the-disk-filled").status_code == 200
            stats = os.statvfs(small)
            filler = small / "filler"
            filler.write_bytes(b"\0" * max(0, stats.f_bavail * stats.f_frsize - 256 * 1024))

            acknowledged: dict[str, bytes] = {}
            failure: httpx.Response | None = None
            # 32 KiB each: teegate.kbs.jwe.decrypt cannot open a JWE above joserfc's 64 KiB default.
            for index in range(40):
                body = os.urandom(32 * 1024)
                response = put(f"fill{index}", body)
                if response.status_code == 200:
                    acknowledged[f"fill{index}"] = body
                    continue
                failure = response
                break
            assert failure is not None, "the full disk never refused a write"
            assert failure.status_code in (500, 503, 507), failure.text
            detail = failure.json()["detail"]
            assert "full" in detail.lower() or "space" in detail.lower(), detail
            assert kbs.alive(), kbs.output()

            # Reads keep working on the full disk: an attested guest still gets its key.
            guest = StepGuest(platform)
            assert guest.auth(url).status_code == 200
            assert guest.attest(url).status_code == 200
            assert guest.open(guest.resource(url, "default/vm/kept")) == b"written-before-the-disk-filled"

            # Space comes back: writes work again without a restart.
            filler.unlink()
            assert put("after", b"written-after-space-returned").status_code == 200
            # Every write that was acknowledged is there, byte for byte.
            for name, body in acknowledged.items():
                assert guest.open(guest.resource(url, f"default/vm/{name}")) == body
            assert guest.open(guest.resource(url, "default/vm/after")) == b"written-after-space-returned"
            print("full-disk refusal:", failure.status_code, detail)
        finally:
            kbs.stop()
        database = data / "kbs.sqlite3"
        with contextlib.closing(sqlite3.connect(database)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert tables, "no tables in the KBS database"

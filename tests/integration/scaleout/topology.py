"""The scale-out topology on one machine: PostgreSQL, R `teegate kbs serve` replicas, the proxy, a QGS.

Replicas share one data directory (token signing key, admin key), one session key
(``TEEGATE_KBS_SESSION_KEY_FILE``) and one PostgreSQL database (``[storage] backend = "postgres"``
for resources and ``TEEGATE_KBS_POSTGRES_URL`` for state). They trust one simulated platform
(``--sim-platform``, not ``--dev``: sample evidence stays refused). Used by the scale-out tests
and by ``bench/storm.py``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token
from teegate.kbs.paths import admin_key_path
from teegate.kbs.token import TOKEN_KEY_FILENAME, load_or_create_token_key
from teegate.sim import SimPlatform
from tests.netutil import free_port
from tests.pg import PostgresServer

__all__ = ["RESOURCE_POLICY", "Daemon", "Topology", "free_port"]

REPO = Path(__file__).resolve().parents[3]

#: Release to a TDX guest whose quote verified (signature chain to the trusted root, collateral)
#: with an up-to-date TCB, not a debug TD, and whose token carries the TEE key bound through
#: report data. (No reference values are registered, so the EAR status itself is not affirming.)
RESOURCE_POLICY = """package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	count(input.submods) == 1
	evidence := input.submods.cpu0["ear.veraison.annotated-evidence"]
	evidence.tdx.tcb_status == "UpToDate"
	evidence.tdx.td_attributes.debug == false
	evidence.runtime_data_claims["tee-pubkey"]
}

reasons contains "not an up-to-date, non-debug TDX guest with a bound TEE key" if not allow
"""


@dataclass
class Daemon:
    """A subprocess with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def freeze(self) -> None:
        """SIGSTOP: the replica still accepts connections (kernel backlog) but answers nothing."""
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL: the replica dies without finishing anything it holds."""
        self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _spawn(name: str, argv: list[str], log: Path, env: dict[str, str]) -> Daemon:
    with log.open("ab") as handle:
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return Daemon(name, process, log)


def _wait_http(url: str, daemon: Daemon, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited ({daemon.process.returncode}): {daemon.output()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{daemon.name} did not answer {url} within {timeout}s: {daemon.output()}")


def _wait_socket(path: Path, daemon: Daemon, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError(f"{daemon.name} exited: {daemon.output()}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as sock, contextlib.suppress(OSError):
                sock.connect(str(path))
                return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear: {daemon.output()}")


@dataclass
class Topology:
    """Everything the scale-out tests and the storm drive; :meth:`close` stops it all."""

    workdir: Path
    postgres: PostgresServer
    owns_postgres: bool
    database: str
    platform: SimPlatform
    data_dir: Path
    session_key_file: Path
    config_file: Path
    replicas: list[Daemon] = field(default_factory=list)
    replica_urls: list[str] = field(default_factory=list)
    proxy: Daemon | None = None
    proxy_url: str = ""
    qgs: Daemon | None = None
    qgs_socket: Path | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        workdir: Path,
        *,
        postgres: PostgresServer | None = None,
        pool_size: int = 10,
        session_minutes: int = 5,
    ) -> Topology:
        """Set up PostgreSQL (started here unless given), the platform, keys and kbs.toml."""
        owns = postgres is None
        if postgres is None:
            postgres = PostgresServer()
            postgres.start()
        database = postgres.create_database("kbs")
        platform = SimPlatform.create(workdir / "platform")
        data_dir = workdir / "kbs-data"
        data_dir.mkdir(mode=0o700)
        # Created once here so replicas starting together read the same keys.
        load_or_create_token_key(data_dir / TOKEN_KEY_FILENAME)
        load_or_create_admin_key(admin_key_path(data_dir))
        session_key = workdir / "session.key"
        session_key.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        session_key.chmod(0o600)
        config = workdir / "kbs.toml"
        dsn = postgres.dsn(database)
        config.write_text(
            "[attestation_service]\n"
            f"timeout = {session_minutes}\n"
            "[storage]\n"
            'backend = "postgres"\n'
            f'postgres_dsn = "{dsn}"\n'
            f"postgres_pool_size = {pool_size}\n"
        )
        return cls(workdir, postgres, owns, database, platform, data_dir, session_key, config)

    @property
    def dsn(self) -> str:
        return self.postgres.dsn(self.database)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("SGX_AESM_ADDR", None)
        env["TEEGATE_KBS_SESSION_KEY_FILE"] = str(self.session_key_file)
        env["TEEGATE_KBS_POSTGRES_URL"] = self.dsn
        env["PYTHONPATH"] = str(REPO)
        env.update(self.extra_env)
        return env

    # --- processes -------------------------------------------------------------------------

    def start_replica(self, port: int | None = None, *, wait: bool = True) -> Daemon:
        """One more `teegate kbs serve` over the shared state; waits for /healthz."""
        port = port or free_port()
        index = len(self.replicas)
        argv = [
            sys.executable,
            "-m",
            "teegate.cli",
            "kbs",
            "serve",
            "--config",
            str(self.config_file),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--sim-platform",
            str(self.platform.directory),
            "--log-format",
            "text",
            "--log-level",
            "warning",
        ]
        daemon = _spawn(f"replica{index}", argv, self.workdir / f"replica{index}.log", self.env())
        url = f"http://127.0.0.1:{port}"
        self.replicas.append(daemon)
        self.replica_urls.append(url)
        if wait:
            _wait_http(f"{url}/healthz", daemon)
        return daemon

    def start_replicas(self, count: int) -> None:
        """Start ``count`` replicas together and wait until all answer /healthz."""
        started = [self.start_replica(wait=False) for _ in range(count)]
        for daemon, url in zip(started, self.replica_urls[-count:], strict=True):
            _wait_http(f"{url}/healthz", daemon)

    def restart_replica(self, index: int) -> Daemon:
        """Start replica ``index`` again on its port (after a kill)."""
        url = self.replica_urls[index]
        port = int(url.rsplit(":", 1)[1])
        argv = list(self.replicas[index].process.args)  # type: ignore[arg-type]
        daemon = _spawn(f"replica{index}", argv, self.workdir / f"replica{index}.log", self.env())
        self.replicas[index] = daemon
        _wait_http(f"http://127.0.0.1:{port}/healthz", daemon)
        return daemon

    def start_proxy(self) -> Daemon:
        port = free_port()
        argv = [sys.executable, "-m", "teegate.kbs.lb", "--listen", f"127.0.0.1:{port}"]
        for url in self.replica_urls:
            argv += ["--backend", url]
        self.proxy = _spawn("proxy", argv, self.workdir / "proxy.log", self.env())
        self.proxy_url = f"http://127.0.0.1:{port}"
        _wait_http(f"{self.proxy_url}/healthz", self.proxy)
        return self.proxy

    def start_qgs(self, workers: int = 4) -> Daemon:
        sock = self.workdir / "qgs.sock"
        argv = [
            sys.executable,
            "-m",
            "teegate.cli",
            "qgs",
            "serve",
            "--socket",
            str(sock),
            "--backend",
            "sim",
            "--platform",
            str(self.platform.directory),
            "--workers",
            str(workers),
        ]
        self.qgs = _spawn("qgs", argv, self.workdir / "qgs.log", self.env())
        self.qgs_socket = sock
        _wait_socket(sock, self.qgs)
        return self.qgs

    # --- admin -------------------------------------------------------------------------------

    def admin_headers(self) -> dict[str, str]:
        key = load_or_create_admin_key(admin_key_path(self.data_dir))
        token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=600)
        return {"Authorization": f"Bearer {token}"}

    def set_resource(self, url: str, path: str, data: bytes) -> None:
        response = httpx.post(
            f"{url}/kbs/v0/resource/{path}",
            content=data,
            headers={**self.admin_headers(), "Content-Type": "application/octet-stream"},
            timeout=30,
        )
        response.raise_for_status()

    def set_resource_policy(self, url: str, rego: str = RESOURCE_POLICY) -> None:
        body = {"policy": base64.urlsafe_b64encode(rego.encode()).rstrip(b"=").decode()}
        response = httpx.post(
            f"{url}/kbs/v0/resource-policy", json=body, headers=self.admin_headers(), timeout=30
        )
        response.raise_for_status()

    def close(self) -> None:
        for daemon in [self.proxy, self.qgs, *self.replicas]:
            if daemon is not None:
                daemon.stop()
        if self.owns_postgres:
            self.postgres.destroy()

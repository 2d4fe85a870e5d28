"""Real teegate servers for attester tests: a --dev KBS, a sim QGS, an AESM helper, as subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from teegate.kbs.admin_client import AdminClient
from teegate.kbs.storage.base import ResourcePath
from tests.netutil import free_port

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
DEPLOY = REPO / "deploy"


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: the venv's teegate-attester and the clevis pin on PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(DEPLOY / "clevis"), str(VENV_BIN), env.get("PATH", "/usr/bin:/bin")])
    env.pop("SGX_AESM_ADDR", None)
    env.update(extra)
    return env


def teegate(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teegate.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=tool_env(),
    )


def attester(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teegate.attester.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or tool_env(),
        check=False,
    )


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start(args: Sequence[str], log: Path) -> Daemon:
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "teegate.cli", *args], stdout=handle, stderr=subprocess.STDOUT, env=tool_env()
    )
    handle.close()
    return Daemon(process, log)


@dataclass
class Kbs:
    daemon: Daemon
    url: str
    data_dir: Path

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return teegate("kbs", "admin", "--url", self.url, "--data-dir", str(self.data_dir), *args)

    def set_builtin_resource_policy(self, name: str) -> None:
        """Upload one of teegate's built-in resource policies (as `kbs admin set-resource-policy --builtin`)."""
        from teegate.kbs.policy import PolicyKind, builtin_policy_text

        token = (self.data_dir / "admin-token").read_text().strip()
        with AdminClient(self.url, token=token) as client:
            client.set_resource_policy(builtin_policy_text(PolicyKind.RESOURCE, name).encode())

    def set_resource(self, path: str, data: bytes) -> None:
        """Store a resource through the admin API (the same call `teegate kbs admin set-resource` makes)."""
        token = (self.data_dir / "admin-token").read_text().strip()
        with AdminClient(self.url, token=token) as client:
            client.set_resource(ResourcePath.parse(path), data)


def start_kbs(workdir: Path, platform: Path, port: int | None = None, *, wait: bool = True) -> Kbs:
    port = port or free_port()
    data = workdir / f"kbs-{port}"
    daemon = start(
        [
            "kbs",
            "serve",
            "--dev",
            "--data-dir",
            str(data),
            "--sim-platform",
            str(platform),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "text",
        ],
        workdir / f"kbs-{port}.log",
    )
    kbs = Kbs(daemon, f"http://127.0.0.1:{port}", data)
    if wait:
        wait_kbs(kbs)
    return kbs


def wait_kbs(kbs: Kbs, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if kbs.daemon.process.poll() is not None:
            raise RuntimeError(f"KBS exited: {kbs.daemon.output()}")
        try:
            if (
                httpx.get(f"{kbs.url}/healthz", timeout=1).status_code == 200
                and (kbs.data_dir / "admin-token").exists()
            ):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"KBS did not come up: {kbs.daemon.output()}")


def wait_socket(path: Path, daemon: Daemon, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited: {daemon.output()}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not appear: {daemon.output()}")


def start_qgs(workdir: Path, platform: Path, sock: Path, *, wait: bool = True) -> Daemon:
    daemon = start(
        ["qgs", "serve", "--socket", str(sock), "--backend", "sim", "--platform", str(platform)],
        workdir / f"{sock.name}.log",
    )
    if wait:
        wait_socket(sock, daemon)
    return daemon


def start_aesm(workdir: Path, platform: Path, sock: Path) -> Daemon:
    daemon = start(
        ["aesm", "serve", "--socket", str(sock), "--platform", str(platform)], workdir / "aesm.log"
    )
    wait_socket(sock, daemon)
    return daemon


@contextmanager
def running(*daemons: Daemon) -> Iterator[None]:
    try:
        yield
    finally:
        for daemon in daemons:
            daemon.stop()


def dm_available() -> bool:
    """Whether device-mapper works here (so `cryptsetup open` can map a device)."""
    return Path("/dev/mapper/control").exists()


class LateForwarder:
    """A TCP port that refuses connections until ``open()``, then forwards to ``target`` (a KBS
    that is down, then up, as the guest sees it)."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

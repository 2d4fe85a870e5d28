"""Shared daemon plumbing for the node services: listeners, start line, metrics, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from teegate.errors import ConfigError

__all__ = [
    "ConnectionHandler",
    "DaemonMetrics",
    "InFlight",
    "Listen",
    "parse_host_port",
    "run_daemon",
    "start_line",
    "start_listener",
]

_log = logging.getLogger("teegate.node")

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Listen:
    """Where a daemon listens: a Unix socket path or an AF_VSOCK port (exactly one)."""

    unix_path: Path | None = None
    vsock_port: int | None = None
    unix_mode: int = 0o660

    def __post_init__(self) -> None:
        if (self.unix_path is None) == (self.vsock_port is None):
            raise ConfigError("give exactly one of --socket PATH or --vsock PORT")
        if self.vsock_port is not None and not 0 < self.vsock_port < 2**32:
            raise ConfigError(f"vsock port {self.vsock_port} out of range")

    def describe(self) -> str:
        """Human form for the start line."""
        return f"unix:{self.unix_path}" if self.unix_path is not None else f"vsock:*:{self.vsock_port}"


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); rejects anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class DaemonMetrics:
    """Prometheus metrics of one daemon, in its own registry (no module globals)."""

    def __init__(self, daemon: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"teegate_{daemon}_requests",
            "Requests handled, by message type and outcome.",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            f"teegate_{daemon}_request_seconds",
            "Time from first byte to reply.",
            ["type"],
            registry=self.registry,
        )
        self.connections = Counter(
            f"teegate_{daemon}_connections", "Connections accepted.", registry=self.registry
        )

    def serve(self, listen: str) -> None:
        """Expose ``/metrics`` on ``HOST:PORT`` (a background thread)."""
        host, port = parse_host_port(listen)
        start_http_server(port, addr=host, registry=self.registry)


def start_line(daemon: str, listen: str, details: list[str], insecure: list[str]) -> str:
    """The one line a daemon logs at start: where it listens, and every insecure option."""
    parts = [f"teegate {daemon} listening on {listen}", *details]
    parts += [f"INSECURE: {item}" for item in insecure]
    return "; ".join(parts)


def _remove_stale_socket(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody listens: a leftover from a crash
    else:
        raise ConfigError(f"another process is already serving {path}")
    finally:
        probe.close()


async def start_listener(listen: Listen, handler: ConnectionHandler, *, backlog: int = 128) -> asyncio.Server:
    """Start an asyncio server on a Unix socket (stale socket replaced) or AF_VSOCK."""
    if listen.unix_path is not None:
        path = listen.unix_path
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(path)
        server = await asyncio.start_unix_server(handler, path=str(path), backlog=backlog)
        os.chmod(path, listen.unix_mode)
        return server
    family = getattr(socket, "AF_VSOCK", None)
    if family is None:
        raise ConfigError("this Python/kernel has no AF_VSOCK; use --socket PATH")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((getattr(socket, "VMADDR_CID_ANY", 0xFFFFFFFF), listen.vsock_port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on vsock port {listen.vsock_port}: {exc} (is vhost_vsock loaded?)"
        ) from exc
    sock.setblocking(False)
    return await asyncio.start_server(handler, sock=sock)


class InFlight:
    """Tracks running connection handlers so shutdown can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def wrap(self, handler: ConnectionHandler) -> ConnectionHandler:
        """A handler that registers itself while it runs."""

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                if task is not None:
                    self._tasks.discard(task)

        return tracked

    async def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for in-flight handlers; returns how many were still running."""
        if not self._tasks:
            return 0
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return len(pending)


async def run_daemon(
    server: asyncio.Server,
    inflight: InFlight,
    *,
    grace: float = 30.0,
    cleanup: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then stop accepting and let in-flight requests finish."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with server:
            await stop.wait()
            _log.info("shutting down: no new connections; waiting for in-flight requests")
            server.close()
            await server.wait_closed()
            left = await inflight.wait(grace)
            if left:
                _log.warning("shutdown: %d requests still running after %.0fs; abandoning them", left, grace)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if cleanup is not None:
            cleanup()

"""QGS throughput: quotes/s through the Unix socket vs. the backend's signing alone, same run.

    .venv/bin/python bench/qgs.py [--platform SIMDIR | --standin] [--seconds 3] [--clients 8]

By default a fresh simulated platform (teegate.sim) is created in a temporary directory and
signs real DCAP quotes; ``--platform`` uses an existing one. ``--standin`` replaces it with a
backend that only signs each quote body with ECDSA-P256 (what a QE does per quote). Either
way "signing alone" is the same backend called directly in the same run, so the ratio shows
what the protocol, socket and scheduling cost on top of quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Event
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.node._daemon import Listen, run_daemon
from teegate.node.qgs import client
from teegate.node.qgs.backend import QuotingBackend, SimBackend
from teegate.node.qgs.messages import CollateralResponse, PlatformInfoResponse
from teegate.node.qgs.server import QgsServer, QgsSettings


class _EcdsaBackend:
    """Stand-in: a v4-sized header+body signed with ECDSA-P256, like the TD-QE's per-quote work."""

    name = "ecdsa-standin"
    hardware = False

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())

    def quote_from_tdreport(self, tdreport: bytes) -> bytes:
        signed = bytes(48) + tdreport[256:840]
        return signed + self._key.sign(signed, ec.ECDSA(hashes.SHA256()))

    def quote_from_sgx_report(self, report: bytes) -> bytes:
        return self.quote_from_tdreport(report.ljust(1024, b"\0"))

    def platform_info(self) -> PlatformInfoResponse:
        return PlatformInfoResponse(0, 0, b"", b"")

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        return CollateralResponse(3, 1, b"", b"", b"", b"", b"", b"", b"")


def _tdreport(i: int) -> bytes:
    report = bytearray(1024)
    report[0] = 0x81
    report[128:192] = hashlib.sha512(i.to_bytes(8, "big")).digest()
    return bytes(report)


def _direct(backend: QuotingBackend, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        backend.quote_from_tdreport(_tdreport(n))
        n += 1
    return n / (time.perf_counter() - start)


def _serve(platform: Path | None, path: Path, workers: int, ready: Event) -> None:
    """Child process: run the QGS server (as in production, QGS and its client are separate)."""

    async def run() -> None:
        backend = _backend(platform)
        server = QgsServer(QgsSettings(Listen(unix_path=path), workers=workers), backend)
        listener = await server.start()
        ready.set()
        await run_daemon(listener, server.inflight, grace=5.0)

    asyncio.run(run())


def _through_socket(platform: Path | None, seconds: float, clients: int) -> float:
    directory = Path(tempfile.mkdtemp(prefix="qgsbench", dir="/tmp"))
    path = directory / "qgs.socket"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_serve, args=(platform, path, clients, ready))
    proc.start()
    counts = [0] * clients
    try:
        if not ready.wait(30):
            raise RuntimeError("QGS server process did not start")
        deadline = time.perf_counter() + seconds

        def worker(k: int) -> None:
            while time.perf_counter() < deadline:
                client.get_quote(path, _tdreport(k * 1_000_000 + counts[k]), buffer_size=128 * 1024)
                counts[k] += 1

        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, range(clients)))
        elapsed = time.perf_counter() - start
    finally:
        if proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
        shutil.rmtree(directory)
    return sum(counts) / elapsed


def _backend(platform: Path | None) -> QuotingBackend:
    return SimBackend.load(platform) if platform else _EcdsaBackend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--platform", type=Path, help="simulated platform directory (teegate sim)")
    parser.add_argument("--standin", action="store_true", help="ECDSA stand-in instead of the simulator")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    scratch: Path | None = None
    if args.platform is None and not args.standin:
        from teegate.sim import SimPlatform

        scratch = Path(tempfile.mkdtemp(prefix="qgsbench-sim", dir="/tmp"))
        args.platform = SimPlatform.create(scratch / "platform").directory
    try:
        _run(args)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch)


def _run(args: argparse.Namespace) -> None:
    backend = _backend(args.platform)
    signing = _direct(backend, args.seconds)
    socket_rate = _through_socket(args.platform, args.seconds, args.clients)
    print(f"backend: {backend.name}  clients: {args.clients}  seconds: {args.seconds} (server: own process)")
    print(f"signing alone (backend called directly): {signing:10.1f} quotes/s")
    print(f"through the QGS unix socket:             {socket_rate:10.1f} quotes/s")
    print(f"socket / signing ratio:                  {socket_rate / signing:10.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""Simulated quoting speed, measured against the raw cost of one ECDSA P-256 sign in the same run.

    .venv/bin/python bench/sim_quote.py [--seconds 1.0]

A simulated quote costs one P-256 signature (the attestation key over header + body) plus
assembling bytes; the QE report, its PCK signature and the certification data are precomputed.
So the peer is ``cryptography``'s P-256 sign of a 632-byte message, and the ratio shows the
quoting engine's overhead on top of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.sim import SimPlatform


def _rate(fn: Callable[[int], object], seconds: float) -> float:
    for i in range(50):  # warm up
        fn(i)
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn(n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def _worker(directory: str, seconds: float) -> int:
    platform = SimPlatform.load(directory)
    n, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            platform.tdx_quote(n.to_bytes(8, "little"))
            n += 1
    return n


def _parallel_rate(directory: str, processes: int, seconds: float) -> float:
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_worker, [directory] * processes, [0.05] * processes))  # start + warm up
        start = time.perf_counter()
        total = sum(pool.map(_worker, [directory] * processes, [seconds] * processes))
        return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        platform = SimPlatform.create(Path(tmp) / "p")
        create_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        platform = SimPlatform.load(Path(tmp) / "p")
        load_ms = (time.perf_counter() - t0) * 1000

        key = ec.generate_private_key(ec.SECP256R1())
        message = os.urandom(632)
        sign_rate = _rate(lambda i: key.sign(message, ec.ECDSA(hashes.SHA256())), args.seconds)
        tdreport = platform.tdreport(b"bench")

        def rd(i: int) -> bytes:
            return i.to_bytes(8, "little")

        cases: list[tuple[str, Callable[[int], object]]] = [
            ("tdx v4 quote", lambda i: platform.tdx_quote(rd(i))),
            ("tdx v5 quote", lambda i: platform.tdx_quote(rd(i), version=5)),
            ("sgx v3 quote", lambda i: platform.sgx_quote(rd(i))),
            ("quote_from_tdreport v4", lambda i: platform.quote_from_tdreport(tdreport)),
        ]
        print(f"platform create {create_ms:.1f} ms, load {load_ms:.1f} ms (one process, one core)")
        print(f"peer: ECDSA P-256 sign (cryptography) {sign_rate:,.0f} signs/s")
        for name, fn in cases:
            rate = _rate(fn, args.seconds)
            print(f"{name:24} {rate:>10,.0f} quotes/s  = {rate / sign_rate:.2f}x the raw sign rate")
        procs = min(2, os.cpu_count() or 1)
        rate = _parallel_rate(str(Path(tmp) / "p"), procs, args.seconds)
        print(f"tdx v4 quote, {procs} processes {rate:>8,.0f} quotes/s (target > 1,000/s on 2 cores)")


if __name__ == "__main__":
    main()

"""KBS handshakes per second on loopback: auth + attest (simulated TDX v4 quote) + one resource.

    .venv/bin/python bench/kbs.py [--seconds 5] [--clients 128] [--runs 3] [--server-procs 2]
                                  [--stock-http] [--profile]

Cores (2 here): by default two KBS processes share the port (SO_REUSEPORT, as ``teegate kbs
serve --workers 2``) and, with the load generator, both cores; ``--server-procs 1`` pins one KBS
process to CPU 0 and the generator to CPU 1. The server runs as ``teegate kbs serve`` does:
uvicorn with uvloop and httptools, responses written in one send
(:mod:`teegate.kbs.httpserver`; ``--stock-http``: uvicorn's own protocol, head and body in two),
start-up objects frozen out of the collector, no access log, INFO logs to a file (audit lines
included). The generator (uvloop too) precomputes what does not depend on the nonce (TEE keys and
their JWKs) and per handshake builds the runtime-data digest and asks the simulated platform for
a quote (what a TD would do), then fetches one resource (the first handshake of each client
checks that the JWE decrypts). Requests are raw HTTP/1.1 over keep-alive connections so the
generator spends its CPU on the guest's work, not on an HTTP client library.

Reported per run and as medians over ``--runs`` (the machine is shared: single runs are noisy):
closed-loop throughput with ``--clients`` concurrent guests, p50/p99 latency of a whole handshake,
an open-loop run at half that rate (p50/p99 there), server CPU milliseconds per handshake (from
/proc), and where that CPU goes, from one more KBS run with each step timed (the timing costs
CPU itself, so the headline runs are not timed): process CPU time around each step (cookie
seal/open, DCAP verification, attestation policy, token signing, resource policy, storage, JWE,
audit; a call that suspended is left out and its step scaled from the others), the rest of the
endpoints' code, and what lies outside them (HTTP server, response writes with the kernel's loopback TCP,
event loop). Peer in the same run: the same three HTTP round trips against a bare Starlette app
on the same server stack and core(s) (the framework ceiling), and the KBS/peer ratio.
``--profile`` prints cProfile's top functions of the server instead of the step breakdown.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from teegate.kbs.jwe import decrypt  # noqa: E402
from teegate.kbs.protocol import TeePubKey, pad_report_data, runtime_data_digest  # noqa: E402

RESOURCE = "default/bench/key"
SECRET = b"bench-secret-0123456789"


# --- server side (child process) -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Server steps timed for the breakdown: process CPU time while each call runs. An async step
# that suspended (e.g. the RVPS cache refreshing once a second) would count other requests'
# work, so such calls are left out and the step's time is scaled from the calls that did not.
_STEPS: Final = (
    "session cookie seal",
    "session cookie open",
    "evidence verification (DCAP)",
    "attestation policy (Rego)",
    "token signing (ES256)",
    "resource policy (Rego)",
    "resource storage read",
    "JWE (ECDH-ES+A256KW, A256GCM)",
    "audit record",
)
# Not a step: the whole of the three KBS endpoints (the handler with its steps above, error
# bodies, metrics), so the rest splits into the KBS's own code and what is outside it: the HTTP
# server, writing the response (the kernel's loopback TCP included), the event loop.
_ENDPOINTS: Final = "KBS endpoints, whole"
_STOCK_HTTP_ENV: Final = "TEEGATE_BENCH_STOCK_HTTP"
_METERED: Final = (*_STEPS, _ENDPOINTS)


class _Meter:
    """Accumulates process CPU time per step (``time.process_time`` around each call)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = dict.fromkeys(_METERED, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(_METERED, 0)
        self.timed: dict[str, int] = dict.fromkeys(_METERED, 0)

    def reset(self) -> None:
        """Forget the warm-up (compilation, first collateral): SIGUSR1 from the generator."""
        for step in _METERED:
            self.cpu[step], self.calls[step], self.timed[step] = 0.0, 0, 0

    def report(self) -> dict[str, float]:
        """CPU seconds per step, scaled up from the calls timed to all calls."""
        return {
            step: self.cpu[step] * self.calls[step] / self.timed[step] if self.timed[step] else 0.0
            for step in _METERED
        }

    def wrap(self, step: str, fn: Any) -> Any:
        cpu = self.cpu

        calls, timed_calls = self.calls, self.timed

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[step] += time.process_time() - started
                calls[step] += 1
                timed_calls[step] += 1

        return timed

    def wrap_async(self, step: str, fn: Any) -> Any:
        cpu = self.cpu

        calls, timed_calls = self.calls, self.timed

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            suspended: list[bool] = []
            # Runs only if the coroutine gives the loop control before it finishes.
            asyncio.get_running_loop().call_soon(suspended.append, True)
            try:
                return await fn(*args, **kwargs)
            finally:
                calls[step] += 1
                if not suspended:
                    cpu[step] += time.process_time() - started
                    timed_calls[step] += 1

        return timed


def _instrument(app: Any, meter: _Meter) -> None:
    """Time the KBS's steps in place (class attributes for objects made in the lifespan)."""
    import teegate.kbs.app as app_module
    from teegate.kbs.policy import PolicyEngine
    from teegate.kbs.protocol import Tee
    from teegate.kbs.storage.sql import _SqlResources

    runtime = app.state.kbs
    runtime.sealer.seal = meter.wrap("session cookie seal", runtime.sealer.seal)
    runtime.sealer.open = meter.wrap("session cookie open", runtime.sealer.open)
    verifier = runtime.verifiers.get(Tee.TDX)
    verifier.verify = meter.wrap_async("evidence verification (DCAP)", verifier.verify)
    runtime.signer.sign_json = meter.wrap("token signing (ES256)", runtime.signer.sign_json)
    runtime.audit.record = meter.wrap("audit record", runtime.audit.record)
    app_module.encrypt = meter.wrap("JWE (ECDH-ES+A256KW, A256GCM)", app_module.encrypt)  # type: ignore[attr-defined]
    PolicyEngine.appraise = meter.wrap_async("attestation policy (Rego)", PolicyEngine.appraise)  # type: ignore[method-assign]
    PolicyEngine.resource_allowed = meter.wrap_async(  # type: ignore[method-assign]
        "resource policy (Rego)", PolicyEngine.resource_allowed
    )
    _SqlResources.get = meter.wrap_async("resource storage read", _SqlResources.get)  # type: ignore[method-assign]
    for name, endpoint in app.endpoints.items():
        app.endpoints[name] = meter.wrap_async(_ENDPOINTS, endpoint)


def _http_protocol() -> Any:
    """The HTTP protocol ``teegate kbs serve`` uses (responses written in one send), for the KBS
    and the peer alike; ``--stock-http`` gives both uvicorn's own httptools protocol."""
    if os.environ.get(_STOCK_HTTP_ENV) == "1":
        return "httptools"
    from teegate.commands.kbs import http_protocol

    return http_protocol()


def _run_server(kind: str, data_dir: Path, port: int, profile: bool, breakdown: Path | None) -> None:
    import logging

    import uvicorn

    # As `teegate kbs serve` logs (INFO: an audit line per release, a line per token), to a file.
    handler = logging.FileHandler(data_dir / f"{kind}-{os.getpid()}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    from teegate.commands.kbs import lean_log_records

    lean_log_records()
    if kind == "peer":
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        async def echo(request: Request) -> Response:
            await request.body()
            return Response(b'{"ok":true}', media_type="application/json")

        app: Any = Starlette(
            routes=[
                Route("/kbs/v0/auth", echo, methods=["POST"]),
                Route("/kbs/v0/attest", echo, methods=["POST"]),
                Route("/kbs/v0/resource/{path:path}", echo, methods=["GET"]),
            ]
        )
    else:
        from teegate.kbs.app import build_app
        from teegate.kbs.config import KbsSettings
        from teegate.kbs.storage import StorageSettings

        settings = KbsSettings(
            data_dir=data_dir,
            storage=StorageSettings(data_dir=data_dir),
            trust_simulated=True,
            sim_platform=data_dir / "sim",
            dev=True,
            listen=("127.0.0.1", port),
        )
        app = build_app(settings)
    meter = _Meter()
    if breakdown is not None and kind == "kbs":
        _instrument(app, meter)
        signal.signal(signal.SIGUSR1, lambda *_: meter.reset())
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="error",
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http=_http_protocol(),
    )
    server = uvicorn.Server(config)
    # SO_REUSEPORT: several server processes share the port; the kernel spreads connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    # uvicorn re-raises the stop signal after a graceful shutdown: make it an exit so what
    # follows (breakdown file, profile) runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    from teegate.commands.kbs import freeze_startup_objects

    freeze_startup_objects()  # as `teegate kbs serve` does
    if not profile:
        try:
            server.run(sockets=[sock])
        finally:
            if breakdown is not None:
                breakdown.write_text(json.dumps(meter.report()))
        return
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        server.run(sockets=[sock])
    finally:
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(30)
        stats.sort_stats("cumulative").print_stats("teegate", 30)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _system_seconds(pid: int) -> float:
    """Kernel CPU time (loopback TCP included: the sender also pays for the receive path)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


# --- load generator -----------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with a cookie: a bare protocol (no stream objects), so
    the generator spends its CPU on the guests' work rather than on buffering."""

    def __init__(self) -> None:
        self.cookie = ""
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head: tuple[int, int, int] | None = None  # status, head length, body length

    @classmethod
    async def open(cls, port: int) -> _Conn:
        _, conn = await asyncio.get_running_loop().create_connection(cls, "127.0.0.1", port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a uvloop TCPTransport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection closed: {exc}"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                lname = name.lower()
                if lname == "content-length":
                    length = int(value)
                elif lname == "set-cookie" and value.strip().startswith("kbs-session-id="):
                    self.cookie = value.strip().split(";", 1)[0].split("=", 1)[1]
            self._head = (int(lines[0].split(" ", 2)[1]), end + 4, length)
        status, start, length = self._head
        if len(buffer) >= start + length:
            body = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._head = None
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result((status, body))

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {len(body)}\r\n"
        if body:
            head += "content-type: application/json\r\n"
        if self.cookie:
            head += f"cookie: kbs-session-id={self.cookie}\r\n"
        assert self._transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(head.encode() + b"\r\n" + body)
        return await self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _Guest:
    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.jwk = TeePubKey.from_public_key(self.key.public_key())
        self.jwk_json = self.jwk.to_jwk()
        template = {
            "runtime-data": {"nonce": "@NONCE@", "tee-pubkey": self.jwk_json},
            "tee-evidence": {
                "primary_evidence": {"cc_eventlog": None, "quote": "@QUOTE@"},
                "additional_evidence": "",
            },
        }
        # Compact, as guest-components' serde_json writes it.
        self.template = (
            json.dumps(template, separators=(",", ":"))
            .replace("%", "%%")
            .replace("@NONCE@", "%s")
            .replace("@QUOTE@", "%s")
            .encode()
        )

    async def handshake(self, conn: _Conn, peer: bool, check: bool) -> None:
        conn.cookie = ""
        status, body = await conn.call(
            "POST", "/kbs/v0/auth", b'{"version":"0.4.0","tee":"tdx","extra-params":{}}'
        )
        if status != 200:
            raise RuntimeError(f"auth {status}: {body[:200]!r}")
        nonce = "bm9uY2U=" if peer else json.loads(body)["nonce"]
        quote = self.platform.tdx_quote(pad_report_data(runtime_data_digest(nonce, self.jwk, "")))
        # The Attestation message with its two per-handshake values spliced into a template
        # made once (the nonce is base64, the quote base64: neither needs JSON escaping).
        body = self.template % (nonce.encode(), base64.b64encode(quote))
        status, body = await conn.call("POST", "/kbs/v0/attest", body)
        if status != 200:
            raise RuntimeError(f"attest {status}: {body[:300]!r}")
        status, body = await conn.call("GET", f"/kbs/v0/resource/{RESOURCE}")
        if status != 200:
            raise RuntimeError(f"resource {status}: {body[:300]!r}")
        if check and not peer and decrypt(json.loads(body), self.key) != SECRET:
            raise RuntimeError("JWE did not decrypt to the resource")


async def _closed_loop(port: int, platform: Any, clients: int, seconds: float, peer: bool) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        conn, guest = await _Conn.open(port), _Guest(platform)
        first = True
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await guest.handshake(conn, peer, check=first)
            first = False
            latencies.append(time.perf_counter() - started)
        conn.close()

    await asyncio.gather(*(worker(i) for i in range(clients)))
    return latencies


async def _open_loop(
    port: int, platform: Any, rate: float, seconds: float, pool: int
) -> tuple[list[float], int]:
    """Start handshakes at ``rate``/s (Poisson-free fixed spacing) on a pool of connections."""
    latencies: list[float] = []
    conns: asyncio.Queue[tuple[_Conn, _Guest]] = asyncio.Queue()
    for _ in range(pool):
        conns.put_nowait((await _Conn.open(port), _Guest(platform)))
    missed = 0
    tasks = []

    async def one(scheduled: float) -> None:
        conn, guest = await conns.get()
        try:
            await guest.handshake(conn, False, check=False)
            latencies.append(time.perf_counter() - scheduled)
        finally:
            conns.put_nowait((conn, guest))

    start = time.perf_counter()
    count = int(rate * seconds)
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            missed += 1
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return latencies, missed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _start(
    kind: str, data_dir: Path, profile: bool, cpus: set[int], procs: int, breakdown: Path | None
) -> tuple[list[subprocess.Popen[bytes]], int]:
    port = _free_port()
    cmd = [sys.executable, __file__, "--serve", kind, "--data-dir", str(data_dir), "--port", str(port)]
    if profile:
        cmd.append("--profile")
    if breakdown is not None:
        cmd += ["--breakdown-dir", str(breakdown)]
    servers = [
        subprocess.Popen(cmd, preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # noqa: PLW1509
        for _ in range(procs)
    ]
    for proc in servers:
        _wait_port(proc, port, kind)
    time.sleep(0.5 * procs)  # every process listening before load starts
    return servers, port


def _wait_port(proc: subprocess.Popen[bytes], port: int, kind: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start") from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


async def _put_resource(data_dir: Path) -> None:
    from teegate.kbs.storage import ResourcePath, StorageSettings, open_storage

    storage = await open_storage(StorageSettings(data_dir=data_dir))
    try:
        await storage.resources.set(ResourcePath.parse(RESOURCE), SECRET)
    finally:
        await storage.close()


def _measure(
    kind: str,
    work: Path,
    platform: Any,
    args: argparse.Namespace,
    server_cpus: set[int],
    *,
    metered: bool = False,
) -> dict[str, float]:
    """One server (or ``--server-procs`` of them) of ``kind`` under load; its figures. ``metered``
    times the KBS's steps (what the breakdown reports; the timing itself costs CPU, so headline
    runs are not metered)."""
    procs = args.server_procs if kind == "kbs" else 1
    breakdown = Path(tempfile.mkdtemp(dir=work)) if metered else None
    servers, port = _start(kind, work, args.profile and kind == "kbs", server_cpus, procs, breakdown)
    served = 0
    try:
        asyncio.run(_closed_loop(port, platform, args.clients, 1.0, kind == "peer"))  # warm-up
        if breakdown is not None:
            for proc in servers:
                proc.send_signal(signal.SIGUSR1)  # the breakdown counts from here
            time.sleep(0.1)
        cpu0 = sum(_cpu_seconds(p.pid) for p in servers)
        sys0 = sum(_system_seconds(p.pid) for p in servers)
        gen0 = time.process_time()
        t0 = time.perf_counter()
        lat = asyncio.run(_closed_loop(port, platform, args.clients, args.seconds, kind == "peer"))
        elapsed = time.perf_counter() - t0
        gen_cpu = time.process_time() - gen0
        cpu = sum(_cpu_seconds(p.pid) for p in servers) - cpu0
        system = sum(_system_seconds(p.pid) for p in servers) - sys0
        served += len(lat)
        rate = len(lat) / elapsed
        row = {
            "handshakes_per_s": rate,
            "p50_ms": _pct(lat, 0.50),
            "p99_ms": _pct(lat, 0.99),
            "server_cpu_ms_per_handshake": cpu * 1000 / max(1, len(lat)),
            "generator_cpu_ms_per_handshake": gen_cpu * 1000 / max(1, len(lat)),
            "server_kernel_cpu_share": system / cpu if cpu else 0.0,
            # Share of the server's cores it actually got: < 1 means waiting or contention.
            "server_cpu_utilization": cpu / elapsed / procs,
        }
        if kind == "kbs" and not metered:
            half = rate / 2
            lat_half, missed = asyncio.run(
                _open_loop(port, platform, half, args.seconds, pool=max(8, args.clients))
            )
            served += len(lat_half)
            row.update(
                {
                    "half_rate_per_s": half,
                    "half_rate_p50_ms": _pct(lat_half, 0.50),
                    "half_rate_p99_ms": _pct(lat_half, 0.99),
                    "half_rate_late_starts": float(missed),
                }
            )
    finally:
        for proc in servers:
            _stop(proc)
    if breakdown is not None:
        steps = dict.fromkeys(_METERED, 0.0)
        for path in breakdown.glob("*.json"):
            for step, seconds in json.loads(path.read_text()).items():
                steps[step] = steps.get(step, 0.0) + seconds
        for step, seconds in steps.items():
            row[f"cpu_ms: {step}"] = seconds * 1000 / max(1, served)
    return row


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=128, help="concurrent guests (closed loop)")
    parser.add_argument("--runs", type=int, default=3, help="repeat peer+KBS runs; medians are reported")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--server-procs",
        type=int,
        default=2,
        help="KBS processes sharing the port (SO_REUSEPORT) on every core with the generator; "
        "1 pins one KBS process to CPU 0 and the generator to CPU 1",
    )
    parser.add_argument(
        "--stock-http",
        action="store_true",
        help="serve KBS and peer with uvicorn's own httptools protocol (head and body in two sends)",
    )
    parser.add_argument("--serve", choices=["kbs", "peer"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--breakdown-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        breakdown = args.breakdown_dir / f"{os.getpid()}.json" if args.breakdown_dir else None
        _run_server(args.serve, args.data_dir, args.port, args.profile, breakdown)
        return

    if args.stock_http:
        os.environ[_STOCK_HTTP_ENV] = "1"  # inherited by the server processes
    import uvloop

    from teegate.sim import SimPlatform

    uvloop.install()  # the generator's event loop too (the server's is uvloop under uvicorn)
    cores = os.cpu_count() or 1
    all_cpus = set(range(cores))
    if args.server_procs > 1:  # server processes and generator share every core
        server_cpus, gen_cpus = all_cpus, all_cpus
    else:
        server_cpus, gen_cpus = {0}, ({1} if cores > 1 else {0})
    os.sched_setaffinity(0, gen_cpus)
    work = Path(tempfile.mkdtemp(prefix="teegate-bench-kbs-"))
    try:
        platform = SimPlatform.create(work / "sim")
        asyncio.run(_put_resource(work))
        split = (
            f"cores: {cores}; {args.server_procs} KBS process(es) on CPUs {sorted(server_cpus)}, "
            f"load generator on CPUs {sorted(gen_cpus)}"
        )
        print(split)
        runs: list[dict[str, dict[str, float]]] = []
        for index in range(max(1, args.runs)):
            run = {kind: _measure(kind, work, platform, args, server_cpus) for kind in ("peer", "kbs")}
            runs.append(run)
            kbs_run, peer_run = run["kbs"], run["peer"]
            print(
                f"run {index + 1}: KBS {kbs_run['handshakes_per_s']:.0f}/s "
                f"(p50 {kbs_run['p50_ms']:.1f} ms, p99 {kbs_run['p99_ms']:.1f} ms, "
                f"{kbs_run['server_cpu_ms_per_handshake']:.2f} server CPU ms/handshake); "
                f"peer {peer_run['handshakes_per_s']:.0f}/s; "
                f"ratio {kbs_run['handshakes_per_s'] / peer_run['handshakes_per_s']:.1%}",
                flush=True,
            )
        results = {
            kind: {key: _median([run[kind][key] for run in runs]) for key in runs[0][kind]}
            for kind in ("peer", "kbs")
        }
        metered_run: dict[str, float] = {}
        if not args.profile:
            # The breakdown: one more KBS run with each step timed (not part of the medians).
            metered_run = _measure("kbs", work, platform, args, server_cpus, metered=True)
            print(
                f"metered run (for the breakdown): KBS {metered_run['handshakes_per_s']:.0f}/s, "
                f"{metered_run['server_cpu_ms_per_handshake']:.2f} server CPU ms/handshake",
                flush=True,
            )
        print(f"medians of {len(runs)} run(s):")
        for kind, row in results.items():
            label = (
                "KBS (auth+attest sim TDX v4+resource)"
                if kind == "kbs"
                else "peer: bare Starlette, same 3 calls"
            )
            print(f"{label}:")
            for key, value in row.items():
                if not key.startswith("cpu_ms: "):
                    print(f"  {key:36s} {value:10.2f}")
        kbs, peer = results["kbs"], results["peer"]
        steps = {
            key.removeprefix("cpu_ms: "): value
            for key, value in metered_run.items()
            if key.startswith("cpu_ms: ")
        }
        if steps:
            total = metered_run["server_cpu_ms_per_handshake"]
            endpoints = steps.pop(_ENDPOINTS, 0.0)
            print(
                "where the KBS server's CPU goes (metered run; ms per handshake, process CPU time "
                "around each step):"
            )
            for step, value in steps.items():
                print(f"  {step:36s} {value:6.3f}  {value / total:5.1%}")
            glue = endpoints - sum(steps.values())
            print(f"  {'rest of the KBS endpoints (parsing…)':36s} {glue:6.3f}  {glue / total:5.1%}")
            outside = total - endpoints
            print(f"  {'HTTP server, response writes, kernel':36s} {outside:6.3f}  {outside / total:5.1%}")
            print(f"  {'(peer: all of it, 3 calls)':36s} {peer['server_cpu_ms_per_handshake']:6.3f}")
        print(
            f"KBS reaches {kbs['handshakes_per_s'] / peer['handshakes_per_s']:.1%} of the peer "
            f"({kbs['handshakes_per_s']:.0f} vs {peer['handshakes_per_s']:.0f} handshakes/s; {split}); "
            f"target >= 1000 handshakes/s: {'met' if kbs['handshakes_per_s'] >= 1000 else 'NOT met'}; "
            f"p99 at half rate < 50 ms: {'met' if kbs['half_rate_p99_ms'] < 50 else 'NOT met'}"
        )
        print(json.dumps({"runs": runs, "medians": results, "metered_run": metered_run}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

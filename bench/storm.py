"""Boot storm against R stateless KBS replicas over one PostgreSQL, behind a round-robin proxy.

    .venv/bin/python bench/storm.py [--vms 2000] [--replicas 2] [--threads 128] [--bad-vms 0] [--peer]

Starts PostgreSQL 15 (Debian's), R `teegate kbs serve` replicas sharing the session key
(TEEGATE_KBS_SESSION_KEY_FILE), the data directory keys and the database, the round-robin proxy
(teegate.kbs.lb, no affinity), a simulated QGS; then N simulated TDX VMs boot at once, each
running the real attester flow (teegate.attester.client.KbsClient: auth → quote over the QGS
socket → attest → resource → JWE decrypt). Every VM's clock starts when the storm starts.

Reports ``keys delivered: X/N``, failures by cause, wrong releases (``--bad-vms`` boot as debug
TDs and must be refused), handshakes/s, p50/p99/max time-to-key and CPU per handshake by component.
``--peer`` runs the same storm against one replica directly (no proxy) in the same run, for
comparison. ``--kill-replica-at S`` / ``--crash-postgres-at S`` inject those faults during the
proxied storm.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.scaleout.storm import run_storm
from tests.integration.scaleout.topology import Topology

SECRET = b"storm-disk-passphrase-0123456789"
RESOURCE = "default/storm/passphrase"


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its reaped children, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in fields[11:15]) / ticks


def _cpu_by_component(topology: Topology) -> dict[str, float]:
    daemons = [*topology.replicas, topology.proxy, topology.qgs]
    out = {d.name: _cpu_seconds(d.process.pid) for d in daemons if d is not None}
    times = os.times()
    out["generator (VMs)"] = times.user + times.system
    return out


def _inject(
    topology: Topology, kill_at: float | None, pg_at: float | None, pg_down: float
) -> threading.Thread:
    """Faults during the proxied storm: SIGKILL the last replica at ``kill_at`` s; crash PostgreSQL
    (immediate stop) at ``pg_at`` s and start it again ``pg_down`` s later."""

    def run() -> None:
        began = time.monotonic()
        events: list[tuple[float, str]] = []
        if kill_at is not None:
            events.append((kill_at, "kill"))
        if pg_at is not None:
            events += [(pg_at, "pg-stop"), (pg_at + pg_down, "pg-start")]
        for at, what in sorted(events):
            time.sleep(max(0.0, at - (time.monotonic() - began)))
            if what == "kill":
                topology.replicas[-1].kill()
            elif what == "pg-stop":
                topology.postgres.stop("immediate")
            else:
                topology.postgres.start()
            print(f"  fault at {time.monotonic() - began:.1f}s: {what}", flush=True)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _hold(topology: Topology) -> None:
    print(
        f"\nholding the topology (Ctrl-C ends it):\n  proxy     {topology.proxy_url}\n"
        f"  replicas  {' '.join(topology.replica_urls)}\n  database  {topology.dsn}\n"
        f"  admin key {topology.data_dir / 'admin-key.pem'}\n  try: .venv/bin/teegate-attester --url "
        f"{topology.proxy_url} --evidence sim --sim-platform {topology.platform.directory} --qgs-socket "
        f"{topology.qgs_socket} get-resource --path {RESOURCE}",
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--threads", type=int, default=128, help="VMs in flight at once in this process")
    parser.add_argument("--bad-vms", type=int, default=0, help="VMs booting as debug TDs (must be refused)")
    parser.add_argument("--qgs-workers", type=int, default=4)
    parser.add_argument("--pool-size", type=int, default=10, help="PostgreSQL connections per replica")
    parser.add_argument("--peer", action="store_true", help="also storm one replica directly (no proxy)")
    parser.add_argument("--kill-replica-at", type=float, help="SIGKILL the last replica this many s in")
    parser.add_argument("--crash-postgres-at", type=float, help="crash PostgreSQL this many s in")
    parser.add_argument("--postgres-down", type=float, default=3.0, help="seconds PostgreSQL stays down")
    parser.add_argument(
        "--hold", action="store_true", help="keep the topology up after the storm until Ctrl-C"
    )
    args = parser.parse_args()
    # SIGTERM (timeout, make interrupted) unwinds like Ctrl-C, so every daemon and PostgreSQL stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.vms < 1 or args.replicas < 1 or not 0 <= args.bad_vms < args.vms:
        parser.error("--vms and --replicas must be positive, --bad-vms below --vms")

    with tempfile.TemporaryDirectory(prefix="teegate-storm-") as tmp:
        workdir = Path(tmp)
        began = time.monotonic()
        topology = Topology.create(workdir, pool_size=args.pool_size)
        try:
            topology.start_replicas(args.replicas)
            topology.start_proxy()
            topology.start_qgs(workers=args.qgs_workers)
            topology.set_resource(topology.proxy_url, RESOURCE, SECRET)
            topology.set_resource_policy(topology.proxy_url)
            print(
                f"topology up in {time.monotonic() - began:.1f}s: PostgreSQL, {args.replicas} replicas, "
                f"proxy {topology.proxy_url}, QGS; {os.cpu_count()} CPUs",
                flush=True,
            )
            runs = [("replicas via proxy", topology.proxy_url, args.replicas)]
            if args.peer:
                runs.append(("peer: one replica direct", topology.replica_urls[0], 1))
            failed = False
            for label, url, replicas in runs:
                print(
                    f"\n== {label}: {args.vms} VMs, {replicas} replica(s), {args.threads} in flight",
                    flush=True,
                )
                before = _cpu_by_component(topology)
                faults = None
                injecting = args.kill_replica_at is not None or args.crash_postgres_at is not None
                if url == topology.proxy_url and injecting:
                    faults = _inject(
                        topology, args.kill_replica_at, args.crash_postgres_at, args.postgres_down
                    )
                result = run_storm(
                    url,
                    topology.platform.directory,
                    topology.qgs_socket or workdir / "qgs.sock",
                    vms=args.vms,
                    resource=RESOURCE,
                    secret=SECRET,
                    bad_vms=args.bad_vms,
                    threads=args.threads,
                )
                if faults is not None:
                    faults.join(timeout=120)
                print(result.report(), flush=True)
                after = _cpu_by_component(topology)
                per = max(1, result.delivered + result.refused_bad)
                print(
                    "CPU ms per handshake: "
                    + ", ".join(
                        f"{k} {1000 * (after[k] - before.get(k, 0.0)) / per:.1f}"
                        if after[k] >= before.get(k, 0.0)
                        else f"{k} (killed)"
                        for k in after
                    ),
                    flush=True,
                )
                failed |= result.delivered != args.vms - args.bad_vms or result.wrong_releases > 0
            dead = [d.name for d in topology.replicas if not d.alive()]
            if dead and args.kill_replica_at is None:
                print(f"replicas that died: {dead}")
                failed = True
            if args.hold:
                _hold(topology)
            return 1 if failed else 0
        finally:
            topology.close()


if __name__ == "__main__":
    sys.exit(main())

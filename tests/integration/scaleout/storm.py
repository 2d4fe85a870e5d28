"""A boot storm: N simulated TDX guests run the real attester (``KbsClient``) against one URL at once.

Each VM is one ``teegate.attester.client.KbsClient`` with the simulated-TD evidence provider:
per handshake it makes a fresh TEE key, binds the KBS nonce into a TDREPORT, gets it quoted by the
QGS over its Unix socket, sends the evidence, fetches the resource and decrypts the JWE with its
key. Nothing that depends on the nonce is precomputed. ``bad`` VMs boot as debug TDs: the policy
must refuse them; a key delivered to one is a *wrong release*.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teegate.attester.client import KbsClient, RetryPolicy
from teegate.attester.errors import AttesterError
from teegate.attester.providers.base import pad_report_data
from teegate.attester.providers.sim import SimTdProvider
from teegate.attester.providers.tdx_guest import quote_tdreport, tdx_evidence
from teegate.attester.uri import parse_resource
from teegate.sim import SimPlatform

__all__ = ["StormResult", "VmOutcome", "run_storm"]


class DebugTdProvider:
    """A simulated TD launched with the DEBUG attribute (its memory is readable by the host)."""

    name = "sim-debug"
    tee = "tdx"

    def __init__(self, platform: SimPlatform, qgs: Path) -> None:
        self._platform = platform
        self._qgs = qgs

    def describe(self) -> str:
        return "simulated DEBUG TD"

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        tdreport = self._platform.tdreport(pad_report_data(report_data), debug=True)
        return tdx_evidence(quote_tdreport(self._qgs, tdreport), None)


@dataclass(frozen=True, slots=True)
class VmOutcome:
    """What one VM got: its key (and how long after the storm began), or why not."""

    index: int
    bad: bool
    delivered: bool
    seconds: float
    cause: str = ""


@dataclass
class StormResult:
    vms: int
    bad_vms: int
    wall_seconds: float
    outcomes: list[VmOutcome] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return sum(1 for o in self.outcomes if o.delivered and not o.bad)

    @property
    def wrong_releases(self) -> int:
        return sum(1 for o in self.outcomes if o.delivered and o.bad)

    @property
    def refused_bad(self) -> int:
        return sum(1 for o in self.outcomes if o.bad and not o.delivered and o.cause.startswith("refused"))

    def failures(self) -> Counter[str]:
        return Counter(o.cause for o in self.outcomes if not o.delivered and not o.bad)

    def percentiles(self) -> dict[str, float]:
        times = sorted(o.seconds for o in self.outcomes if o.delivered and not o.bad)
        if not times:
            return {"p50": float("nan"), "p99": float("nan"), "max": float("nan")}
        cuts = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times * 99
        return {"p50": cuts[49], "p99": cuts[98], "max": times[-1]}

    def report(self) -> str:
        good = self.vms - self.bad_vms
        lines = [
            f"keys delivered: {self.delivered}/{good}",
            f"wrong releases: {self.wrong_releases} (debug TDs refused: {self.refused_bad}/{self.bad_vms})",
        ]
        failures = self.failures()
        lines.append(
            "failures by cause: " + (", ".join(f"{c}={n}" for c, n in failures.most_common()) or "none")
        )
        rate = self.delivered / self.wall_seconds if self.wall_seconds else 0.0
        lines.append(f"handshakes/s: {rate:.1f} (storm wall time {self.wall_seconds:.1f}s)")
        p = self.percentiles()
        lines.append(f"time-to-key: p50 {p['p50']:.2f}s p99 {p['p99']:.2f}s max {p['max']:.2f}s")
        return "\n".join(lines)


def _cause(exc: AttesterError) -> str:
    variant = getattr(exc, "error_type", None)
    kind = "refused" if exc.label == "attestation refused" else exc.label.replace(" ", "-")
    return f"{kind}:{variant}" if variant else kind


def run_storm(
    url: str,
    platform_dir: Path,
    qgs_socket: Path,
    *,
    vms: int,
    resource: str,
    secret: bytes,
    bad_vms: int = 0,
    threads: int = 128,
    retry: RetryPolicy | None = None,
    request_timeout: float = 30.0,
) -> StormResult:
    """Boot ``vms`` guests at once (``threads`` run concurrently); every VM's clock starts now."""
    retry = retry or RetryPolicy(attempts=8, deadline=120.0, initial_delay=0.5, max_delay=5.0)
    ref = parse_resource(resource)
    platform = SimPlatform.load(platform_dir)
    good_provider = SimTdProvider(platform_dir, qgs_socket)  # stateless: one per process is enough
    bad_provider = DebugTdProvider(platform, qgs_socket)
    bad = set(range(0, vms, max(1, vms // bad_vms))[:bad_vms]) if bad_vms else set()
    outcomes: list[VmOutcome] = []
    clients: list[KbsClient] = []
    lock = threading.Lock()
    local = threading.local()
    started = time.monotonic()

    def client(is_bad: bool) -> KbsClient:
        # One client per in-flight slot and evidence kind, reused VM after VM: creating an
        # httpx client (a TLS context) costs more CPU here than a handshake does on the KBS.
        name = "bad" if is_bad else "good"
        found: KbsClient | None = getattr(local, name, None)
        if found is None:
            provider: Any = bad_provider if is_bad else good_provider
            found = KbsClient(url, provider, retry=retry, request_timeout=request_timeout)
            setattr(local, name, found)
            with lock:
                clients.append(found)
        return found

    def boot(index: int) -> None:
        is_bad = index in bad
        try:
            guest = client(is_bad)
            guest.attest()  # a fresh handshake: new TEE key, new nonce, new quote
            data = guest.get_resource(ref)  # with the token of that handshake
            delivered = data == secret
            cause = "" if delivered else "wrong-secret"
        except AttesterError as exc:
            delivered, cause = False, _cause(exc)
        except Exception as exc:  # a crash in the client is a result to report, not to hide
            delivered, cause = False, f"crash:{type(exc).__name__}"
        outcome = VmOutcome(index, is_bad, delivered, time.monotonic() - started, cause)
        with lock:
            outcomes.append(outcome)

    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vm") as pool:
            list(pool.map(boot, range(vms)))
    finally:
        for item in clients:
            item.close()
    return StormResult(vms, len(bad), time.monotonic() - started, outcomes)

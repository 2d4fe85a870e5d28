"""Policy evaluation speed: built-in policies on regorus's compiled VM against its interpreter.

    .venv/bin/python bench/policy.py [--seconds 2.0]

Input: the claims of a simulated TDX v4 quote verified by the DCAP core (as the KBS's verifier
makes them), with reference values registered so that the default policy affirms. Measured per
call through :class:`teegate.kbs.policy.PolicyEngine` (what a handshake pays, reference values
from the RVPS cache included): the attestation appraisal (``default_cpu``: trust_claims and
extensions, no explanation, as on the hot path) and the resource decision (built-in ``default``
policy over the token's claims). Each input differs (a fresh nonce in the runtime data), so
nothing is reused between calls. Peer in the same run: the same engine with
``policy_vm = off`` (regorus's interpreter, which Trustee uses) given the whole input as Trustee
gives it (the KBS gives built-ins only the claims they read, ADR 0009); the ratio is peer time
over KBS time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from teegate.kbs.app import build_verifiers  # noqa: E402
from teegate.kbs.config import KbsSettings  # noqa: E402
from teegate.kbs.policy import PolicyEngine, PolicyVm  # noqa: E402
from teegate.kbs.protocol import Tee, pad_report_data  # noqa: E402
from teegate.kbs.storage import ResourcePath, StorageSettings, open_storage  # noqa: E402
from teegate.kbs.token import ear_claims  # noqa: E402
from teegate.sim import SimPlatform  # noqa: E402


async def _claims(work: Path) -> dict[str, Any]:
    platform = SimPlatform.create(work / "sim")
    settings = KbsSettings(
        data_dir=work,
        storage=StorageSettings(data_dir=work),
        trust_simulated=True,
        sim_platform=platform.directory,
    )
    verifier = build_verifiers(settings).get(Tee.TDX)
    quote = platform.tdx_quote(pad_report_data(secrets.token_bytes(48)))
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
    verified = await verifier.verify(evidence, now=datetime.now(UTC))
    return dict(verified.claims)


async def _rate(call: Any, seconds: float) -> float:
    """Calls per second of the coroutine function ``call(i)``."""
    for i in range(200):
        await call(i)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            await call(n)
            n += 1
    return n / (time.perf_counter() - start)


async def _main(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="teegate-bench-policy-") as tmp:
        work = Path(tmp)
        claims = await _claims(work)
        quote_body = claims["quote"]["body"]
        storage = await open_storage(StorageSettings(data_dir=work / "kbs"))
        try:
            vm = PolicyEngine(storage.policies, storage.reference_values, vm=PolicyVm.BUILTIN)
            interpreter = PolicyEngine(storage.policies, storage.reference_values, vm=PolicyVm.OFF)
            values = {name: [quote_body[name]] for name in ("mr_td", "rtmr_1", "rtmr_2", "xfam")}
            payload = base64.b64encode(json.dumps(values).encode()).decode()
            await vm.rvps.register(json.dumps({"version": "0.1.0", "type": "sample", "payload": payload}))
            key = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "x", "y": "y"}
            path = ResourcePath("default", "disk", "key")
            first = await vm.appraise("tdx", claims, runtime_data_claims={"tee-pubkey": key}, explain=False)
            if first.status != "affirming":
                raise SystemExit(f"bench input does not affirm: {first.explanation}")
            token = ear_claims(submods={"cpu0": first.ear_submod()}, now=int(time.time()), ttl_seconds=300)

            # The peer evaluates as Trustee does: every claim goes into the policy's input.
            await interpreter.appraise("tdx", claims, runtime_data_claims={"tee-pubkey": key}, explain=False)
            await interpreter.resource_allowed(token, path)
            for compiled in interpreter._cache.values():
                if not isinstance(compiled, Exception):
                    compiled.input_reads = None

            def appraise(engine: PolicyEngine) -> Any:
                async def call(i: int) -> None:
                    runtime = {"tee-pubkey": key, "nonce": str(i)}
                    a = await engine.appraise("tdx", claims, runtime_data_claims=runtime, explain=False)
                    assert a.status == "affirming"

                return call

            def release(engine: PolicyEngine) -> Any:
                async def call(i: int) -> None:
                    token["jti"] = str(i)
                    assert (await engine.resource_allowed(token, path)).allowed

                return call

            print(f"input: simulated TDX v4 claims ({len(str(claims))} chars), reference values matching")
            for label, make in (("attestation (default_cpu)", appraise), ("resource (default)", release)):
                fast = await _rate(make(vm), seconds)
                slow = await _rate(make(interpreter), seconds)
                print(
                    f"{label:28s} KBS (VM, claims read) {1e6 / fast:7.1f} µs/call   "
                    f"peer (interpreter, all claims) {1e6 / slow:7.1f} µs/call   {fast / slow:4.2f}x"
                )
        finally:
            await storage.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(_main(args.seconds))


if __name__ == "__main__":
    main()

"""PCCS unreachable: cached collateral keeps serving; an uncached platform gets 503, never a release.

A real `teegate pccs serve` (sim platform A behind it) feeds a KBS whose TDX verifier reads
collateral through ``CachedSource(PcsClient(pccs))`` with a 1-second in-memory verifier TTL. Platform
A attests once while the PCCS is up; then the PCCS is killed. A keeps attesting (from the cache);
platform B (another FMSPC, never seen) gets 503 ServiceUnavailable naming the collateral, and its
session never yields a resource.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from teegate.collateral import CachedSource, PcsClient
from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.verify import QuoteVerifier
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.protocol import Tee
from teegate.kbs.storage import ResourcePath, StorageSettings, open_storage
from teegate.sim import SimPlatform
from teegate.verifiers import VerifierSet
from teegate.verifiers.dcap import DcapVerifier
from tests.integration.kbs_flow.harness import serve
from tests.integration.scaleout.guest import StepGuest, error_type
from tests.integration.scaleout.topology import RESOURCE_POLICY, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = b"collateral-outage-secret"
RESOURCE = "default/vm/collateral"


@dataclass
class Setup:
    url: str
    pccs: subprocess.Popen[bytes]
    cached: SimPlatform
    uncached: SimPlatform
    cache_dir: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    cached = SimPlatform.create(tmp_path / "platform-a", fmspc="00906ED50000")
    uncached = SimPlatform.create(tmp_path / "platform-b", fmspc="00806F050000")
    port = free_port()
    (tmp_path / "pccs").mkdir()
    pccs = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "pccs",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "pccs"),
            "--sim-platform",
            str(cached.directory),
            "--mode",
            "lazy",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "pccs.log").open("wb"),
    )
    pccs_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert pccs.poll() is None, (tmp_path / "pccs.log").read_text()
        try:
            if httpx.get(f"{pccs_url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "PCCS did not start"
        time.sleep(0.05)
    anchors = TrustAnchors.intel().with_anchor(cached.anchor()).with_anchor(uncached.anchor())
    cache_dir = tmp_path / "collateral-cache"
    source = CachedSource(PcsClient(pccs_url, timeout=3.0), cache_dir, verifier_anchors=anchors)
    verifiers = VerifierSet(
        {Tee.TDX: DcapVerifier(Tee.TDX, QuoteVerifier(anchors), source, collateral_ttl=1.0)}
    )
    data = tmp_path / "kbs"
    policy = tmp_path / "resource.rego"
    policy.write_text(RESOURCE_POLICY)
    settings = KbsSettings(data_dir=data, storage=StorageSettings(data_dir=data), resource_policy_path=policy)

    async def put() -> None:
        store = await open_storage(settings.storage)
        try:
            await store.resources.set(ResourcePath.parse(RESOURCE), SECRET)
        finally:
            await store.close()

    asyncio.run(put())
    try:
        with serve(build_app(settings, verifiers=verifiers)) as url:
            yield Setup(url, pccs, cached, uncached, cache_dir)
    finally:
        if pccs.poll() is None:
            pccs.kill()
            pccs.wait()


def _handshake(url: str, platform: SimPlatform) -> tuple[StepGuest, httpx.Response]:
    guest = StepGuest(platform)
    assert guest.auth(url).status_code == 200
    return guest, guest.attest(url)


def test_cached_collateral_serves_uncached_platform_503(setup: Setup) -> None:
    guest, response = _handshake(setup.url, setup.cached)
    assert response.status_code == 200, response.text
    assert guest.open(guest.resource(setup.url, RESOURCE)) == SECRET
    assert any(setup.cache_dir.iterdir()), "the collateral was not cached on disk"

    setup.pccs.kill()
    setup.pccs.wait()
    time.sleep(1.2)  # past the verifier's in-memory TTL: the next read goes to the cache source

    for _ in range(3):
        guest, response = _handshake(setup.url, setup.cached)
        assert response.status_code == 200, response.text
        assert guest.open(guest.resource(setup.url, RESOURCE)) == SECRET

    guest, response = _handshake(setup.url, setup.uncached)
    assert response.status_code == 503, response.text
    assert error_type(response) == "ServiceUnavailable"
    detail = response.json()["detail"]
    # The reason names what is missing (the collateral item, its source) and that it is retryable.
    assert "collateral" in detail and "retry" in detail and "unreachable" in detail, detail
    # ...but not where the internal collateral service lives: that is for the server log.
    assert "http://" not in detail and "127.0.0.1" not in detail, detail
    # The unattested session never releases anything.
    refused = guest.resource(setup.url, RESOURCE)
    assert refused.status_code == 401 and error_type(refused) == "TokenNotFound", refused.text

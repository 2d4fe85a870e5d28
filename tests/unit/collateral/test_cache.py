"""CachedSource: keying, freshness at nextUpdate, offline errors, corrupt files, shared fetches."""

from __future__ import annotations

import asyncio
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from teegate.collateral import BundleSource, CachedSource
from teegate.collateral._documents import bundle_info
from teegate.collateral.cache import cache_file_name
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ConfigError

pytestmark = pytest.mark.timeout(30)

TDX = CollateralKey("tdx", "00806F050000", "platform")
SGX = CollateralKey("sgx", "00906ED50000", "processor")
NOW = datetime(2025, 6, 11, 19, 23, 55, tzinfo=UTC)


class Counting:
    """A real BundleSource that also counts calls (and can be slowed down)."""

    def __init__(self, inner: BundleSource, delay: float = 0.0) -> None:
        self.inner = inner
        self.calls = 0
        self.delay = delay

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await self.inner.get(key, now=now)


@pytest.fixture
def bundles(vectors: Path, tmp_path: Path) -> Path:
    d = tmp_path / "bundles"
    d.mkdir()
    sets = vectors / "_collateral_sets"
    shutil.copy(sets / "teepotpcs_tdx_00806F050000_2025-05.json", d / "tdx-00806F050000.json")
    shutil.copy(sets / "teepotpcs_sgx_00906ED50000_2025-05.json", d / "sgx-00906ED50000-processor.json")
    return d


async def test_miss_then_hit_from_memory_and_disk(bundles: Path, tmp_path: Path) -> None:
    inner = Counting(BundleSource(bundles))
    cache = CachedSource(inner, tmp_path / "cache")
    first = await cache.get(TDX, now=NOW)
    assert inner.calls == 1
    assert (tmp_path / "cache" / "tdx-00806F050000-platform.json").is_file()
    assert await cache.get(TDX, now=NOW) == first
    assert inner.calls == 1
    fresh = CachedSource(inner, tmp_path / "cache")  # a new process: disk hit
    assert await fresh.get(TDX, now=NOW) == first
    assert inner.calls == 1
    await cache.get(SGX, now=NOW)  # another key is another entry
    assert inner.calls == 2
    assert cache_file_name(SGX) == "sgx-00906ED50000-processor.json"


async def test_expiry_at_earliest_next_update(bundles: Path, tmp_path: Path) -> None:
    inner = Counting(BundleSource(bundles))
    cache = CachedSource(inner, tmp_path / "cache")
    collateral = await cache.get(TDX, now=NOW)
    expiry = bundle_info(collateral).next_update
    assert expiry == min(bundle_info(collateral).next_updates.values())
    await cache.get(TDX, now=expiry - timedelta(seconds=1))
    assert inner.calls == 1
    await cache.get(TDX, now=expiry)
    assert inner.calls == 2


async def test_offline_missing_and_stale_name_the_item(bundles: Path, tmp_path: Path) -> None:
    offline = CachedSource(None, tmp_path / "cache", offline=True)
    with pytest.raises(
        CollateralUnavailable, match=r"offline: TDX collateral for FMSPC 00806F050000 .*not cached"
    ):
        await offline.get(TDX, now=NOW)
    await CachedSource(BundleSource(bundles), tmp_path / "cache").get(TDX, now=NOW)
    assert (await offline.get(TDX, now=NOW)).tcb_info
    later = NOW + timedelta(days=60)
    with pytest.raises(CollateralUnavailable, match=r"stale .*TCB Info \(nextUpdate 2025-06-26") as err:
        await offline.get(TDX, now=later)
    assert "QE Identity" in str(err.value) and "PCK CRL" in str(err.value)


async def test_corrupt_cache_file_refused_and_refetched(bundles: Path, tmp_path: Path) -> None:
    inner = Counting(BundleSource(bundles))
    await CachedSource(inner, tmp_path / "cache").get(TDX, now=NOW)
    path = tmp_path / "cache" / cache_file_name(TDX)
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    with pytest.raises(CollateralUnavailable, match="is corrupt"):
        await CachedSource(None, tmp_path / "cache", offline=True).get(TDX, now=NOW)
    cache = CachedSource(inner, tmp_path / "cache")
    assert (await cache.get(TDX, now=NOW)) == Collateral.from_json(good)
    assert inner.calls == 2
    assert Collateral.from_json(path.read_text()) == Collateral.from_json(good)


async def test_cache_file_for_another_key_refused(bundles: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    shutil.copy(bundles / "sgx-00906ED50000-processor.json", cache_dir / cache_file_name(TDX))
    with pytest.raises(CollateralUnavailable, match="holds sgx FMSPC 00906ED50000"):
        await CachedSource(None, cache_dir, offline=True).get(TDX, now=NOW)


async def test_concurrent_gets_share_one_fetch(bundles: Path, tmp_path: Path) -> None:
    inner = Counting(BundleSource(bundles), delay=0.2)
    cache = CachedSource(inner, tmp_path / "cache")
    results = await asyncio.gather(*(cache.get(TDX, now=NOW) for _ in range(20)))
    assert inner.calls == 1
    assert all(r == results[0] for r in results)


async def test_failed_fetch_is_not_cached_and_names_item(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cache = CachedSource(BundleSource(tmp_path / "empty"), tmp_path / "cache")
    with pytest.raises(CollateralUnavailable, match="no bundle for TDX FMSPC 00806F050000"):
        await cache.get(TDX, now=NOW)
    assert not list((tmp_path / "cache").iterdir())


def test_online_cache_needs_upstream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        CachedSource(None, tmp_path)


async def test_cache_dir_is_a_bundle_dir(bundles: Path, tmp_path: Path) -> None:
    await CachedSource(BundleSource(bundles), tmp_path / "cache").get(SGX, now=NOW)
    got = await BundleSource(tmp_path / "cache").get(SGX, now=NOW)
    expected = json.loads((bundles / "sgx-00906ED50000-processor.json").read_text())
    assert got.tcb_info == expected["tcb_info"]


async def test_tampered_cache_file_fails_reverification_and_is_refetched(
    bundles: Path, tmp_path: Path
) -> None:
    inner = Counting(BundleSource(bundles))
    await CachedSource(inner, tmp_path / "cache").get(TDX, now=NOW)
    path = tmp_path / "cache" / cache_file_name(TDX)
    good = json.loads(path.read_text())
    tampered = dict(
        good, tcb_info=good["tcb_info"].replace('"tcbStatus":"OutOfDate"', '"tcbStatus":"UpToDate"', 1)
    )
    assert tampered["tcb_info"] != good["tcb_info"]
    path.write_text(json.dumps(tampered))
    with pytest.raises(CollateralUnavailable, match="fails verification"):
        await CachedSource(None, tmp_path / "cache", offline=True).get(TDX, now=NOW)
    got = await CachedSource(inner, tmp_path / "cache").get(TDX, now=NOW)
    assert got.tcb_info == good["tcb_info"]
    assert inner.calls == 2


async def test_simulated_collateral_needs_the_simulated_anchor(tmp_path: Path) -> None:
    from teegate.collateral import SimSource
    from teegate.dcap.anchors import TrustAnchors
    from teegate.sim import SimPlatform

    platform = SimPlatform.create(tmp_path / "sim")
    key = CollateralKey("tdx", platform.fmspc, "platform")
    now = datetime.now(UTC)
    with pytest.raises(CollateralUnavailable, match="is not valid"):
        await CachedSource(SimSource(platform), tmp_path / "c1").get(key, now=now)
    anchors = TrustAnchors.intel().with_anchor(platform.anchor())
    cache = CachedSource(SimSource(platform), tmp_path / "c2", verifier_anchors=anchors)
    first = await cache.get(key, now=now)
    offline = CachedSource(None, tmp_path / "c2", offline=True, verifier_anchors=anchors)
    assert await offline.get(key, now=now) == first
    with pytest.raises(CollateralUnavailable, match="fails verification"):
        await CachedSource(None, tmp_path / "c2", offline=True).get(key, now=now)
    with pytest.raises(
        CollateralUnavailable, match=r"simulated platform .* no TDX collateral for FMSPC 111111111111"
    ):
        await SimSource(platform).get(CollateralKey("tdx", "111111111111", "platform"), now=now)

"""On-disk collateral cache in front of any source, with an offline mode.

One file per key, ``<cache_dir>/<tee>-<FMSPC>-<ca>.json``, in dcap-qvl's bundle layout (so a
cache directory is also a valid :class:`~teegate.collateral.files.BundleSource` directory).
Writes are atomic (temporary file + rename). An entry is fresh until the earliest
``nextUpdate`` of its TCB Info, QE Identity, PCK CRL and Root CA CRL. What is read back from
disk is re-verified (signatures and chains up to the trust anchors, via
``teegate.dcap.verify.verify_collateral``) before it is served: a corrupt or tampered file is
refused and fetched again. In offline mode only the cache is used and a missing or stale entry
raises :class:`CollateralUnavailable` naming the item. Concurrent gets of one key share one
fetch.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from teegate.collateral._documents import BundleInfo, bundle_info, utc
from teegate.collateral.source import CollateralSource
from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.collateral import MAX_BUNDLE_BYTES, Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ConfigError, EvidenceError

__all__ = ["MAX_MEMORY_ENTRIES", "CachedSource", "cache_file_name"]

_log = logging.getLogger("teegate.collateral.cache")

#: Bound on bundles kept in memory (keys come from quotes; real platforms number in the hundreds).
MAX_MEMORY_ENTRIES = 1024


def cache_file_name(key: CollateralKey) -> str:
    """``tdx-00806F050000-platform.json``: the file a key's bundle is stored in."""
    return f"{key.tee}-{key.fmspc}-{key.ca}.json"


def _describe(key: CollateralKey) -> str:
    return f"{key.tee.upper()} collateral for FMSPC {key.fmspc} (PCK {key.ca} CA)"


def _collateral_verifier() -> Any:
    """``teegate.dcap.verify.verify_collateral`` if the DCAP core provides it, else None."""
    try:
        module = importlib.import_module("teegate.dcap.verify")
    except ImportError:
        return None
    return getattr(module, "verify_collateral", None)


@dataclass(frozen=True, slots=True)
class _Entry:
    collateral: Collateral
    info: BundleInfo


class CachedSource:
    """Cache of ``inner`` in ``cache_dir``; ``offline=True`` serves only what is cached."""

    def __init__(
        self,
        inner: CollateralSource | None,
        cache_dir: str | os.PathLike[str],
        *,
        offline: bool = False,
        verifier_anchors: TrustAnchors | None = None,
    ) -> None:
        if inner is None and not offline:
            raise ConfigError("a collateral cache without an upstream source must be offline")
        self.inner = inner
        self.cache_dir = Path(cache_dir)
        self.offline = offline
        self.anchors = verifier_anchors if verifier_anchors is not None else TrustAnchors.intel()
        self._memory: dict[CollateralKey, _Entry] = {}
        self._inflight: dict[CollateralKey, asyncio.Future[Collateral]] = {}
        self._warned_unverified = False
        if not offline:
            self.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o755)

    def __repr__(self) -> str:
        return f"CachedSource({self.inner!r}, {str(self.cache_dir)!r}, offline={self.offline})"

    def path(self, key: CollateralKey) -> Path:
        return self.cache_dir / cache_file_name(key)

    def _verify(self, collateral: Collateral, now: datetime, *, accept_expired: bool = False) -> None:
        """Signatures, chains to the anchors, CRLs, validity (unless accept_expired); raises EvidenceError."""
        verify = _collateral_verifier()
        if verify is None:
            if not self._warned_unverified:
                _log.warning("teegate.dcap.verify.verify_collateral unavailable: cache checks structure only")
                self._warned_unverified = True
            return
        verify(collateral, anchors=self.anchors, now=now, accept_expired=accept_expired)

    def _load(self, key: CollateralKey, now: datetime) -> tuple[_Entry | None, str]:
        """The cached entry if fresh and valid, else (None, why not)."""
        path = self.path(key)
        what = _describe(key)
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_BUNDLE_BYTES + 1)
        except FileNotFoundError:
            return None, f"{what} is not cached (no {path})"
        except OSError as exc:
            return None, f"{what}: cache file {path} unreadable: {exc}"
        try:
            collateral = Collateral.from_json(raw)
            info = bundle_info(collateral)
        except EvidenceError as exc:
            _log.warning("refusing corrupt cache file %s: %s", path, exc)
            return None, f"{what}: cache file {path} is corrupt: {exc}"
        if not info.matches(key):
            return None, f"{what}: cache file {path} holds {info.tee} FMSPC {info.fmspc} CA {info.ca}"
        stale = info.stale_items(now)
        if stale:
            return None, f"{what} in {path} is stale at {now.isoformat()}: {', '.join(stale)}"
        try:
            self._verify(collateral, now)
        except EvidenceError as exc:
            _log.warning("refusing cache file %s that fails verification: %s", path, exc)
            return None, f"{what}: cache file {path} fails verification: {exc}"
        return _Entry(collateral, info), ""

    def _store(self, key: CollateralKey, collateral: Collateral) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=self.cache_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(collateral.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        now = utc(now)
        entry = self._memory.get(key)
        if entry is not None and now < entry.info.next_update:
            return entry.collateral
        entry, problem = await asyncio.to_thread(self._load, key, now)
        if entry is not None:
            self._remember(key, entry)
            return entry.collateral
        if self.offline or self.inner is None:
            raise CollateralUnavailable(f"offline: {problem}")
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._fetch(key, now))
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)

    async def _fetch(self, key: CollateralKey, now: datetime) -> Collateral:
        assert self.inner is not None
        collateral = await self.inner.get(key, now=now)
        try:
            info = bundle_info(collateral)
            # Expiry of fresh upstream data is the verifier's call (it may accept expired
            # collateral as a flag); signatures and chains must hold before anything is stored.
            self._verify(collateral, now, accept_expired=True)
        except EvidenceError as exc:
            raise CollateralUnavailable(f"{_describe(key)} from {self.inner!r} is not valid: {exc}") from exc
        if not info.matches(key):
            raise CollateralUnavailable(
                f"{self.inner!r} gave {info.tee} FMSPC {info.fmspc} CA {info.ca} for {_describe(key)}"
            )
        try:
            await asyncio.to_thread(self._store, key, collateral)
        except OSError as exc:
            _log.warning("could not write collateral cache %s: %s", self.path(key), exc)
        self._remember(key, _Entry(collateral, info))
        return collateral

    def _remember(self, key: CollateralKey, entry: _Entry) -> None:
        self._memory.pop(key, None)
        while len(self._memory) >= MAX_MEMORY_ENTRIES:
            self._memory.pop(next(iter(self._memory)))
        self._memory[key] = entry

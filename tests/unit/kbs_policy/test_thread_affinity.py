"""regorus engines are thread-affine: a compiled policy collected on another thread must not drop
its engine there (PyO3 reports "unsendable ... dropped on another thread" and leaks it)."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from typing import Any

import pytest

from teegate.kbs.policy import _ORPHANED_ENGINES, _Compiled, builtin_policy_text
from teegate.kbs.storage import PolicyKind

pytestmark = pytest.mark.timeout(30)


async def test_engine_collected_on_a_worker_thread_is_dropped_on_its_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: errors.append(str(u.exc_value)))
    compiled = _Compiled(
        PolicyKind.RESOURCE, "resource-policy", 1, builtin_policy_text(PolicyKind.RESOURCE, "default")
    )
    cycle: list[Any] = [compiled]
    cycle.append(cycle)  # cyclic garbage: only the garbage collector frees it, on whatever thread runs
    del compiled, cycle
    orphans = len(_ORPHANED_ENGINES)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join()
        await asyncio.sleep(0.05)  # the loop runs the hand-back callback and drops the engine
    finally:
        if was_enabled:
            gc.enable()
    assert errors == []
    assert len(_ORPHANED_ENGINES) == orphans

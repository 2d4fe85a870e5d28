"""regorus engines are thread-affine: a compiled policy collected on another thread must not drop
its engine there (PyO3 reports "unsendable ... dropped on another thread"); it is kept instead."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import pytest

from teegate.kbs.policy import _Compiled, builtin_policy_text
from teegate.kbs.storage import PolicyKind

pytestmark = pytest.mark.timeout(30)


def test_engine_collected_on_a_worker_thread_is_not_dropped_there(
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
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join()
    finally:
        if was_enabled:
            gc.enable()
    assert errors == []

"""regorus engines are thread-affine: an engine is only ever dropped on the thread that made it.

Released elsewhere (the garbage collector can run on any thread), it waits in its owner's
graveyard and the owner drops it at its next policy call; if the owner has exited it is kept
rather than dropped on the wrong thread (PyO3 would report "unsendable ... dropped on another
thread")."""

from __future__ import annotations

import gc
import sys
import threading
from typing import Any

import pytest

import teegate.kbs.policy as policy_module
from teegate.kbs.policy import _GRAVEYARDS, _Compiled, builtin_policy_text
from teegate.kbs.storage import PolicyKind

pytestmark = pytest.mark.timeout(30)


def _compiled() -> _Compiled:
    return _Compiled(
        PolicyKind.RESOURCE, "resource-policy", 1, builtin_policy_text(PolicyKind.RESOURCE, "default")
    )


def _collect_on_worker() -> None:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join()
    finally:
        if was_enabled:
            gc.enable()


def test_engine_released_on_a_worker_thread_is_dropped_by_its_owner(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    errors: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: errors.append(str(u.exc_value)))
    graveyard = _GRAVEYARDS.graveyard
    graveyard.sweep()
    compiled = _compiled()
    cycle: list[Any] = [compiled]
    cycle.append(cycle)  # cyclic garbage: only the garbage collector frees it, on whatever thread runs
    del compiled, cycle
    _collect_on_worker()
    assert errors == []
    # Handed back to this (the owner) thread, not dropped there (other tests' cyclic garbage
    # made on this thread may wait beside it).
    assert graveyard.pending() >= 1
    survivor = _compiled()  # the owner's next policy call drops it
    assert graveyard.pending() == 0
    results, _ = survivor.evaluate({}, {"plugin": "resource"}, {}, ["data.policy.allow"])
    assert results == {"data.policy.allow": False}
    assert errors == []


def test_engine_of_an_exited_thread_is_never_dropped_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: errors.append(str(u.exc_value)))
    made: list[_Compiled] = []
    owner = threading.Thread(target=lambda: made.append(_compiled()))
    owner.start()
    owner.join()
    del made[:]  # last reference goes on this thread after the owner exited: kept, not dropped here
    assert errors == []


def test_engine_dropped_on_its_own_thread_is_freed_at_once() -> None:
    graveyard = _GRAVEYARDS.graveyard
    graveyard.sweep()
    compiled = _compiled()
    del compiled  # reference counting, on the owner thread: nothing waits
    assert graveyard.pending() == 0


def test_thread_with_the_owners_ident_is_not_the_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The OS reuses an exited thread's ident for a later thread (servers started one after
    another in one process do): that later thread must not drop the first one's engine."""
    errors: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: errors.append(str(u.exc_value)))
    made: list[_Compiled] = []
    owner_ident: list[int] = []

    def owner() -> None:
        owner_ident.append(threading.get_ident())
        made.append(_compiled())

    first = threading.Thread(target=owner)
    first.start()
    first.join()

    class _SameIdent:
        """The policy module's view of ``threading`` in which every thread has the owner's ident."""

        def __getattr__(self, name: str) -> Any:
            return (lambda: owner_ident[0]) if name == "get_ident" else getattr(threading, name)

    monkeypatch.setattr(policy_module, "threading", _SameIdent())
    second = threading.Thread(target=made.clear)  # the last reference goes on the later thread
    second.start()
    second.join()
    monkeypatch.undo()
    gc.collect()
    assert errors == []

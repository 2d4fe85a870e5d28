"""The fast TCB level paths of tcb_info/qe_identity accept and refuse exactly what the reader does."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from teegate.dcap import qe_identity, tcb_info
from teegate.dcap.qe_identity import parse_qe_identity
from teegate.dcap.tcb_info import ModuleTcbLevel, parse_tcb_info
from teegate.errors import CollateralError

from ._real import REAL, load


def _slow_only(
    item: Any, prefix: str, index: int, dates: dict[str, Any], slow: Callable[[Any], ModuleTcbLevel]
) -> ModuleTcbLevel:
    return slow(tcb_info._Reader(item, f"{prefix}.tcbLevels[{index}]"))


def _both(
    parse: Callable[[str], object], text: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[object, object]:
    """(outcome with the fast path, outcome with the reader only): a value or the error message."""
    outcomes: list[object] = []
    for patched in (False, True):
        with monkeypatch.context() as m:
            if patched:
                m.setattr(tcb_info, "_module_level", _slow_only)
                m.setattr(qe_identity, "_module_level", _slow_only)
            try:
                outcomes.append(parse(text))
            except CollateralError as exc:
                outcomes.append(f"error: {exc}")
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize("tee", sorted(REAL))
def test_real_documents_agree(vectors: Path, tee: str, monkeypatch: pytest.MonkeyPatch) -> None:
    collateral = load(vectors, tee).collateral
    fast, slow = _both(parse_tcb_info, collateral.tcb_info, monkeypatch)
    assert fast == slow and not isinstance(fast, str)
    fast, slow = _both(parse_qe_identity, collateral.qe_identity, monkeypatch)
    assert fast == slow and not isinstance(fast, str)


_MUTATIONS: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("isvsvn bool", lambda lvl: lvl["tcb"].__setitem__("isvsvn", True)),
    ("isvsvn negative", lambda lvl: lvl["tcb"].__setitem__("isvsvn", -1)),
    ("isvsvn too large", lambda lvl: lvl["tcb"].__setitem__("isvsvn", 0x10000)),
    ("isvsvn float", lambda lvl: lvl["tcb"].__setitem__("isvsvn", 1.0)),
    ("no isvsvn", lambda lvl: lvl["tcb"].pop("isvsvn")),
    ("tcb list", lambda lvl: lvl.__setitem__("tcb", [1])),
    ("no tcb", lambda lvl: lvl.pop("tcb")),
    ("unknown status", lambda lvl: lvl.__setitem__("tcbStatus", "Fine")),
    ("status int", lambda lvl: lvl.__setitem__("tcbStatus", 3)),
    ("date without zone", lambda lvl: lvl.__setitem__("tcbDate", "2024-03-13T00:00:00")),
    ("date garbage", lambda lvl: lvl.__setitem__("tcbDate", "yesterday")),
    ("date int", lambda lvl: lvl.__setitem__("tcbDate", 5)),
    ("advisories not a list", lambda lvl: lvl.__setitem__("advisoryIDs", "INTEL-SA-00001")),
    ("advisory int", lambda lvl: lvl.__setitem__("advisoryIDs", ["INTEL-SA-00001", 7])),
    (
        "too many advisories",
        lambda lvl: lvl.__setitem__("advisoryIDs", ["A"] * (tcb_info.MAX_LIST_ITEMS + 1)),
    ),
    ("no advisories", lambda lvl: lvl.pop("advisoryIDs", None)),
    ("extra member", lambda lvl: lvl.__setitem__("extra", 1)),
    ("level not an object", lambda lvl: lvl.clear()),
]


_HARMLESS = {"no advisories", "extra member"}


@pytest.mark.parametrize(("name", "mutate"), _MUTATIONS, ids=[m[0] for m in _MUTATIONS])
def test_mutated_qe_identity_levels_agree(
    vectors: Path, name: str, mutate: Callable[[dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads(load(vectors, "sgx").collateral.qe_identity)
    for index in (0, len(doc["tcbLevels"]) - 1):
        mutated = copy.deepcopy(doc)
        mutate(mutated["tcbLevels"][index])
        fast, slow = _both(parse_qe_identity, json.dumps(mutated), monkeypatch)
        assert fast == slow, name
        assert isinstance(fast, str) == (name not in _HARMLESS), fast


@pytest.mark.parametrize(("name", "mutate"), _MUTATIONS, ids=[m[0] for m in _MUTATIONS])
def test_mutated_tdx_module_levels_agree(
    vectors: Path, name: str, mutate: Callable[[dict[str, Any]], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = json.loads(load(vectors, "tdx").collateral.tcb_info)
    identities = doc["tdxModuleIdentities"]
    assert identities and identities[0]["tcbLevels"]
    mutated = copy.deepcopy(doc)
    mutate(mutated["tdxModuleIdentities"][0]["tcbLevels"][0])
    fast, slow = _both(parse_tcb_info, json.dumps(mutated), monkeypatch)
    assert fast == slow, name
    assert isinstance(fast, str) == (name not in _HARMLESS), fast


def test_platform_level_advisories_must_be_strings(vectors: Path) -> None:
    doc = json.loads(load(vectors, "sgx").collateral.tcb_info)
    doc["tcbLevels"][1]["advisoryIDs"] = ["INTEL-SA-00001", None]
    with pytest.raises(CollateralError, match=r"tcbLevels\[1\]\.advisoryIDs"):
        parse_tcb_info(json.dumps(doc))
    doc["tcbLevels"][1]["advisoryIDs"] = []
    assert parse_tcb_info(json.dumps(doc)).tcb_levels

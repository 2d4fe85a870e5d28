"""Property tests: the TCB Info / QE Identity parsers and CRL/PEM loaders let only teegate errors escape."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.dcap.certs import load_crl, load_pem_chain
from teegate.dcap.qe_identity import parse_qe_identity
from teegate.dcap.tcb_info import parse_tcb_info
from teegate.errors import TeegateError
from tests.conftest import vectors_dir
from tests.strategies import json_values

_SETS = vectors_dir() / "_collateral_sets"
_DOCS = [json.loads((_SETS / name).read_text()) for name in sorted(p.name for p in _SETS.glob("*.json"))]
_TCB_TEXTS = [d["tcb_info"] for d in _DOCS]
_QE_TEXTS = [d["qe_identity"] for d in _DOCS]

_json = json_values(max_text=12, max_items=5)
_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_both(text: str | bytes) -> None:
    for parse in (parse_tcb_info, parse_qe_identity):
        with contextlib.suppress(TeegateError):
            parse(text)


@_SETTINGS
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_arbitrary_text(text: str | bytes) -> None:
    _parse_both(text)


@_SETTINGS
@given(_json)
def test_arbitrary_json(value: Any) -> None:
    _parse_both(json.dumps(value))


def _mutations(doc: Any, draw: Any) -> Any:
    """Replace one randomly chosen member somewhere in ``doc`` with arbitrary JSON."""
    if isinstance(doc, dict) and doc:
        key = draw(st.sampled_from(sorted(doc)))
        if draw(st.booleans()):
            return {**doc, key: draw(_json)}
        if draw(st.booleans()):
            return {k: v for k, v in doc.items() if k != key}
        return {**doc, key: _mutations(doc[key], draw)}
    if isinstance(doc, list) and doc:
        i = draw(st.integers(0, len(doc) - 1))
        return [*doc[:i], _mutations(doc[i], draw), *doc[i + 1 :]]
    return draw(_json)


@_SETTINGS
@given(st.data())
def test_mutated_real_documents(data: st.DataObject) -> None:
    for texts in (_TCB_TEXTS, _QE_TEXTS):
        doc = json.loads(data.draw(st.sampled_from(texts)))
        _parse_both(json.dumps(_mutations(doc, data.draw)))


@_SETTINGS
@given(st.data())
def test_truncated_real_documents(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from(_TCB_TEXTS + _QE_TEXTS))
    _parse_both(text[: data.draw(st.integers(0, len(text)))])


@_SETTINGS
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_crl_and_pem_loaders(data: str | bytes) -> None:
    for load in (load_crl, load_pem_chain):
        with contextlib.suppress(TeegateError):
            load(data, "input")


@_SETTINGS
@given(st.data())
def test_mutated_real_crls(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(_DOCS))
    der = bytearray(bytes.fromhex(doc[data.draw(st.sampled_from(["root_ca_crl", "pck_crl"]))]))
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(TeegateError):
        load_crl(bytes(der), "crl")


def test_all_real_documents_parse(vectors: Path) -> None:
    assert len(_TCB_TEXTS) >= 10
    versions = {parse_tcb_info(text).version for text in _TCB_TEXTS}
    assert versions == {2, 3}
    assert {parse_qe_identity(text).id for text in _QE_TEXTS} == {"QE", "TD_QE"}
    assert vectors.is_dir()


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting(depth: int) -> None:
    _parse_both("[" * depth + "]" * depth)
    _parse_both('{"a":' * depth + "1" + "}" * depth)

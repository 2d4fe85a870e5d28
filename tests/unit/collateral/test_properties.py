"""Property tests: the collateral parsers raise only teegate's own errors on any input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.collateral._documents import crl_to_der, issuer_chain, signed_document
from teegate.collateral.qcnl import QcnlConfig
from teegate.errors import ConfigError, ParseError

pytestmark = pytest.mark.timeout(120)

_json_ish = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_signed_document_any_input(body: str | bytes) -> None:
    try:
        doc = signed_document(body, "tcbInfo")
    except ParseError:
        return
    assert len(doc.signature) == 64


@settings(max_examples=200, deadline=None)
@given(_json_ish, st.binary(min_size=64, max_size=64))
def test_signed_document_structured(value: object, sig: bytes) -> None:
    import json

    body = json.dumps({"tcbInfo": value, "signature": sig.hex()})
    try:
        doc = signed_document(body, "tcbInfo")
    except ParseError:
        assert not isinstance(value, dict)
        return
    assert json.loads(doc.text) == value and doc.signature == sig


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_crl_and_chain_any_input(data: bytes) -> None:
    for parse in (crl_to_der, issuer_chain):
        with contextlib.suppress(ParseError):
            parse(data, "x")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_qcnl_any_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        QcnlConfig.parse(text).client()

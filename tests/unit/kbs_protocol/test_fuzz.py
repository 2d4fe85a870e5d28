"""Nothing a client sends escapes as anything but a typed EvidenceError."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import EvidenceError
from teegate.kbs.protocol import Attestation, Request, parse_json
from teegate.kbs.session import SessionSealer

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
_KEYS = [
    "version",
    "tee",
    "extra-params",
    "runtime-data",
    "tee-evidence",
    "init-data",
    "nonce",
    "tee-pubkey",
    "primary_evidence",
    "additional_evidence",
    "kty",
    "crv",
    "alg",
    "x",
    "y",
    "n",
    "e",
    "format",
    "body",
]
_shaped = st.recursive(
    st.none()
    | st.text(max_size=12)
    | st.sampled_from(["0.4.0", "tdx", "sample", "EC", "P-256", "RSA", "toml"]),
    lambda children: (
        st.dictionaries(st.sampled_from(_KEYS), children, max_size=5) | st.lists(children, max_size=3)
    ),
    max_leaves=25,
)


def _only_typed_errors(value: Any) -> None:
    for parse in (Request.parse, Attestation.parse):
        try:
            parsed = parse(value)
            if isinstance(parsed, Attestation):
                parsed.additional_items()
        except EvidenceError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.one_of(_json, _shaped))
def test_parsers_raise_only_evidence_errors(value: Any) -> None:
    _only_typed_errors(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_parse_json_bytes(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        _only_typed_errors(parse_json(data))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_session_open_garbage(value: str) -> None:
    sealer = SessionSealer(os.urandom(32))
    with contextlib.suppress(EvidenceError):
        sealer.open("v1." + value, now=0)
    with contextlib.suppress(EvidenceError):
        sealer.open(value, now=0)


def test_fuzz_strategies_reach_deep_shapes() -> None:
    sample = {
        "runtime-data": {"nonce": "n", "tee-pubkey": {"kty": "EC"}},
        "tee-evidence": {"primary_evidence": {}},
    }
    try:
        Attestation.parse(json.loads(json.dumps(sample)))
    except EvidenceError as exc:
        assert "tee-pubkey" in str(exc)
    else:
        raise AssertionError("an EC key without crv must be refused")

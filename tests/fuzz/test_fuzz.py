"""Fuzz regressions in CI: replay the corpus through each harness, plus bounded hypothesis runs.

The long, coverage-guided runs are ``make fuzz`` (atheris, ``tests/fuzz/run.py``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.errors import TeegateError
from teegate.kbs.jwe import JWE_MEMBERS, decrypt
from tests.fuzz.harnesses import TARGETS, fixed_key, run_one

CORPUS = Path(__file__).resolve().parent / "corpus"
_FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _seeds(target: str) -> list[Path]:
    files = sorted((CORPUS / target).iterdir())
    assert files, f"empty corpus for {target}"
    return files


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_replays_cleanly(target: str) -> None:
    for seed in _seeds(target):
        run_one(target, seed.read_bytes())


def test_corpus_seeds_are_valid_inputs() -> None:
    # The seeds must reach deep code: the quotes parse, the JWE decrypts with the fixed key.
    from teegate.dcap.quote import parse_quote

    for name in ("tdx-v4.bin", "tdx-v5.bin", "sgx-v3.bin"):
        parse_quote((CORPUS / "quote" / name).read_bytes())
    jwe = json.loads((CORPUS / "jwe" / "jwe-fixed-key.json").read_bytes())
    assert decrypt(jwe, fixed_key()) == b"corpus secret"


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for position, value in edits:
        buf[position % len(buf)] = value
    return bytes(buf[: max(0, len(buf) - cut)])


_edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8)


@_FAST
@given(seed=st.sampled_from(["tdx-v4.bin", "tdx-v5.bin", "sgx-v3.bin"]), edits=_edits, cut=st.integers(0, 64))
def test_quote_parser_mutations(seed: str, edits: list[tuple[int, int]], cut: int) -> None:
    run_one("quote", _mutate((CORPUS / "quote" / seed).read_bytes(), edits, cut))


@_FAST
@given(st.binary(max_size=2048))
def test_quote_parser_random_bytes(data: bytes) -> None:
    run_one("quote", data)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@_FAST
@given(
    runtime=_json,
    evidence=_json,
    extra=st.dictionaries(st.sampled_from(["init-data", "runtime-data", "tee-evidence"]), _json, max_size=3),
)
def test_attestation_body_structures(runtime: object, evidence: object, extra: dict[str, object]) -> None:
    body = {"runtime-data": runtime, "tee-evidence": evidence, **extra}
    run_one("attestation", json.dumps(body).encode())


@_FAST
@given(
    seed=st.sampled_from(["tdx.json", "sample-additional-initdata.json"]),
    edits=_edits,
    cut=st.integers(0, 64),
)
def test_attestation_body_mutations(seed: str, edits: list[tuple[int, int]], cut: int) -> None:
    run_one("attestation", _mutate((CORPUS / "attestation" / seed).read_bytes(), edits, cut))


_b64 = st.binary(max_size=64).map(lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode())


@_FAST
@given(members=st.fixed_dictionaries({m: _b64 for m in JWE_MEMBERS}), header=_json)
def test_jwe_decrypt_refuses_garbage(members: dict[str, str], header: object) -> None:
    members = dict(members)
    members["protected"] = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(TeegateError):
        decrypt(members, fixed_key())


@_FAST
@given(
    jwk=st.dictionaries(st.sampled_from(["kty", "crv", "alg", "x", "y", "n", "e"]), _json | _b64, max_size=7)
)
def test_tee_jwk_parsing(jwk: dict[str, object]) -> None:
    run_one("jwe", json.dumps({"kty": "EC", **jwk}).encode())


# Where a claim of a policy seed is replaced (claims paths, plus init data and reference values).
_POLICY_PATHS = [
    ("claims", "tcb_status"),
    ("claims", "td_attributes"),
    ("claims", "td_attributes", "debug"),
    ("claims", "quote", "body", "mr_td"),
    ("claims", "quote", "header"),
    ("claims", "uefi_event_logs"),
    ("claims", "collateral_expiration_status"),
    ("init_data_claims",),
    ("reference_values", "mr_td"),
    ("reference_values", "tdvfkernel"),
]


@_FAST
@given(
    seed=st.sampled_from(["tdx-affirming.json", "tdx-initdata.json", "sgx.json", "sample.json"]),
    changes=st.lists(st.tuples(st.sampled_from(_POLICY_PATHS), _json), max_size=3),
)
def test_policy_vm_matches_interpreter_on_changed_claims(
    seed: str, changes: list[tuple[tuple[str, ...], object]]
) -> None:
    doc = json.loads((CORPUS / "policy" / seed).read_bytes())
    for path, value in changes:
        node = doc
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node[path[-1]] = value
    run_one("policy", json.dumps(doc).encode())

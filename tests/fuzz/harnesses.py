"""Fuzz targets: each takes arbitrary bytes and must either succeed or raise a teegate error.

Anything else escaping (IndexError, struct.error, UnicodeDecodeError, RecursionError, …) is a bug:
a server would answer 500 instead of a clear 4xx. Used by ``tests/fuzz/run.py`` (atheris,
coverage-guided), by the corpus replay and by the hypothesis properties in ``test_fuzz.py``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from teegate.dcap.quote import decode_quote_text, parse_quote
from teegate.errors import TeegateError
from teegate.kbs.jwe import decrypt, encrypt
from teegate.kbs.policy import (
    PolicyEvaluationError,
    PolicyVm,
    _Compiled,
    _jsonable,
    _transform_claims,
    builtin_policy_text,
)
from teegate.kbs.protocol import Attestation, TeePubKey, parse_json, runtime_data_digest
from teegate.kbs.storage import PolicyKind

__all__ = ["TARGETS", "fixed_key", "fuzz_attestation", "fuzz_jwe", "fuzz_policy", "fuzz_quote"]

#: Largest input a harness looks at (the servers bound bodies far below this).
MAX_INPUT: Final = 64 * 1024


def fixed_key() -> ec.EllipticCurvePrivateKey:
    """A deterministic P-256 key, so corpus JWEs encrypted to it stay decryptable."""
    scalar = int.from_bytes(hashlib.sha256(b"teegate fuzz key").digest(), "big") % (2**255)
    return ec.derive_private_key(scalar, ec.SECP256R1())


_KEY: Final = fixed_key()


def fuzz_quote(data: bytes) -> None:
    """``parse_quote`` on raw bytes and on the text forms (hex/base64); the model must be usable."""
    for attempt in (lambda: data, lambda: decode_quote_text(data)):
        try:
            raw = attempt()
            quote = parse_quote(raw)
        except TeegateError:
            continue
        # A parsed quote's accessors must work or fail with a teegate error, never crash.
        _ = (quote.version, quote.report_data, quote.is_tdx, quote.tee, quote.debug, quote.signed_region)
        try:
            _ = quote.signature_data
            _ = quote.pck_chain
        except TeegateError:
            pass


def fuzz_jwe(data: bytes) -> None:
    """JSON → a TEE JWK (parse, encrypt to it) or a flattened JWE (decrypt with the fixed key)."""
    try:
        value = parse_json(data, "fuzz")
    except TeegateError:
        return
    if not isinstance(value, dict):
        return
    if "kty" in value:
        try:
            key = TeePubKey.parse(value)
            jwe = encrypt(b"fuzz", key)
        except TeegateError:
            return
        assert set(jwe) == {"protected", "encrypted_key", "iv", "ciphertext", "tag"}
        return
    try:
        decrypt(value, _KEY)
    except TeegateError:
        return


def fuzz_attestation(data: bytes) -> None:
    """The ``/attest`` body: strict JSON → Attestation → additional evidence → binding digest."""
    try:
        attestation = Attestation.parse(parse_json(data, "Attestation"))
        attestation.additional_items()
    except TeegateError:
        return
    digest = runtime_data_digest(attestation.nonce, attestation.tee_pubkey, attestation.additional_evidence)
    assert len(digest) == 48
    # What the KBS echoes into the token must serialise.
    json.dumps(attestation.runtime_data_claims())


_POLICY_RULES: Final = ("data.policy.trust_claims", "data.policy.extensions", "data.policy.reasons")
_POLICY_TEES: Final = ("tdx", "sgx", "sample")


@functools.cache
def _policy_pair(name: str) -> tuple[_Compiled, _Compiled]:
    """A built-in attestation policy on regorus's VM and on its interpreter (compiled once)."""
    text = builtin_policy_text(PolicyKind.ATTESTATION, name)
    vm = _Compiled(PolicyKind.ATTESTATION, name, None, text, PolicyVm.BUILTIN)
    interpreter = _Compiled(PolicyKind.ATTESTATION, name, None, text, PolicyVm.OFF)
    assert vm.on_vm and not interpreter.on_vm
    return vm, interpreter


def _answers(results: dict[str, Any]) -> dict[str, Any]:
    """Results in one shape (the interpreter returns Rego sets as Python sets, the VM as lists)."""
    return {
        rule: sorted(map(str, value))
        if isinstance(value, set | list) and rule.endswith("reasons")
        else _jsonable(value)
        for rule, value in results.items()
    }


def fuzz_policy(data: bytes) -> None:
    """Claims (JSON: ``{"tee", "claims", "init_data_claims", "reference_values"}`` or bare TEE
    claims) through the built-in attestation policies on regorus's VM and on its interpreter:
    whenever the interpreter answers, the VM's answer must be the same (where the interpreter
    stops with an error the VM answers as for the value being absent: tests/unit/kbs_policy)."""
    try:
        doc = parse_json(data, "policy input")
    except TeegateError:
        return
    if not isinstance(doc, dict):
        return
    tee = doc["tee"] if doc.get("tee") in _POLICY_TEES else "tdx"
    claims = doc.get("claims", doc)
    references = doc.get("reference_values")
    if not isinstance(claims, dict):
        return
    if not isinstance(references, dict):
        references = {}
    evidence = _transform_claims(tee, claims, doc.get("init_data_claims"), {"tee-pubkey": {"kty": "EC"}})
    for name in ("default_cpu", "strict_cpu"):
        vm, interpreter = _policy_pair(name)
        values = {rv: references.get(rv) for rv in interpreter.rv_names}
        try:
            slow, asked = interpreter.evaluate(evidence, {}, values, _POLICY_RULES)
        except PolicyEvaluationError:
            continue
        assert not asked, asked  # every name the built-ins ask for was fetched beforehand
        fast, _ = vm.evaluate(evidence, {}, values, _POLICY_RULES)
        assert _answers(fast) == _answers(slow), (name, _answers(fast), _answers(slow))


TARGETS: Final[dict[str, Callable[[bytes], None]]] = {
    "quote": fuzz_quote,
    "jwe": fuzz_jwe,
    "attestation": fuzz_attestation,
    "policy": fuzz_policy,
}


def run_one(name: str, data: bytes) -> Any:
    """Run target ``name`` on ``data`` (bounded to :data:`MAX_INPUT`)."""
    return TARGETS[name](data[:MAX_INPUT])

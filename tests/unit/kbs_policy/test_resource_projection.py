"""Built-in resource policies see only what they read of the token claims (_RESOURCE_INPUT_READS):
their verdicts and reasons over that projection equal those over the full claims."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.kbs.policy import (
    _RESOURCE_INPUT_READS,
    RESOURCE_BUILTINS,
    PolicyEvaluationError,
    PolicyKind,
    PolicyVm,
    _Compiled,
    builtin_policy_text,
    project_input,
)

from .conftest import tdx_claims

_RULES = ("data.policy.allow", "data.policy.reasons")

_STATUS = st.sampled_from(["affirming", "affirming", "warning", "contraindicated", "none", "", 0, True])
_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["", "x", "tdx"]), _STATUS)


def _claims(odd: bool) -> st.SearchStrategy[Any]:
    """Token claims in the KBS's shape with varied values; with ``odd``, any level may instead
    hold another JSON value (what a Bearer token from another issuer might carry)."""

    def shaped(shape: st.SearchStrategy[Any], *other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(shape, _SCALAR, st.lists(_SCALAR, max_size=2), *other) if odd else shape

    jwk = st.fixed_dictionaries({"kty": st.just("EC"), "crv": st.just("P-256"), "x": st.just("AAAA")})
    tee_claims = shaped(
        st.fixed_dictionaries(
            {"simulated": st.one_of(st.just(True), _SCALAR)},
            optional={"tcb_status": _STATUS, "quote": _SCALAR},
        ),
        st.fixed_dictionaries({}, optional={"tcb_status": _STATUS}),
    )
    runtime = shaped(st.fixed_dictionaries({"tee-pubkey": shaped(jwk)}, optional={"nonce": _SCALAR}))
    evidence = shaped(
        st.tuples(
            st.fixed_dictionaries({"runtime_data_claims": runtime}, optional={"report_data": _SCALAR}),
            st.lists(st.sampled_from(["tdx", "sgx", "snp", "sample"]), min_size=1, max_size=2, unique=True),
            tee_claims,
            shaped(st.fixed_dictionaries({"svn": _SCALAR})),
        ).map(lambda t: {**t[0], **{tee: t[3] if tee == "sample" else t[2] for tee in t[1]}})
    )
    submod = shaped(
        st.fixed_dictionaries(
            {"ear.status": _STATUS, "ear.veraison.annotated-evidence": evidence},
            optional={
                "ear.trustworthiness-vector": st.dictionaries(
                    st.sampled_from(["hardware", "executables"]), _SCALAR
                ),
                "ear.appraisal-policy-id": _SCALAR,
            },
        ),
        st.fixed_dictionaries({}, optional={"ear.status": _STATUS}),
    )
    names = st.sampled_from(["cpu0", "cpu1", "gpu0", "ear.status", "*"])
    submods = shaped(
        st.dictionaries(names, submod, min_size=1, max_size=3),
        st.lists(submod, max_size=3),
        st.just({}),
    )
    return shaped(
        st.fixed_dictionaries({"submods": submods}, optional={"exp": st.integers(0, 2**40), "*": _SCALAR}),
        st.fixed_dictionaries({}, optional={"exp": st.integers(0, 2**40)}),
    )


_PATHS = st.sampled_from([["default", "tdx-vm-disk", "passphrase"], ["repo", "type", "tag"]])


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, PolicyVm], _Compiled]:
    return {
        (name, mode): _Compiled(
            PolicyKind.RESOURCE, name, None, builtin_policy_text(PolicyKind.RESOURCE, name), mode
        )
        for name in RESOURCE_BUILTINS
        for mode in (PolicyVm.BUILTIN, PolicyVm.OFF)
    }


def _answers(policy: _Compiled, value: Any, path: list[str]) -> dict[str, Any]:
    """Each rule's answer (an evaluation error is an answer too: the KBS denies with it)."""
    data = {"plugin": "resource", "resource-path": path, "query": {}}
    rules = [rule for rule in _RULES if rule != "data.policy.reasons" or policy.has_reasons]
    try:
        results, asked = policy.evaluate(value, data, {}, rules)
    except PolicyEvaluationError as exc:
        return {"error": str(exc)}
    assert asked == set()
    reasons = results.get("data.policy.reasons")
    if reasons is not None:
        results["data.policy.reasons"] = sorted(reasons)
    return results


def test_every_builtin_resource_policy_has_its_reads_bound_to_its_text(
    compiled: dict[tuple[str, PolicyVm], _Compiled],
) -> None:
    assert set(_RESOURCE_INPUT_READS) == set(RESOURCE_BUILTINS)
    for (name, _), policy in compiled.items():
        assert policy.input_reads is _RESOURCE_INPUT_READS[name]
    # The same policy with one more line is not the built-in: it gets the whole claims.
    text = builtin_policy_text(PolicyKind.RESOURCE, "trustee-default") + "\n# edited\n"
    assert _Compiled(PolicyKind.RESOURCE, "resource-policy", 3, text).input_reads is None
    # Attestation policies always get their whole input.
    attestation = builtin_policy_text(PolicyKind.ATTESTATION, "default_cpu")
    assert _Compiled(PolicyKind.ATTESTATION, "default_cpu", None, attestation).input_reads is None


def test_projection_keeps_what_is_read_and_shapes_it_does_not_expect() -> None:
    reads = _RESOURCE_INPUT_READS["dev"]
    claims = {
        "iss": "teegate-kbs",
        "submods": {
            "cpu0": {
                "ear.status": "warning",
                "ear.trustworthiness-vector": {"hardware": 2},
                "ear.veraison.annotated-evidence": {
                    "tdx": tdx_claims(simulated=True),
                    "runtime_data_claims": {"nonce": "n", "tee-pubkey": {"kty": "EC"}},
                },
            },
            "gpu0": ["not", "an", "object"],
        },
    }
    assert project_input(claims, reads) == {
        "submods": {
            "cpu0": {
                "ear.status": "warning",
                "ear.veraison.annotated-evidence": {
                    "tdx": {"simulated": True},
                    "runtime_data_claims": {"tee-pubkey": {"kty": "EC"}},
                },
            },
            "gpu0": ["not", "an", "object"],
        }
    }
    assert project_input(["a"], reads) == ["a"]
    assert project_input({"submods": "x", "exp": 1}, reads) == {"submods": "x"}
    assert project_input(claims, _RESOURCE_INPUT_READS["allow-all"]) == {}


@pytest.mark.parametrize("vm", [PolicyVm.BUILTIN, PolicyVm.OFF], ids=["vm", "interpreter"])
@pytest.mark.parametrize("name", sorted(RESOURCE_BUILTINS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(claims=st.one_of(_claims(odd=False), _claims(odd=True)), path=_PATHS)
def test_builtin_verdicts_and_reasons_equal_over_projection_and_full_claims(
    compiled: dict[tuple[str, PolicyVm], _Compiled], name: str, vm: PolicyVm, claims: Any, path: list[str]
) -> None:
    policy = compiled[(name, vm)]
    reads = policy.input_reads
    assert reads is not None
    assert _answers(policy, project_input(claims, reads), path) == _answers(policy, claims, path)


def test_real_claims_same_verdicts(compiled: dict[tuple[str, PolicyVm], _Compiled]) -> None:
    jwk = {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "BBBB"}
    for status in ("affirming", "warning"):
        for evidence in (
            {"tdx": tdx_claims(simulated=True), "runtime_data_claims": {"tee-pubkey": jwk}},
            {"tdx": tdx_claims(), "runtime_data_claims": {"tee-pubkey": jwk}},
            {"sample": {"svn": "1"}, "runtime_data_claims": {"tee-pubkey": jwk}},
            {"sample": {"svn": "1"}},
        ):
            claims = {
                "submods": {"cpu0": {"ear.status": status, "ear.veraison.annotated-evidence": evidence}}
            }
            for policy in compiled.values():
                assert policy.input_reads is not None
                projected = project_input(claims, policy.input_reads)
                assert _answers(policy, projected, ["a", "b", "c"]) == _answers(
                    policy, claims, ["a", "b", "c"]
                )

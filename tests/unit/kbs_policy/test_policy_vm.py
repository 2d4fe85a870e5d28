"""Policies on regorus's compiled VM (RVM) against its interpreter: same answers, never laxer.

The built-in policies run on the VM by default (``PolicyVm.BUILTIN``). Over a corpus of
well-formed claims every answer (trust vector, status, extensions, reasons; allow and reasons)
must equal the interpreter's; over malformed claims, where the interpreter stops with an error,
the VM may not be laxer (no affirming status, no release). Plus: which policies go to the VM,
why others do not, and the interpreter taking over when the VM's answer is undefined.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teegate.kbs.policy import (
    RESOURCE_BUILTINS,
    Appraisal,
    PolicyEngine,
    PolicyEvaluationError,
    PolicyVm,
    builtin_policy_text,
)
from teegate.kbs.storage import PolicyKind, ResourcePath, Storage, StorageSettings, open_storage
from tests.unit.kbs_policy.conftest import (
    MR_TD,
    TDX_RVS,
    XFAM,
    rv_message,
    sample_claims,
    tdx_claims,
    uefi_event_logs,
)

pytestmark = pytest.mark.timeout(120)

KERNEL = "c1" * 48
CMDLINE = "c2" * 48
MR_ENCLAVE = "d1" * 32
MR_SIGNER = "d2" * 32


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    storage = await open_storage(StorageSettings(data_dir=tmp_path / "kbs"))
    yield storage
    await storage.close()


def _engines(store: Storage) -> tuple[PolicyEngine, PolicyEngine]:
    """(VM for built-ins, interpreter only) over the same store."""
    return (
        PolicyEngine(store.policies, store.reference_values, vm=PolicyVm.BUILTIN),
        PolicyEngine(store.policies, store.reference_values, vm=PolicyVm.OFF),
    )


def _compiled(engine: PolicyEngine) -> list[Any]:
    return [c for c in engine._cache.values() if not isinstance(c, Exception)]


class _CountingEngine:
    """Stands in for a policy's interpreter engine and counts its evaluations."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.evaluations = 0

    def __getattr__(self, name: str) -> Any:
        if name == "eval_rule":
            self.evaluations += 1
        return getattr(self._engine, name)


def _sgx_claims(flags: str, tcb: str, mr_enclave: str, expired: str = "0") -> dict[str, Any]:
    return {
        "header": {"version": "0300", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
        "body": {
            "attributes.flags": flags,
            "mr_enclave": mr_enclave,
            "mr_signer": MR_SIGNER,
            "isv_prod_id": "0100",
        },
        "tcb_status": tcb,
        "collateral_expiration_status": expired,
        "report_data": "00" * 64,
    }


_CONTAINERS = {
    "agent_policy_claims": {
        "containers": [
            {
                "OCI": {
                    "Annotations": {"io.kubernetes.cri.image-name": "registry/app:1"},
                    "Process": {"User": {"UID": 1000}},
                }
            }
        ]
    }
}

_TCBS = ("UpToDate", "OutOfDate", "SWHardeningNeeded", "TDRelaunchAdvised", "Revoked")


def _attestation_corpus() -> list[tuple[str, dict[str, Any], Any]]:
    """(tee, claims, init_data_claims) covering every branch of the built-in CPU policies."""
    corpus: list[tuple[str, dict[str, Any], Any]] = []
    for debug, tcb, expired, mr_td, log, init in itertools.product(
        (False, True), _TCBS, ("0", "1"), (MR_TD, "ff" * 48), (None, "match", "other"), (None, _CONTAINERS)
    ):
        extra: dict[str, Any] = {"collateral_expiration_status": expired}
        if log == "match":
            extra["uefi_event_logs"] = uefi_event_logs(KERNEL, CMDLINE)
        elif log == "other":
            extra["uefi_event_logs"] = uefi_event_logs("00" * 48, CMDLINE)
        claims = tdx_claims(debug=debug, tcb=tcb, mr_td=mr_td)
        claims.update(extra)
        corpus.append(("tdx", claims, init))
    for flags, tcb, mr_enclave, expired in itertools.product(
        ("0500000000000000", "0700000000000000", "0f00000000000000", "0400000000000000"),
        _TCBS,
        (MR_ENCLAVE, "ee" * 32),
        ("0", "1"),
    ):
        corpus.append(("sgx", _sgx_claims(flags, tcb, mr_enclave, expired), None))
    for debug in (False, True):
        corpus.append(("sample", sample_claims(debug=debug), None))
        other = sample_claims(debug=debug)
        other.update(svn="9", launch_digest="zzz", platform_version={"major": 1, "minor": 1})
        corpus.append(("sample", other, None))
    return corpus


def _malformed_corpus() -> list[tuple[str, dict[str, Any], Any, dict[str, Any], Any]]:
    """Claims with one value of the wrong type (no verifier of teegate makes them), each with the
    same claims without that value: (tee, claims, init data claims, baseline, baseline init)."""
    corpus: list[tuple[str, dict[str, Any], Any, dict[str, Any], Any]] = []
    for field, value in (
        ("td_attributes", {"debug": "no"}),
        ("td_attributes", 5),
        ("tcb_status", 5),
        ("uefi_event_logs", "not a list"),
        ("uefi_event_logs", [{"type_name": 5, "details": [], "digests": "x"}]),
        ("quote", {"header": [], "body": {"mr_td": 5, "rtmr_1": None, "xfam": {}}}),
        ("collateral_expiration_status", 0),
    ):
        claims = tdx_claims()
        claims[field] = value
        baseline = tdx_claims()
        baseline.pop(field, None)
        corpus.append(("tdx", claims, None, baseline, None))
    for containers in ("x", [{"OCI": 5}], [{"OCI": {"Annotations": 5, "Process": []}}]):
        corpus.append(
            ("tdx", tdx_claims(), {"agent_policy_claims": {"containers": containers}}, tdx_claims(), {})
        )
    for flags in (7, None, "", "z"):
        claims = _sgx_claims("0500000000000000", "UpToDate", MR_ENCLAVE)
        claims["body"]["attributes.flags"] = flags
        baseline = _sgx_claims("0500000000000000", "UpToDate", MR_ENCLAVE)
        del baseline["body"]["attributes.flags"]
        corpus.append(("sgx", claims, None, baseline, None))
    bad_sample = sample_claims()
    bad_sample["platform_version"] = {"major": "1", "minor": "x"}
    baseline = sample_claims()
    del baseline["platform_version"]
    corpus.append(("sample", bad_sample, None, baseline, None))
    return corpus


_RV_SETS: list[dict[str, Any]] = [
    {},
    TDX_RVS,
    {**TDX_RVS, "tdvfkernel": KERNEL, "tdvfkernelparams": CMDLINE},
    {
        "mr_enclave": [MR_ENCLAVE],
        "mr_signer": [MR_SIGNER],
        "isv_prod_id": ["0100"],
        "launch_digest": ["abcde"],
        "svn": ["1"],
        "major_version": 1,
        "minimum_minor_version": 2,
    },
]

# Reference values of the wrong types (an administrator's mistake, not a guest's doing).
_BAD_RV_SETS: list[dict[str, Any]] = [
    {"mr_td": MR_TD, "rtmr_1": 5, "xfam": {"a": XFAM}, "tdvfkernel": [KERNEL]},
    {"svn": "1", "minimum_minor_version": "2", "major_version": [1], "mr_enclave": 7},
]


async def _appraise(engine: PolicyEngine, tee: str, claims: dict[str, Any], init: Any, policy: str) -> Any:
    try:
        a = await engine.appraise(
            tee,
            claims,
            policy_ids=[policy],
            init_data_claims=init,
            runtime_data_claims={"tee-pubkey": {"kty": "EC"}},
        )
    except PolicyEvaluationError as exc:
        return ("error", str(exc))
    return ("ok", _summary(a))


def _summary(a: Appraisal) -> dict[str, Any]:
    return {
        "status": a.status,
        "vector": a.trust_vector,
        "claims_set": a.claims_set,
        "extensions": a.extensions,
        "reasons": a.explanation["reasons"],
        "policy": a.evaluated_policy_id,
    }


async def _set_rvs(store: Storage, values: dict[str, Any], vm: PolicyEngine, interp: PolicyEngine) -> None:
    for name in await store.reference_values.list_names():
        await store.reference_values.delete(name)
    if values:
        await vm.rvps.register(rv_message(values))
    vm.rvps.invalidate()
    interp.rvps.invalidate()


async def test_builtin_attestation_policies_agree_with_the_interpreter(store: Storage) -> None:
    vm, interp = _engines(store)
    corpus = _attestation_corpus()
    compared = 0
    statuses: set[str] = set()
    for values in _RV_SETS:
        await _set_rvs(store, values, vm, interp)
        for policy in ("default", "strict"):
            for tee, claims, init in corpus:
                fast = await _appraise(vm, tee, claims, init, policy)
                slow = await _appraise(interp, tee, claims, init, policy)
                assert fast == slow, (policy, tee, json.dumps(claims)[:400], values)
                compared += 1
                if fast[0] == "ok":
                    statuses.add(fast[1]["status"])
    # The corpus reaches every tier, and the comparisons ran on the VM, not the interpreter.
    assert statuses == {"affirming", "warning", "contraindicated"}
    assert compared > 1500
    on_vm = {c.policy_id: c.on_vm for c in _compiled(vm)}
    assert on_vm == {"default_cpu": True, "strict_cpu": True}
    assert not any(c.on_vm for c in _compiled(interp))


async def test_wrong_types_are_absent_values_on_the_vm(store: Storage) -> None:
    """Where the interpreter stops at a value of the wrong type, the VM answers as Rego (OPA)
    does: the expression is undefined, so the answer is the one for the value being absent,
    which any guest could get by leaving it out. Never anything better than that."""
    vm, interp = _engines(store)
    differed = 0
    corpus = _malformed_corpus() + [(tee, c, i, c, i) for tee, c, i in _attestation_corpus()[::9]]
    for values in _RV_SETS + _BAD_RV_SETS:
        for policy in ("default", "strict"):
            for tee, claims, init, baseline, baseline_init in corpus:
                await _set_rvs(store, values, vm, interp)
                fast = await _appraise(vm, tee, claims, init, policy)
                slow = await _appraise(interp, tee, claims, init, policy)
                if fast == slow:
                    continue
                differed += 1
                assert slow[0] == "error", (policy, tee, claims, values)
                # Absent: the wrong-typed claim left out; if reference values of the wrong type
                # still stop the interpreter, those left out too.
                absent = await _appraise(interp, tee, baseline, baseline_init, policy)
                if absent[0] == "error":
                    await _set_rvs(store, {}, vm, interp)
                    absent = await _appraise(interp, tee, baseline, baseline_init, policy)
                assert fast == absent, (policy, tee, claims, values, slow)
    assert differed > 0  # the corpus does reach the interpreter's type errors


def _token(*submods: tuple[str, str | None, dict[str, Any]]) -> dict[str, Any]:
    claims: dict[str, Any] = {"submods": {}}
    for name, status, evidence in submods:
        submod: dict[str, Any] = {"ear.veraison.annotated-evidence": evidence}
        if status is not None:
            submod["ear.status"] = status
        claims["submods"][name] = submod
    return claims


_BOUND = {"runtime_data_claims": {"tee-pubkey": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}}}


def _resource_corpus() -> list[dict[str, Any]]:
    evidences = [
        {"tdx": {"simulated": False}, **_BOUND},
        {"tdx": {"simulated": True}, **_BOUND},
        {"tdx": {"simulated": True}},
        {"sgx": {"simulated": True}, **_BOUND},
        {"sample": {"svn": "1"}, **_BOUND},
        {"sample": {"svn": "1"}},
        {},
    ]
    corpus = [{"submods": {}}, {}]
    for status, evidence in itertools.product(
        ("affirming", "warning", "contraindicated", "none", None), evidences
    ):
        corpus.append(_token(("cpu0", status, evidence)))
        corpus.append(_token(("cpu0", status, evidence), ("gpu0", "affirming", {"nvidia": {}})))
        corpus.append(_token(("cpu0", "affirming", {"tdx": {}}), ("gpu0", status, evidence)))
    return corpus


_MALFORMED_TOKENS: list[dict[str, Any]] = [
    {"submods": 5},
    {"submods": []},
    {"submods": "cpu0"},
    {"submods": {"cpu0": "affirming"}},
    {"submods": {"cpu0": {"ear.status": 2, "ear.veraison.annotated-evidence": []}}},
    {"submods": {"cpu0": {"ear.status": "warning", "ear.veraison.annotated-evidence": {"sample": 0}}}},
    {"submods": {"cpu0": {"ear.veraison.annotated-evidence": {"tdx": {"simulated": "yes"}}}}},
]


async def test_builtin_resource_policies_agree_with_the_interpreter(store: Storage) -> None:
    path = ResourcePath("default", "disk", "key")
    for name in RESOURCE_BUILTINS:
        await store.policies.set(
            PolicyKind.RESOURCE, "resource-policy", builtin_policy_text(PolicyKind.RESOURCE, name)
        )
        vm, interp = _engines(store)
        allowed = 0
        for claims in _resource_corpus():
            fast = await vm.resource_allowed(claims, path)
            slow = await interp.resource_allowed(claims, path)
            assert (fast.allowed, fast.reason, fast.reasons) == (slow.allowed, slow.reason, slow.reasons), (
                name,
                claims,
            )
            allowed += fast.allowed
        for claims in _MALFORMED_TOKENS:
            fast = await vm.resource_allowed(claims, path)
            slow = await interp.resource_allowed(claims, path)
            assert fast.allowed <= slow.allowed, (name, claims, fast, slow)
        if name == "deny-all":
            assert allowed == 0
        else:
            assert allowed > 0, name
        assert [c.on_vm for c in _compiled(vm)] == [True], name


async def test_vm_answers_without_the_interpreter(store: Storage) -> None:
    vm, _ = _engines(store)
    await vm.rvps.register(rv_message(TDX_RVS))
    first = await vm.appraise("tdx", tdx_claims())
    (compiled,) = _compiled(vm)
    spy = _CountingEngine(compiled._box.engine)
    compiled._box.engine = spy
    try:
        again = await vm.appraise("tdx", tdx_claims(), explain=False)
        assert again.trust_vector == first.trust_vector and again.status == "affirming"
        assert spy.evaluations == 0
    finally:
        compiled._box.engine = spy._engine


async def test_which_policies_run_on_the_vm(store: Storage) -> None:
    custom = 'package policy\nimport rego.v1\ndefault allow := false\nallow if input.submods.cpu0["ear.status"] == "affirming"\n'
    dynamic = (
        "package policy\nimport rego.v1\ndefault hardware := 97\n"
        'trust_claims := {"hardware": hardware}\nhardware := 2 if {\n'
        '\tsome name in ["mr_td"]\n\tinput.tdx.quote.body.mr_td in query_reference_value(name)\n}\n'
    )
    by_data = (
        "package policy\nimport rego.v1\ndefault hardware := 97\n"
        'trust_claims := {"hardware": hardware}\n'
        "hardware := 2 if input.tdx.quote.body.mr_td in data.reference.mr_td\n"
    )
    uses_print = (
        'package policy\nimport rego.v1\ndefault allow := false\nallow if { print("x"); input.a == 1 }\n'
    )
    affirming = builtin_policy_text(PolicyKind.RESOURCE, "affirming")
    default = builtin_policy_text(PolicyKind.RESOURCE, "default")
    cases: list[tuple[PolicyVm, PolicyKind, str, bool, str]] = [
        (PolicyVm.BUILTIN, PolicyKind.RESOURCE, affirming, True, ""),
        (PolicyVm.BUILTIN, PolicyKind.RESOURCE, custom, False, "not a built-in policy"),
        (PolicyVm.ALL, PolicyKind.RESOURCE, custom, True, ""),
        (PolicyVm.OFF, PolicyKind.RESOURCE, default, False, "off"),
        (PolicyVm.ALL, PolicyKind.ATTESTATION, dynamic, False, "computed names"),
        (PolicyVm.ALL, PolicyKind.ATTESTATION, by_data, False, "data.reference"),
        (PolicyVm.ALL, PolicyKind.RESOURCE, uses_print, False, "the VM cannot compile it"),
    ]
    for mode, kind, text, expect_vm, why in cases:
        engine = PolicyEngine(store.policies, store.reference_values, vm=mode)
        policy_id = "resource-policy" if kind is PolicyKind.RESOURCE else "mine"
        await store.policies.set(kind, policy_id, text)
        if kind is PolicyKind.RESOURCE:
            await engine.resource_allowed(_token(("cpu0", "affirming", {})), ResourcePath("a", "b", "c"))
        else:
            await engine.appraise("tdx", tdx_claims(), policy_ids=["mine"])
        (compiled,) = _compiled(engine)
        assert compiled.on_vm is expect_vm, (mode, text)
        assert why in (compiled.vm_refusal or ""), compiled.vm_refusal


async def test_undefined_on_the_vm_is_answered_by_the_interpreter(store: Storage) -> None:
    # Conflicting values: the VM makes the rule undefined, the interpreter names the conflict.
    conflict = (
        "package policy\nimport rego.v1\nhardware := 2 if input.tdx\nhardware := 3 if input.tdx\n"
        'trust_claims := {"hardware": hardware}\n'
    )
    await store.policies.set(PolicyKind.ATTESTATION, "conflict", conflict)
    engine = PolicyEngine(store.policies, store.reference_values, vm=PolicyVm.ALL)
    with pytest.raises(PolicyEvaluationError, match="conflict"):
        await engine.appraise("tdx", tdx_claims(), policy_ids=["conflict"])
    (compiled,) = _compiled(engine)
    assert compiled.on_vm  # the policy stays on the VM; only that answer came from the interpreter
    # A resource policy without a default: undefined → the interpreter's denial and reason.
    await store.policies.set(
        PolicyKind.RESOURCE, "resource-policy", "package policy\nimport rego.v1\nallow if input.never\n"
    )
    decision = await engine.resource_allowed(_token(("cpu0", "affirming", {})), ResourcePath("a", "b", "c"))
    assert not decision.allowed and "does not define data.policy.allow" in decision.reason


async def test_built_in_policy_compiled_line_names_the_evaluator(
    store: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    engine = PolicyEngine(store.policies, store.reference_values)
    with caplog.at_level(logging.INFO, logger="teegate.kbs.policy"):
        await engine.appraise("tdx", tdx_claims())
    assert any("default_cpu" in r.getMessage() and "regorus's VM" in r.getMessage() for r in caplog.records)


async def test_input_the_vm_cannot_take_is_answered_by_the_interpreter(
    store: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """Init data nested deeper than the VM's JSON reader goes (a guest can send that), where the
    policy reads it (the Kata agent policy's containers): this one evaluation falls to the
    interpreter, and the policy stays on the VM for the next."""
    vm, interp = _engines(store)
    await vm.rvps.register(rv_message(TDX_RVS))
    nested: dict[str, Any] = {}
    for _ in range(200):  # beyond the VM's JSON reader (128 levels), within orjson's (254)
        nested = {"n": nested}
    with caplog.at_level(logging.WARNING, logger="teegate.kbs.policy"):
        for _ in range(2):
            deep = {"agent_policy_claims": {"containers": [nested]}}
            fast = await _appraise(vm, "tdx", tdx_claims(), deep, "default")
            slow = await _appraise(interp, "tdx", tdx_claims(), deep, "default")
            assert fast == slow
    assert sum("could not answer" in r.getMessage() for r in caplog.records) == 1
    (compiled,) = _compiled(vm)
    assert compiled.on_vm
    again = await _appraise(vm, "tdx", tdx_claims(), None, "default")
    assert again == await _appraise(interp, "tdx", tdx_claims(), None, "default")
    assert again[0] == "ok" and again[1]["status"] == "affirming"

"""Built-in policies see only what they read of their input (_INPUT_READS): resource policies of
the token claims, attestation policies of the annotated evidence. Their answers (verdict, trust
vector, extensions, reasons, errors) over that projection equal those over the whole input, on
regorus's VM and on its interpreter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.kbs.policy import (
    _INPUT_READS,
    ATTESTATION_BUILTINS,
    RESOURCE_BUILTINS,
    PolicyEvaluationError,
    PolicyKind,
    PolicyVm,
    _Compiled,
    builtin_policy_text,
    project_input,
)

from .conftest import MR_TD, RTMR1, RTMR2, XFAM, tdx_claims, uefi_event_logs

_RESOURCE_READS = _INPUT_READS[PolicyKind.RESOURCE]

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


def _builtins(kind: PolicyKind) -> dict[tuple[str, PolicyVm], _Compiled]:
    """Each built-in policy of ``kind`` on the VM and on the interpreter."""
    names = RESOURCE_BUILTINS if kind is PolicyKind.RESOURCE else ATTESTATION_BUILTINS
    return {
        (name, mode): _Compiled(kind, name, None, builtin_policy_text(kind, name), mode)
        for name in names
        for mode in (PolicyVm.BUILTIN, PolicyVm.OFF)
    }


@pytest.fixture(scope="module")
def compiled() -> dict[tuple[str, PolicyVm], _Compiled]:
    return _builtins(PolicyKind.RESOURCE)


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


def test_every_builtin_policy_has_its_reads_bound_to_its_text(
    compiled: dict[tuple[str, PolicyVm], _Compiled],
    attestation: dict[tuple[str, PolicyVm], _Compiled],
) -> None:
    assert set(_RESOURCE_READS) == set(RESOURCE_BUILTINS)
    assert set(_INPUT_READS[PolicyKind.ATTESTATION]) == set(ATTESTATION_BUILTINS)
    for (name, _), policy in compiled.items():
        assert policy.input_reads is _RESOURCE_READS[name]
    for (name, _), policy in attestation.items():
        assert policy.input_reads is _INPUT_READS[PolicyKind.ATTESTATION][name]
    # The same policy with one more line is not the built-in: it gets the whole input.
    text = builtin_policy_text(PolicyKind.RESOURCE, "trustee-default") + "\n# edited\n"
    assert _Compiled(PolicyKind.RESOURCE, "resource-policy", 3, text).input_reads is None
    text = builtin_policy_text(PolicyKind.ATTESTATION, "default_cpu") + "\n# edited\n"
    assert _Compiled(PolicyKind.ATTESTATION, "default_cpu", 2, text).input_reads is None
    # A stored copy of a built-in (same text, any id or version) reads what the built-in reads.
    text = builtin_policy_text(PolicyKind.RESOURCE, "allow-all")
    assert _Compiled(PolicyKind.RESOURCE, "resource-policy", 7, text).input_reads == {}


def test_an_edited_builtin_file_gets_the_whole_input_until_its_tree_is_reviewed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trees were written for the built-in texts as they are: if a .rego file changes (a new
    field read), its projection stops until the tree and _READS_WRITTEN_FOR are updated."""
    from teegate.kbs import policy as policy_module

    original = policy_module.builtin_policy_text

    def edited(kind: PolicyKind, name: str) -> str:
        text = original(kind, name)
        return text + "\n# reads a new field\n" if name == "default_cpu" else text

    monkeypatch.setattr(policy_module, "builtin_policy_text", edited)
    policy_module._input_reads.cache_clear()
    try:
        # (interpreter only: the VM's built-in check keeps its own cache of digests)
        text = edited(PolicyKind.ATTESTATION, "default_cpu")
        policy = _Compiled(PolicyKind.ATTESTATION, "default_cpu", None, text, PolicyVm.OFF)
        assert policy.input_reads is None
        untouched = edited(PolicyKind.ATTESTATION, "strict_cpu")
        policy = _Compiled(PolicyKind.ATTESTATION, "strict_cpu", None, untouched, PolicyVm.OFF)
        assert policy.input_reads is not None
    finally:
        policy_module._input_reads.cache_clear()


def test_projection_keeps_what_is_read_and_shapes_it_does_not_expect() -> None:
    reads = _RESOURCE_READS["dev"]
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
    assert project_input(claims, _RESOURCE_READS["allow-all"]) == {}


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


# --- attestation policies ----------------------------------------------------------------------

_INTEL = "939a7233f79c4ca9940a0db3957f0607"
_HEX = st.sampled_from([MR_TD, RTMR1, RTMR2, "c3" * 48])
_KERNEL, _CMDLINE = "d1" * 48, "d2" * 48
#: What reference values may hold: the pools generated claims draw from, and numbers.
_RV_POOL = st.sampled_from([MR_TD, RTMR1, RTMR2, XFAM, _KERNEL, _CMDLINE, "e1" * 32, "1", "2", 0, 1, 2])
#: Reference values under which each check can pass: lists hold the pool (but not "e2" * 32,
#: so an SGX enclave is also judged by its signer and product), scalars the matching value.
_RV_LIST = [MR_TD, RTMR1, RTMR2, XFAM, "e1" * 32, "1", 0, 1]
_MATCHING_RVS = {
    "tdvfkernel": _KERNEL,
    "tdvfkernelparams": _CMDLINE,
    "major_version": 1,
    "minimum_minor_version": 1,
}
_TCB = st.sampled_from(["UpToDate", "OutOfDate", "SWHardeningNeeded", "TDRelaunchAdvised", "Revoked", 3])


def _evidence(odd: bool) -> st.SearchStrategy[Any]:
    """Annotated evidence as the KBS builds it (Trustee's transform_claims) with varied values;
    with ``odd``, any level may hold another JSON value."""

    def shaped(shape: st.SearchStrategy[Any], *other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(shape, _SCALAR, st.lists(_SCALAR, max_size=2), *other) if odd else shape

    event = shaped(
        st.one_of(
            st.sampled_from(uefi_event_logs(_KERNEL, _CMDLINE)),  # the kernel's and its command line's
            st.fixed_dictionaries(
                {
                    "type_name": st.sampled_from(
                        ["EV_EFI_BOOT_SERVICES_APPLICATION", "EV_EVENT_TAG", "EV_SEPARATOR"]
                    ),
                    "details": shaped(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "device_paths": st.lists(
                                    st.sampled_from(["File(kernel)", "File(initrd)"]), max_size=2
                                ),
                                "string": st.sampled_from(["LOADED_IMAGE::LoadOptions", "other"]),
                            },
                        )
                    ),
                    "digests": shaped(
                        st.lists(
                            st.fixed_dictionaries({"digest": st.sampled_from([_KERNEL, _CMDLINE, "00"])}),
                            max_size=2,
                        )
                    ),
                }
            ),
        )
    )
    tdx = shaped(
        st.fixed_dictionaries(
            {
                "quote": shaped(
                    st.fixed_dictionaries(
                        {
                            "header": shaped(
                                st.fixed_dictionaries(
                                    {
                                        "version": st.just("0400"),
                                        "tee_type": st.sampled_from(["81000000", "00000000"]),
                                        "vendor_id": st.sampled_from([_INTEL, "00" * 16]),
                                    }
                                )
                            ),
                            "body": shaped(
                                st.fixed_dictionaries(
                                    {
                                        "mr_td": _HEX,
                                        "rtmr_0": _HEX,
                                        "rtmr_1": _HEX,
                                        "rtmr_2": _HEX,
                                        "xfam": st.sampled_from([XFAM, "00" * 8]),
                                        "mr_seam": _HEX,
                                    }
                                )
                            ),
                        }
                    )
                ),
                "collateral_expiration_status": st.sampled_from(["0", "1", 0]),
                "tcb_status": _TCB,
                "td_attributes": shaped(st.fixed_dictionaries({"debug": st.one_of(st.booleans(), _SCALAR)})),
            },
            optional={
                "uefi_event_logs": shaped(st.lists(event, max_size=3)),
                "advisory_ids": st.lists(st.sampled_from(["INTEL-SA-00837"]), max_size=1),
                "simulated": st.booleans(),
            },
        )
    )
    sgx = shaped(
        st.fixed_dictionaries(
            {
                "header": shaped(st.fixed_dictionaries({"vendor_id": st.sampled_from([_INTEL, "00" * 16])})),
                "body": shaped(
                    st.fixed_dictionaries(
                        {
                            "attributes.flags": st.sampled_from(
                                ["0700000000000000", "0500000000000000", 7, ""]
                            ),
                            "mr_enclave": st.sampled_from(["e1" * 32, "e2" * 32]),
                            "mr_signer": st.sampled_from(["e1" * 32, "e3" * 32]),
                            "isv_prod_id": st.sampled_from([0, 1, "1"]),
                            "isv_svn": st.integers(0, 2),
                        }
                    )
                ),
                "collateral_expiration_status": st.sampled_from(["0", "1"]),
                "tcb_status": _TCB,
            }
        )
    )
    sample = shaped(
        st.fixed_dictionaries(
            {
                "launch_digest": st.sampled_from(["e1" * 32, "ab"]),
                "svn": st.sampled_from(["1", "2", 1]),
                "platform_version": shaped(
                    st.fixed_dictionaries(
                        {"major": st.sampled_from([0, 1, 2]), "minor": st.sampled_from([0, 1, 2])}
                    )
                ),
                "debug": st.one_of(st.booleans(), _SCALAR),
            }
        )
    )
    container = st.fixed_dictionaries(
        {
            "OCI": st.fixed_dictionaries(
                {
                    "Annotations": st.fixed_dictionaries(
                        {"io.kubernetes.cri.image-name": st.sampled_from(["pause", "nginx"])}
                    ),
                    "Process": st.fixed_dictionaries(
                        {"User": st.fixed_dictionaries({"UID": st.sampled_from([0, 1000])})}
                    ),
                }
            )
        }
    )
    init_data_claims = st.one_of(
        st.none(),
        shaped(
            st.fixed_dictionaries(
                {
                    "agent_policy_claims": shaped(
                        st.fixed_dictionaries({"containers": st.lists(container, max_size=2)})
                    )
                }
            )
        ),
    )
    return st.tuples(
        st.sampled_from(["tdx", "sgx", "sample"]),
        tdx,
        sgx,
        sample,
        st.fixed_dictionaries(
            {"report_data": st.just("00" * 64), "runtime_data_claims": st.just({"nonce": "n"})},
            optional={"init_data": st.just("00" * 48), "init_data_claims": init_data_claims, "snp": _SCALAR},
        ),
    ).map(lambda t: {**t[4], t[0]: {"tdx": t[1], "sgx": t[2], "sample": t[3]}[t[0]]})


@pytest.fixture(scope="module")
def attestation() -> dict[tuple[str, PolicyVm], _Compiled]:
    return _builtins(PolicyKind.ATTESTATION)


def _appraisal(policy: _Compiled, value: Any, values: dict[str, Any]) -> dict[str, Any]:
    rules = ["data.policy.trust_claims", "data.policy.extensions", "data.policy.reasons"]
    try:
        results, asked = policy.evaluate(value, {}, values, rules)
    except PolicyEvaluationError as exc:
        return {"error": str(exc)}
    assert asked <= set(values)
    reasons = results.get("data.policy.reasons")
    if reasons is not None:
        results["data.policy.reasons"] = sorted(reasons)
    return results


@pytest.mark.parametrize("vm", [PolicyVm.BUILTIN, PolicyVm.OFF], ids=["vm", "interpreter"])
@pytest.mark.parametrize("name", sorted(ATTESTATION_BUILTINS))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(evidence=st.one_of(_evidence(odd=False), _evidence(odd=True)), data=st.data())
def test_attestation_answers_equal_over_projection_and_whole_evidence(
    attestation: dict[tuple[str, PolicyVm], _Compiled],
    name: str,
    vm: PolicyVm,
    evidence: Any,
    data: st.DataObject,
) -> None:
    policy = attestation[(name, vm)]
    if data.draw(st.booleans(), label="reference values that match"):
        # Every reference-value check can pass: the claims alone decide (deep branches reached).
        values = {rv: _MATCHING_RVS.get(rv, _RV_LIST) for rv in policy.rv_names}
    else:
        values = {
            rv: data.draw(st.one_of(st.none(), st.lists(_RV_POOL, max_size=3), _RV_POOL), label=rv)
            for rv in sorted(policy.rv_names)
        }
    reads = policy.input_reads
    assert reads is not None
    assert _appraisal(policy, project_input(evidence, reads), values) == _appraisal(policy, evidence, values)


def test_attestation_projection_of_real_claims(attestation: dict[tuple[str, PolicyVm], _Compiled]) -> None:
    values = {
        "mr_td": [MR_TD],
        "rtmr_1": [RTMR1],
        "rtmr_2": [RTMR2],
        "xfam": [XFAM],
        "tdvfkernel": _KERNEL,
        "tdvfkernelparams": _CMDLINE,
    }
    values.update({"mr_signer": ["e1" * 32], "isv_prod_id": [1]})
    sgx_body = {"attributes.flags": "0500000000000000", "mr_enclave": "e2" * 32, "mr_signer": "e1" * 32}
    sgx = {
        "header": {"vendor_id": _INTEL},
        "body": {**sgx_body, "isv_prod_id": 1, "isv_svn": 2},
        "collateral_expiration_status": "0",
        "tcb_status": "SWHardeningNeeded",
    }
    for tee, claims in (
        ("tdx", tdx_claims()),
        ("tdx", tdx_claims(debug=True)),
        ("tdx", tdx_claims(tcb="OutOfDate")),
        ("tdx", tdx_claims(uefi_event_logs=uefi_event_logs(_KERNEL, _CMDLINE))),
        ("sgx", sgx),
    ):
        evidence = {tee: claims, "report_data": "00" * 64, "runtime_data_claims": {"nonce": "n"}}
        for policy in attestation.values():
            assert policy.input_reads is not None
            projected = project_input(evidence, policy.input_reads)
            assert "report_data" not in projected and "rtmr_0" not in str(projected)
            assert "isv_svn" not in str(projected)
            known = {**dict.fromkeys(policy.rv_names), **values}
            full = _appraisal(policy, evidence, known)
            assert "error" not in full and full["data.policy.trust_claims"]
            assert _appraisal(policy, projected, known) == full

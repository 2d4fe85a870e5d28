"""Attestation policies with real Rego (regorus): default_cpu, strict_cpu, custom, errors."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.kbs.policy import (
    PolicyEngine,
    PolicyEvaluationError,
    PolicySyntaxError,
    builtin_policy_text,
    status_from_trust_vector,
    trust_tier,
)
from teegate.kbs.storage import PolicyKind, Storage
from tests.unit.kbs_policy.conftest import MR_TD, TDX_RVS, rv_message, sample_claims, tdx_claims

pytestmark = pytest.mark.timeout(30)


def test_tiers_and_status() -> None:
    assert [trust_tier(v) for v in (0, 1, -1, 2, 31, -32, 32, 95, -33, 96, 127, -97)] == [
        "none", "none", "none", "affirming", "affirming", "affirming",
        "warning", "warning", "warning", "contraindicated", "contraindicated", "contraindicated",
    ]  # fmt: skip
    assert status_from_trust_vector({"a": 0, "b": 0}) == "none"
    assert status_from_trust_vector({"a": 2, "b": 0}) == "affirming"
    assert status_from_trust_vector({"a": 2, "b": 33}) == "warning"
    assert status_from_trust_vector({"a": 33, "b": 97}) == "contraindicated"


async def test_tdx_affirming_with_reference_values(engine: PolicyEngine) -> None:
    await engine.rvps.register(rv_message(TDX_RVS))
    a = await engine.appraise("tdx", tdx_claims(), runtime_data_claims={"tee-pubkey": {"kty": "EC"}})
    assert a.status == "affirming"
    assert (a.policy_id, a.evaluated_policy_id, a.tee_class) == ("default", "default_cpu", "cpu")
    assert a.trust_vector == {
        "instance_identity": 0, "configuration": 2, "executables": 4, "file_system": 0,
        "hardware": 2, "runtime_opaque": 0, "storage_opaque": 0, "sourced_data": 0,
    }  # fmt: skip
    # Trustee's transform_claims layout, and the EAR submodule built from it.
    assert a.annotated_evidence["report_data"] == "00" * 64
    assert a.annotated_evidence["runtime_data_claims"] == {"tee-pubkey": {"kty": "EC"}}
    assert "report_data" not in a.annotated_evidence["tdx"]
    submod = a.ear_submod()
    assert submod["ear.status"] == "affirming" and submod["ear.appraisal-policy-id"] == "default"
    assert submod["ear.trustworthiness-vector"]["file-system"] == 0
    assert submod["ear.trustee.identifiers"] == {"validated": {}}
    assert a.explanation["reference_values"]["mr_td"] is True
    assert a.explanation["reasons"] == []


async def test_tdx_without_reference_values_is_contraindicated(engine: PolicyEngine) -> None:
    a = await engine.appraise("tdx", tdx_claims())
    assert a.status == "contraindicated"
    assert (a.trust_vector["hardware"], a.trust_vector["executables"], a.trust_vector["configuration"]) == (
        97,
        33,
        36,
    )
    assert 'tdx mr_td is not among reference values "mr_td"' in a.explanation["reasons"]
    assert any("hardware=97 (contraindicated" in line for line in a.explanation["trust_vector"])


async def test_debug_td_refused_by_default_policy(engine: PolicyEngine) -> None:
    await engine.rvps.register(rv_message(TDX_RVS))
    a = await engine.appraise("tdx", tdx_claims(debug=True))
    assert a.status == "contraindicated" and a.trust_vector["configuration"] == 96
    assert "TD is in debug mode (td_attributes.debug)" in a.explanation["reasons"]


async def test_out_of_date_tcb_warning_by_default_refused_by_strict(engine: PolicyEngine) -> None:
    await engine.rvps.register(rv_message(TDX_RVS))
    default = await engine.appraise("tdx", tdx_claims(tcb="OutOfDate"))
    assert default.status == "warning" and default.trust_vector["hardware"] == 32
    assert "TCB status is OutOfDate" in default.explanation["reasons"]
    strict = await engine.appraise("tdx", tdx_claims(tcb="OutOfDate"), policy_ids=["strict"])
    assert strict.evaluated_policy_id == "strict_cpu" and strict.policy_id == "strict"
    assert strict.status == "contraindicated" and strict.trust_vector["hardware"] == 96
    # Only the first id counts (as Trustee); SWHardeningNeeded stays a warning under strict.
    hardening = await engine.appraise(
        "tdx", tdx_claims(tcb="SWHardeningNeeded"), policy_ids=["strict", "default"]
    )
    assert hardening.status == "warning" and hardening.trust_vector["hardware"] == 32
    assert (await engine.appraise("tdx", tdx_claims(), policy_ids=["strict"])).status == "affirming"


async def test_sample_evidence(engine: PolicyEngine) -> None:
    a = await engine.appraise("sample", sample_claims())
    assert a.status == "contraindicated"  # Trustee's default: no reference values, not affirming
    assert a.trust_vector["configuration"] == 2
    await engine.rvps.register(
        rv_message({"svn": ["1"], "major_version": 1, "minimum_minor_version": 4, "launch_digest": ["abcde"]})
    )
    engine.rvps.invalidate()
    b = await engine.appraise("sample", sample_claims())
    assert b.status == "affirming"
    assert (b.trust_vector["hardware"], b.trust_vector["executables"]) == (2, 3)


async def test_sgx_debug_enclave(engine: PolicyEngine) -> None:
    claims: dict[str, Any] = {
        "header": {"vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
        "body": {"mr_enclave": "cc" * 32, "mr_signer": "dd" * 32, "attributes.flags": "0700000000000000"},
        "tcb_status": "UpToDate",
        "collateral_expiration_status": "0",
    }
    a = await engine.appraise("sgx", claims)
    assert a.trust_vector["configuration"] == 96 and a.status == "contraindicated"
    assert "enclave is in debug mode (ATTRIBUTES.DEBUG)" in a.explanation["reasons"]
    claims["body"]["attributes.flags"] = "0500000000000000"
    await engine.rvps.register(rv_message({"mr_enclave": ["cc" * 32]}))
    b = await engine.appraise("sgx", claims)
    assert b.status == "affirming" and b.trust_vector["configuration"] == 2


async def test_custom_policy_replaces_builtin_and_cache_follows_versions(
    engine: PolicyEngine, storage: Storage
) -> None:
    mine = 'package policy\nimport rego.v1\n\ntrust_claims := {"hardware": 2, "configuration": 3}\n'
    assert await engine.set_attestation_policy("default_cpu", mine) == 1
    a = await engine.appraise("tdx", tdx_claims())
    assert (a.status, a.policy_version, a.trust_vector["configuration"]) == ("affirming", 1, 3)
    compiled = engine.compilations
    await engine.appraise("tdx", tdx_claims())
    assert engine.compilations == compiled  # compiled once per version
    await engine.set_attestation_policy(
        "default_cpu", mine.replace('"configuration": 3', '"configuration": 96')
    )
    b = await engine.appraise("tdx", tdx_claims())
    assert (b.status, b.policy_version) == ("contraindicated", 2)
    # A second replica over the same store reads the current version on its first request.
    other = PolicyEngine(storage.policies, storage.reference_values)
    assert (await other.appraise("tdx", tdx_claims())).policy_version == 2
    # Deleting the stored policy (behind the engine's back) falls back to the built-in one once
    # the engine reads the store again (the version is never reused).
    await storage.policies.delete(PolicyKind.ATTESTATION, "default_cpu")
    engine.forget_versions()
    c = await engine.appraise("tdx", tdx_claims())
    assert c.policy_version is None and c.explanation["policy"] == "default_cpu"
    await engine.set_attestation_policy("default_cpu", mine)
    assert (await engine.appraise("tdx", tdx_claims())).policy_version == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("package policy\ntrust_claims {", "does not compile"),
        ("package other\ntrust_claims := {}\n", "package 'policy'"),
        ("package policy\nallow := true\n", "trust_claims"),
        ('package policy\nimport rego.v1\ntrust_claims := {"hardware": nope(1)}\n', "nope"),
    ],
)
async def test_bad_attestation_policy_refused_when_set(engine: PolicyEngine, text: str, message: str) -> None:
    await engine.set_attestation_policy(
        "default_cpu", builtin_policy_text(PolicyKind.ATTESTATION, "strict_cpu")
    )
    with pytest.raises(PolicySyntaxError, match=message) as info:
        await engine.set_attestation_policy("default_cpu", text)
    assert "Stack backtrace" not in str(info.value)
    assert (await engine.appraise("tdx", tdx_claims())).policy_version == 1  # old policy kept


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ('{"hardware": 2, "bogus": 1}', "bogus"),
        ('{"hardware": 300}', "-128..127"),
        ('{"hardware": true}', "-128..127"),
        ("{}", "at least one"),
        ('"x"', "not an object"),
    ],
)
async def test_unusable_trust_claims_give_no_appraisal(
    engine: PolicyEngine, claims: str, message: str
) -> None:
    await engine.set_attestation_policy("default_cpu", f"package policy\ntrust_claims := {claims}\n")
    with pytest.raises(PolicyEvaluationError, match=message):
        await engine.appraise("tdx", tdx_claims())


async def test_undefined_trust_claims_and_runtime_error(engine: PolicyEngine) -> None:
    await engine.set_attestation_policy(
        "default_cpu", 'package policy\nimport rego.v1\ntrust_claims := {"hardware": 2} if input.sgx\n'
    )
    with pytest.raises(PolicyEvaluationError, match="no trust_claims"):
        await engine.appraise("tdx", tdx_claims())
    await engine.set_attestation_policy(
        "default_cpu",
        'package policy\nimport rego.v1\ntrust_claims := {"hardware": 1 / count([])} if input.tdx\n',
    )
    with pytest.raises(PolicyEvaluationError, match="divide by zero"):
        await engine.appraise("tdx", tdx_claims())


async def test_unknown_tee_and_missing_policy(engine: PolicyEngine) -> None:
    from teegate.errors import EvidenceError

    with pytest.raises(EvidenceError, match="unknown TEE"):
        await engine.appraise("quantum", {})
    with pytest.raises(PolicyEvaluationError, match="no attestation policy 'nope_cpu'"):
        await engine.appraise("tdx", tdx_claims(), policy_ids=["nope"])


async def test_dynamic_reference_value_names_and_legacy_data_reference(engine: PolicyEngine) -> None:
    await engine.rvps.register(rv_message({"mr_td": [MR_TD], "prefix": "mr_"}))
    dynamic = """package policy
import rego.v1

default hardware := 97
hardware := 2 if input.tdx.quote.body.mr_td in query_reference_value(concat("", [query_reference_value("prefix"), "td"]))
trust_claims := {"hardware": hardware}
"""
    await engine.set_attestation_policy("dyn_cpu", dynamic)
    a = await engine.appraise("tdx", tdx_claims(), policy_ids=["dyn"])
    assert a.status == "affirming" and a.explanation["reference_values"] == {"mr_td": True, "prefix": True}
    legacy = """package policy
import rego.v1

default hardware := 97
hardware := 2 if input.tdx.quote.body.mr_td in data.reference.mr_td
trust_claims := {"hardware": hardware}
"""
    await engine.set_attestation_policy("legacy_cpu", legacy)
    assert (await engine.appraise("tdx", tdx_claims(), policy_ids=["legacy"])).status == "affirming"
    assert (
        await engine.appraise("tdx", tdx_claims(mr_td="00" * 48), policy_ids=["legacy"])
    ).status == "contraindicated"


async def test_init_data_claims_feed_identifiers_extension(engine: PolicyEngine) -> None:
    init = {
        "agent_policy_claims": {
            "containers": [
                {
                    "OCI": {
                        "Annotations": {"io.kubernetes.cri.image-name": "nginx"},
                        "Process": {"User": {"UID": 0}},
                    }
                }
            ]
        }
    }
    claims = tdx_claims(init_data="ff" * 48)
    a = await engine.appraise("tdx", claims, init_data_claims=init)
    assert a.annotated_evidence["init_data"] == "ff" * 48 and a.annotated_evidence["init_data_claims"] == init
    assert a.extensions == [
        {
            "name": "ear.trustee.identifiers",
            "key": -18,
            "value": {"validated": {"container_images": ["nginx"], "container_uids": [0]}},
        }
    ]


async def test_explain_false_skips_only_the_reasons(engine: PolicyEngine) -> None:
    explained = await engine.appraise("tdx", tdx_claims(debug=True))
    quick = await engine.appraise("tdx", tdx_claims(debug=True), explain=False)
    assert "TD is in debug mode (td_attributes.debug)" in explained.explanation["reasons"]
    assert quick.explanation["reasons"] is None and quick.explanation["trust_vector"] is None
    assert quick.explanation["reference_values"] is None and quick.explanation["status"] == explained.status
    assert (quick.status, quick.trust_vector, quick.ear_submod()) == (
        explained.status,
        explained.trust_vector,
        explained.ear_submod(),
    )

"""Resource policies with real Rego: built-ins, uploads, broken policies (always deny), cache."""

from __future__ import annotations

from typing import Any

import pytest

from teegate.kbs.admin_client import SAMPLE_RESOURCE_POLICIES
from teegate.kbs.policy import RESOURCE_BUILTINS, PolicyEngine, PolicySyntaxError, builtin_policy_text
from teegate.kbs.storage import PolicyKind, ResourcePath, Storage
from teegate.kbs.storage.base import RESOURCE_POLICY_ID

pytestmark = pytest.mark.timeout(30)

PATH = ResourcePath("default", "disk", "passphrase")


def token(*submods: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """EAR token claims with submodules (name, status, annotated evidence)."""
    return {
        "eat_profile": "tag:github.com,2024:confidential-containers/Trustee",
        "submods": {
            name: {
                "ear.status": status,
                "ear.trustworthiness-vector": {
                    "hardware": 2 if status == "affirming" else 97,
                    "configuration": 2,
                },
                "ear.appraisal-policy-id": "default",
                "ear.veraison.annotated-evidence": evidence,
            }
            for name, status, evidence in submods
        },
    }


TDX = {"tdx": {"quote": {"body": {"mr_td": "aa"}}}, "runtime_data_claims": {"tee-pubkey": {"kty": "EC"}}}
SIM = {"tdx": {"simulated": True}, "runtime_data_claims": {"tee-pubkey": {"kty": "EC"}}}
SAMPLE = {"sample": {"svn": "1"}, "runtime_data_claims": {"tee-pubkey": {"kty": "EC"}}}
SAMPLE_UNBOUND = {"sample": {"svn": "1"}}


async def _use(engine: PolicyEngine, name: str) -> None:
    await engine.set_resource_policy(builtin_policy_text(PolicyKind.RESOURCE, name))


async def test_default_requires_every_submodule_affirming(engine: PolicyEngine) -> None:
    ok = await engine.resource_allowed(token(("cpu0", "affirming", TDX)), PATH)
    assert ok.allowed and ok.policy_id == "builtin:default" and ok.policy_version is None
    warn = await engine.resource_allowed(token(("cpu0", "affirming", TDX), ("gpu0", "warning", {})), PATH)
    assert not warn.allowed
    assert 'submodule gpu0 has ear.status "warning", not "affirming"' in warn.reasons
    assert "data.policy.allow is false" in warn.reason
    empty = await engine.resource_allowed({"submods": {}}, PATH)
    assert not empty.allowed and "no EAR submodules" in empty.reason
    for garbage in (
        {"submods": "nope"},
        {"submods": {"cpu0": {"ear.status": b"affirming"}}},
        {"submods": [1]},
    ):
        assert not (await engine.resource_allowed(garbage, PATH)).allowed


@pytest.mark.parametrize(
    ("name", "affirming", "contraindicated", "sample"),
    [
        ("allow-all", True, True, True),
        ("deny-all", False, False, False),
        ("affirming", True, False, False),
        ("trustee-default", True, True, False),
        ("dev", True, False, True),
        ("default", True, False, False),
    ],
)
async def test_builtin_policies(
    engine: PolicyEngine, name: str, affirming: bool, contraindicated: bool, sample: bool
) -> None:
    await _use(engine, name)
    decisions = [
        await engine.resource_allowed(token(("cpu0", "affirming", TDX)), PATH),
        await engine.resource_allowed(token(("cpu0", "contraindicated", TDX)), PATH),
        await engine.resource_allowed(token(("cpu0", "contraindicated", SAMPLE)), PATH),
    ]
    assert [d.allowed for d in decisions] == [affirming, contraindicated, sample]
    assert all(d.policy_id == RESOURCE_POLICY_ID and d.policy_version == 1 for d in decisions)
    assert set(RESOURCE_BUILTINS) == {
        "default",
        "trustee-default",
        "allow-all",
        "deny-all",
        "affirming",
        "dev",
    }


async def test_cli_sample_policies_mean_the_same_as_builtins(engine: PolicyEngine) -> None:
    """admin_client's --allow-all/--deny-all/--affirming texts agree with the server's built-ins."""
    cases = [token(("cpu0", "affirming", TDX)), token(("cpu0", "warning", TDX)), {"submods": {}}]
    for name, text in SAMPLE_RESOURCE_POLICIES.items():
        await engine.set_resource_policy(text)
        uploaded = [(await engine.resource_allowed(c, PATH)).allowed for c in cases]
        await _use(engine, name)
        assert uploaded == [(await engine.resource_allowed(c, PATH)).allowed for c in cases], name


async def test_dev_profile_policy(storage: Storage) -> None:
    dev = PolicyEngine(storage.policies, storage.reference_values, dev=True)
    assert (await dev.resource_allowed(token(("cpu0", "contraindicated", SAMPLE)), PATH)).allowed
    assert (await dev.resource_allowed(token(("cpu0", "contraindicated", SIM)), PATH)).allowed
    unbound = await dev.resource_allowed(token(("cpu0", "contraindicated", SAMPLE_UNBOUND)), PATH)
    assert not unbound.allowed and "neither affirming nor bound" in unbound.reason
    real = await dev.resource_allowed(token(("cpu0", "contraindicated", TDX)), PATH)
    assert not real.allowed and real.policy_id == "builtin:dev"
    # A stored policy wins over the development default.
    await dev.set_resource_policy(builtin_policy_text(PolicyKind.RESOURCE, "deny-all"))
    assert not (await dev.resource_allowed(token(("cpu0", "affirming", SAMPLE)), PATH)).allowed


async def test_resource_path_reaches_the_policy(engine: PolicyEngine) -> None:
    await engine.set_resource_policy(
        'package policy\nimport rego.v1\ndefault allow := false\nallow if data["resource-path"] == ["default", "disk", "passphrase"]\n'
    )
    assert (await engine.resource_allowed({}, PATH)).allowed
    assert not (await engine.resource_allowed({}, ResourcePath("default", "disk", "other"))).allowed


async def test_broken_policies_deny_with_reason(engine: PolicyEngine, storage: Storage) -> None:
    # Runtime error (compiles, fails when evaluated on a real token): denied, reason names it.
    await engine.set_resource_policy(
        "package policy\nimport rego.v1\nallow if { count(input.submods) > 0; 1 / count([]) == 1 }\n"
    )
    d = await engine.resource_allowed(token(("cpu0", "affirming", TDX)), PATH)
    assert not d.allowed and "resource policy error, denied" in d.reason and "divide by zero" in d.reason
    # Not a boolean.
    await engine.set_resource_policy('package policy\nallow := "yes"\n')
    d = await engine.resource_allowed(token(("cpu0", "affirming", TDX)), PATH)
    assert not d.allowed and 'data.policy.allow is "yes", not true' in d.reason
    # A policy that does not compile but got into the store anyway (older version, direct DB edit).
    await storage.policies.set(PolicyKind.RESOURCE, RESOURCE_POLICY_ID, "package policy\nallow {")
    engine.forget_versions()  # it was stored behind the engine's back
    d = await engine.resource_allowed(token(("cpu0", "affirming", TDX)), PATH)
    assert not d.allowed and "does not compile" in d.reason and d.policy_version == 3


@pytest.mark.parametrize(
    "text",
    [
        "package policy\nallow {",
        "package x\nallow := true\n",
        "package policy\nx := 1\n",
        "package policy\nimport rego.v1\nallow if f(1)\n",
    ],
)
async def test_bad_resource_policy_refused_and_old_kept(engine: PolicyEngine, text: str) -> None:
    await _use(engine, "allow-all")
    with pytest.raises(PolicySyntaxError):
        await engine.set_resource_policy(text)
    d = await engine.resource_allowed(token(("cpu0", "warning", TDX)), PATH)
    assert d.allowed and d.policy_version == 1


async def test_cache_follows_updates_across_replicas(engine: PolicyEngine, storage: Storage) -> None:
    # Another replica (here a second engine over the same store) reads a policy's version at most
    # refresh_seconds (1 s by default) after it last did: a change applies there within 1 s.
    now = [100.0]
    replica = PolicyEngine(storage.policies, storage.reference_values, monotonic=lambda: now[0])

    def later() -> None:
        now[0] += 1.0

    t = token(("cpu0", "warning", TDX))
    assert not (await replica.resource_allowed(t, PATH)).allowed
    await _use(engine, "allow-all")
    assert not (await replica.resource_allowed(t, PATH)).allowed  # read less than 1 s ago
    later()
    assert (await replica.resource_allowed(t, PATH)).allowed
    compilations = replica.compilations
    for _ in range(5):
        later()
        assert (await replica.resource_allowed(t, PATH)).allowed
    assert replica.compilations == compilations
    await _use(engine, "deny-all")
    later()
    assert not (await replica.resource_allowed(t, PATH)).allowed
    await storage.policies.delete(PolicyKind.RESOURCE, RESOURCE_POLICY_ID)
    later()
    assert not (await replica.resource_allowed(t, PATH)).allowed  # back to the built-in default
    await _use(engine, "allow-all")  # version 4, never 2 again
    later()
    d = await replica.resource_allowed(t, PATH)
    assert d.allowed and d.policy_version == 4


async def test_policy_set_here_applies_to_the_next_request(storage: Storage) -> None:
    # The engine a policy is set through forgets the versions it read: no refresh wait here.
    frozen = PolicyEngine(storage.policies, storage.reference_values, monotonic=lambda: 5.0)
    t = token(("cpu0", "warning", TDX))
    assert not (await frozen.resource_allowed(t, PATH)).allowed
    await _use(frozen, "allow-all")
    assert (await frozen.resource_allowed(t, PATH)).allowed
    await _use(frozen, "deny-all")
    assert not (await frozen.resource_allowed(t, PATH)).allowed


async def test_refresh_zero_reads_the_store_on_every_request(storage: Storage) -> None:
    eager = PolicyEngine(storage.policies, storage.reference_values, refresh_seconds=0, monotonic=lambda: 5.0)
    writer = PolicyEngine(storage.policies, storage.reference_values)
    t = token(("cpu0", "warning", TDX))
    assert not (await eager.resource_allowed(t, PATH)).allowed
    await _use(writer, "allow-all")
    assert (await eager.resource_allowed(t, PATH)).allowed
    with pytest.raises(ValueError, match="refresh_seconds"):
        PolicyEngine(storage.policies, storage.reference_values, refresh_seconds=-1)

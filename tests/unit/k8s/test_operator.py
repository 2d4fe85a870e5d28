"""KbsConfig reconciliation: pure functions, then the kopf handler against an in-memory API.

kopf.testing.KopfRunner needs a live cluster (it talks to an API server); none is available here,
so the handler function is called directly, with kopf's own PermanentError semantics checked.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.k8s.operator import handlers
from teegate.k8s.operator.handlers import reconcile_kbsconfig
from teegate.k8s.operator.reconcile import (
    RESOURCES_ROOT,
    InvalidKbsConfig,
    KbsConfigSpec,
    conditions,
    desired_objects,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UID = "5b1f0c3e-0000-4000-8000-000000000001"
BASE = {"kbsConfigMapName": "kbs-config", "kbsAuthSecretName": "kbs-admin"}


class MemoryApi:
    """An in-memory object store with apply semantics (last apply wins)."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.applies = 0

    def apply(self, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        self.objects[(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])] = dict(obj)
        self.applies += 1

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        return (api_version, kind, namespace, name) in self.objects

    def get(self, kind: str, name: str) -> dict[str, Any]:
        (obj,) = [o for (_, k, _, n), o in self.objects.items() if k == kind and n == name]
        return obj


def test_parse_defaults_and_refusals() -> None:
    spec = KbsConfigSpec.parse(BASE)
    assert (spec.replicas, spec.service_type, spec.https, spec.secret_resources) == (
        1,
        "ClusterIP",
        False,
        (),
    )
    for bad, needle in [
        ({}, "kbsConfigMapName is required"),
        ({**BASE, "replicas": 3}, "kbsPostgresSecretName"),
        ({**BASE, "replicas": 0}, "replicas"),
        ({**BASE, "replicas": True}, "replicas"),
        ({**BASE, "kbsDeploymentType": "MicroservicesDeployment"}, "AllInOneDeployment"),
        ({**BASE, "kbsHttpsKeySecretName": "k"}, "go together"),
        ({**BASE, "kbsSecretResources": ["a", "a"]}, "twice"),
        ({**BASE, "kbsSecretResources": ["Bad_Name"]}, "not a Kubernetes object name"),
        ({**BASE, "kbsServiceType": "ExternalName"}, "kbsServiceType"),
        ({**BASE, "surprise": 1}, "unknown spec fields: surprise"),
    ]:
        with pytest.raises(InvalidKbsConfig, match=needle):
            KbsConfigSpec.parse(bad)


def test_desired_objects_scaled_https_with_resources() -> None:
    spec = KbsConfigSpec.parse(
        {
            **BASE,
            "replicas": 3,
            "kbsPostgresSecretName": "kbs-pg",
            "kbsHttpsKeySecretName": "tls-key",
            "kbsHttpsCertSecretName": "tls-cert",
            "kbsSecretResources": ["disk-keys", "api"],
            "kbsServiceType": "LoadBalancer",
        }
    )
    deployment, service = desired_objects("kbs", "ns1", UID, spec)
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["resource-0"]["mountPath"] == f"{RESOURCES_ROOT}/default/disk-keys"
    assert mounts["resource-1"]["mountPath"] == f"{RESOURCES_ROOT}/default/api"
    assert all(m["readOnly"] for n, m in mounts.items() if n != "data")
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["resource-0"]["secret"]["secretName"] == "disk-keys"
    assert vols["session-key"]["secret"]["secretName"] == "kbs-session-key"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["TEEGATE_KBS_POSTGRES_URL"]["valueFrom"]["secretKeyRef"] == {"name": "kbs-pg", "key": "url"}
    assert "--tls-cert" in pod["containers"][0]["args"]
    assert service["spec"]["sessionAffinity"] == "None" and service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"][0]["name"] == "https"
    for obj in (deployment, service):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "teegate.io/v1alpha1",
            "kind": "KbsConfig",
            "name": "kbs",
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_conditions_keep_transition_time() -> None:
    first = conditions(None, ready=True, reason="Reconciled", message="ok", now=NOW, generation=1)
    later = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    same = conditions(first, ready=True, reason="Reconciled", message="ok", now=later, generation=2)
    assert same[0]["lastTransitionTime"] == "2026-11-24T12:00:00Z" and same[0]["observedGeneration"] == 2
    flipped = conditions(same, ready=False, reason="InvalidSpec", message="x", now=later)
    assert flipped[0]["lastTransitionTime"] == "2026-11-24T13:00:00Z"


def test_handler_creates_objects_and_shared_keys_once() -> None:
    api = MemoryApi()
    patch: dict[str, Any] = {}
    spec = {**BASE, "kbsSecretResources": ["disk"]}
    result = reconcile_kbsconfig(
        api, spec=spec, name="kbs", namespace="tg", uid=UID, status={}, patch=patch, now=NOW, generation=1
    )
    assert result == {"objects": ["Deployment/kbs", "Service/kbs"]}
    key = base64.b64decode(base64.b64decode(api.get("Secret", "kbs-session-key")["data"]["key"]))
    assert len(key) == 32
    token_pem = base64.b64decode(api.get("Secret", "kbs-token-key")["data"]["key.pem"])
    token_key = serialization.load_pem_private_key(token_pem, password=None)
    assert isinstance(token_key, ec.EllipticCurvePrivateKey) and token_key.curve.name == "secp256r1"
    (cond,) = patch["status"]["conditions"]
    assert (cond["type"], cond["status"], cond["reason"]) == ("Ready", "True", "Reconciled")
    assert patch["status"]["replicas"] == 1
    # Second pass (resume / update): the session key is kept, objects re-applied.
    reconcile_kbsconfig(
        api, spec=spec, name="kbs", namespace="tg", uid=UID, status=patch["status"], patch={}, now=NOW
    )
    assert base64.b64decode(base64.b64decode(api.get("Secret", "kbs-session-key")["data"]["key"])) == key
    assert base64.b64decode(api.get("Secret", "kbs-token-key")["data"]["key.pem"]) == token_pem
    assert api.applies == 6  # 2 keys once + Deployment and Service twice


def test_handler_invalid_spec_is_permanent_and_reported() -> None:
    api = MemoryApi()
    patch: dict[str, Any] = {}
    with pytest.raises(kopf.PermanentError, match="kbsPostgresSecretName"):
        reconcile_kbsconfig(
            api,
            spec={**BASE, "replicas": 2},
            name="kbs",
            namespace="tg",
            uid=UID,
            status={},
            patch=patch,
            now=NOW,
        )
    (cond,) = patch["status"]["conditions"]
    assert (cond["status"], cond["reason"]) == ("False", "InvalidSpec")
    assert api.objects == {}


def test_registered_kopf_handlers_drive_the_reconciler() -> None:
    registry = kopf.OperatorRegistry()
    original = kopf.get_default_registry()
    kopf.set_default_registry(registry)
    api = MemoryApi()
    try:
        handlers.register_handlers(applier_factory=lambda: api)
    finally:
        kopf.set_default_registry(original)
    selectors = registry._changing.get_all_selectors()
    assert {(s.group, s.version, s.any_name) for s in selectors} == {("teegate.io", "v1alpha1", "kbsconfigs")}
    by_reason: dict[str, Any] = {}
    for h in registry._changing.get_all_handlers():
        by_reason.setdefault(h.fn.__name__, []).append(h)
    # No delete handler (and so no finalizer): owned objects go by their ownerReferences.
    assert set(by_reason) == {"_reconcile"}
    assert len(by_reason["_reconcile"]) == 3  # resume, create, update(spec)
    patch: dict[str, Any] = {}
    out = by_reason["_reconcile"][0].fn(
        spec=BASE,
        name="kbs",
        namespace="tg",
        uid=UID,
        status={},
        patch=patch,
        meta={"generation": 4},
        body={},
        logger=None,
        retry=0,
    )
    assert out == {"objects": ["Deployment/kbs", "Service/kbs"]}
    assert patch["status"]["conditions"][0]["observedGeneration"] == 4
    assert api.exists("apps/v1", "Deployment", "tg", "kbs")
    with pytest.raises(kopf.PermanentError, match="namespaced"):
        by_reason["_reconcile"][0].fn(
            spec=BASE, name="kbs", namespace=None, uid=UID, status={}, patch={}, meta={}
        )


def test_kbs_reads_the_environment_the_operator_sets(tmp_path: Path) -> None:
    """The Deployment's env, given to the KBS's own settings loader, means what the operator meant."""
    from teegate.kbs.config import load_settings
    from teegate.kbs.storage.base import Backend, StateBackend

    spec = KbsConfigSpec.parse({**BASE, "kbsPostgresSecretName": "kbs-pg"})
    (deployment, _service) = desired_objects("kbs", "ns1", UID, spec)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", "postgresql://kbs@db/kbs") for e in container["env"]}
    assert env["TEEGATE_DATA_DIR"] in {m["mountPath"] for m in container["volumeMounts"]}
    env["TEEGATE_DATA_DIR"] = str(tmp_path)  # the mounted state volume, here a temp dir
    settings = load_settings(None, environ=env)
    assert settings.token_key_file == Path("/etc/teegate/token/key.pem")
    assert settings.storage.backend is Backend.DIRECTORY  # resources: the mounted Secrets
    assert settings.storage.state_backend is StateBackend.POSTGRES

    del env["TEEGATE_KBS_RESOURCES_DIR"]
    shared = load_settings(None, environ=env)
    assert shared.storage.backend is Backend.POSTGRES  # replicas share resources as well

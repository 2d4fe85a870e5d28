"""Every manifest under deploy/k8s against the Kubernetes OpenAPI schema (kubernetes-validate,
offline, strict), custom resources against their CRD's openAPIV3Schema, KubeVirt objects
against the shape virt-api requires of the fields we use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from teegate.k8s.operator.reconcile import KbsConfigSpec, desired_objects
from teegate.k8s.webhook.mutate import WebhookSettings, pod_patch

from .kustomize import build, load_docs

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
K8S_VERSION = "1.37.0"
BUILDS = ["base", "overlays/aks", "examples/aks-sgx", "examples/kubevirt-tdx"]


def _crd_schema() -> dict[str, Any]:
    (crd,) = [d for d in load_docs(DEPLOY / "base" / "crd-kbsconfig.yaml")]
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def _validate(doc: dict[str, Any]) -> None:
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    if group == "teegate.io":
        jsonschema.validate(doc, _crd_schema())
        KbsConfigSpec.parse(doc["spec"])  # the operator accepts what the CRD accepts
    elif group == "kubevirt.io":
        _validate_kubevirt_vm(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _validate_kubevirt_vm(doc: dict[str, Any]) -> None:
    assert doc["kind"] == "VirtualMachine" and doc["apiVersion"] == "kubevirt.io/v1"
    template = doc["spec"]["template"]
    sidecars = json.loads(template["metadata"]["annotations"]["hooks.kubevirt.io/hookSidecars"])
    assert sidecars == [
        {"image": sidecars[0]["image"], "command": ["teegate"], "args": ["k8s", "kubevirt-hook"]}
    ]
    domain = template["spec"]["domain"]
    assert domain["features"]["smm"] == {"enabled": False}  # KubeVirt refuses SMM with TDX
    disk_names = {d["name"] for d in domain["devices"]["disks"]}
    assert disk_names == {v["name"] for v in template["spec"]["volumes"]}


@pytest.mark.parametrize("build_dir", BUILDS)
def test_kustomize_builds_validate(build_dir: str) -> None:
    docs = build(DEPLOY / build_dir)
    assert docs
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "duplicate objects"
    for doc in docs:
        _validate(doc)


def test_every_yaml_file_is_in_a_build() -> None:
    files = {p.resolve() for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"}
    used: set[Path] = set()
    for b in BUILDS:
        for k in (DEPLOY / b).rglob("kustomization.yaml"):
            text = k.read_text()
            used |= {p.resolve() for p in k.parent.glob("*.yaml") if p.name in text}
    assert files == used, files - used


def test_base_has_every_component() -> None:
    docs = build(DEPLOY / "base")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("CustomResourceDefinition", "kbsconfigs.teegate.io"),
        ("Deployment", "teegate-operator"),
        ("Deployment", "teegate-pccs"),
        ("DaemonSet", "teegate-qgs"),
        ("DaemonSet", "teegate-aesm"),
        ("DaemonSet", "teegate-device-plugin"),
        ("Deployment", "teegate-webhook"),
        ("MutatingWebhookConfiguration", "teegate-sgx"),
        ("ClusterRole", "teegate-operator"),
    ]:
        assert expected in kinds
    webhook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]
    assert (
        webhook["failurePolicy"] == "Fail" and webhook["clientConfig"]["service"]["path"] == "/mutate-v1-pod"
    )


def test_aks_overlay_switches_epc_resource() -> None:
    docs = build(DEPLOY / "overlays" / "aks")
    plugin = next(
        d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "teegate-device-plugin"
    )
    assert plugin["spec"]["template"]["spec"]["containers"][0]["args"][5] == "azure"
    aesm = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "teegate-aesm")
    limits = aesm["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "kubernetes.azure.com/sgx_epc_mem_in_MiB" in limits and "sgx.intel.com/epc" not in limits


def test_operator_output_validates() -> None:
    (cr,) = [d for d in build(DEPLOY / "examples" / "kubevirt-tdx") if d["kind"] == "KbsConfig"]
    for obj in desired_objects(
        "kbs", "teegate-system", "0d9c6d3e-8c1b-4f0e-9d7e-1f2a3b4c5d6e", KbsConfigSpec.parse(cr["spec"])
    ):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_aks_job_is_already_wired_so_the_webhook_leaves_it() -> None:
    (job,) = [d for d in build(DEPLOY / "examples" / "aks-sgx") if d["kind"] == "Job"]
    pod = {"metadata": job["spec"]["template"]["metadata"], "spec": job["spec"]["template"]["spec"]}
    assert pod_patch(pod, WebhookSettings()) == []
    container = pod["spec"]["containers"][0]
    assert {"name": "SGX_AESM_ADDR", "value": "1"} in container["env"]
    assert container["args"][2:4] == ["--evidence", "sgx-aesm"] and "get-resource" in container["args"]


def test_validator_rejects_a_misspelt_field() -> None:
    (ds,) = [d for d in load_docs(DEPLOY / "base" / "qgs.yaml") if d["kind"] == "DaemonSet"]
    ds["spec"]["template"]["spec"]["nodeSelectr"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    bad_cr = {
        "apiVersion": "teegate.io/v1alpha1",
        "kind": "KbsConfig",
        "metadata": {"name": "x"},
        "spec": {"kbsConfigMapName": "c", "kbsAuthSecretName": "a", "replica": 2},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad_cr, _crd_schema())

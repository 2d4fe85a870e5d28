"""A small kustomize: resources (files or directories), namespace, JSON6902 patches with a target.

It supports exactly the features deploy/k8s uses, and refuses any other kustomization key, so a
manifest change that needs more fails here instead of being silently half-built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.integration.k8s.jsonpatch import apply

_KNOWN = {"apiVersion", "kind", "namespace", "resources", "patches"}
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
}


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def build(directory: Path) -> list[dict[str, Any]]:
    kfile = directory / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - _KNOWN
    assert not unknown, f"{kfile}: unsupported kustomization keys {unknown}"
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        target = (directory / res).resolve()
        docs += build(target) if target.is_dir() else load_docs(target)
    for patch in k.get("patches", []):
        ops = yaml.safe_load((directory / patch["path"]).read_text())
        sel = patch["target"]
        hits = [d for d in docs if d["kind"] == sel["kind"] and d["metadata"]["name"] == sel["name"]]
        assert len(hits) == 1, f"{kfile}: patch target {sel} matched {len(hits)} objects"
        docs[docs.index(hits[0])] = apply(hits[0], ops)
    if "namespace" in k:
        for d in docs:
            if d["kind"] not in _CLUSTER_SCOPED:
                d["metadata"]["namespace"] = k["namespace"]
    return docs

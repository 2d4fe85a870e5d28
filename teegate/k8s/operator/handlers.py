"""kopf handlers for KbsConfig: thin wrappers around :mod:`teegate.k8s.operator.reconcile`."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Protocol

import kopf
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.k8s.operator.reconcile import (
    GROUP,
    PLURAL,
    VERSION,
    InvalidKbsConfig,
    KbsConfigSpec,
    conditions,
    desired_objects,
    session_key_secret,
    token_key_name,
    token_key_secret,
)

__all__ = ["KubernetesApplier", "ObjectApplier", "reconcile_kbsconfig", "register_handlers"]

_log = logging.getLogger("teegate.k8s.operator")


class ObjectApplier(Protocol):
    """The few API operations the operator needs."""

    def apply(self, obj: Mapping[str, Any]) -> None:
        """Create ``obj`` or bring the live object to it (server-side apply)."""

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...


class KubernetesApplier:
    """:class:`ObjectApplier` over the official client (server-side apply, field manager teegate)."""

    def __init__(self) -> None:
        from kubernetes import client, config, dynamic

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        self._dyn = dynamic.DynamicClient(client.ApiClient())  # type: ignore[no-untyped-call]
        self._api_exception = client.exceptions.ApiException

    def apply(self, obj: Mapping[str, Any]) -> None:
        resource = self._dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        meta = obj["metadata"]
        self._dyn.server_side_apply(  # type: ignore[no-untyped-call]
            resource,
            body=dict(obj),
            name=meta["name"],
            namespace=meta["namespace"],
            field_manager="teegate-operator",
            force_conflicts=True,
        )

    def exists(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        resource = self._dyn.resources.get(api_version=api_version, kind=kind)
        try:
            resource.get(name=name, namespace=namespace)
        except self._api_exception as exc:
            if exc.status == 404:
                return False
            raise
        return True


def reconcile_kbsconfig(
    applier: ObjectApplier,
    *,
    spec: Mapping[str, Any],
    name: str,
    namespace: str,
    uid: str,
    status: Mapping[str, Any],
    patch: MutableMapping[str, Any],
    now: datetime,
    generation: int | None = None,
) -> dict[str, Any]:
    """Apply the desired objects and record the Ready condition in ``patch.status``."""
    previous = list(status.get("conditions") or [])
    try:
        parsed = KbsConfigSpec.parse(spec)
    except InvalidKbsConfig as exc:
        patch.setdefault("status", {})["conditions"] = conditions(
            previous, ready=False, reason="InvalidSpec", message=str(exc), now=now, generation=generation
        )
        raise kopf.PermanentError(str(exc)) from exc
    if parsed.session_key_secret is None and not applier.exists(
        "v1", "Secret", namespace, f"{name}-session-key"
    ):
        key = base64.b64encode(base64.b64encode(secrets.token_bytes(32))).decode()
        applier.apply(session_key_secret(name, namespace, uid, key))
    if not applier.exists("v1", "Secret", namespace, token_key_name(name)):
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        applier.apply(token_key_secret(name, namespace, uid, base64.b64encode(pem).decode()))
    objects = desired_objects(name, namespace, uid, parsed)
    for obj in objects:
        applier.apply(obj)
    message = f"{parsed.replicas} replica(s); {len(parsed.secret_resources)} secret resource set(s)"
    patch.setdefault("status", {})["conditions"] = conditions(
        previous, ready=True, reason="Reconciled", message=message, now=now, generation=generation
    )
    patch["status"]["replicas"] = parsed.replicas
    return {"objects": [f"{o['kind']}/{o['metadata']['name']}" for o in objects]}


def register_handlers(applier_factory: Any = KubernetesApplier) -> None:
    """Register the KbsConfig handlers with kopf (call once before ``kopf.run``)."""
    state: dict[str, ObjectApplier] = {}

    def applier() -> ObjectApplier:
        if "a" not in state:
            state["a"] = applier_factory()
        return state["a"]

    @kopf.on.resume(GROUP, VERSION, PLURAL)
    @kopf.on.create(GROUP, VERSION, PLURAL)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
    def _reconcile(
        *, spec: Any, name: str, namespace: str | None, uid: str, status: Any, patch: Any, meta: Any, **_: Any
    ) -> dict[str, Any]:
        if namespace is None:
            raise kopf.PermanentError("KbsConfig is namespaced")
        return reconcile_kbsconfig(
            applier(),
            spec=spec,
            name=name,
            namespace=namespace,
            uid=uid,
            status=status,
            patch=patch,
            now=datetime.now(UTC),
            generation=meta.get("generation"),
        )

    # No delete handler: every object the operator creates carries an ownerReference to its
    # KbsConfig, so Kubernetes' garbage collector removes them; a finalizer would only block
    # deletion while the operator is down.

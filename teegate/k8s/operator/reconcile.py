"""KbsConfig → the Kubernetes objects that run a KBS. Pure functions: no API calls, no clock.

Fields follow trustee-operator's KbsConfig where they mean the same thing; teegate adds
``replicas``, ``kbsPostgresSecretName`` and ``kbsSessionKeySecretName`` because its KBS runs N
stateless replicas without sticky sessions (handshake state sealed with a key all replicas share).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from teegate.errors import ConfigError

__all__ = [
    "API_VERSION",
    "DEFAULT_IMAGE",
    "GROUP",
    "KIND",
    "MAX_REPLICAS",
    "PLURAL",
    "RESOURCES_ROOT",
    "VERSION",
    "InvalidKbsConfig",
    "KbsConfigSpec",
    "conditions",
    "desired_objects",
    "session_key_name",
    "session_key_secret",
]

GROUP = "teegate.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "KbsConfig"
PLURAL = "kbsconfigs"
DEFAULT_IMAGE = "ghcr.io/teegate/teegate:latest"
RESOURCES_ROOT = "/var/lib/teegate/kbs/resources"
CONFIG_DIR = "/etc/teegate/kbs"
KBS_PORT = 8080
MAX_REPLICAS = 64
MAX_SECRET_RESOURCES = 256
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$")
_DEPLOYMENT_TYPES = ("AllInOneDeployment",)
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
_KNOWN = {
    "kbsConfigMapName",
    "kbsAuthSecretName",
    "kbsDeploymentType",
    "replicas",
    "kbsServiceType",
    "kbsHttpsKeySecretName",
    "kbsHttpsCertSecretName",
    "kbsSecretResources",
    "kbsResourcePolicyConfigMapName",
    "kbsAttestationPolicyConfigMapName",
    "kbsPostgresSecretName",
    "kbsSessionKeySecretName",
    "tdxConfigSpec",
    "image",
}


class InvalidKbsConfig(ConfigError):
    """The KbsConfig spec cannot be turned into a deployment as written."""


def _name(spec: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = spec.get(key)
    if value is None:
        if required:
            raise InvalidKbsConfig(f"spec.{key} is required")
        return None
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidKbsConfig(f"spec.{key}={value!r} is not a Kubernetes object name")
    return value


@dataclass(frozen=True)
class KbsConfigSpec:
    """A validated KbsConfig spec."""

    config_map: str
    auth_secret: str
    replicas: int = 1
    service_type: str = "ClusterIP"
    https_key_secret: str | None = None
    https_cert_secret: str | None = None
    secret_resources: tuple[str, ...] = ()
    resource_policy_config_map: str | None = None
    attestation_policy_config_map: str | None = None
    postgres_secret: str | None = None
    session_key_secret: str | None = None
    qcnl_config_map: str | None = None
    image: str = DEFAULT_IMAGE

    @property
    def https(self) -> bool:
        return self.https_cert_secret is not None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> KbsConfigSpec:
        unknown = set(spec) - _KNOWN
        if unknown:
            raise InvalidKbsConfig(f"unknown spec fields: {', '.join(sorted(unknown))}")
        dtype = spec.get("kbsDeploymentType", "AllInOneDeployment")
        if dtype not in _DEPLOYMENT_TYPES:
            raise InvalidKbsConfig(f"spec.kbsDeploymentType={dtype!r}: teegate runs AllInOneDeployment only")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 1 <= replicas <= MAX_REPLICAS:
            raise InvalidKbsConfig(f"spec.replicas={replicas!r}: must be 1..{MAX_REPLICAS}")
        service_type = spec.get("kbsServiceType", "ClusterIP")
        if service_type not in _SERVICE_TYPES:
            raise InvalidKbsConfig(
                f"spec.kbsServiceType={service_type!r}: one of {', '.join(_SERVICE_TYPES)}"
            )
        key, cert = _name(spec, "kbsHttpsKeySecretName"), _name(spec, "kbsHttpsCertSecretName")
        if (key is None) != (cert is None):
            raise InvalidKbsConfig("spec.kbsHttpsKeySecretName and kbsHttpsCertSecretName go together")
        resources = spec.get("kbsSecretResources", [])
        if not isinstance(resources, list) or len(resources) > MAX_SECRET_RESOURCES:
            raise InvalidKbsConfig(f"spec.kbsSecretResources: a list of at most {MAX_SECRET_RESOURCES} names")
        for i, value in enumerate(resources):
            _name({f"kbsSecretResources[{i}]": value}, f"kbsSecretResources[{i}]", required=True)
        if len(set(resources)) != len(resources):
            raise InvalidKbsConfig("spec.kbsSecretResources lists a secret twice")
        postgres = _name(spec, "kbsPostgresSecretName")
        session = _name(spec, "kbsSessionKeySecretName")
        if replicas > 1 and postgres is None:
            raise InvalidKbsConfig(
                f"spec.replicas={replicas} needs spec.kbsPostgresSecretName: replicas must share policies "
                "and reference values (per-pod SQLite would diverge)"
            )
        tdx = spec.get("tdxConfigSpec") or {}
        if not isinstance(tdx, dict) or set(tdx) - {"kbsTdxConfigMapName"}:
            raise InvalidKbsConfig("spec.tdxConfigSpec: only kbsTdxConfigMapName is understood")
        image = spec.get("image", DEFAULT_IMAGE)
        if not isinstance(image, str) or not image or any(c.isspace() for c in image):
            raise InvalidKbsConfig(f"spec.image={image!r} is not an image reference")
        return cls(
            config_map=_name(spec, "kbsConfigMapName", required=True) or "",
            auth_secret=_name(spec, "kbsAuthSecretName", required=True) or "",
            replicas=replicas,
            service_type=service_type,
            https_key_secret=key,
            https_cert_secret=cert,
            secret_resources=tuple(resources),
            resource_policy_config_map=_name(spec, "kbsResourcePolicyConfigMapName"),
            attestation_policy_config_map=_name(spec, "kbsAttestationPolicyConfigMapName"),
            postgres_secret=postgres,
            session_key_secret=session,
            qcnl_config_map=_name(tdx, "kbsTdxConfigMapName"),
            image=image,
        )


def _labels(name: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "teegate-kbs",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/managed-by": "teegate-operator",
    }


def _owner(name: str, uid: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "uid": uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def _meta(obj_name: str, namespace: str, owner: str, uid: str) -> dict[str, Any]:
    return {
        "name": obj_name,
        "namespace": namespace,
        "labels": _labels(owner),
        "ownerReferences": _owner(owner, uid),
    }


STATE_DIR = "/var/lib/teegate/kbs/state"


def session_key_name(name: str, spec: KbsConfigSpec) -> str:
    return spec.session_key_secret or f"{name}-session-key"


def token_key_name(name: str) -> str:
    return f"{name}-token-key"


def token_key_secret(name: str, namespace: str, uid: str, pem_b64: str) -> dict[str, Any]:
    """The generated EAR token signing key (P-256 PKCS#8 PEM), shared by every replica so a
    token minted by one verifies on all (created once)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(token_key_name(name), namespace, name, uid),
        "data": {"key.pem": pem_b64},
    }


def session_key_secret(name: str, namespace: str, uid: str, key_b64: str) -> dict[str, Any]:
    """The generated cookie-sealing key (created once, when the user names none)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(f"{name}-session-key", namespace, name, uid),
        "data": {"key": key_b64},
    }


def _volumes(name: str, spec: KbsConfigSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    vols: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []

    def add(vol_name: str, source: dict[str, Any], path: str, **extra: Any) -> None:
        vols.append({"name": vol_name, **source})
        mounts.append({"name": vol_name, "mountPath": path, "readOnly": True, **extra})

    add("kbs-config", {"configMap": {"name": spec.config_map}}, CONFIG_DIR)
    add("admin-auth", {"secret": {"secretName": spec.auth_secret}}, "/etc/teegate/admin")
    add(
        "session-key",
        {"secret": {"secretName": session_key_name(name, spec), "defaultMode": 0o400}},
        "/etc/teegate/session",
    )
    add(
        "token-key",
        {"secret": {"secretName": token_key_name(name), "defaultMode": 0o400}},
        "/etc/teegate/token",
    )
    if spec.https_cert_secret and spec.https_key_secret:
        add("https-cert", {"secret": {"secretName": spec.https_cert_secret}}, "/etc/teegate/tls/cert")
        add(
            "https-key",
            {"secret": {"secretName": spec.https_key_secret, "defaultMode": 0o400}},
            "/etc/teegate/tls/key",
        )
    if spec.resource_policy_config_map:
        add(
            "resource-policy",
            {"configMap": {"name": spec.resource_policy_config_map}},
            "/etc/teegate/policy/resource",
        )
    if spec.attestation_policy_config_map:
        add(
            "attestation-policy",
            {"configMap": {"name": spec.attestation_policy_config_map}},
            "/etc/teegate/policy/attestation",
        )
    if spec.qcnl_config_map:
        add(
            "qcnl",
            {"configMap": {"name": spec.qcnl_config_map}},
            "/etc/sgx_default_qcnl.conf",
            subPath="sgx_default_qcnl.conf",
        )
    # Each Secret becomes resources default/<secret>/<key> of the directory backend.
    for i, secret in enumerate(spec.secret_resources):
        add(f"resource-{i}", {"secret": {"secretName": secret}}, f"{RESOURCES_ROOT}/default/{secret}")
    return vols, mounts


def desired_objects(name: str, namespace: str, uid: str, spec: KbsConfigSpec) -> list[dict[str, Any]]:
    """Deployment and Service for a KbsConfig (owner-referenced, so deletion cleans up)."""
    labels = _labels(name)
    volumes, mounts = _volumes(name, spec)
    env: list[dict[str, Any]] = [
        {"name": "TEEGATE_KBS_RESOURCES_DIR", "value": RESOURCES_ROOT},
        {"name": "TEEGATE_KBS_SESSION_KEY_FILE", "value": "/etc/teegate/session/key"},
        {"name": "TEEGATE_KBS_TOKEN_KEY_FILE", "value": "/etc/teegate/token/key.pem"},
        # The writable state volume (the root file system is read-only).
        {"name": "TEEGATE_DATA_DIR", "value": STATE_DIR},
    ]
    if spec.postgres_secret:
        env.append(
            {
                "name": "TEEGATE_KBS_POSTGRES_URL",
                "valueFrom": {"secretKeyRef": {"name": spec.postgres_secret, "key": "url"}},
            }
        )
    args = ["kbs", "serve", "--config", f"{CONFIG_DIR}/kbs-config.toml", "--listen", f"0.0.0.0:{KBS_PORT}"]
    if spec.https:
        args += ["--tls-cert", "/etc/teegate/tls/cert/tls.crt", "--tls-key", "/etc/teegate/tls/key/tls.key"]
    scheme = "https" if spec.https else "http"
    container = {
        "name": "kbs",
        "image": spec.image,
        "command": ["teegate"],
        "args": args,
        "ports": [{"name": scheme, "containerPort": KBS_PORT, "protocol": "TCP"}],
        "env": env,
        "volumeMounts": [*mounts, {"name": "data", "mountPath": STATE_DIR}],
        "readinessProbe": {"tcpSocket": {"port": KBS_PORT}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": KBS_PORT}, "periodSeconds": 20},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, name, uid),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [container],
                    "volumes": [*volumes, {"name": "data", "emptyDir": {}}],
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": 65532, "runAsUser": 65532},
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, name, uid),
        "spec": {
            "type": spec.service_type,
            "selector": labels,
            # Any replica serves any handshake step: no client-IP affinity.
            "sessionAffinity": "None",
            "ports": [{"name": scheme, "port": KBS_PORT, "targetPort": KBS_PORT, "protocol": "TCP"}],
        },
    }
    return [deployment, service]


def conditions(
    previous: list[Mapping[str, Any]] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """The ``Ready`` condition, keeping ``lastTransitionTime`` while the status does not change."""
    status = "True" if ready else "False"
    old = next((c for c in previous or [] if c.get("type") == "Ready"), None)
    changed = old is None or old.get("status") != status
    cond: dict[str, Any] = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ") if changed else old["lastTransitionTime"],  # type: ignore[index]
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return [cond]

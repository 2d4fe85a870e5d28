"""Pod mutation for SGX quoting, as a pure function from an AdmissionReview to its response.

Pods that request an SGX resource or carry ``sgx.intel.com/quote-provider`` get:
* ``sgx.intel.com/enclave: 1`` on every container requesting ``sgx.intel.com/epc``;
* ``sgx.intel.com/provision: 1`` on the container the annotation names (in-process quoting);
* with ``quote-provider: aesmd`` (out-of-process): the ``aesmd-socket`` hostPath volume
  (``/var/run/aesmd``), its mount and ``SGX_AESM_ADDR=1`` on every SGX container.
Anything the webhook does not understand is denied with a reason, never half-patched.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from teegate.errors import EvidenceError

__all__ = [
    "ADMISSION_API_VERSION",
    "AESMD_VOLUME",
    "EPC_RESOURCES",
    "MAX_REVIEW_BYTES",
    "QUOTE_PROVIDER_ANNOTATION",
    "AdmissionError",
    "WebhookSettings",
    "pod_patch",
    "review_response",
]

ADMISSION_API_VERSION = "admission.k8s.io/v1"
QUOTE_PROVIDER_ANNOTATION = "sgx.intel.com/quote-provider"
AESMD_VOLUME = "aesmd-socket"
ENCLAVE = "sgx.intel.com/enclave"
PROVISION = "sgx.intel.com/provision"
INTEL_EPC = "sgx.intel.com/epc"
EPC_RESOURCES = (INTEL_EPC, "kubernetes.azure.com/sgx_epc_mem_in_MiB")
SGX_RESOURCES = (ENCLAVE, PROVISION, *EPC_RESOURCES)
#: The API server sends at most a few MiB; a bigger body is refused before parsing.
MAX_REVIEW_BYTES = 3 * 1024 * 1024
MAX_CONTAINERS = 256


class AdmissionError(EvidenceError):
    """The AdmissionReview itself is malformed (answered 400; the failurePolicy then applies)."""


@dataclass(frozen=True)
class WebhookSettings:
    aesmd_dir: str = "/var/run/aesmd"
    aesm_provider: str = "aesmd"


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _resource_maps(container: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    resources = container.get("resources") or {}
    if not isinstance(resources, dict):
        raise AdmissionError(f"container {container.get('name')!r}: resources is not an object")
    maps = [resources.get(part) or {} for part in ("limits", "requests")]
    if not all(isinstance(m, dict) for m in maps):
        raise AdmissionError(f"container {container.get('name')!r}: limits/requests are not objects")
    return maps


def _wants_intel_epc(container: Mapping[str, Any]) -> bool:
    # AKS's EPC resource already carries the enclave device; Intel's EPC is only a count.
    return any(INTEL_EPC in m for m in _resource_maps(container))


def _wants_sgx(container: Mapping[str, Any]) -> bool:
    return any(r in m for m in _resource_maps(container) for r in SGX_RESOURCES)


def _require_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise AdmissionError(f"{what}: expected a list")
    return value


def _resource_ops(base: str, container: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    resources = container.get("resources")
    if not resources:
        return [{"op": "add", "path": f"{base}/resources", "value": {"limits": {name: "1"}}}]
    ops: list[dict[str, Any]] = []
    limits = resources.get("limits")
    if limits is None:
        ops.append({"op": "add", "path": f"{base}/resources/limits", "value": {name: "1"}})
    elif name not in limits:
        ops.append({"op": "add", "path": f"{base}/resources/limits/{_escape(name)}", "value": "1"})
    requests = resources.get("requests")
    if requests is not None and name not in requests:
        # Extended resources need request == limit when both are given.
        ops.append({"op": "add", "path": f"{base}/resources/requests/{_escape(name)}", "value": "1"})
    return ops


def _aesm_ops(
    base: str, container: Mapping[str, Any], settings: WebhookSettings, where: str
) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    env = _require_list(container.get("env"), f"{where}.env")
    current = [e for e in env if isinstance(e, dict) and e.get("name") == "SGX_AESM_ADDR"]
    if current:
        if current[0].get("value") in (None, "") or "valueFrom" in current[0]:
            raise AdmissionError(f"{where}: SGX_AESM_ADDR is set but empty or indirect; refusing to guess")
    elif env:
        ops.append({"op": "add", "path": f"{base}/env/-", "value": {"name": "SGX_AESM_ADDR", "value": "1"}})
    else:
        ops.append({"op": "add", "path": f"{base}/env", "value": [{"name": "SGX_AESM_ADDR", "value": "1"}]})
    mounts = _require_list(container.get("volumeMounts"), f"{where}.volumeMounts")
    mount = {"name": AESMD_VOLUME, "mountPath": settings.aesmd_dir}
    at_path = [m for m in mounts if isinstance(m, dict) and m.get("mountPath") == settings.aesmd_dir]
    if at_path:
        if at_path[0].get("name") != AESMD_VOLUME:
            raise AdmissionError(
                f"{where}: {settings.aesmd_dir} is already mounted from volume {at_path[0].get('name')!r}"
            )
    elif any(isinstance(m, dict) and m.get("name") == AESMD_VOLUME for m in mounts):
        raise AdmissionError(
            f"{where}: volume {AESMD_VOLUME!r} is mounted elsewhere than {settings.aesmd_dir}"
        )
    elif mounts:
        ops.append({"op": "add", "path": f"{base}/volumeMounts/-", "value": mount})
    else:
        ops.append({"op": "add", "path": f"{base}/volumeMounts", "value": [mount]})
    return ops


def pod_patch(pod: Mapping[str, Any], settings: WebhookSettings) -> list[dict[str, Any]]:
    """The JSONPatch that wires SGX quoting into ``pod`` (empty when nothing is needed)."""
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {} if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict):
        raise AdmissionError("pod metadata/annotations: expected objects")
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        raise AdmissionError("pod has no spec")
    containers = _require_list(spec.get("containers"), "spec.containers")
    if len(containers) > MAX_CONTAINERS:
        raise AdmissionError(f"spec.containers: more than {MAX_CONTAINERS}")
    provider = annotations.get(QUOTE_PROVIDER_ANNOTATION)
    if not all(isinstance(c, dict) for c in containers):
        raise AdmissionError("spec.containers: an entry is not an object")
    names = [c.get("name") for c in containers]
    if provider is not None and provider != settings.aesm_provider and provider not in names:
        raise AdmissionError(
            f"annotation {QUOTE_PROVIDER_ANNOTATION}={provider!r} names neither "
            f"{settings.aesm_provider!r} (out-of-process) nor a container of this pod (in-process)"
        )
    sgx = [i for i, c in enumerate(containers) if _wants_sgx(c)]
    if provider is None and not sgx:
        return []
    ops: list[dict[str, Any]] = []
    for i, c in enumerate(containers):
        if _wants_intel_epc(c):
            ops += _resource_ops(f"/spec/containers/{i}", c, ENCLAVE)
        if provider == c.get("name"):
            ops += _resource_ops(f"/spec/containers/{i}", c, PROVISION)
    if provider == settings.aesm_provider:
        targets = sgx or list(range(len(containers)))
        for i in targets:
            ops += _aesm_ops(f"/spec/containers/{i}", containers[i], settings, f"container {names[i]!r}")
        volumes = _require_list(spec.get("volumes"), "spec.volumes")
        wanted = {"path": settings.aesmd_dir, "type": "DirectoryOrCreate"}
        same = [v for v in volumes if isinstance(v, dict) and v.get("name") == AESMD_VOLUME]
        volume = {"name": AESMD_VOLUME, "hostPath": wanted}
        if same:
            source = same[0].get("hostPath") or {}
            if source.get("path") != settings.aesmd_dir and "emptyDir" not in same[0]:
                raise AdmissionError(f"volume {AESMD_VOLUME!r} exists with a different source")
        elif volumes:
            ops.append({"op": "add", "path": "/spec/volumes/-", "value": volume})
        else:
            ops.append({"op": "add", "path": "/spec/volumes", "value": [volume]})
    return ops


def _parse(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_REVIEW_BYTES:
        raise AdmissionError(f"AdmissionReview of {len(body)} bytes exceeds {MAX_REVIEW_BYTES}")
    try:
        review = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise AdmissionError(f"AdmissionReview is not JSON: {exc}") from exc
    if not isinstance(review, dict) or review.get("apiVersion") != ADMISSION_API_VERSION:
        raise AdmissionError(f"expected apiVersion {ADMISSION_API_VERSION} AdmissionReview")
    if review.get("kind") != "AdmissionReview" or not isinstance(review.get("request"), dict):
        raise AdmissionError("expected kind AdmissionReview with a request")
    uid = review["request"].get("uid")
    if not isinstance(uid, str) or not uid:
        raise AdmissionError("request.uid missing")
    return review


def _is_pod_create(request: Mapping[str, Any]) -> bool:
    kind = request.get("kind") or {}
    return (
        kind.get("group", "") == ""
        and kind.get("kind") == "Pod"
        and request.get("operation") == "CREATE"
        and isinstance(request.get("object"), dict)
    )


def review_response(body: bytes, settings: WebhookSettings) -> dict[str, Any]:
    """AdmissionReview in, AdmissionReview out. Raises :class:`AdmissionError` only for a bad review."""
    review = _parse(body)
    request = review["request"]
    response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
    if _is_pod_create(request):
        try:
            try:
                ops = pod_patch(request["object"], settings)
            except (AttributeError, TypeError) as exc:
                raise AdmissionError(f"pod has an unexpected shape ({type(exc).__name__})") from exc
        except AdmissionError as exc:
            response = {
                "uid": request["uid"],
                "allowed": False,
                "status": {"code": 400, "reason": "BadRequest", "message": f"teegate SGX webhook: {exc}"},
            }
        else:
            if ops:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}

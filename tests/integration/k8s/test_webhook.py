"""The admission webhook over real HTTPS with AdmissionReview v1 bodies."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from teegate.k8s.webhook.app import MUTATE_PATH, create_app
from teegate.k8s.webhook.mutate import WebhookSettings
from tests.netutil import free_port, self_signed

from .jsonpatch import apply

pytestmark = pytest.mark.integration


@pytest.fixture
async def webhook(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    config = uvicorn.Config(
        create_app(WebhookSettings()),
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
        assert not task.done(), "webhook server exited"
    async with httpx.AsyncClient(
        verify=ssl.create_default_context(cafile=str(cert)), base_url=f"https://127.0.0.1:{port}"
    ) as client:
        yield client, f"https://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def _review(pod: dict[str, Any], *, operation: str = "CREATE", kind: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": operation,
            "object": pod,
        },
    }


def _pod(
    containers: list[dict[str, Any]], annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "app", "namespace": "default"}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": containers, **spec}}


async def _post(client: httpx.AsyncClient, review: dict[str, Any]) -> dict[str, Any]:
    r = await client.post(MUTATE_PATH, json=review)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    assert answer["response"]["uid"] == review["request"]["uid"]
    return dict(answer["response"])


def _patched(review: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    return dict(apply(review["request"]["object"], ops))


async def test_out_of_process_pod_is_wired_and_second_pass_is_a_no_op(webhook: Any) -> None:
    client, _ = webhook
    pod = _pod(
        [
            {
                "name": "enclave",
                "image": "app",
                "resources": {"limits": {"sgx.intel.com/epc": "10Mi"}},
                "env": [{"name": "A", "value": "b"}],
            },
            {"name": "sidecar", "image": "busybox"},
        ],
        {"sgx.intel.com/quote-provider": "aesmd"},
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    review = _review(pod)
    out = _patched(review, await _post(client, review))
    enclave, sidecar = out["spec"]["containers"]
    assert enclave["resources"]["limits"] == {"sgx.intel.com/epc": "10Mi", "sgx.intel.com/enclave": "1"}
    assert enclave["env"] == [{"name": "A", "value": "b"}, {"name": "SGX_AESM_ADDR", "value": "1"}]
    assert enclave["volumeMounts"] == [{"name": "aesmd-socket", "mountPath": "/var/run/aesmd"}]
    assert sidecar == {"name": "sidecar", "image": "busybox"}
    assert out["spec"]["volumes"][1] == {
        "name": "aesmd-socket",
        "hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"},
    }
    # reinvocationPolicy IfNeeded: the patched pod comes back and must not be patched twice.
    again = await _post(client, _review(out))
    assert again["allowed"] is True and "patch" not in again


async def test_azure_epc_and_annotation_only_pod(webhook: Any) -> None:
    client, _ = webhook
    pod = _pod(
        [
            {
                "name": "job",
                "image": "attester",
                "resources": {
                    "limits": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "10"},
                    "requests": {"kubernetes.azure.com/sgx_epc_mem_in_MiB": "10"},
                },
            }
        ],
        {"sgx.intel.com/quote-provider": "aesmd"},
    )
    review = _review(pod)
    out = _patched(review, await _post(client, review))
    c = out["spec"]["containers"][0]
    assert c["resources"]["limits"] == {
        "kubernetes.azure.com/sgx_epc_mem_in_MiB": "10"
    }  # AKS's EPC carries the device
    assert c["env"] == [{"name": "SGX_AESM_ADDR", "value": "1"}]
    assert out["spec"]["volumes"] == [
        {"name": "aesmd-socket", "hostPath": {"path": "/var/run/aesmd", "type": "DirectoryOrCreate"}}
    ]
    # No resources at all, only the annotation: every container is wired.
    bare = _review(_pod([{"name": "a", "image": "x"}], {"sgx.intel.com/quote-provider": "aesmd"}))
    out = _patched(bare, await _post(client, bare))
    assert out["spec"]["containers"][0]["volumeMounts"][0]["mountPath"] == "/var/run/aesmd"


async def test_in_process_quote_provider_gets_provision(webhook: Any) -> None:
    client, _ = webhook
    pod = _pod(
        [
            {
                "name": "qe",
                "image": "app",
                "resources": {
                    "limits": {"sgx.intel.com/epc": "1Mi"},
                    "requests": {"sgx.intel.com/epc": "1Mi"},
                },
            }
        ],
        {"sgx.intel.com/quote-provider": "qe"},
    )
    review = _review(pod)
    out = _patched(review, await _post(client, review))
    res = out["spec"]["containers"][0]["resources"]
    assert res["limits"] == {
        "sgx.intel.com/epc": "1Mi",
        "sgx.intel.com/enclave": "1",
        "sgx.intel.com/provision": "1",
    }
    assert res["requests"] == res["limits"]
    assert "env" not in out["spec"]["containers"][0] and "volumes" not in out["spec"]


async def test_not_patched(webhook: Any) -> None:
    client, _ = webhook
    plain = _review(_pod([{"name": "web", "image": "nginx", "resources": {"limits": {"cpu": "1"}}}]))
    resp = await _post(client, plain)
    assert resp == {"uid": plain["request"]["uid"], "allowed": True}
    update = _review(
        _pod([{"name": "a", "image": "x"}], {"sgx.intel.com/quote-provider": "aesmd"}), operation="UPDATE"
    )
    assert "patch" not in await _post(client, update)
    other = _review({"metadata": {}, "spec": {}}, kind="ConfigMap")
    assert "patch" not in await _post(client, other)


async def test_refused(webhook: Any) -> None:
    client, _ = webhook
    unknown = _review(_pod([{"name": "a", "image": "x"}], {"sgx.intel.com/quote-provider": "gramine"}))
    resp = await _post(client, unknown)
    assert resp["allowed"] is False and "gramine" in resp["status"]["message"] and "patch" not in resp
    clash = _review(
        _pod(
            [{"name": "a", "image": "x", "volumeMounts": [{"name": "other", "mountPath": "/var/run/aesmd"}]}],
            {"sgx.intel.com/quote-provider": "aesmd"},
            volumes=[{"name": "other", "emptyDir": {}}],
        )
    )
    resp = await _post(client, clash)
    assert resp["allowed"] is False and "'other'" in resp["status"]["message"]
    r = await client.post(MUTATE_PATH, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = await client.post(
        MUTATE_PATH, json={"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}
    )
    assert r.status_code == 400 and "admission.k8s.io/v1" in r.text
    r = await client.post(
        MUTATE_PATH, content=b"x" * (3 * 1024 * 1024 + 1), headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    r = await client.post(MUTATE_PATH, content=b"{}", headers={"content-type": "text/plain"})
    assert r.status_code == 415


async def test_plain_http_is_refused(webhook: Any) -> None:
    _, url = webhook
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.post(url.replace("https", "http") + MUTATE_PATH, json={})


async def test_odd_shapes_are_denied_not_crashed(webhook: Any) -> None:
    client, _ = webhook
    for pod in (
        {"metadata": {"annotations": ["x"]}, "spec": {"containers": []}},
        {
            "metadata": {},
            "spec": {"containers": [{"name": "a", "resources": {"limits": ["sgx.intel.com/epc"]}}]},
        },
        {"metadata": {}, "spec": {"containers": "a"}},
    ):
        resp = await _post(client, _review(pod))
        assert resp["allowed"] is False and "patch" not in resp, resp

"""The API server stand-in keeps the Kubernetes conventions the operator test relies on."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.k8s_operator.apiserver import FakeApiServer

CRD = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "base" / "crd-kbsconfig.yaml"
NS = "ns1"
KBS = f"/apis/teegate.io/v1alpha1/namespaces/{NS}/kbsconfigs"
MERGE = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def http(tmp_path: Path) -> Iterator[httpx.Client]:
    server = FakeApiServer([CRD], tmp_path)
    server.start()
    try:
        verify = ssl.create_default_context(cafile=server.ca_path)
        with httpx.Client(base_url=server.url, timeout=5, verify=verify) as client:
            assert client.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).status_code == 201
            yield client
    finally:
        server.stop()


def _kbs(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "teegate.io/v1alpha1",
        "kind": "KbsConfig",
        "metadata": {"name": name, **meta},
        "spec": {"kbsConfigMapName": "c", "kbsAuthSecretName": "a"},
    }


@pytest.mark.timeout(20)
def test_discovery_lists_the_crd_and_its_status_subresource(http: httpx.Client) -> None:
    assert http.get("/api").json()["versions"] == ["v1"]
    core = {r["name"] for r in http.get("/api/v1").json()["resources"]}
    assert {"namespaces", "secrets", "configmaps", "services", "events"} <= core
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert groups["teegate.io"]["preferredVersion"]["version"] == "v1alpha1"
    doc = http.get("/apis/teegate.io/v1alpha1").json()
    assert doc["kind"] == "APIResourceList" and doc["groupVersion"] == "teegate.io/v1alpha1"
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name["kbsconfigs"]["kind"] == "KbsConfig" and by_name["kbsconfigs"]["namespaced"] is True
    assert "watch" in by_name["kbsconfigs"]["verbs"]
    assert "kbsconfigs/status" in by_name
    assert http.get("/apis/nowhere.io/v1").status_code == 404


@pytest.mark.timeout(20)
def test_errors_are_status_bodies(http: httpx.Client) -> None:
    missing = http.get(f"{KBS}/absent")
    assert missing.status_code == 404
    assert missing.json() | {"message": ""} == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "",
        "reason": "NotFound",
        "code": 404,
    }
    assert http.post(KBS, json=_kbs("a")).status_code == 201
    dup = http.post(KBS, json=_kbs("a"))
    assert (dup.status_code, dup.json()["reason"]) == (409, "AlreadyExists")
    stale = http.get(f"{KBS}/a").json()
    assert http.patch(f"{KBS}/a", json={"spec": {"replicas": 2}}, headers=MERGE).status_code == 200
    conflict = http.put(f"{KBS}/a", json=stale)
    assert (conflict.status_code, conflict.json()["reason"]) == (409, "Conflict")
    nons = http.post("/apis/teegate.io/v1alpha1/namespaces/ghost/kbsconfigs", json=_kbs("b"))
    assert nons.status_code == 404
    bad_type = http.patch(f"{KBS}/a", content=b"{}", headers={"Content-Type": "text/plain"})
    assert bad_type.status_code == 415
    assert http.get(KBS, params={"fieldSelector": "metadata.name=a"}).status_code == 400


@pytest.mark.timeout(20)
def test_status_subresource_and_generation(http: httpx.Client) -> None:
    created = http.post(KBS, json=_kbs("s") | {"status": {"x": 1}}).json()
    assert "status" not in created and created["metadata"]["generation"] == 1
    assert (
        created["spec"]["replicas"] == 1 and created["spec"]["kbsServiceType"] == "ClusterIP"
    )  # CRD defaults
    main = http.patch(
        f"{KBS}/s", json={"status": {"x": 2}, "metadata": {"labels": {"l": "v"}}}, headers=MERGE
    )
    assert "status" not in main.json() and main.json()["metadata"]["generation"] == 1
    status = http.patch(f"{KBS}/s/status", json={"status": {"x": 3}, "spec": {"replicas": 9}}, headers=MERGE)
    body = status.json()
    assert (
        body["status"] == {"x": 3} and body["spec"]["replicas"] == 1 and body["metadata"]["generation"] == 1
    )
    spec = http.patch(f"{KBS}/s", json={"spec": {"replicas": 2}}, headers=MERGE).json()
    assert spec["metadata"]["generation"] == 2
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (created, main.json(), body, spec)]
    assert rvs == sorted(set(rvs))
    labelled = http.get(KBS, params={"labelSelector": "l=v"}).json()
    assert [i["metadata"]["name"] for i in labelled["items"]] == ["s"]


@pytest.mark.timeout(20)
def test_watch_streams_events_after_the_listed_version(http: httpx.Client) -> None:
    http.post(KBS, json=_kbs("before"))
    listed = http.get(KBS).json()
    assert listed["kind"] == "KbsConfigList" and len(listed["items"]) == 1
    rv = listed["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    ready = threading.Event()

    def watch() -> None:
        params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3"}
        with http.stream("GET", KBS, params=params) as rsp:
            ready.set()
            for line in rsp.iter_lines():
                if line:
                    events.append(json.loads(line))
                if len(events) == 3:
                    return

    thread = threading.Thread(target=watch)
    thread.start()
    assert ready.wait(5)
    http.post(KBS, json=_kbs("w"))
    http.patch(f"{KBS}/w", json={"spec": {"replicas": 3}}, headers=MERGE)
    http.delete(f"{KBS}/w")
    thread.join(10)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "w"),
        ("MODIFIED", "w"),
        ("DELETED", "w"),
    ]
    assert events[1]["object"]["spec"]["replicas"] == 3


@pytest.mark.timeout(20)
def test_finalizers_hold_deletion_and_owned_objects_are_collected(http: httpx.Client) -> None:
    owner = http.post(KBS, json=_kbs("o", finalizers=["x.io/f"])).json()
    ref = {
        "apiVersion": "teegate.io/v1alpha1",
        "kind": "KbsConfig",
        "name": "o",
        "uid": owner["metadata"]["uid"],
    }
    secret = {"metadata": {"name": "owned", "ownerReferences": [ref]}, "data": {}}
    assert http.post(f"/api/v1/namespaces/{NS}/secrets", json=secret).status_code == 201
    deleting = http.delete(f"{KBS}/o").json()
    assert "deletionTimestamp" in deleting["metadata"]
    assert http.get(f"{KBS}/o").status_code == 200
    more = http.patch(f"{KBS}/o", json={"metadata": {"finalizers": ["x.io/f", "y.io/g"]}}, headers=MERGE)
    assert more.status_code == 422
    assert http.get(f"/api/v1/namespaces/{NS}/secrets/owned").status_code == 200
    assert http.patch(f"{KBS}/o", json={"metadata": {"finalizers": []}}, headers=MERGE).status_code == 200
    assert http.get(f"{KBS}/o").status_code == 404
    assert http.get(f"/api/v1/namespaces/{NS}/secrets/owned").status_code == 404

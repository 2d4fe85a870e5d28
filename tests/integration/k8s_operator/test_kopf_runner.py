"""The real kopf operator (``KopfRunner``) against the Kubernetes API server stand-in."""

from __future__ import annotations

import base64
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes.config import kube_config

from kopf.testing import KopfRunner
from tests.integration.k8s_operator.apiserver import FakeApiServer, Store

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "deploy" / "k8s" / "base" / "crd-kbsconfig.yaml"
ENTRY = Path(__file__).with_name("operator_entry.py")
NS = "kbs-test"
WAIT = 10.0


@pytest.fixture
def apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    server = FakeApiServer([CRD])
    server.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": server.url}}],
                    "users": [{"name": "tester", "user": {"token": "not-checked-by-the-stand-in"}}],
                    "contexts": [{"name": "t", "context": {"cluster": "stand-in", "user": "tester", "namespace": NS}}],
                    "current-context": "t",
                }
            )
        )
        # No real cluster is ever contacted: no in-cluster service account, kubeconfig → stand-in.
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        # The dynamic client caches discovery in the temp dir: keep it inside this test.
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        yield server
    finally:
        server.stop()


def _wait(what: str, probe: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _get(server: FakeApiServer, group: str, plural: str, name: str) -> dict[str, Any] | None:
    def fetch(store: Store) -> dict[str, Any] | None:
        obj = store.objects.get((group, plural, NS, name))
        return json.loads(json.dumps(obj)) if obj is not None else None

    result: dict[str, Any] | None = server.call(fetch)
    return result


def _ready(server: FakeApiServer, name: str, status: str, generation: int) -> dict[str, Any] | None:
    obj = _get(server, "teegate.io", "kbsconfigs", name)
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready" and cond["status"] == status and cond.get("observedGeneration") == generation:
            return dict(cond)
    return None


def _kbsconfig(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "teegate.io/v1alpha1",
        "kind": "KbsConfig",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"kbsConfigMapName": "kbs-config", "kbsAuthSecretName": "kbs-auth", **spec},
    }


@pytest.mark.timeout(60)
def test_operator_reconciles_kbsconfig_lifecycle(apiserver: FakeApiServer) -> None:
    http = httpx.Client(base_url=apiserver.url, timeout=5)
    base = f"/apis/teegate.io/v1alpha1/namespaces/{NS}/kbsconfigs"
    args = ["run", "--standalone", "--namespace", NS, "--verbose", str(ENTRY)]
    assert http.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).status_code == 201
    with KopfRunner(args, timeout=20) as runner:
        # Create: Deployment, Service, generated session and token keys, Ready=True.
        created = http.post(base, json=_kbsconfig("kbs", kbsPostgresSecretName="kbs-pg"))
        assert created.status_code == 201, created.text
        kbs = created.json()
        uid = kbs["metadata"]["uid"]
        assert kbs["spec"]["replicas"] == 1  # CRD default applied by the API server
        cond = _wait("Ready=True", lambda: _ready(apiserver, "kbs", "True", 1))
        assert cond["reason"] == "Reconciled"
        deployment = _wait("Deployment", lambda: _get(apiserver, "apps", "deployments", "kbs"))
        assert deployment["spec"]["replicas"] == 1
        service = _get(apiserver, "", "services", "kbs")
        assert service is not None
        session = _get(apiserver, "", "secrets", "kbs-session-key")
        token = _get(apiserver, "", "secrets", "kbs-token-key")
        assert session is not None and token is not None
        assert len(base64.b64decode(base64.b64decode(session["data"]["key"]))) == 32
        assert any(b"PRIVATE KEY" in base64.b64decode(v) for v in token["data"].values())
        for owned in (deployment, service, session, token):
            refs = owned["metadata"]["ownerReferences"]
            assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("KbsConfig", "kbs", uid)]

        # Update spec.replicas: the Deployment follows, the condition records the new generation.
        patched = http.patch(
            f"{base}/kbs",
            json={"spec": {"replicas": 3}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"]["generation"] == 2
        _wait("Ready for generation 2", lambda: _ready(apiserver, "kbs", "True", 2))
        deployment = _wait(
            "Deployment with 3 replicas",
            lambda: (d := _get(apiserver, "apps", "deployments", "kbs")) and d["spec"]["replicas"] == 3 and d,
        )
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid

        # A spec the CRD schema accepts but the operator refuses: Ready=False, InvalidSpec, nothing created.
        bad = http.post(base, json=_kbsconfig("bad", replicas=2))
        assert bad.status_code == 201, bad.text
        cond = _wait("Ready=False", lambda: _ready(apiserver, "bad", "False", 1))
        assert cond["reason"] == "InvalidSpec"
        assert "kbsPostgresSecretName" in cond["message"]
        assert _get(apiserver, "apps", "deployments", "bad") is None

        # Delete while another controller's finalizer holds the object: the delete handler runs,
        # the object waits with deletionTimestamp, then goes once the finalizer is removed; the
        # owned objects follow through their ownerReferences.
        hold = http.patch(
            f"{base}/kbs",
            json={"metadata": {"finalizers": ["example.com/hold"]}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert hold.status_code == 200, hold.text
        deleting = http.delete(f"{base}/kbs")
        assert deleting.status_code == 200
        assert "deletionTimestamp" in deleting.json()["metadata"]
        _wait("delete handler", lambda: "KbsConfig kbs-test/kbs deleted" in runner.output)
        live = _get(apiserver, "teegate.io", "kbsconfigs", "kbs")
        assert live is not None
        assert live["metadata"]["finalizers"] == ["example.com/hold"]  # the operator holds no finalizer
        released = http.patch(
            f"{base}/kbs",
            json={"metadata": {"finalizers": None}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert released.status_code == 200, released.text
        assert http.get(f"{base}/kbs").status_code == 404
        for group, plural, name in (
            ("apps", "deployments", "kbs"),
            ("", "services", "kbs"),
            ("", "secrets", "kbs-session-key"),
            ("", "secrets", "kbs-token-key"),
        ):
            assert _get(apiserver, group, plural, name) is None, f"{plural}/{name} not collected"
        assert http.delete(f"{base}/bad").status_code == 200
    http.close()

    assert runner.exit_code == 0
    assert runner.exception is None
    out = runner.output
    assert "Traceback" not in out
    failures = [line for line in out.splitlines() if "failed" in line.lower()]
    # The only handler failure is the deliberate permanent one for the invalid spec.
    assert failures and all("kbsPostgresSecretName" in line for line in failures), failures
    assert "Handler '_reconcile' succeeded" in out

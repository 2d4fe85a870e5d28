"""The real kopf operator (``KopfRunner``) against the Kubernetes API server stand-in."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
from kopf.testing import KopfRunner
from kubernetes.client import Configuration
from kubernetes.config import kube_config

from tests.integration.k8s_operator.apiserver import FakeApiServer, Store

REPO = Path(__file__).resolve().parents[3]
CRD = REPO / "deploy" / "k8s" / "base" / "crd-kbsconfig.yaml"
ENTRY = Path(__file__).with_name("operator_entry.py")
NS = "kbs-test"
WAIT = 10.0


@pytest.fixture
def apiserver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeApiServer]:
    server = FakeApiServer([CRD], tmp_path)
    server.start()
    try:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "stand-in",
                            "cluster": {"server": server.url, "certificate-authority": str(server.ca_path)},
                        }
                    ],
                    "users": [{"name": "tester", "user": {"token": "not-checked-by-the-stand-in"}}],
                    "contexts": [
                        {"name": "t", "context": {"cluster": "stand-in", "user": "tester", "namespace": NS}}
                    ],
                    "current-context": "t",
                }
            )
        )
        # No real cluster is ever contacted: no in-cluster service account, kubeconfig → stand-in.
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        # load_kube_config() installs a process-wide default client configuration: undo it afterwards.
        monkeypatch.setattr(Configuration, "_default", Configuration._default)
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
        if (
            cond.get("type") == "Ready"
            and cond["status"] == status
            and cond.get("observedGeneration") == generation
        ):
            return dict(cond)
    return None


def _kbsconfig(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "teegate.io/v1alpha1",
        "kind": "KbsConfig",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"kbsConfigMapName": "kbs-config", "kbsAuthSecretName": "kbs-auth", **spec},
    }


@pytest.fixture
def http(apiserver: FakeApiServer) -> Iterator[httpx.Client]:
    verify = ssl.create_default_context(cafile=apiserver.ca_path)
    with httpx.Client(base_url=apiserver.url, timeout=5, verify=verify) as client:
        assert client.post("/api/v1/namespaces", json={"metadata": {"name": NS}}).status_code == 201
        yield client


def _runner() -> KopfRunner:
    """The real ``kopf run`` CLI on the production handlers, with a fresh registry each time."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_via_client)  # kubeconfig → the stand-in
    settings = kopf.OperatorSettings()
    settings.posting.loggers = True  # also post handler outcomes as Kubernetes Events (off by default)
    args = ["run", "--standalone", "--namespace", NS, "--verbose", str(ENTRY)]
    return KopfRunner(args, timeout=20, settings=settings, registry=registry)


def _assert_clean_exit(runner: KopfRunner, allowed: str | None = None) -> None:
    """Exit code 0, no exception, no traceback, and no warning or error other than ``allowed``."""
    assert runner.exit_code == 0
    assert runner.exception is None
    out = runner.output
    assert "Traceback" not in out
    failures = [
        line
        for line in out.splitlines()
        if ("[ERROR" in line or "[WARNING" in line)
        and "OS signals are ignored" not in line  # KopfRunner runs kopf outside the main thread
    ]
    for line in failures:
        assert allowed is not None and allowed in line, line


MERGE = {"Content-Type": "application/merge-patch+json"}
BASE = f"/apis/teegate.io/v1alpha1/namespaces/{NS}/kbsconfigs"


@pytest.mark.timeout(60)
def test_operator_reconciles_kbsconfig_lifecycle(apiserver: FakeApiServer, http: httpx.Client) -> None:
    with _runner() as runner:
        # Create: Deployment, Service, generated session and token keys, Ready=True.
        created = http.post(BASE, json=_kbsconfig("kbs", kbsPostgresSecretName="kbs-pg"))
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
            assert [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
                ("KbsConfig", "kbs", uid, True)
            ]

        # Update spec.replicas: the Deployment follows, the condition records the new generation.
        patched = http.patch(f"{BASE}/kbs", json={"spec": {"replicas": 3}}, headers=MERGE)
        assert patched.status_code == 200, patched.text
        assert patched.json()["metadata"]["generation"] == 2
        _wait("Ready for generation 2", lambda: _ready(apiserver, "kbs", "True", 2))
        deployment = _wait(
            "Deployment with 3 replicas",
            lambda: (d := _get(apiserver, "apps", "deployments", "kbs")) and d["spec"]["replicas"] == 3 and d,
        )
        assert deployment["metadata"]["ownerReferences"][0]["uid"] == uid

        # A spec the CRD schema accepts but the operator refuses: Ready=False, InvalidSpec, nothing created.
        bad = http.post(BASE, json=_kbsconfig("bad", replicas=2))
        assert bad.status_code == 201, bad.text
        cond = _wait("Ready=False", lambda: _ready(apiserver, "bad", "False", 1))
        assert cond["reason"] == "InvalidSpec"
        assert "kbsPostgresSecretName" in cond["message"]
        assert _get(apiserver, "apps", "deployments", "bad") is None

        # Delete. The operator holds no finalizer (it has no delete handler, so kopf never
        # blocks deletion): another controller's finalizer keeps the object with deletionTimestamp
        # until released; then the owned objects follow through their ownerReferences.
        live = _get(apiserver, "teegate.io", "kbsconfigs", "kbs")
        assert live is not None and not live["metadata"].get("finalizers")
        hold = http.patch(
            f"{BASE}/kbs", json={"metadata": {"finalizers": ["example.com/hold"]}}, headers=MERGE
        )
        assert hold.status_code == 200, hold.text
        deleting = http.delete(f"{BASE}/kbs")
        assert deleting.status_code == 200
        assert "deletionTimestamp" in deleting.json()["metadata"]
        time.sleep(0.5)  # give kopf the MODIFIED event: it must neither add nor strip finalizers
        live = _get(apiserver, "teegate.io", "kbsconfigs", "kbs")
        assert live is not None and live["metadata"]["finalizers"] == ["example.com/hold"]
        assert _get(apiserver, "apps", "deployments", "kbs") is not None
        released = http.patch(f"{BASE}/kbs", json={"metadata": {"finalizers": None}}, headers=MERGE)
        assert released.status_code == 200, released.text
        assert http.get(f"{BASE}/kbs").status_code == 404
        for group, plural, name in (
            ("apps", "deployments", "kbs"),
            ("", "services", "kbs"),
            ("", "secrets", "kbs-session-key"),
            ("", "secrets", "kbs-token-key"),
        ):
            assert _get(apiserver, group, plural, name) is None, f"{plural}/{name} not collected"

        def posted(name: str, typ: str, text: str) -> bool:
            events = http.get(f"/api/v1/namespaces/{NS}/events").json()["items"]
            return any(
                e["involvedObject"]["name"] == name and e["type"] == typ and text in e["message"]
                for e in events
            )

        _wait("success event", lambda: posted("kbs", "Normal", "_reconcile' succeeded"))
        _wait("failure event", lambda: posted("bad", "Error", "kbsPostgresSecretName"))
        assert http.delete(f"{BASE}/bad").status_code == 200

    # Both clients reached the stand-in (TLS-only, CA-verified): kopf for watching and patching,
    # the official client for server-side apply of the owned objects.
    requests = apiserver.call(lambda store: list(store.requests))
    assert any(agent.startswith("kopf/") and m == "PATCH" for m, _, _, agent in requests)
    applies = {p.split("?")[0] for m, p, t, _ in requests if t == "application/apply-patch+yaml"}
    assert f"/apis/apps/v1/namespaces/{NS}/deployments/kbs" in applies
    assert f"/api/v1/namespaces/{NS}/services/kbs" in applies

    # The only handler failure is the deliberate permanent one for the invalid spec.
    assert "[kbs-test/bad]" in runner.output
    _assert_clean_exit(
        runner, allowed="[kbs-test/bad] Handler 'register_handlers.<locals>._reconcile' failed"
    )
    assert "_reconcile' succeeded" in runner.output and "_reconcile/spec' succeeded" in runner.output


@pytest.mark.timeout(60)
def test_operator_resumes_after_restart(apiserver: FakeApiServer, http: httpx.Client) -> None:
    with _runner() as first:
        assert http.post(BASE, json=_kbsconfig("kbs")).status_code == 201
        _wait("Ready=True", lambda: _ready(apiserver, "kbs", "True", 1))
        _wait("Deployment", lambda: _get(apiserver, "apps", "deployments", "kbs"))
    _assert_clean_exit(first)
    # While the operator is down, someone deletes the Deployment.
    assert http.delete(f"/apis/apps/v1/namespaces/{NS}/deployments/kbs").status_code == 200
    with _runner() as second:
        deployment = _wait(
            "Deployment recreated on resume", lambda: _get(apiserver, "apps", "deployments", "kbs")
        )
        assert deployment["metadata"]["ownerReferences"][0]["name"] == "kbs"
    _assert_clean_exit(second)
    assert "_reconcile' succeeded" in second.output


@pytest.mark.timeout(60)
def test_teegate_k8s_operator_command(apiserver: FakeApiServer, http: httpx.Client, tmp_path: Path) -> None:
    """The shipped ``teegate k8s operator`` command (kopf.run in its own process) reconciles and stops on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env |= {"KUBECONFIG": str(tmp_path / "kubeconfig"), "TMPDIR": str(tmp_path)}
    log = tmp_path / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "teegate.cli", "k8s", "operator", "--namespace", NS],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            assert http.post(BASE, json=_kbsconfig("cli")).status_code == 201
            _wait("Ready=True", lambda: _ready(apiserver, "cli", "True", 1), timeout=30)
            assert _get(apiserver, "apps", "deployments", "cli") is not None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text
    assert "KbsConfig operator watching kbs-test" in text

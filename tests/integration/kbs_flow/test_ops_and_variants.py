"""Health, metrics, OpenAPI, admin routes mounted, composite evidence, RSA/P-521 keys, `kbs serve --dev`."""

from __future__ import annotations

import base64
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from teegate.kbs import jwe
from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.paths import admin_key_path
from teegate.kbs.protocol import TeePubKey, device_binding_digest
from teegate.kbs.storage import StorageSettings
from tests.integration.kbs_flow.harness import Guest, error_type, put_resource, serve
from tests.netutil import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    put_resource(tmp_path, "default/key/1", b"secret-1")
    settings = KbsSettings(
        data_dir=tmp_path,
        storage=StorageSettings(data_dir=tmp_path),
        allow_sample=True,
        verify_tdx=False,
        verify_sgx=False,
        dev=True,
    )
    with serve(build_app(settings)) as url:
        yield url, tmp_path


def test_health_metrics_openapi(kbs: tuple[str, Path]) -> None:
    url, _ = kbs
    guest = Guest(url)
    try:
        assert guest.client.get("/healthz").json() == {"status": "ok"}
        assert guest.auth().status_code == 200 and guest.attest().status_code == 200
        assert guest.resource("default/key/1").status_code == 200
        assert guest.resource("default/key/2").status_code == 401
        text = guest.client.get("/metrics").text
        assert 'kbs_http_requests_total{method="POST",route="auth",status="200"} 1.0' in text
        assert 'kbs_attestations_total{status="contraindicated",tee="sample"} 1.0' in text
        assert "kbs_resource_releases_total 1.0" in text
        assert 'kbs_resource_denials_total{reason="missing"} 1.0' in text
        assert "kbs_http_request_duration_seconds_bucket" in text
        doc = guest.client.get("/kbs/v0/openapi.json").json()
        assert doc["openapi"].startswith("3.")
        for path in (
            "/kbs/v0/auth",
            "/kbs/v0/attest",
            "/kbs/v0/resource/{repository}/{type}/{tag}",
            "/healthz",
        ):
            assert path in doc["paths"]
    finally:
        guest.close()


def test_admin_routes_mounted_with_generated_key(kbs: tuple[str, Path]) -> None:
    url, data_dir = kbs
    key = load_or_create_admin_key(admin_key_path(data_dir))
    token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=60)
    with httpx.Client(base_url=url) as client:
        assert client.get("/kbs/v0/resource").status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        r = client.post("/kbs/v0/resource/default/key/2", content=b"two", headers=headers)
        assert r.status_code == 200, r.text
        assert client.get("/kbs/v0/resource", headers=headers).json() == ["default/key/1", "default/key/2"]
    guest = Guest(url)
    try:
        assert guest.auth().status_code == 200 and guest.attest().status_code == 200
        r = guest.resource("default/key/2")
        assert jwe.decrypt(r.json(), guest.key) == b"two"
    finally:
        guest.close()


_GPU_POLICY = """package policy
import rego.v1
default hardware := 97
hardware := 2 if input.sampledevice.svn == "1"
trust_claims := {"hardware": hardware}
"""


def test_composite_evidence_sampledevice(kbs: tuple[str, Path]) -> None:
    url, data_dir = kbs
    token = mint_admin_token(
        load_or_create_admin_key(admin_key_path(data_dir)),
        role="admin",
        now=datetime.now(UTC),
        ttl_seconds=60,
    )
    policy = base64.urlsafe_b64encode(_GPU_POLICY.encode()).rstrip(b"=").decode()
    r = httpx.post(
        f"{url}/kbs/v0/attestation-policy",
        json={"type": "rego", "policy_id": "default_gpu", "policy": policy},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    guest = Guest(url)
    try:
        assert guest.auth().status_code == 200
        device = {
            "svn": "1",
            "report_data": base64.b64encode(device_binding_digest(guest.nonce, guest.jwk)).decode(),
        }
        additional = json.dumps({"sampledevice": device})
        body = guest.attestation(guest.sample_evidence(guest.digest(additional)), additional=additional)
        r = guest.attest(body)
        assert r.status_code == 200, r.text
        payload = r.json()["token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert set(claims["submods"]) == {"cpu0", "gpu0"}
        assert "sampledevice" in claims["submods"]["gpu0"]["ear.veraison.annotated-evidence"]
        assert claims["submods"]["gpu0"]["ear.status"] == "affirming"
        # A device bound to something else is refused.
        assert guest.auth().status_code == 200
        bad = json.dumps(
            {"sampledevice": {"svn": "1", "report_data": base64.b64encode(b"\x01" * 48).decode()}}
        )
        body = guest.attestation(guest.sample_evidence(guest.digest(bad)), additional=bad)
        r = guest.attest(body)
        assert r.status_code == 401 and "REPORT_DATA_MISMATCH" in r.json()["detail"]
        # A TEE with no verifier in additional evidence is refused by name.
        assert guest.auth().status_code == 200
        unknown = json.dumps({"nvidia": {"x": 1}})
        r = guest.attest(guest.attestation(guest.sample_evidence(guest.digest(unknown)), additional=unknown))
        assert (
            r.status_code == 401 and error_type(r) == "AttestationError" and "'nvidia'" in r.json()["detail"]
        )
    finally:
        guest.close()


@pytest.mark.parametrize("kind", ["p521", "rsa"])
def test_other_tee_key_types(kbs: tuple[str, Path], kind: str) -> None:
    url, _ = kbs
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    key = ec.generate_private_key(ec.SECP521R1()) if kind == "p521" else rsa.generate_private_key(65537, 2048)
    guest = Guest(url)
    guest.key = key  # type: ignore[assignment]
    guest.jwk = TeePubKey.from_public_key(key.public_key())
    try:
        assert guest.auth().status_code == 200 and guest.attest().status_code == 200
        r = guest.resource("default/key/1")
        assert r.status_code == 200, r.text
        assert jwe.decrypt(r.json(), key) == b"secret-1"
    finally:
        guest.close()


def test_cli_serve_dev(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, TEEGATE_DATA_DIR=str(tmp_path / "unused"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "kbs",
            "serve",
            "--dev",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        token = (tmp_path / "admin-token").read_text().strip()
        assert oct((tmp_path / "admin-token").stat().st_mode & 0o777) == "0o600"
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"http://127.0.0.1:{port}/kbs/v0/resource/default/key/1", content=b"dev", headers=headers
        )
        assert r.status_code == 200, r.text
        guest = Guest(f"http://127.0.0.1:{port}")
        try:
            assert guest.auth().status_code == 200 and guest.attest().status_code == 200
            assert jwe.decrypt(guest.resource("default/key/1").json(), guest.key) == b"dev"
        finally:
            guest.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    text = err.decode()
    assert "DEVELOPMENT PROFILE" in text and "INSECURE" in text and str(tmp_path / "admin-token") in text
    start = [
        json.loads(line) for line in text.splitlines() if line.startswith("{") and "listening on" in line
    ]
    assert len(start) == 1 and start[0]["listen"] == f"http://127.0.0.1:{port}"
    assert "dev-profile" in start[0]["insecure"] and "sample-evidence" in start[0]["insecure"]
    assert (tmp_path / "sim-platform" / "platform.json").is_file()


def _serve_refused(*args: str) -> subprocess.CompletedProcess[bytes]:
    """``teegate kbs serve ARGS`` run to its refusal (exit 1 before listening)."""
    return subprocess.run(
        [sys.executable, "-m", "teegate.cli", "kbs", "serve", *args],
        check=False,
        capture_output=True,
        timeout=60,
    )


def test_cli_refuses_dev_off_loopback(tmp_path: Path) -> None:
    r = _serve_refused("--dev", "--data-dir", str(tmp_path), "--listen", "0.0.0.0:0")
    assert r.returncode == 1 and b"loopback only" in r.stderr


def test_cli_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    r = _serve_refused("--data-dir", str(tmp_path), "--listen", "0.0.0.0:0")
    assert r.returncode == 1 and b"refusing plain HTTP" in r.stderr


def test_cli_serve_tls_with_config(tmp_path: Path) -> None:
    from tests.netutil import self_signed

    cert, key = self_signed(tmp_path)
    port = free_port()
    config = tmp_path / "kbs.toml"
    config.write_text(
        f'[http_server]\nsockets = ["127.0.0.1:{port}"]\n[verifiers]\nsample = true\ntdx = false\nsgx = false\n'
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "kbs",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(
            base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=str(cert))
        ) as client:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
            r = client.post("/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": {}})
            assert r.status_code == 200
            assert r.headers["set-cookie"].endswith("Secure")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    text = err.decode()
    assert f"https://127.0.0.1:{port}" in text and "sample-evidence" in text
    assert "admin-key.pem" in text


def test_cli_serve_workers_share_sessions(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.cli",
            "kbs",
            "serve",
            "--dev",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
        token = (tmp_path / "admin-token").read_text().strip()
        r = httpx.post(
            f"{base}/kbs/v0/resource/default/key/1",
            content=b"w",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200, r.text
        for _ in range(6):  # a new connection per step: any worker may serve any step
            guest = Guest(base)
            try:
                assert guest.auth().status_code == 200
                cookies = guest.client.cookies
                guest.client.close()
                guest.client = httpx.Client(base_url=base, cookies=cookies)
                assert guest.attest().status_code == 200
                cookies = guest.client.cookies
                guest.client.close()
                guest.client = httpx.Client(base_url=base, cookies=cookies)
                assert jwe.decrypt(guest.resource("default/key/1").json(), guest.key) == b"w"
            finally:
                guest.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    started = [
        line
        for line in err.decode().splitlines()
        if line.startswith("{") and json.loads(line).get("message", "").startswith("Started server process")
    ]
    assert len(started) == 2, err.decode()[-2000:]

"""The `teegate k8s` commands as processes: device plugin against the kubelet stand-in, the
sidecar-shim form of the KubeVirt hook, the webhook over HTTPS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from tests.netutil import free_port, self_signed

from .fakeroot import make_sgx_tdx_host
from .kubelet import FakeKubelet

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent / "data"
SHIM = Path(__file__).resolve().parents[3] / "deploy" / "k8s" / "sidecar-shim" / "onDefineDomain"


def _teegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "teegate.cli", *args]


async def test_device_plugin_process_registers_and_stops_on_sigterm(short_tmp: Path) -> None:
    root, plugins = short_tmp / "root", short_tmp / "dp"
    root.mkdir()
    plugins.mkdir()
    make_sgx_tdx_host(root, tdx=False)
    kubelet = FakeKubelet(plugins)
    await kubelet.start()
    proc = await asyncio.create_subprocess_exec(
        *_teegate(
            "k8s", "device-plugin", "--root", str(root), "--plugin-dir", str(plugins), "--poll-seconds", "0.1"
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        names = {(await kubelet.next_registration(20)).resource_name for _ in range(2)}
        assert names == {"sgx.intel.com/enclave", "sgx.intel.com/provision"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        await kubelet.stop()
    assert proc.returncode == 0, err.decode()
    assert b"device plugin: root=" in err
    assert not list(plugins.glob("sgx*.sock"))


def test_sidecar_shim_on_define_domain() -> None:
    domain = (DATA / "domain-efi.xml").read_text()
    vmi = (DATA / "vmi.json").read_text()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "TEEGATE_TDX_MR_OWNER": "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIi",
    }
    done = subprocess.run(
        [str(SHIM), "--vmi", vmi, "--domain", domain],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sec = ET.fromstring(done.stdout).find("launchSecurity")
    assert sec is not None and sec.findtext("mrOwner") == env["TEEGATE_TDX_MR_OWNER"]
    bad = subprocess.run(
        [str(SHIM), "--vmi", vmi, "--domain", "<domain>"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "not well-formed" in bad.stderr and bad.stdout == ""


async def test_webhook_process_serves_https(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *_teegate(
            "k8s", "webhook", "--listen", f"127.0.0.1:{port}", "--tls-cert", str(cert), "--tls-key", str(key)
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "object": {
                "metadata": {"annotations": {"sgx.intel.com/quote-provider": "aesmd"}},
                "spec": {"containers": [{"name": "a", "image": "x"}]},
            },
        },
    }
    try:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as client:
            for _ in range(200):
                try:
                    r = await client.post(f"https://127.0.0.1:{port}/mutate-v1-pod", json=review)
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("webhook did not start")
        assert r.status_code == 200 and r.json()["response"]["patchType"] == "JSONPatch"
        assert json.loads(__import__("base64").b64decode(r.json()["response"]["patch"]))
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 20)


def test_operator_needs_a_scope_and_bad_flags_fail() -> None:
    done = subprocess.run(
        _teegate("k8s", "operator"), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1 and "--all-namespaces" in done.stderr
    bad = subprocess.run(
        _teegate("k8s", "kubevirt-hook", "--policy", "0x10000001"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and "DEBUG" in bad.stderr
    listen = subprocess.run(
        _teegate("k8s", "webhook", "--listen", "8443", "--tls-cert", str(SHIM), "--tls-key", str(SHIM)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listen.returncode == 1 and "host:port" in listen.stderr

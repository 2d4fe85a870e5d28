"""teegate-attester against the real teegate KBS with simulated TDX (via QGS) and SGX (via AESM) evidence."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from teegate.attester.client import KbsClient, RetryPolicy
from teegate.attester.errors import AttestationRefused, ExitCode
from teegate.attester.keys import KeyAlgorithm
from teegate.attester.providers.sim import SimTdProvider
from teegate.attester.providers.tdx_guest import quote_tdreport
from teegate.attester.providers.tsm import TsmProvider
from teegate.attester.uri import parse_resource
from teegate.sim import SimPlatform
from tests.integration.attester.conftest import Stack
from tests.integration.attester.stack import (
    LateForwarder,
    attester,
    free_port,
    running,
    start_aesm,
    start_qgs,
    tool_env,
)
from tests.unit.attester.fake_tsm import FakeTsm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def secret(stack: Stack) -> bytes:
    stack.kbs.set_resource("default/attester/secret", b"sim-secret\x00\xff")
    return b"sim-secret\x00\xff"


def test_get_resource_with_sim_evidence(stack: Stack, secret: bytes) -> None:
    result = attester(*stack.sim_args(), "get-resource", "--path", "kbs:///default/attester/secret")
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip()) == secret
    assert result.stderr.count("evidence provider: sim") == 1


@pytest.mark.parametrize("key", list(KeyAlgorithm))
def test_every_tee_key_type_against_the_kbs(stack: Stack, secret: bytes, key: KeyAlgorithm) -> None:
    provider = SimTdProvider(stack.platform, stack.qgs_socket)
    with KbsClient(stack.kbs.url, provider, key_algorithm=key) as client:
        assert client.get_resource(parse_resource("default/attester/secret")) == secret


def test_raw_output_and_initdata(stack: Stack, secret: bytes, tmp_path: Path) -> None:
    initdata = tmp_path / "initdata.toml"
    initdata.write_text('version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"cdh.toml" = "x = 1"\n')
    raw = subprocess.run(
        [
            sys.executable,
            "-m",
            "teegate.attester.cli",
            *stack.sim_args(),
            "get-resource",
            "--path",
            "default/attester/secret",
            "--raw",
            "--initdata",
            str(initdata),
        ],
        capture_output=True,
        timeout=60,
        env=tool_env(),
        check=False,
    )
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == secret


def test_attest_prints_an_ear_token_binding_the_tee_key(stack: Stack) -> None:
    result = attester(*stack.sim_args(), "attest")
    assert result.returncode == 0, result.stderr
    payload = result.stdout.strip().split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    evidence = claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"]["tee-pubkey"]["crv"] == "P-256"


def test_missing_resource_exit_code(stack: Stack) -> None:
    result = attester(*stack.sim_args(), "get-resource", "--path", "default/attester/absent")
    assert result.returncode == ExitCode.RESOURCE_MISSING
    assert "resource missing" in result.stderr and "default/attester/absent" in result.stderr


def test_refusing_kbs_stops_at_once_with_its_reason(stack: Stack, secret: bytes) -> None:
    stack.kbs.set_builtin_resource_policy("affirming")
    try:
        started = time.monotonic()
        result = attester(
            *stack.sim_args(),
            "--retries",
            "10",
            "--deadline",
            "60",
            "get-resource",
            "--path",
            "default/attester/secret",
        )
        elapsed = time.monotonic() - started
    finally:
        stack.kbs.set_builtin_resource_policy("dev")
    assert result.returncode == ExitCode.ATTESTATION_REFUSED, result.stderr
    assert "attestation refused" in result.stderr and "PolicyDeny" in result.stderr
    assert "retrying" not in result.stderr
    assert elapsed < 10
    assert result.stdout == ""


def test_quote_service_down_then_up(stack: Stack, secret: bytes, tmp_path: Path) -> None:
    """The seed's boot: the TD asks for a quote again and again until QGS answers."""
    sock = tmp_path / "late-qgs.sock"
    args = [
        "--url",
        stack.kbs.url,
        "--evidence",
        "sim",
        "--sim-platform",
        str(stack.platform),
        "--qgs-socket",
        str(sock),
    ]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.attester.cli",
            *args,
            "--retries",
            "100",
            "--deadline",
            "40",
            "get-resource",
            "--path",
            "default/attester/secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_env(),
    )
    time.sleep(1.5)
    qgs = start_qgs(tmp_path, stack.platform, sock)
    with running(qgs):
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert base64.b64decode(out.strip()) == secret
    assert "attempt 1/100 for resource default/attester/secret failed: evidence unavailable" in err


def test_kbs_down_then_up(stack: Stack, secret: bytes) -> None:
    """The guest starts while the KBS is unreachable; it comes up within the deadline."""
    late = LateForwarder(int(stack.kbs.url.rsplit(":", 1)[1]))
    args = [
        "--url",
        f"http://127.0.0.1:{late.port}",
        "--evidence",
        "sim",
        "--sim-platform",
        str(stack.platform),
    ]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "teegate.attester.cli",
            *args,
            "--qgs-socket",
            str(stack.qgs_socket),
            "--retries",
            "100",
            "--deadline",
            "60",
            "get-resource",
            "--path",
            "default/attester/secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=tool_env(),
    )
    try:
        time.sleep(1.5)
        late.open()
        out, err = process.communicate(timeout=60)
    finally:
        late.close()
    assert process.returncode == 0, err
    assert base64.b64decode(out.strip()) == b"sim-secret\x00\xff"
    assert "failed: KBS unreachable" in err


def test_kbs_down_gives_up_within_deadline(stack: Stack) -> None:
    started = time.monotonic()
    result = attester(
        "--url",
        f"http://127.0.0.1:{free_port()}",
        "--evidence",
        "sample",
        "--retries",
        "100",
        "--deadline",
        "1.5",
        "get-resource",
        "--path",
        "a/b/c",
    )
    assert result.returncode == ExitCode.KBS_UNREACHABLE
    assert time.monotonic() - started < 10
    assert "gave up on resource a/b/c" in result.stderr


def test_sgx_out_of_process_via_aesm(stack: Stack, secret: bytes, tmp_path: Path) -> None:
    sock = tmp_path / "aesm.socket"
    aesm = start_aesm(tmp_path, stack.platform, sock)
    with running(aesm):
        result = attester(
            "--url",
            stack.kbs.url,
            "--sim-platform",
            str(stack.platform),
            "--aesm-socket",
            str(sock),
            "--tsm-root",
            str(tmp_path / "no-tsm"),
            "get-resource",
            "--path",
            "default/attester/secret",
            env=tool_env(SGX_AESM_ADDR="1"),
        )
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip()) == secret
    assert "evidence provider: sgx-aesm" in result.stderr


def test_configfs_tsm_tree_quoted_by_qgs(stack: Stack, secret: bytes, tmp_path: Path) -> None:
    """configfs-tsm as on a TD: the 'kernel' turns inblob into a TDREPORT and QEMU asks QGS for the quote."""
    platform = SimPlatform.load(stack.platform)
    fake = FakeTsm(
        tmp_path / "tsm", report=lambda inblob: quote_tdreport(stack.qgs_socket, platform.tdreport(inblob))
    )
    provider = TsmProvider(fake.root, ops=fake.ops, ccel_path=tmp_path / "none", aael_path=tmp_path / "none")
    with KbsClient(stack.kbs.url, provider, retry=RetryPolicy(attempts=1)) as client:
        assert client.get_resource(parse_resource("default/attester/secret")) == secret
    assert list(fake.root.iterdir()) == []


def test_concurrent_guests(stack: Stack, secret: bytes) -> None:
    results: list[bytes] = []

    def one() -> None:
        with KbsClient(stack.kbs.url, SimTdProvider(stack.platform, stack.qgs_socket)) as client:
            results.append(client.get_resource(parse_resource("default/attester/secret")))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [secret] * 4


def test_quote_from_an_untrusted_platform_is_refused(stack: Stack, secret: bytes, tmp_path: Path) -> None:
    """A quote signed by another (simulated) platform's PKI fails verification at /attest: exit 4, KBS's reason."""
    other = tmp_path / "other-platform"
    SimPlatform.create(other)
    sock = tmp_path / "other-qgs.sock"
    qgs = start_qgs(tmp_path, other, sock)
    with running(qgs):
        started = time.monotonic()
        provider = SimTdProvider(other, sock)
        with (
            KbsClient(stack.kbs.url, provider, retry=RetryPolicy(attempts=5, deadline=60)) as client,
            pytest.raises(AttestationRefused) as info,
        ):
            client.get_resource(parse_resource("default/attester/secret"))
    assert info.value.stage == "the evidence (/attest)"
    assert "trusted" in info.value.detail.lower()  # the KBS's reason reaches the operator
    assert time.monotonic() - started < 10

"""teegate-attester's command line: output format and one exit status per failure kind."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from teegate.attester.cli import clevis_jwk, main
from teegate.attester.errors import ExitCode
from tests.unit.attester.fake_kbs import Behaviour, FakeKbs
from tests.unit.attester.tlsutil import make_ca, server_context

pytestmark = pytest.mark.timeout(60)


def _inproc(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "teegate.attester.cli", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )


def test_get_resource_prints_base64_and_names_the_provider() -> None:
    with FakeKbs() as kbs:
        result = _run(
            "--url", kbs.url, "--evidence", "sample", "get-resource", "--path", "kbs:///default/key/1"
        )
        jwk = _run(
            "--url", kbs.url, "--evidence", "sample", "get-resource", "--path", "default/key/1", "--as-jwk"
        )
    assert result.returncode == 0, result.stderr
    assert base64.b64decode(result.stdout.strip()) == b"s3cret"
    assert "evidence provider: sample" in result.stderr
    assert "insecure: sample evidence" in result.stderr
    assert json.loads(jwk.stdout) == clevis_jwk(b"s3cret")


@pytest.mark.parametrize(
    ("behaviour", "code", "text"),
    [
        (
            Behaviour(attest_refusal="debug TD refused"),
            ExitCode.ATTESTATION_REFUSED,
            "attestation refused: KBS refused the evidence (/attest) (PolicyDeny): debug TD refused",
        ),
        (Behaviour(resources={}), ExitCode.RESOURCE_MISSING, "resource missing"),
        (Behaviour(wrong_key=True), ExitCode.KBS_PROTOCOL, "KBS protocol violation"),
    ],
)
def test_failure_exit_codes(
    capsys: pytest.CaptureFixture[str], behaviour: Behaviour, code: ExitCode, text: str
) -> None:
    with FakeKbs(behaviour) as kbs:
        status, out, err = _inproc(
            capsys, "--url", kbs.url, "--evidence", "sample", "get-resource", "--path", "default/key/1"
        )
    assert status == code, err
    assert text in err
    assert out == ""


def test_unreachable_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _inproc(
        capsys,
        "--url",
        "http://127.0.0.1:1",
        "--evidence",
        "sample",
        "--retries",
        "2",
        "--deadline",
        "5",
        "attest",
    )
    assert status == ExitCode.KBS_UNREACHABLE
    assert "KBS unreachable" in err and "gave up on attestation after 2 attempt(s)" in err


def test_evidence_unavailable_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SGX_AESM_ADDR", raising=False)
    status, _, err = _inproc(
        capsys, "--url", "http://127.0.0.1:1", "--tsm-root", str(tmp_path / "none"), "attest"
    )
    assert status == ExitCode.EVIDENCE_UNAVAILABLE, err
    assert "no TEE evidence source found" in err


def test_tls_wrong_ca_exit_code(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _, ca_key, ca_cert = make_ca(tmp_path, "kbs-ca")
    wrong, _, _ = make_ca(tmp_path, "other-ca")
    with FakeKbs(tls=server_context(tmp_path, ca_key, ca_cert)) as kbs:
        status, _, err = _inproc(
            capsys,
            "--url",
            kbs.url,
            "--cert-file",
            str(wrong),
            "--evidence",
            "sample",
            "get-resource",
            "--path",
            "default/key/1",
        )
    assert status == ExitCode.KBS_TLS
    assert "KBS TLS certificate not trusted" in err


@pytest.mark.parametrize(
    "args",
    [
        ["--url", "http://127.0.0.1:1", "--evidence", "sample", "get-resource", "--path", "only/two"],
        ["--url", "http://127.0.0.1:1", "--evidence", "sample", "get-resource", "--path", "https://x/a/b/c"],
        ["--url", "http://127.0.0.1:1", "--evidence", "sample", "get-resource", "--path", "a/.b/c"],
        ["--evidence", "sample", "attest"],
        ["--url", "http://127.0.0.1:1", "--evidence", "nonsense", "attest"],
        [
            "--url",
            "http://127.0.0.1:1",
            "--evidence",
            "sample",
            "get-resource",
            "--path",
            "a/b/c",
            "--raw",
            "--as-jwk",
        ],
    ],
)
def test_usage_errors(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    status, _, err = _inproc(capsys, *args)
    assert status == ExitCode.USAGE, err
    assert err.strip()

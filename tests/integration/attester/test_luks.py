"""A LUKS2 volume whose passphrase lives in the running KBS, unlocked by the attester with sim evidence."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from teegate.attester.client import KbsClient
from teegate.attester.providers.sim import SimTdProvider
from teegate.attester.uri import parse_resource
from tests.integration.attester.conftest import Stack
from tests.integration.attester.luks import make_luks2, unlock
from tests.integration.attester.stack import DEPLOY, tool_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PASSPHRASE = b"correct horse battery staple \xf0\x9f\x94\x91"


def _config(stack: Stack, tmp: Path, resource: str, **extra: str) -> Path:
    lines = {
        "TEEGATE_KBS_URL": stack.kbs.url,
        "TEEGATE_RESOURCE": resource,
        "TEEGATE_EVIDENCE": "sim",
        "TEEGATE_KEY_FILE": str(tmp / "run" / "luks.key"),
        "TEEGATE_ATTEMPTS": "0",
        "TEEGATE_RETRY_DELAY": "0.2",
        "TEEGATE_ATTESTER_ARGS": f"--sim-platform {stack.platform} --qgs-socket {stack.qgs_socket}",
        **extra,
    }
    path = tmp / "attester.conf"
    path.write_text("".join(f'{k}="{v}"\n' for k, v in lines.items()))
    return path


def test_luks2_unlocked_with_key_from_kbs(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "disk.img"
    make_luks2(image, PASSPHRASE)
    stack.kbs.set_resource("default/luks/disk1", PASSPHRASE)
    result = subprocess.run(
        [*attester_cmd(), *stack.sim_args(), "get-resource", "--path", "default/luks/disk1", "--raw"],
        capture_output=True,
        timeout=60,
        env=tool_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    accepted, how = unlock(image, result.stdout, f"teegate-test-{os.getpid()}")
    with capsys.disabled():
        print(f"\n[attester LUKS test] unlock check that ran: {how}")
    assert accepted, how


def test_wrong_passphrase_in_kbs_does_not_unlock(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_luks2(image, PASSPHRASE)
    stack.kbs.set_resource("default/luks/wrong", b"not the passphrase")
    with KbsClient(stack.kbs.url, SimTdProvider(stack.platform, stack.qgs_socket)) as client:
        released = client.get_resource(parse_resource("default/luks/wrong"))
    assert released == b"not the passphrase"
    accepted, _ = unlock(image, released, f"teegate-wrong-{os.getpid()}")
    assert not accepted


def attester_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "teegate.attester.cli"]


def test_crypttab_keyscript_feeds_cryptsetup(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_luks2(image, PASSPHRASE)
    stack.kbs.set_resource("default/luks/keyscript", PASSPHRASE)
    config = _config(stack, tmp_path, "default/unused/x")
    env = tool_env(CRYPTTAB_KEY="default/luks/keyscript", TEEGATE_CONFIG=str(config))
    script = DEPLOY / "systemd" / "teegate-keyscript"
    # The installed keyscript execs /usr/lib/teegate/teegate-fetch-key; run the repo copy the same way.
    text = script.read_text().replace(
        "/usr/lib/teegate/teegate-fetch-key", str(DEPLOY / "systemd" / "teegate-fetch-key")
    )
    local = tmp_path / "keyscript"
    local.write_text(text)
    local.chmod(0o755)
    key = subprocess.run([str(local)], capture_output=True, timeout=60, env=env, check=False)
    assert key.returncode == 0, key.stderr
    assert key.stdout == PASSPHRASE
    assert (
        b"ATTESTATION SERVICE: Trying to fetch passphrase from " + stack.kbs.url.encode() + b": 1"
        in key.stderr
    )
    accepted, how = unlock(image, key.stdout, f"teegate-ks-{os.getpid()}")
    assert accepted, how


def test_boot_unit_script_retries_until_the_key_exists(stack: Stack, tmp_path: Path) -> None:
    """As in the seed: a console line per attempt until the KBS can release the key, then a 0400 key file."""
    config = _config(stack, tmp_path, "default/luks/appears-later")
    process = subprocess.Popen(
        [str(DEPLOY / "systemd" / "teegate-fetch-key"), str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env(),
    )
    time.sleep(1.0)
    stack.kbs.set_resource("default/luks/appears-later", PASSPHRASE)
    _, err = process.communicate(timeout=60)
    text = err.decode()
    assert process.returncode == 0, text
    assert f"ATTESTATION SERVICE: Trying to fetch passphrase from {stack.kbs.url}: 1" in text
    assert f"ATTESTATION SERVICE: Trying to fetch passphrase from {stack.kbs.url}: 2" in text
    assert "attempt 1 failed: resource default/luks/appears-later missing; retrying" in text
    key_file = tmp_path / "run" / "luks.key"
    assert key_file.read_bytes() == PASSPHRASE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o400


def test_boot_script_stops_on_configuration_errors(stack: Stack, tmp_path: Path) -> None:
    missing = subprocess.run(
        [str(DEPLOY / "systemd" / "teegate-fetch-key"), str(tmp_path / "absent.conf")],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert missing.returncode == 2 and b"configuration" in missing.stderr
    config = _config(stack, tmp_path, "default/luks/x", TEEGATE_KBS_URL="http://10.255.255.1:1")
    refused = subprocess.run(
        [str(DEPLOY / "systemd" / "teegate-fetch-key"), str(config)],
        capture_output=True,
        timeout=30,
        env=tool_env(),
        check=False,
    )
    assert refused.returncode == 2
    assert b"not retrying" in refused.stderr and b"plain HTTP off loopback" in refused.stderr

    absent = subprocess.run(
        [str(DEPLOY / "systemd" / "teegate-fetch-key"), str(config)],
        capture_output=True,
        timeout=30,
        env=tool_env(TEEGATE_ATTESTER="/nonexistent/teegate-attester"),
        check=False,
    )
    assert absent.returncode == 127 and b"cannot be run" in absent.stderr

"""The clevis ``teegate`` pin with Debian's clevis: encrypt/decrypt and LUKS bind through the running KBS."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.attester.conftest import Stack
from tests.integration.attester.luks import make_luks2, unlock
from tests.integration.attester.stack import tool_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _clevis() -> str:
    path = shutil.which("clevis")
    if path is None:
        raise RuntimeError(
            "clevis is not installed: run `bash .ci/apt-install` (Debian packages clevis, clevis-luks)"
        )
    return path


@pytest.fixture(scope="module")
def config(stack: Stack) -> str:
    stack.kbs.set_resource("default/clevis/key", os.urandom(32))
    stack.kbs.set_resource("default/clevis/other", os.urandom(32))
    return json.dumps(
        {
            "url": stack.kbs.url,
            "path": "default/clevis/key",
            "evidence": "sim",
            "sim_platform": str(stack.platform),
            "qgs_socket": str(stack.qgs_socket),
        }
    )


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=data, capture_output=True, timeout=60, env=tool_env(), check=False)


def test_encrypt_decrypt_round_trip(config: str) -> None:
    secret = b"clevis plaintext \x00\x01\x02"
    encrypted = _run([_clevis(), "encrypt", "teegate", config], secret)
    assert encrypted.returncode == 0, encrypted.stderr
    jwe = encrypted.stdout
    assert jwe.count(b".") == 4  # compact JWE
    header = json.loads(base64.urlsafe_b64decode(jwe.split(b".")[0] + b"=="))
    assert header["alg"] == "dir" and header["enc"] == "A256GCM"
    assert header["clevis"]["pin"] == "teegate"
    assert header["clevis"]["teegate"]["path"] == "default/clevis/key"
    decrypted = _run([_clevis(), "decrypt"], jwe)
    assert decrypted.returncode == 0, decrypted.stderr
    assert decrypted.stdout == secret


def test_header_pointing_elsewhere_does_not_decrypt(config: str) -> None:
    jwe = _run([_clevis(), "encrypt", "teegate", config], b"secret").stdout.decode()
    head, rest = jwe.split(".", 1)
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header["clevis"]["teegate"]["path"] = "default/clevis/other"
    forged = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    result = _run([_clevis(), "decrypt"], f"{forged}.{rest}".encode())
    assert result.returncode != 0
    assert result.stdout == b""


def test_missing_config_property(config: str) -> None:
    broken = json.loads(config)
    del broken["path"]
    result = _run([_clevis(), "encrypt", "teegate", json.dumps(broken)], b"x")
    assert result.returncode != 0 and b"'path'" in result.stderr


def test_luks_bind_then_unlock(config: str, tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_luks2(image, b"initial passphrase")
    bound = _run(
        [_clevis(), "luks", "bind", "-y", "-d", str(image), "-k", "-", "teegate", config],
        b"initial passphrase",
    )
    assert bound.returncode == 0, bound.stderr
    # What `clevis luks unlock` does, minus the device-mapper step: decrypt the token's JWE.
    passphrase = _run([_clevis(), "luks", "pass", "-d", str(image), "-s", "1"], b"")
    assert passphrase.returncode == 0, passphrase.stderr
    accepted, how = unlock(image, passphrase.stdout, f"teegate-clevis-{os.getpid()}")
    assert accepted, how

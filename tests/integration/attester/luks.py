"""File-backed LUKS2 volumes with Debian's cryptsetup (fast PBKDF for tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from teegate.demo import format_luks2
from tests.integration.attester.stack import dm_available


def cryptsetup() -> str:
    path = shutil.which("cryptsetup") or (
        "/usr/sbin/cryptsetup" if Path("/usr/sbin/cryptsetup").exists() else None
    )
    if path is None:
        raise RuntimeError(
            "cryptsetup is not installed: run `bash .ci/apt-install` (Debian package cryptsetup)"
        )
    return path


def make_luks2(image: Path, passphrase: bytes, size_mib: int = 20) -> None:
    format_luks2(cryptsetup(), image, passphrase, size_mib=size_mib)


def unlock(image: Path, passphrase: bytes, name: str) -> tuple[bool, str]:
    """Open the volume with ``passphrase``: a real ``open`` where device-mapper works, else
    ``--test-passphrase``. Returns (accepted, which check ran)."""
    if dm_available():
        opened = subprocess.run(
            [cryptsetup(), "open", "--key-file", "-", str(image), name],
            input=passphrase,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if opened.returncode == 0:
            subprocess.run([cryptsetup(), "close", name], check=True, capture_output=True, timeout=60)
            return True, "cryptsetup open (device-mapper)"
        if b"device-mapper" not in opened.stderr:
            return False, "cryptsetup open (device-mapper)"
    tested = subprocess.run(
        [cryptsetup(), "open", "--test-passphrase", "--key-file", "-", str(image)],
        input=passphrase,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return tested.returncode == 0, "cryptsetup open --test-passphrase (no device-mapper here)"

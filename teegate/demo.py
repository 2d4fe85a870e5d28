"""``make demo``: the seed's boot, end to end on the simulated platform.

A confidential VM's disk is LUKS2-encrypted; its passphrase lives only in the KBS. At boot the
guest's attester asks for it again and again until the host's quote service (QGS) answers; the
KBS verifies the quote and releases the passphrase encrypted to the guest's TEE key; cryptsetup
unlocks the disk. Here: a simulated TDX platform, a real ``teegate kbs serve --dev``, a real QGS
on a Unix socket, Debian's cryptsetup on a file-backed image. Everything lives in a temporary
directory that is removed at the end.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

import httpx

__all__ = ["main", "run_demo"]

_RESOURCE: Final = "default/kbsres1/key1"
_STEPS: Final = 8
_MAPPING: Final = f"teegate-demo-{os.getpid()}"


class DemoFailed(Exception):
    """A demo step failed; the message says which and why."""


def _say(text: str) -> None:
    print(text, flush=True)


def _step(number: int, text: str) -> None:
    _say(f"\n[{number}/{_STEPS}] {text}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _teegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "teegate.cli", *args]


def _cryptsetup() -> str:
    found = shutil.which("cryptsetup") or next(
        (p for p in ("/usr/sbin/cryptsetup", "/sbin/cryptsetup") if Path(p).exists()), None
    )
    if found is None:
        raise DemoFailed("cryptsetup is not installed (Debian package cryptsetup; `make demo` installs it)")
    return found


class _Daemons:
    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen[bytes]:
        log = self._workdir / f"{name}.log"
        with log.open("wb") as handle:
            process = subprocess.Popen(list(args), stdout=handle, stderr=subprocess.STDOUT)
        self._procs.append((name, process, log))
        return process

    def log(self, name: str) -> str:
        for proc_name, _, path in self._procs:
            if proc_name == name:
                return path.read_text(errors="replace")[-2000:]
        return ""

    def stop_all(self) -> None:
        for _, process, _ in reversed(self._procs):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process, _ in self._procs:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_http(url: str, process: subprocess.Popen[bytes], ready: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailed(f"the KBS exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200 and ready.exists():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise DemoFailed(f"the KBS did not answer {url}/healthz within {timeout:.0f}s")


def _wait_socket(path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoFailed(f"QGS exited with status {process.returncode}")
        if path.exists():
            with socket.socket(socket.AF_UNIX) as sock:
                try:
                    sock.connect(str(path))
                    return
                except OSError:
                    pass
        time.sleep(0.05)
    raise DemoFailed(f"QGS did not listen on {path} within {timeout:.0f}s")


def _relay(stream: IO[str], lines: list[str]) -> None:
    for line in stream:
        lines.append(line)
        _say(f"      guest | {line.rstrip()}")


def _device_mapper() -> bool:
    return Path("/dev/mapper/control").exists()


def format_luks2(cryptsetup: str, image: Path, passphrase: bytes, *, size_mib: int) -> None:
    """Create a file-backed LUKS2 volume of ``size_mib`` MiB keyed by ``passphrase``.

    PBKDF2 with 1000 iterations keeps it fast: the demo's key is 24 random bytes from the KBS,
    not a human passphrase, so a slow KDF would add nothing.
    """
    with image.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    subprocess.run(
        [
            cryptsetup,
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
            "-",
            str(image),
        ],
        input=passphrase,
        check=True,
        capture_output=True,
        timeout=120,
    )


def run_demo(workdir: Path) -> str:
    """Run every step in ``workdir``; return which cryptsetup check unlocked the disk."""
    from teegate.sim import SimPlatform

    daemons = _Daemons(workdir)
    cryptsetup = _cryptsetup()
    opened = False
    try:
        _step(1, "Simulated TDX platform (test PKI; trusted only by this --dev KBS)")
        platform_dir = workdir / "platform"
        platform = SimPlatform.create(platform_dir)
        _say(f"      platform {platform_dir}  FMSPC {platform.fmspc}")

        _step(2, "KBS: teegate kbs serve --dev (loopback, Trustee protocol 0.4.0)")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        data_dir = workdir / "kbs"
        kbs = daemons.start(
            "kbs",
            _teegate(
                "kbs",
                "serve",
                "--dev",
                "--data-dir",
                str(data_dir),
                "--sim-platform",
                str(platform_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "text",
            ),
        )
        _wait_http(url, kbs, data_dir / "admin-token")
        _say(f"      KBS listening on {url}")

        _step(3, "Encrypted disk: a file-backed LUKS2 volume (cryptsetup luksFormat)")
        image = workdir / "disk.img"
        passphrase = base64.b64encode(secrets.token_bytes(24))
        format_luks2(cryptsetup, image, passphrase, size_mib=32)
        _say(f"      {image} (LUKS2, 32 MiB); its passphrase exists only in memory and, next, in the KBS")

        _step(4, f"Store the passphrase in the KBS as resource {_RESOURCE} (teegate kbs admin set-resource)")
        secret_file = workdir / "passphrase"
        fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(passphrase)
        try:
            subprocess.run(
                _teegate(
                    "kbs",
                    "admin",
                    "--url",
                    url,
                    "--data-dir",
                    str(data_dir),
                    "set-resource",
                    "--path",
                    _RESOURCE,
                    "--resource-file",
                    str(secret_file),
                ),
                check=True,
                capture_output=True,
                timeout=60,
            )
        finally:
            secret_file.unlink()
        _say("      stored; the local copy is deleted")

        _step(5, "Guest boots: teegate-attester asks for the passphrase; the host's QGS is not running yet")
        qgs_socket = workdir / "qgs.sock"
        attester_args = [
            "--url",
            url,
            "--evidence",
            "sim",
            "--sim-platform",
            str(platform_dir),
            "--qgs-socket",
            str(qgs_socket),
            "--retries",
            "30",
            "--deadline",
            "90",
            "get-resource",
            "--path",
            _RESOURCE,
        ]
        _say(f"      Executing: teegate-attester {' '.join(attester_args)}")
        guest = subprocess.Popen(
            [sys.executable, "-m", "teegate.attester.cli", *attester_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert guest.stderr is not None and guest.stdout is not None
        lines: list[str] = []
        relay = threading.Thread(target=_relay, args=(guest.stderr, lines), daemon=True)
        relay.start()
        deadline = time.monotonic() + 30
        while (
            not any("failed" in line for line in lines)
            and guest.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)

        _step(
            6, "Host: start the Quote Generation Service (teegate qgs serve --backend sim) on a Unix socket"
        )
        qgs = daemons.start(
            "qgs",
            _teegate(
                "qgs",
                "serve",
                "--socket",
                str(qgs_socket),
                "--backend",
                "sim",
                "--platform",
                str(platform_dir),
            ),
        )
        _wait_socket(qgs_socket, qgs)
        _say(f"      QGS listening on {qgs_socket}; the guest's next attempt gets a quote")
        try:
            out, _ = guest.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            guest.kill()
            raise DemoFailed("the attester did not finish within 120 s") from None
        relay.join(timeout=5)
        if guest.returncode != 0:
            raise DemoFailed(f"the attester failed with exit status {guest.returncode} (see its lines above)")
        released = base64.b64decode(out.strip())
        _say(
            f"      KBS verified the quote and released {len(released)} bytes, "
            "JWE-encrypted to the guest's TEE key"
        )

        _step(7, "Unlock the disk with the released passphrase")
        if _device_mapper():
            result = subprocess.run(
                [cryptsetup, "open", "--key-file", "-", str(image), _MAPPING],
                input=released,
                capture_output=True,
                timeout=120,
                check=False,
            )
            if result.returncode == 0:
                opened = True
                how = f"cryptsetup open → /dev/mapper/{_MAPPING} (device-mapper)"
            elif b"device-mapper" in result.stderr or b"dm_mod" in result.stderr:
                how = ""
            else:
                raise DemoFailed(
                    f"cryptsetup open refused the passphrase: {result.stderr.decode(errors='replace')}"
                )
        else:
            how = ""
        if not opened:
            result = subprocess.run(
                [cryptsetup, "open", "--test-passphrase", "--key-file", "-", str(image)],
                input=released,
                capture_output=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise DemoFailed(
                    f"cryptsetup refused the passphrase: {result.stderr.decode(errors='replace')}"
                )
            how = (
                "cryptsetup open --test-passphrase "
                "(device-mapper is not available here, so no mapping is created)"
            )
        _say(f"      UNLOCKED: {how}")
        return how
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or b"").decode(errors="replace").strip()
        raise DemoFailed(f"{Path(str(exc.cmd[0])).name} failed: {detail}") from None
    except DemoFailed as exc:
        for name in ("kbs", "qgs"):
            log = daemons.log(name)
            if log:
                _say(f"      --- {name} log (tail) ---\n{log}")
        raise exc
    finally:
        _step(8, "Clean up: stop the KBS and QGS, remove the image and every file")
        if opened:
            subprocess.run([cryptsetup, "close", _MAPPING], capture_output=True, timeout=60, check=False)
        daemons.stop_all()


def main() -> int:
    """Run the demo in a temporary directory; 0 when the disk unlocked."""
    _say("teegate demo — a confidential VM's disk unlocked by remote attestation (simulated TDX)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="teegate-demo-") as tmp:
        try:
            run_demo(Path(tmp))
        except DemoFailed as exc:
            _say(f"\nDEMO FAILED: {exc}")
            return 1
    _say(f"      removed {tmp}")
    _say(
        f"\nDemo complete in {time.monotonic() - started:.1f}s: "
        "the disk was unlocked only after the KBS verified the quote."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`teegate host check` against fake root trees: a ready host, then each failure."""

from __future__ import annotations

import http.server
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from teegate.commands.host import host
from teegate.host.checks import HostCheckSettings, Status, run_checks

from .fakeroot import bind_unix, make_sgx_tdx_host, write

pytestmark = pytest.mark.integration


class _FakeQgs:
    """Answers GET_PLATFORM_INFO like a QGS (4-byte BE length + packed header)."""

    def __init__(self, path: Path, *, error: int = 0) -> None:
        self.sock = bind_unix(path)
        self.error = error
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                length = struct.unpack(">I", conn.recv(4))[0]
                major, _minor, kind, size, _ = struct.unpack("<HHIII", conn.recv(length))
                assert (major, kind, size) == (1, 4, 16)
                body = struct.pack("<HHIII", 1, 0, 5, 16, self.error)
                conn.sendall(struct.pack(">I", len(body)) + body)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class _Pccs(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/sgx/certification/v4/rootcacrl" else 404
        self.send_response(code)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"crl!")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def pccs() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pccs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _script(root: Path, path: str, output: str) -> None:
    p = write(root, path, f"#!/bin/sh\necho '{output}'\n")
    p.chmod(0o755)


def _ready_host(root: Path) -> None:
    make_sgx_tdx_host(root)
    write(root, "/proc/sys/kernel/osrelease", "6.16.3-200.fc42.x86_64\n")
    write(
        root,
        "/var/log/dmesg",
        "[    1.2] virt/tdx: BIOS enabled: private KeyID range [16, 64)\n"
        "[    2.3] virt/tdx: module initialized\n",
    )
    _script(root, "/usr/bin/qemu-system-x86_64", "QEMU emulator version 10.1.0 (qemu-10.1.0-1.fc42)")
    _script(root, "/usr/sbin/libvirtd", "libvirtd (libvirt) 11.6.0")


@pytest.fixture
def ready(short_tmp: Path, pccs: str) -> Iterator[tuple[Path, HostCheckSettings]]:
    root = short_tmp / "r"
    _ready_host(root)
    qgs = _FakeQgs(root / "var/run/tdx-qgs/qgs.socket")
    yield root, HostCheckSettings(root=root, pccs_url=pccs, timeout=2.0)
    qgs.close()


def test_ready_host_passes_table_and_json(ready: tuple[Path, HostCheckSettings], pccs: str) -> None:
    root, settings = ready
    results = run_checks(settings)
    assert [r.name for r in results] == [
        "kernel version",
        "TDX module initialized (dmesg)",
        "KVM TDX enabled",
        "QEMU version",
        "libvirt version",
        "QGS socket answering",
        "SGX device nodes",
        "CPU SGX + flexible launch control",
        "EPC size",
        "PCCS reachable",
    ]
    assert all(r.status is Status.PASS for r in results), [r for r in results if r.status is Status.FAIL]
    assert next(r for r in results if r.name == "EPC size").detail == "64 MiB"
    runner = CliRunner()
    out = runner.invoke(host, ["check", "--root", str(root), "--pccs-url", pccs, "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and len(doc["checks"]) == 10
    table = runner.invoke(host, ["check", "--root", str(root), "--pccs-url", pccs])
    assert table.exit_code == 0 and "QGS socket answering" in table.stdout and "FAIL" not in table.stdout


def _break_and_check(root: Path, settings: HostCheckSettings, name: str, needle: str) -> None:
    results = {r.name: r for r in run_checks(settings)}
    failed = [n for n, r in results.items() if r.status is Status.FAIL]
    assert failed == [name], failed
    assert needle in results[name].detail or needle in results[name].fix
    assert results[name].fix
    out = CliRunner().invoke(
        host, ["check", "--root", str(root), "--pccs-url", settings.pccs_url or "", "--timeout", "2"]
    )
    assert out.exit_code == 1
    assert f"fix [{name}]" in out.stderr


@pytest.mark.parametrize(
    ("name", "breakage", "needle"),
    [
        (
            "kernel version",
            lambda r: write(r, "/proc/sys/kernel/osrelease", "6.8.0-45-generic\n"),
            "6.8 < 6.16",
        ),
        (
            "TDX module initialized (dmesg)",
            lambda r: write(r, "/var/log/dmesg", "[0.1] virt/tdx: initialization failed\n"),
            "initialization failed",
        ),
        ("KVM TDX enabled", lambda r: write(r, "/sys/module/kvm_intel/parameters/tdx", "N\n"), "tdx=1"),
        (
            "QEMU version",
            lambda r: _script(r, "/usr/bin/qemu-system-x86_64", "QEMU emulator version 8.2.2"),
            "8.2 < 10.1",
        ),
        ("libvirt version", lambda r: (r / "usr/sbin/libvirtd").unlink(), "not found"),
        ("SGX device nodes", lambda r: (r / "dev/sgx_provision").unlink(), "/dev/sgx_provision"),
        (
            "CPU SGX + flexible launch control",
            lambda r: write(r, "/proc/cpuinfo", "flags\t: fpu sgx\n"),
            "sgx_lc",
        ),
        (
            "EPC size",
            lambda r: [p.unlink() for p in (r / "sys/devices/system/node").glob("node*/x86/sgx_total_bytes")],
            "sgx_total_bytes",
        ),
    ],
)
def test_each_failure(ready: tuple[Path, HostCheckSettings], name: str, breakage: Any, needle: str) -> None:
    root, settings = ready
    breakage(root)
    _break_and_check(root, settings, name, needle)


def test_qgs_missing_or_erroring(short_tmp: Path, pccs: str) -> None:
    root = short_tmp / "r"
    _ready_host(root)
    settings = HostCheckSettings(root=root, pccs_url=pccs, timeout=2.0)
    _break_and_check(root, settings, "QGS socket answering", "does not exist")
    qgs = _FakeQgs(root / "var/run/tdx-qgs/qgs.socket", error=1)
    try:
        _break_and_check(root, settings, "QGS socket answering", "error 1")
    finally:
        qgs.close()
    silent = bind_unix(root / "var/run/tdx-qgs/qgs2.socket")
    try:
        result = {
            r.name: r
            for r in run_checks(
                HostCheckSettings(
                    root=root, pccs_url=pccs, timeout=0.5, qgs_socket="/var/run/tdx-qgs/qgs2.socket"
                )
            )
        }
        assert result["QGS socket answering"].status is Status.FAIL
        assert "timed out" in result["QGS socket answering"].detail
    finally:
        silent.close()


def test_pccs_unreachable(ready: tuple[Path, HostCheckSettings]) -> None:
    root, settings = ready
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    broken = HostCheckSettings(root=root, pccs_url=dead, timeout=1.0)
    _break_and_check(root, broken, "PCCS reachable", "ConnectError")
    notfound = HostCheckSettings(root=root, pccs_url=settings.pccs_url + "/nope", timeout=1.0)  # type: ignore[operator]
    _break_and_check(root, notfound, "PCCS reachable", "HTTP 404")


def test_sgx_only_host(short_tmp: Path, pccs: str) -> None:
    root = short_tmp / "r"
    _ready_host(root)
    out = CliRunner().invoke(
        host, ["check", "--root", str(root), "--tee", "sgx", "--pccs-url", pccs, "--json"]
    )
    assert out.exit_code == 0, out.output
    names = [c["name"] for c in json.loads(out.stdout)["checks"]]
    assert "QGS socket answering" not in names and "EPC size" in names

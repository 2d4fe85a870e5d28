"""Host readiness for TDX/SGX, like ``virt-host-validate``: each check passes or says how to fix it.

Everything is read under a root directory (``/`` on a real host, a fake tree in tests). Version
minimums follow the upstream TDX host enablement (kernel 6.16, QEMU 10.1, libvirt 11.6.0).
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from teegate.k8s.deviceplugin.discovery import cpu_flags, epc_bytes, host_path, tdx_enabled

__all__ = [
    "MIN_KERNEL",
    "MIN_LIBVIRT",
    "MIN_QEMU",
    "CheckResult",
    "HostCheckSettings",
    "Status",
    "run_checks",
]

MIN_KERNEL = (6, 16)
MIN_QEMU = (10, 1)
MIN_LIBVIRT = (11, 6, 0)
_MAX_READ = 4 * 1024 * 1024
_QGS_GET_PLATFORM_INFO_REQ = 4
_QGS_GET_PLATFORM_INFO_RESP = 5
_QGS_HEADER = struct.Struct("<HHIII")  # major, minor, type, size (incl. header), error_code
_MAX_QGS_MESSAGE = 1 << 20


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 -- a check status, not a secret
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


@dataclass(frozen=True)
class HostCheckSettings:
    root: Path = Path("/")
    tdx: bool = True
    sgx: bool = True
    dmesg: str = "/var/log/dmesg"
    qgs_socket: str = "/var/run/tdx-qgs/qgs.socket"
    pccs_url: str | None = "https://localhost:8081"
    pccs_ca: Path | None = None
    qemu_binaries: tuple[str, ...] = ("/usr/bin/qemu-system-x86_64", "/usr/libexec/qemu-kvm")
    libvirt_binaries: tuple[str, ...] = ("/usr/sbin/libvirtd", "/usr/sbin/virtqemud")
    timeout: float = 5.0


def _read(path: Path) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(_MAX_READ).decode("utf-8", "replace")
    except OSError:
        return None


def _version(text: str, parts: int) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(g or 0) for g in match.groups())[:parts]


def _fmt(version: Sequence[int]) -> str:
    return ".".join(map(str, version))


def _check_version(name: str, found: str | None, minimum: tuple[int, ...], fix: str) -> CheckResult:
    if found is None:
        return CheckResult(name, Status.FAIL, "not found", fix)
    version = _version(found, len(minimum))
    if version is None:
        return CheckResult(name, Status.FAIL, f"cannot read a version from {found.strip()[:80]!r}", fix)
    if version < minimum:
        return CheckResult(name, Status.FAIL, f"{_fmt(version)} < {_fmt(minimum)}", fix)
    return CheckResult(name, Status.PASS, f"{_fmt(version)} >= {_fmt(minimum)}")


def _binary_version(s: HostCheckSettings, candidates: Sequence[str]) -> str | None:
    for candidate in candidates:
        path = host_path(s.root, candidate)
        if not path.is_file():
            continue
        try:
            done = subprocess.run(
                [str(path), "--version"], capture_output=True, timeout=s.timeout, check=False, text=True
            )
        except (OSError, subprocess.TimeoutExpired):
            return f"{candidate}: did not run"
        return done.stdout or done.stderr
    return None


def _tdx_checks(s: HostCheckSettings) -> list[CheckResult]:
    out: list[CheckResult] = []
    dmesg = _read(host_path(s.root, s.dmesg))
    fix_dmesg = (
        "boot a TDX host kernel (>= 6.16) with kvm_intel.tdx=1; enable TDX, SGX and "
        "'SGX Auto MP Registration' in the BIOS"
    )
    if dmesg is None:
        out.append(
            CheckResult(
                "TDX module initialized (dmesg)",
                Status.FAIL,
                f"{s.dmesg} not readable",
                f"save the kernel log: dmesg > {s.dmesg}",
            )
        )
    elif re.search(r"virt/tdx: (TDX )?module initialized", dmesg):
        out.append(CheckResult("TDX module initialized (dmesg)", Status.PASS, "virt/tdx: module initialized"))
    else:
        line = next((ln for ln in dmesg.splitlines() if "tdx" in ln.lower()), "no TDX lines")
        out.append(CheckResult("TDX module initialized (dmesg)", Status.FAIL, line.strip()[:120], fix_dmesg))
    if tdx_enabled(s.root):
        out.append(CheckResult("KVM TDX enabled", Status.PASS, "/sys/module/kvm_intel/parameters/tdx = Y"))
    else:
        out.append(
            CheckResult(
                "KVM TDX enabled",
                Status.FAIL,
                "/sys/module/kvm_intel/parameters/tdx is not Y",
                "load kvm_intel with tdx=1 (options kvm_intel tdx=1 in /etc/modprobe.d)",
            )
        )
    out.append(
        _check_version(
            "QEMU version",
            _binary_version(s, s.qemu_binaries),
            MIN_QEMU,
            f"install QEMU >= {_fmt(MIN_QEMU)} with the tdx-guest object",
        )
    )
    out.append(
        _check_version(
            "libvirt version",
            _binary_version(s, s.libvirt_binaries),
            MIN_LIBVIRT,
            f"install libvirt >= {_fmt(MIN_LIBVIRT)} (launchSecurity type='tdx')",
        )
    )
    out.append(_qgs_check(s))
    return out


def _qgs_check(s: HostCheckSettings) -> CheckResult:
    name = "QGS socket answering"
    path = host_path(s.root, s.qgs_socket)
    fix = f"start the QGS: teegate qgs serve --socket {s.qgs_socket} (or Intel's qgsd)"
    if not path.exists():
        return CheckResult(name, Status.FAIL, f"{s.qgs_socket} does not exist", fix)
    header = _QGS_HEADER.pack(1, 0, _QGS_GET_PLATFORM_INFO_REQ, _QGS_HEADER.size, 0)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(s.timeout)
            sock.connect(str(path))
            sock.sendall(struct.pack(">I", len(header)) + header)
            length = struct.unpack(">I", _recv_exact(sock, 4))[0]
            if not _QGS_HEADER.size <= length <= _MAX_QGS_MESSAGE:
                return CheckResult(name, Status.FAIL, f"answer length {length} is not a QGS message", fix)
            _, _, kind, _, error = _QGS_HEADER.unpack(_recv_exact(sock, _QGS_HEADER.size))
    except OSError as exc:
        return CheckResult(name, Status.FAIL, f"{s.qgs_socket}: {exc}", fix)
    if kind != _QGS_GET_PLATFORM_INFO_RESP or error != 0:
        return CheckResult(name, Status.FAIL, f"GET_PLATFORM_INFO answered type {kind} error {error}", fix)
    return CheckResult(name, Status.PASS, f"{s.qgs_socket}: GET_PLATFORM_INFO ok")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed before a full answer")
        data += chunk
    return data


def _sgx_checks(s: HostCheckSettings) -> list[CheckResult]:
    out: list[CheckResult] = []
    missing = [d for d in ("/dev/sgx_enclave", "/dev/sgx_provision") if not host_path(s.root, d).exists()]
    if missing:
        out.append(
            CheckResult(
                "SGX device nodes",
                Status.FAIL,
                f"missing {', '.join(missing)}",
                "enable SGX in the BIOS and use a kernel with CONFIG_X86_SGX (>= 5.11)",
            )
        )
    else:
        out.append(CheckResult("SGX device nodes", Status.PASS, "/dev/sgx_enclave, /dev/sgx_provision"))
    flags = cpu_flags(s.root)
    if {"sgx", "sgx_lc"} <= flags:
        out.append(CheckResult("CPU SGX + flexible launch control", Status.PASS, "cpuinfo flags sgx sgx_lc"))
    else:
        out.append(
            CheckResult(
                "CPU SGX + flexible launch control",
                Status.FAIL,
                f"cpuinfo lacks {' '.join(sorted({'sgx', 'sgx_lc'} - flags))}",
                "enable SGX and Flexible Launch Control (unlocked) in the BIOS",
            )
        )
    epc = epc_bytes(s.root)
    if epc > 0:
        out.append(CheckResult("EPC size", Status.PASS, f"{epc // (1024 * 1024)} MiB"))
    else:
        out.append(
            CheckResult(
                "EPC size",
                Status.FAIL,
                "no sgx_total_bytes under /sys/devices/system/node",
                "set PRMRR/EPC size in the BIOS; kernel >= 6.2 reports it per NUMA node",
            )
        )
    if s.pccs_url is not None:
        out.append(_pccs_check(s, s.pccs_url))
    return out


def _pccs_check(s: HostCheckSettings, url: str) -> CheckResult:
    name = "PCCS reachable"
    target = url.rstrip("/") + "/sgx/certification/v4/rootcacrl"
    fix = f"start a PCCS (teegate pccs serve) or fix pccs_url in /etc/sgx_default_qcnl.conf ({url})"
    verify: ssl.SSLContext | bool = True
    if s.pccs_ca is not None:
        verify = ssl.create_default_context(cafile=str(s.pccs_ca))
    try:
        response = httpx.get(target, timeout=s.timeout, verify=verify)
    except httpx.HTTPError as exc:
        return CheckResult(name, Status.FAIL, f"GET {target}: {type(exc).__name__}: {exc}", fix)
    if response.status_code != 200:
        return CheckResult(name, Status.FAIL, f"GET {target}: HTTP {response.status_code}", fix)
    return CheckResult(name, Status.PASS, f"GET {target}: 200")


def _kernel_check(s: HostCheckSettings) -> CheckResult:
    release = _read(host_path(s.root, "/proc/sys/kernel/osrelease"))
    return _check_version(
        "kernel version", release, MIN_KERNEL, f"boot a kernel >= {_fmt(MIN_KERNEL)} (TDX host support)"
    )


def run_checks(settings: HostCheckSettings) -> list[CheckResult]:
    """Every applicable check, in table order."""
    results = [_kernel_check(settings)]
    if settings.tdx:
        results += _tdx_checks(settings)
    if settings.sgx:
        results += _sgx_checks(settings)
    return results

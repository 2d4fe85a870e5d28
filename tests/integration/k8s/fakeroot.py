"""Fake host root trees (/dev, /sys, /proc) for discovery and host checks."""

from __future__ import annotations

import socket
from pathlib import Path

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8580
flags\t\t: fpu vme de pse tsc msr pae sgx sgx_lc avx512f tdx_host_platform
"""


def write(root: Path, absolute: str, text: str) -> Path:
    path = root / absolute.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_sgx_tdx_host(root: Path, *, epc_mib: int = 64, tdx: bool = True, sgx: bool = True) -> None:
    write(root, "/proc/cpuinfo", CPUINFO if sgx else CPUINFO.replace(" sgx sgx_lc", ""))
    if sgx:
        write(root, "/dev/sgx_enclave", "")
        write(root, "/dev/sgx_provision", "")
        half = epc_mib * 1024 * 1024 // 2
        write(root, "/sys/devices/system/node/node0/x86/sgx_total_bytes", f"{half}\n")
        write(root, "/sys/devices/system/node/node1/x86/sgx_total_bytes", f"{half}\n")
    write(root, "/sys/module/kvm_intel/parameters/tdx", "Y\n" if tdx else "N\n")
    if tdx:
        write(root, "/sys/fs/cgroup/misc.capacity", "sev 0\ntdx 4\n")


def bind_unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(4)
    return sock

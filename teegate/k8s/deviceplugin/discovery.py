"""What the node offers: SGX device nodes, EPC size, TDX — read from a configurable root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["HostCapabilities", "cpu_flags", "discover", "epc_bytes", "host_path", "tdx_enabled", "tdx_keys"]

# Bounds on files read from the (possibly fake) root; real files are far smaller.
MAX_SMALL_FILE = 64 * 1024
MAX_CPUINFO = 8 * 1024 * 1024


@dataclass(frozen=True)
class HostCapabilities:
    """A snapshot of the TEE features of one node."""

    sgx_enclave: bool
    sgx_provision: bool
    cpu_sgx: bool
    cpu_sgx_lc: bool
    epc_bytes: int
    tdx_enabled: bool
    tdx_keys: int | None
    qgs_socket: bool

    @property
    def sgx_usable(self) -> bool:
        """Both SGX device nodes exist (Intel's plugin serves nothing otherwise)."""
        return self.sgx_enclave and self.sgx_provision


def host_path(root: Path, absolute: str) -> Path:
    """``absolute`` (e.g. ``/dev/sgx_enclave``) under ``root``."""
    return root / absolute.lstrip("/")


def _read(path: Path, limit: int = MAX_SMALL_FILE) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except OSError:
        return None


def cpu_flags(root: Path) -> frozenset[str]:
    """The flags of the first processor in ``/proc/cpuinfo``."""
    text = _read(host_path(root, "/proc/cpuinfo"), MAX_CPUINFO) or ""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def epc_bytes(root: Path) -> int:
    """Total EPC: the sum of ``/sys/devices/system/node/node*/x86/sgx_total_bytes`` (Linux ≥ 6.2)."""
    total = 0
    for entry in sorted(host_path(root, "/sys/devices/system/node").glob("node*/x86/sgx_total_bytes")):
        text = _read(entry)
        if text is not None and text.strip().isdigit():
            total += int(text.strip())
    return total


def tdx_keys(root: Path) -> int | None:
    """TDX private keys (``tdx N`` in the cgroup ``misc.capacity``), ``None`` if not reported."""
    for name in ("/sys/fs/cgroup/misc.capacity", "/sys/fs/cgroup/misc/misc.capacity"):
        text = _read(host_path(root, name))
        if text is None:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "tdx" and parts[1].isdigit():
                return int(parts[1])
    return None


def tdx_enabled(root: Path) -> bool:
    """KVM has TDX on: ``/sys/module/kvm_intel/parameters/tdx`` reads ``Y`` (as NFD checks)."""
    text = _read(host_path(root, "/sys/module/kvm_intel/parameters/tdx"))
    return text is not None and text.strip() in {"Y", "1"}


def discover(root: Path, qgs_socket: str = "/var/run/tdx-qgs/qgs.socket") -> HostCapabilities:
    """Read the node's capabilities under ``root`` (``/`` in production)."""
    flags = cpu_flags(root)
    return HostCapabilities(
        sgx_enclave=host_path(root, "/dev/sgx_enclave").exists(),
        sgx_provision=host_path(root, "/dev/sgx_provision").exists(),
        cpu_sgx="sgx" in flags,
        cpu_sgx_lc="sgx_lc" in flags,
        epc_bytes=epc_bytes(root),
        tdx_enabled=tdx_enabled(root),
        tdx_keys=tdx_keys(root),
        qgs_socket=host_path(root, qgs_socket).exists(),
    )

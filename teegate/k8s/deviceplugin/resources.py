"""The resources the plugin serves and what Allocate grants for them — pure, no I/O."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from teegate.errors import ConfigError, EvidenceError
from teegate.k8s.deviceplugin.discovery import HostCapabilities

__all__ = [
    "AESM_ENV",
    "AZURE_EPC_RESOURCE",
    "HEALTHY",
    "INTEL_EPC_RESOURCE",
    "MAX_DEVICES_PER_RESOURCE",
    "MAX_IDS_PER_REQUEST",
    "UNHEALTHY",
    "AllocationError",
    "ContainerGrant",
    "DeviceMount",
    "DeviceNode",
    "EpcMode",
    "PluginSettings",
    "ResourceKind",
    "ResourceSpec",
    "allocate",
    "desired_resources",
    "preferred_allocation",
]

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
AESM_ENV = "SGX_AESM_ADDR"
INTEL_EPC_RESOURCE = "sgx.intel.com/epc"
AZURE_EPC_RESOURCE = "kubernetes.azure.com/sgx_epc_mem_in_MiB"
#: kubelet caps a device ID at 63 characters; we also cap how many devices one resource lists.
MAX_DEVICES_PER_RESOURCE = 1 << 20
MAX_DEVICE_ID = 63
#: An Allocate/PreStart/preferred request naming more IDs than this is refused.
MAX_IDS_PER_REQUEST = 4096
_MIB = 1024 * 1024


class EpcMode(StrEnum):
    """How EPC becomes schedulable."""

    #: ``sgx.intel.com/epc`` in bytes, a node extended resource (NFD/epchook), not a device plugin.
    INTEL = "intel"
    #: ``kubernetes.azure.com/sgx_epc_mem_in_MiB``: one device per MiB, served by this plugin.
    AZURE = "azure"


class ResourceKind(StrEnum):
    ENCLAVE = "enclave"
    PROVISION = "provision"
    EPC = "epc"
    TDX = "tdx"


class AllocationError(EvidenceError):
    """kubelet asked for a device this plugin does not have or that is unhealthy."""


@dataclass(frozen=True)
class PluginSettings:
    """Everything the device plugin needs, built once at start."""

    root: Path = Path("/")
    plugin_dir: Path = Path("/var/lib/kubelet/device-plugins")
    enclave_limit: int = 110
    provision_limit: int = 110
    epc_mode: EpcMode = EpcMode.INTEL
    out_of_process_quoting: bool = True
    aesmd_dir: str = "/var/run/aesmd"
    qgs_socket: str = "/var/run/tdx-qgs/qgs.socket"
    tdx_resource: str = "teegate.io/tdx"
    tdx_limit: int = 110
    #: Healthy only while the QGS socket exists (KubeVirt's ``enforced`` attestation).
    tdx_enforced: bool = False
    poll_seconds: float = 2.0

    def __post_init__(self) -> None:
        for name in ("enclave_limit", "provision_limit", "tdx_limit"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_DEVICES_PER_RESOURCE:
                raise ConfigError(f"{name}={value}: must be between 1 and {MAX_DEVICES_PER_RESOURCE}")
        if "/" not in self.tdx_resource or self.tdx_resource.startswith("/"):
            raise ConfigError(f"tdx_resource {self.tdx_resource!r}: must be an extended name domain/name")
        for name in ("aesmd_dir", "qgs_socket"):
            if not posixpath.isabs(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be an absolute path")
        if self.poll_seconds <= 0:
            raise ConfigError("poll_seconds must be positive")


@dataclass(frozen=True)
class DeviceNode:
    path: str
    permissions: str = "rw"


@dataclass(frozen=True)
class DeviceMount:
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerGrant:
    """What one container gets from an Allocate: device nodes, mounts, environment."""

    devices: tuple[DeviceNode, ...] = ()
    mounts: tuple[DeviceMount, ...] = ()
    envs: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ResourceSpec:
    """One extended resource: its name, its device IDs and what each allocation grants."""

    kind: ResourceKind
    resource_name: str
    device_ids: tuple[str, ...]
    grant: ContainerGrant
    healthy: bool
    pre_start_required: bool = False

    @property
    def socket_name(self) -> str:
        """``sgx.intel.com-enclave.sock`` — the file name under the device-plugins dir."""
        return self.resource_name.replace("/", "-") + ".sock"

    def health_map(self) -> dict[str, str]:
        state = HEALTHY if self.healthy else UNHEALTHY
        return dict.fromkeys(self.device_ids, state)


def _ids(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}-{i}" for i in range(count))


def _aesm_grant(settings: PluginSettings) -> tuple[tuple[DeviceMount, ...], tuple[tuple[str, str], ...]]:
    if not settings.out_of_process_quoting:
        return (), ()
    return (DeviceMount(settings.aesmd_dir),), ((AESM_ENV, "1"),)


def desired_resources(caps: HostCapabilities, settings: PluginSettings) -> tuple[ResourceSpec, ...]:
    """The resources this node should advertise, given what discovery found."""
    specs: list[ResourceSpec] = []
    mounts, envs = _aesm_grant(settings)
    if caps.sgx_enclave or caps.sgx_provision:
        sgx_ok = caps.sgx_usable
        specs.append(
            ResourceSpec(
                ResourceKind.ENCLAVE,
                "sgx.intel.com/enclave",
                _ids("sgx-enclave", settings.enclave_limit),
                ContainerGrant((DeviceNode("/dev/sgx_enclave"),), mounts, envs),
                sgx_ok,
            )
        )
        specs.append(
            ResourceSpec(
                ResourceKind.PROVISION,
                "sgx.intel.com/provision",
                _ids("sgx-provision", settings.provision_limit),
                ContainerGrant((DeviceNode("/dev/sgx_provision"),)),
                sgx_ok,
            )
        )
        if settings.epc_mode is EpcMode.AZURE and caps.epc_bytes >= _MIB:
            count = min(caps.epc_bytes // _MIB, MAX_DEVICES_PER_RESOURCE)
            specs.append(
                ResourceSpec(
                    ResourceKind.EPC,
                    AZURE_EPC_RESOURCE,
                    _ids("epc-mib", count),
                    ContainerGrant((DeviceNode("/dev/sgx_enclave"),), mounts, envs),
                    sgx_ok,
                )
            )
    if caps.tdx_enabled:
        limit = (
            settings.tdx_limit if caps.tdx_keys is None else max(1, min(caps.tdx_keys, settings.tdx_limit))
        )
        qgs_dir = posixpath.dirname(settings.qgs_socket)
        specs.append(
            ResourceSpec(
                ResourceKind.TDX,
                settings.tdx_resource,
                _ids("tdx", limit),
                ContainerGrant(mounts=(DeviceMount(qgs_dir),)),
                caps.qgs_socket or not settings.tdx_enforced,
            )
        )
    return tuple(specs)


def _check_ids(spec: ResourceSpec, ids: Sequence[str], health: dict[str, str]) -> None:
    if len(ids) > MAX_IDS_PER_REQUEST:
        raise AllocationError(f"{spec.resource_name}: {len(ids)} device IDs, more than {MAX_IDS_PER_REQUEST}")
    if not ids:
        raise AllocationError(f"{spec.resource_name}: a container request names no device")
    for device_id in ids:
        state = health.get(device_id)
        if state is None:
            raise AllocationError(f"{spec.resource_name}: unknown device {device_id[:MAX_DEVICE_ID]!r}")
        if state != HEALTHY:
            raise AllocationError(f"{spec.resource_name}: device {device_id!r} is unhealthy")


def allocate(
    spec: ResourceSpec, health: dict[str, str], container_requests: Iterable[Sequence[str]]
) -> list[ContainerGrant]:
    """One grant per container; every ID must be known and healthy, else nothing is granted."""
    requests = list(container_requests)
    if len(requests) > MAX_IDS_PER_REQUEST:
        raise AllocationError(f"{spec.resource_name}: too many container requests ({len(requests)})")
    for ids in requests:
        _check_ids(spec, ids, health)
    # Counted devices are interchangeable: the grant is the same whatever IDs were picked.
    return [spec.grant for _ in requests]


def preferred_allocation(available: Sequence[str], must_include: Sequence[str], size: int) -> list[str]:
    """Must-include IDs first, then the lowest-numbered available ones (keeps numbering dense)."""
    if size < 0 or size > MAX_IDS_PER_REQUEST or len(available) > MAX_DEVICES_PER_RESOURCE:
        raise AllocationError(f"preferred allocation: size {size} out of range")
    chosen = list(dict.fromkeys(must_include))[:size]
    seen = set(chosen)

    def order(device_id: str) -> tuple[str, int]:
        prefix, _, number = device_id.rpartition("-")
        return (prefix, int(number)) if number.isdigit() else (device_id, -1)

    for device_id in sorted(set(available) - seen, key=order):
        if len(chosen) >= size:
            break
        chosen.append(device_id)
    return chosen

"""Discovery and resource planning of the device plugin (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.errors import ConfigError
from teegate.k8s.deviceplugin.discovery import discover
from teegate.k8s.deviceplugin.resources import (
    AllocationError,
    EpcMode,
    PluginSettings,
    allocate,
    desired_resources,
    preferred_allocation,
)
from tests.integration.k8s.fakeroot import make_sgx_tdx_host, write


def test_discover_fake_host(tmp_path: Path) -> None:
    make_sgx_tdx_host(tmp_path, epc_mib=96)
    caps = discover(tmp_path)
    assert caps.sgx_usable and caps.cpu_sgx and caps.cpu_sgx_lc and caps.tdx_enabled
    assert caps.epc_bytes == 96 * 1024 * 1024 and caps.tdx_keys == 4 and not caps.qgs_socket


def test_discover_empty_root(tmp_path: Path) -> None:
    caps = discover(tmp_path)
    assert not (caps.sgx_enclave or caps.sgx_provision or caps.tdx_enabled or caps.cpu_sgx)
    assert caps.epc_bytes == 0 and caps.tdx_keys is None
    assert desired_resources(caps, PluginSettings(root=tmp_path)) == ()


def test_resources_by_mode(tmp_path: Path) -> None:
    make_sgx_tdx_host(tmp_path, epc_mib=3)
    caps = discover(tmp_path)
    intel = {s.resource_name: s for s in desired_resources(caps, PluginSettings(enclave_limit=2))}
    assert set(intel) == {"sgx.intel.com/enclave", "sgx.intel.com/provision", "teegate.io/tdx"}
    assert intel["sgx.intel.com/enclave"].device_ids == ("sgx-enclave-0", "sgx-enclave-1")
    assert intel["sgx.intel.com/enclave"].socket_name == "sgx.intel.com-enclave.sock"
    assert intel["sgx.intel.com/provision"].grant.envs == ()  # provisioning never gets the aesmd socket
    azure = {s.resource_name: s for s in desired_resources(caps, PluginSettings(epc_mode=EpcMode.AZURE))}
    assert len(azure["kubernetes.azure.com/sgx_epc_mem_in_MiB"].device_ids) == 3
    inproc = desired_resources(caps, PluginSettings(out_of_process_quoting=False))
    assert all(not s.grant.mounts for s in inproc if s.resource_name.startswith("sgx"))


def test_half_present_sgx_is_unhealthy(tmp_path: Path) -> None:
    write(tmp_path, "/dev/sgx_enclave", "")
    specs = desired_resources(discover(tmp_path), PluginSettings())
    assert {s.resource_name for s in specs} == {"sgx.intel.com/enclave", "sgx.intel.com/provision"}
    assert not any(s.healthy for s in specs)


def test_allocate_and_preferred() -> None:
    spec = desired_resources(discover(Path("/nonexistent")), PluginSettings())
    assert spec == ()
    with pytest.raises(AllocationError, match="out of range"):
        preferred_allocation(["a-1"], [], -1)
    assert preferred_allocation(["x-3", "x-1", "x-2"], ["x-3"], 2) == ["x-3", "x-1"]


def test_allocate_rejects_empty_and_unknown(tmp_path: Path) -> None:
    make_sgx_tdx_host(tmp_path, tdx=False)
    (enclave, _) = desired_resources(discover(tmp_path), PluginSettings(enclave_limit=1))
    health = enclave.health_map()
    assert allocate(enclave, health, [["sgx-enclave-0"], ["sgx-enclave-0"]]) == [enclave.grant, enclave.grant]
    with pytest.raises(AllocationError, match="names no device"):
        allocate(enclave, health, [[]])
    with pytest.raises(AllocationError, match="unknown device"):
        allocate(enclave, health, [["sgx-provision-0"]])


@pytest.mark.parametrize(
    "kwargs",
    [{"enclave_limit": 0}, {"tdx_resource": "tdx"}, {"aesmd_dir": "run/aesmd"}, {"poll_seconds": 0}],
)
def test_settings_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        PluginSettings(**kwargs)  # type: ignore[arg-type]

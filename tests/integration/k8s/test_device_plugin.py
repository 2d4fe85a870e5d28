"""The device plugin driven by a kubelet stand-in over the real v1beta1 gRPC API."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from teegate.k8s.deviceplugin.resources import AZURE_EPC_RESOURCE, EpcMode, PluginSettings
from teegate.k8s.deviceplugin.server import DevicePluginManager
from teegate.k8s.deviceplugin.v1beta1 import api_pb2

from .fakeroot import make_sgx_tdx_host
from .kubelet import FakeKubelet

pytestmark = pytest.mark.integration


def _settings(root: Path, plugins: Path, **kw: object) -> PluginSettings:
    return PluginSettings(
        root=root,
        plugin_dir=plugins,
        enclave_limit=3,
        provision_limit=2,
        poll_seconds=0.05,
        **kw,  # type: ignore[arg-type]
    )


async def _run(manager: DevicePluginManager) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.create_task(manager.run(stop))


async def test_register_list_allocate_and_kubelet_restart(short_tmp: Path) -> None:
    root, plugins = short_tmp / "root", short_tmp / "dp"
    root.mkdir()
    plugins.mkdir()
    make_sgx_tdx_host(root, epc_mib=8)
    kubelet = FakeKubelet(plugins)
    await kubelet.start()
    settings = _settings(root, plugins, epc_mode=EpcMode.AZURE, tdx_enforced=True)
    manager = DevicePluginManager(settings)
    stop, task = await _run(manager)
    try:
        regs = {}
        for _ in range(4):
            req = await kubelet.next_registration()
            regs[req.resource_name] = req
        assert set(regs) == {
            "sgx.intel.com/enclave",
            "sgx.intel.com/provision",
            AZURE_EPC_RESOURCE,
            "teegate.io/tdx",
        }
        enclave = regs["sgx.intel.com/enclave"]
        assert enclave.version == "v1beta1"
        assert enclave.endpoint == "sgx.intel.com-enclave.sock"
        assert enclave.options.get_preferred_allocation_available

        async with kubelet.channel(enclave.endpoint) as channel:
            stub = kubelet.stub(channel)
            opts = await stub.GetDevicePluginOptions(api_pb2.Empty())
            assert opts.get_preferred_allocation_available and not opts.pre_start_required
            stream = stub.ListAndWatch(api_pb2.Empty())
            first = await stream.read()
            assert {d.ID: d.health for d in first.devices} == {
                f"sgx-enclave-{i}": "Healthy" for i in range(3)
            }

            pref = await stub.GetPreferredAllocation(
                api_pb2.PreferredAllocationRequest(
                    container_requests=[
                        api_pb2.ContainerPreferredAllocationRequest(
                            available_deviceIDs=["sgx-enclave-2", "sgx-enclave-10", "sgx-enclave-1"],
                            must_include_deviceIDs=["sgx-enclave-10"],
                            allocation_size=2,
                        )
                    ]
                )
            )
            assert list(pref.container_responses[0].deviceIDs) == ["sgx-enclave-10", "sgx-enclave-1"]

            resp = await stub.Allocate(
                api_pb2.AllocateRequest(
                    container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["sgx-enclave-0"])]
                )
            )
            c = resp.container_responses[0]
            assert [(d.host_path, d.container_path, d.permissions) for d in c.devices] == [
                ("/dev/sgx_enclave", "/dev/sgx_enclave", "rw")
            ]
            assert [(m.host_path, m.container_path, m.read_only) for m in c.mounts] == [
                ("/var/run/aesmd", "/var/run/aesmd", False)
            ]
            assert dict(c.envs) == {"SGX_AESM_ADDR": "1"}

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Allocate(
                    api_pb2.AllocateRequest(
                        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["sgx-enclave-99"])]
                    )
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "sgx-enclave-99" in (err.value.details() or "")

            await stub.PreStartContainer(api_pb2.PreStartContainerRequest(devices_ids=["sgx-enclave-1"]))

            # Health change: the enclave device node disappears → a new full list, all Unhealthy.
            (root / "dev" / "sgx_enclave").unlink()
            second = await asyncio.wait_for(stream.read(), 5)
            while any(d.health == "Healthy" for d in second.devices):
                second = await asyncio.wait_for(stream.read(), 5)
            assert {d.health for d in second.devices} == {"Unhealthy"}
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Allocate(
                    api_pb2.AllocateRequest(
                        container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["sgx-enclave-0"])]
                    )
                )
            stream.cancel()

        # TDX: enforced, and no QGS socket yet → unhealthy; the mount is the socket's directory.
        async with kubelet.channel(regs["teegate.io/tdx"].endpoint) as channel:
            stub = kubelet.stub(channel)
            stream = stub.ListAndWatch(api_pb2.Empty())
            first = await stream.read()
            assert [d.ID for d in first.devices] == [
                "tdx-0",
                "tdx-1",
                "tdx-2",
                "tdx-3",
            ]  # misc.capacity tdx 4
            assert {d.health for d in first.devices} == {"Unhealthy"}
            qgs = root / "var/run/tdx-qgs/qgs.socket"
            qgs.parent.mkdir(parents=True)
            qgs.write_text("")
            healthy = await asyncio.wait_for(stream.read(), 5)
            assert {d.health for d in healthy.devices} == {"Healthy"}
            resp = await stub.Allocate(
                api_pb2.AllocateRequest(
                    container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["tdx-0"])]
                )
            )
            c = resp.container_responses[0]
            assert [(m.host_path, m.container_path) for m in c.mounts] == [
                ("/var/run/tdx-qgs", "/var/run/tdx-qgs")
            ]
            assert not c.devices and not c.envs
            stream.cancel()

        async with kubelet.channel(regs[AZURE_EPC_RESOURCE].endpoint) as channel:
            first = await kubelet.stub(channel).ListAndWatch(api_pb2.Empty()).read()
            assert len(first.devices) == 8  # one device per MiB of EPC

        # kubelet restart: it wipes every socket in the directory and comes back.
        await kubelet.stop()
        kubelet.registrations.clear()
        await kubelet.start()
        again = {(await kubelet.next_registration()).resource_name for _ in range(4)}
        assert again == set(regs)
        for name in again:
            assert (plugins / regs[name].endpoint).exists()
        async with kubelet.channel(enclave.endpoint) as channel:
            opts = await kubelet.stub(channel).GetDevicePluginOptions(api_pb2.Empty())
            assert opts.get_preferred_allocation_available
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await kubelet.stop()
    assert not list(plugins.glob("*.sock"))


async def test_no_tee_no_resources_and_registration_waits_for_kubelet(short_tmp: Path) -> None:
    root, plugins = short_tmp / "root", short_tmp / "dp"
    root.mkdir()
    plugins.mkdir()
    make_sgx_tdx_host(root, sgx=True, tdx=False)
    manager = DevicePluginManager(_settings(root, plugins, out_of_process_quoting=False))
    await manager.reconcile()  # no kubelet yet: plugins serve but nothing registers
    assert manager.resources() == ["sgx.intel.com/enclave", "sgx.intel.com/provision"]
    assert manager.registrations == 0
    kubelet = FakeKubelet(plugins)
    await kubelet.start()
    try:
        await manager.reconcile()
        names = {(await kubelet.next_registration()).resource_name for _ in range(2)}
        assert names == {"sgx.intel.com/enclave", "sgx.intel.com/provision"}
        async with kubelet.channel("sgx.intel.com-enclave.sock") as channel:
            resp = await kubelet.stub(channel).Allocate(
                api_pb2.AllocateRequest(
                    container_requests=[api_pb2.ContainerAllocateRequest(devices_ids=["sgx-enclave-0"])]
                )
            )
            assert not resp.container_responses[0].mounts and not resp.container_responses[0].envs
    finally:
        await manager.close()
        await kubelet.stop()

"""gRPC side of the device plugin: one DevicePlugin server per resource, registration, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from teegate.errors import CollateralUnavailable
from teegate.k8s.deviceplugin.discovery import discover
from teegate.k8s.deviceplugin.resources import (
    MAX_IDS_PER_REQUEST,
    AllocationError,
    EpcMode,
    PluginSettings,
    ResourceSpec,
    allocate,
    desired_resources,
    preferred_allocation,
)
from teegate.k8s.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc

__all__ = ["API_VERSION", "KUBELET_SOCKET", "DevicePluginManager", "RegistrationFailed", "ResourcePlugin"]

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
_REGISTER_TIMEOUT = 10.0
_log = logging.getLogger("teegate.k8s.deviceplugin")


class RegistrationFailed(CollateralUnavailable):
    """kubelet did not accept (or did not answer) our Register call; retried."""


def _socket_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


class _Servicer(api_pb2_grpc.DevicePluginServicer):
    def __init__(self, plugin: ResourcePlugin) -> None:
        self._plugin = plugin

    async def GetDevicePluginOptions(self, request: Any, context: Any) -> api_pb2.DevicePluginOptions:
        return self._plugin.options()

    async def ListAndWatch(self, request: Any, context: Any) -> AsyncIterator[api_pb2.ListAndWatchResponse]:
        version = -1
        while not self._plugin.stopping:
            health, version = await self._plugin.wait_change(version)
            if self._plugin.stopping:
                return
            yield api_pb2.ListAndWatchResponse(
                devices=[api_pb2.Device(ID=i, health=h) for i, h in health.items()]
            )

    async def GetPreferredAllocation(
        self, request: api_pb2.PreferredAllocationRequest, context: Any
    ) -> api_pb2.PreferredAllocationResponse:
        if len(request.container_requests) > MAX_IDS_PER_REQUEST:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many container requests")
        responses = []
        for req in request.container_requests:
            try:
                ids = preferred_allocation(
                    list(req.available_deviceIDs), list(req.must_include_deviceIDs), req.allocation_size
                )
            except AllocationError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            responses.append(api_pb2.ContainerPreferredAllocationResponse(deviceIDs=ids))
        return api_pb2.PreferredAllocationResponse(container_responses=responses)

    async def Allocate(self, request: api_pb2.AllocateRequest, context: Any) -> api_pb2.AllocateResponse:
        spec = self._plugin.spec
        try:
            grants = allocate(
                spec, self._plugin.health, [list(r.devices_ids) for r in request.container_requests]
            )
        except AllocationError as exc:
            _log.warning("allocate refused: %s", exc)
            await self._plugin.notify()  # the proto asks for a fresh list when an Allocate fails
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        responses = [
            api_pb2.ContainerAllocateResponse(
                envs=dict(g.envs),
                mounts=[
                    api_pb2.Mount(container_path=m.path, host_path=m.path, read_only=m.read_only)
                    for m in g.mounts
                ],
                devices=[
                    api_pb2.DeviceSpec(container_path=d.path, host_path=d.path, permissions=d.permissions)
                    for d in g.devices
                ],
            )
            for g in grants
        ]
        return api_pb2.AllocateResponse(container_responses=responses)

    async def PreStartContainer(
        self, request: api_pb2.PreStartContainerRequest, context: Any
    ) -> api_pb2.PreStartContainerResponse:
        try:
            allocate(self._plugin.spec, self._plugin.health, [list(request.devices_ids)])
        except AllocationError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return api_pb2.PreStartContainerResponse()


class ResourcePlugin:
    """Serves one resource on ``<plugin_dir>/<socket_name>`` and registers it with kubelet."""

    def __init__(self, spec: ResourceSpec, plugin_dir: Path) -> None:
        self.spec = spec
        self.socket_path = plugin_dir / spec.socket_name
        self._plugin_dir = plugin_dir
        self.health = spec.health_map()
        self._version = 0
        self._changed = asyncio.Condition()
        self._server: Any = None
        self._socket_id: tuple[int, int] | None = None
        self.stopping = False

    def options(self) -> api_pb2.DevicePluginOptions:
        return api_pb2.DevicePluginOptions(
            pre_start_required=self.spec.pre_start_required, get_preferred_allocation_available=True
        )

    async def wait_change(self, seen: int) -> tuple[dict[str, str], int]:
        async with self._changed:
            await self._changed.wait_for(lambda: self._version != seen or self.stopping)
            return dict(self.health), self._version

    async def notify(self) -> None:
        """Resend the current list on every ListAndWatch stream."""
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    async def update(self, spec: ResourceSpec) -> None:
        """Adopt a re-discovered spec; ListAndWatch streams send the new list if health changed."""
        health = spec.health_map()
        self.spec = spec
        if health != self.health:
            async with self._changed:
                self.health = health
                self._version += 1
                self._changed.notify_all()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.stopping = False
        server = grpc.aio.server()
        api_pb2_grpc.add_DevicePluginServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        self._socket_id = _socket_id(self.socket_path)

    async def stop(self) -> None:
        self.stopping = True
        async with self._changed:
            self._changed.notify_all()
        if self._server is not None:
            await self._server.stop(grace=0.5)
            self._server = None
        if self._socket_id is not None and _socket_id(self.socket_path) == self._socket_id:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._socket_id = None

    def socket_gone(self) -> bool:
        """kubelet wiped the directory (it does on every start) or replaced our socket."""
        return self._socket_id is None or _socket_id(self.socket_path) != self._socket_id

    async def register(self) -> None:
        kubelet = self._plugin_dir / KUBELET_SOCKET
        request = api_pb2.RegisterRequest(
            version=API_VERSION,
            endpoint=self.spec.socket_name,
            resource_name=self.spec.resource_name,
            options=self.options(),
        )
        try:
            async with grpc.aio.insecure_channel(f"unix://{kubelet}") as channel:
                stub = api_pb2_grpc.RegistrationStub(channel)  # type: ignore[no-untyped-call]
                await stub.Register(request, timeout=_REGISTER_TIMEOUT, wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            raise RegistrationFailed(
                f"kubelet at {kubelet} refused {self.spec.resource_name}: {exc.code().name} {exc.details()}"
            ) from exc


@dataclass
class _Entry:
    plugin: ResourcePlugin
    registered: bool = False


class DevicePluginManager:
    """Discovers resources, runs their plugins, re-registers after kubelet restarts."""

    def __init__(
        self, settings: PluginSettings, epc_reporter: Callable[[int], Awaitable[None]] | None = None
    ) -> None:
        self.settings = settings
        self._epc_reporter = epc_reporter if settings.epc_mode is EpcMode.INTEL else None
        self._reported_epc: int | None = None
        self._entries: dict[str, _Entry] = {}
        self._kubelet_id: tuple[int, int] | None = None
        self.registrations = 0

    def resources(self) -> list[str]:
        return sorted(self._entries)

    async def reconcile(self) -> None:
        """One pass: discover, start or update plugins, (re-)register where needed."""
        s = self.settings
        caps = discover(s.root, s.qgs_socket)
        specs = {spec.resource_name: spec for spec in desired_resources(caps, s)}
        kubelet_id = _socket_id(s.plugin_dir / KUBELET_SOCKET)
        kubelet_restarted = kubelet_id != self._kubelet_id
        self._kubelet_id = kubelet_id
        for name, spec in specs.items():
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = _Entry(ResourcePlugin(spec, s.plugin_dir))
                await entry.plugin.start()
            else:
                await entry.plugin.update(spec)
        for name in set(self._entries) - set(specs):
            # The capability vanished: keep serving, but every device is now unhealthy.
            plugin = self._entries[name].plugin
            gone = ResourceSpec(plugin.spec.kind, name, plugin.spec.device_ids, plugin.spec.grant, False)
            await plugin.update(gone)
        for name, entry in sorted(self._entries.items()):
            if entry.plugin.socket_gone():
                _log.info("%s: socket %s gone, restarting", name, entry.plugin.socket_path)
                await entry.plugin.stop()
                await entry.plugin.start()
                entry.registered = False
            if kubelet_restarted:
                entry.registered = False
            if not entry.registered and kubelet_id is not None:
                try:
                    await entry.plugin.register()
                except RegistrationFailed as exc:
                    _log.warning("%s", exc.diagnostics())
                    continue
                entry.registered = True
                self.registrations += 1
                _log.info("registered %s at %s", name, entry.plugin.socket_path)
        if self._epc_reporter is not None and caps.epc_bytes != self._reported_epc:
            try:
                await self._epc_reporter(caps.epc_bytes)
            except CollateralUnavailable as exc:
                _log.warning("%s", exc.diagnostics())
            else:
                self._reported_epc = caps.epc_bytes

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile every ``poll_seconds`` until ``stop`` is set, then close every socket."""
        os.makedirs(self.settings.plugin_dir, exist_ok=True)
        try:
            while not stop.is_set():
                await self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.poll_seconds)
        finally:
            await self.close()

    async def close(self) -> None:
        for entry in self._entries.values():
            await entry.plugin.stop()
        self._entries.clear()

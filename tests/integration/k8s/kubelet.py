"""A kubelet stand-in: the v1beta1 Registration server plus a DevicePlugin client."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import grpc

from teegate.k8s.deviceplugin.v1beta1 import api_pb2, api_pb2_grpc


class _Registration(api_pb2_grpc.RegistrationServicer):
    def __init__(self, kubelet: FakeKubelet) -> None:
        self._kubelet = kubelet

    async def Register(self, request: Any, context: Any) -> Any:
        if request.version != "v1beta1":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported version {request.version}")
        if "/" not in request.resource_name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an extended resource name")
        self._kubelet.registrations.append(request)
        await self._kubelet.queue.put(request)
        return api_pb2.Empty()


class FakeKubelet:
    """Serves Registration on ``<dir>/kubelet.sock``; like kubelet, wipes the dir on start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.registrations: list[Any] = []
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self._server: Any = None

    async def start(self) -> None:
        for entry in self.directory.iterdir():  # kubelet's CleanupPluginDirectory
            if entry.name != "kubelet_internal_checkpoint":
                entry.unlink()
        server = grpc.aio.server()
        api_pb2_grpc.add_RegistrationServicer_to_server(_Registration(self), server)
        server.add_insecure_port(f"unix://{self.directory / 'kubelet.sock'}")
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            (self.directory / "kubelet.sock").unlink()

    async def next_registration(self, timeout: float = 10.0) -> Any:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        """A client channel to a registered plugin endpoint (as kubelet dials it)."""
        return grpc.aio.insecure_channel(f"unix://{self.directory / endpoint}")

    @staticmethod
    def stub(channel: grpc.aio.Channel) -> Any:
        return api_pb2_grpc.DevicePluginStub(channel)

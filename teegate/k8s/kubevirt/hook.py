"""KubeVirt hook sidecar: Info + Callbacks v1alpha2/v1alpha3 over a unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import grpc

from teegate.k8s.kubevirt.hooks.info import api_info_pb2, api_info_pb2_grpc
from teegate.k8s.kubevirt.hooks.v1alpha2 import api_v1alpha2_pb2, api_v1alpha2_pb2_grpc
from teegate.k8s.kubevirt.hooks.v1alpha3 import api_v1alpha3_pb2, api_v1alpha3_pb2_grpc
from teegate.k8s.kubevirt.tdx import (
    MAX_DOMAIN_XML,
    DomainError,
    TdxSettings,
    parse_vmi,
    settings_for_vmi,
    with_tdx,
)

__all__ = ["HOOKS_DIR", "HOOK_NAME", "SUPPORTED_VERSIONS", "HookServer", "define_domain"]

HOOK_NAME = "teegate-tdx"
HOOKS_DIR = Path("/var/run/kubevirt-hooks")
SUPPORTED_VERSIONS = ("v1alpha3", "v1alpha2")
_MAX_MESSAGE = MAX_DOMAIN_XML + 4 * 1024 * 1024
_log = logging.getLogger("teegate.k8s.kubevirt")


def define_domain(domain_xml: bytes, vmi_json: bytes, base: TdxSettings) -> bytes:
    """OnDefineDomain: the TDX version of ``domain_xml`` for this VMI."""
    vmi = parse_vmi(vmi_json)
    try:
        text = domain_xml.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DomainError(f"domain XML is not UTF-8: {exc}") from exc
    return with_tdx(text, settings_for_vmi(base, vmi)).encode("utf-8")


class _Info(api_info_pb2_grpc.InfoServicer):
    async def Info(self, request: Any, context: Any) -> api_info_pb2.InfoResult:
        return api_info_pb2.InfoResult(
            name=HOOK_NAME,
            versions=list(SUPPORTED_VERSIONS),
            hookPoints=[api_info_pb2.HookPoint(name="OnDefineDomain", priority=0)],
        )


async def _on_define(server: HookServer, request: Any, context: Any, result: Any) -> Any:
    try:
        xml = define_domain(request.domainXML, request.vmi, server.settings)
    except DomainError as exc:
        _log.error("OnDefineDomain refused: %s", exc)
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    return result(domainXML=xml)


class _V1alpha2(api_v1alpha2_pb2_grpc.CallbacksServicer):
    def __init__(self, server: HookServer) -> None:
        self._server = server

    async def OnDefineDomain(self, request: Any, context: Any) -> Any:
        return await _on_define(self._server, request, context, api_v1alpha2_pb2.OnDefineDomainResult)

    async def PreCloudInitIso(self, request: Any, context: Any) -> Any:
        # Not subscribed (Info lists only OnDefineDomain); pass the data through untouched.
        return api_v1alpha2_pb2.PreCloudInitIsoResult(
            cloudInitNoCloudSource=request.cloudInitNoCloudSource, cloudInitData=request.cloudInitData
        )


class _V1alpha3(api_v1alpha3_pb2_grpc.CallbacksServicer):
    def __init__(self, server: HookServer) -> None:
        self._server = server

    async def OnDefineDomain(self, request: Any, context: Any) -> Any:
        return await _on_define(self._server, request, context, api_v1alpha3_pb2.OnDefineDomainResult)

    async def PreCloudInitIso(self, request: Any, context: Any) -> Any:
        return api_v1alpha3_pb2.PreCloudInitIsoResult(
            cloudInitNoCloudSource=request.cloudInitNoCloudSource, cloudInitData=request.cloudInitData
        )

    async def Shutdown(self, request: Any, context: Any) -> Any:
        self._server.shutdown_requested.set()  # virt-launcher is exiting; so do we
        return api_v1alpha3_pb2.ShutdownResult()


class HookServer:
    """Serves the hook on ``<hooks_dir>/teegate-tdx.sock`` until Shutdown or :meth:`stop`."""

    def __init__(self, settings: TdxSettings, hooks_dir: Path = HOOKS_DIR) -> None:
        self.settings = settings
        self.socket_path = hooks_dir / f"{HOOK_NAME}.sock"
        self.shutdown_requested = asyncio.Event()
        self._server: Any = None

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ]
        server = grpc.aio.server(options=options)
        api_info_pb2_grpc.add_InfoServicer_to_server(_Info(), server)  # type: ignore[no-untyped-call]
        api_v1alpha2_pb2_grpc.add_CallbacksServicer_to_server(_V1alpha2(self), server)  # type: ignore[no-untyped-call]
        api_v1alpha3_pb2_grpc.add_CallbacksServicer_to_server(_V1alpha3(self), server)  # type: ignore[no-untyped-call]
        server.add_insecure_port(f"unix://{self.socket_path}")
        await server.start()
        self._server = server
        _log.info(
            "KubeVirt hook %s listening on %s (versions %s)",
            HOOK_NAME,
            self.socket_path,
            ",".join(SUPPORTED_VERSIONS),
        )

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def serve_until_shutdown(self) -> None:
        await self.start()
        try:
            await self.shutdown_requested.wait()
        finally:
            await self.stop()

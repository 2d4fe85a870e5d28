"""Intel EPC mode: the plugin publishes sgx.intel.com/epc in the node status through a real
kubernetes client against a loopback API server stand-in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from kubernetes import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from teegate.k8s.deviceplugin.node import KubernetesNodeReporter
from teegate.k8s.deviceplugin.resources import PluginSettings
from teegate.k8s.deviceplugin.server import DevicePluginManager
from tests.netutil import free_port

from .fakeroot import make_sgx_tdx_host, write

pytestmark = pytest.mark.integration


class _ApiServer:
    def __init__(self) -> None:
        self.patches: list[tuple[str, str, Any]] = []
        self.fail = False

    async def patch_status(self, request: Request) -> Response:
        if self.fail:
            return JSONResponse({"kind": "Status", "status": "Failure", "code": 500}, status_code=500)
        body = json.loads(await request.body())
        self.patches.append((request.path_params["name"], request.headers["content-type"], body))
        return JSONResponse(
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": request.path_params["name"]}}
        )


@pytest.fixture
async def api() -> AsyncIterator[tuple[_ApiServer, str]]:
    state = _ApiServer()
    app = Starlette(routes=[Route("/api/v1/nodes/{name}/status", state.patch_status, methods=["PATCH"])])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield state, f"http://127.0.0.1:{port}"
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def test_epc_capacity_published_and_updated(api: tuple[_ApiServer, str], short_tmp: Path) -> None:
    state, url = api
    root, plugins = short_tmp / "root", short_tmp / "dp"
    make_sgx_tdx_host(root, epc_mib=64, tdx=False)
    plugins.mkdir()
    config = client.Configuration(host=url)
    reporter = KubernetesNodeReporter("node-a", client.ApiClient(config))
    manager = DevicePluginManager(PluginSettings(root=root, plugin_dir=plugins), epc_reporter=reporter)
    try:
        await manager.reconcile()
        await manager.reconcile()  # unchanged: no second patch
        assert state.patches == [
            (
                "node-a",
                "application/json-patch+json",
                [
                    {
                        "op": "add",
                        "path": "/status/capacity/sgx.intel.com~1epc",
                        "value": str(64 * 1024 * 1024),
                    }
                ],
            )
        ]
        state.fail = True
        write(root, "/sys/devices/system/node/node1/x86/sgx_total_bytes", "0\n")
        await manager.reconcile()  # API error: logged, retried next pass
        state.fail = False
        await manager.reconcile()
        assert state.patches[-1][2][0]["value"] == str(32 * 1024 * 1024) and len(state.patches) == 2
    finally:
        await manager.close()

"""Intel-style EPC: ``sgx.intel.com/epc`` (bytes) as a node extended resource, like epchook."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from teegate.errors import CollateralUnavailable
from teegate.k8s.deviceplugin.resources import INTEL_EPC_RESOURCE

__all__ = ["KubernetesNodeReporter", "NodeUpdateFailed", "epc_capacity_patch"]

_log = logging.getLogger("teegate.k8s.deviceplugin")


class NodeUpdateFailed(CollateralUnavailable):
    """The API server did not accept the node status patch; retried at the next poll."""


def epc_capacity_patch(epc_bytes: int) -> list[dict[str, Any]]:
    """JSONPatch for the node status: capacity ``sgx.intel.com/epc`` = ``epc_bytes``."""
    if epc_bytes < 0:
        raise ValueError("EPC size cannot be negative")
    path = "/status/capacity/" + INTEL_EPC_RESOURCE.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": path, "value": str(epc_bytes)}]


class KubernetesNodeReporter:
    """Patches this node's status through the API server (in-cluster config by default)."""

    def __init__(self, node_name: str, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api_client = client.ApiClient()
        self._api = client.CoreV1Api(api_client)
        self._exception = client.exceptions.ApiException
        self.node_name = node_name

    def _patch(self, epc_bytes: int) -> None:
        try:
            self._api.patch_node_status(self.node_name, epc_capacity_patch(epc_bytes))
        except self._exception as exc:
            raise NodeUpdateFailed(
                f"patch node {self.node_name} status: HTTP {exc.status} {exc.reason}"
            ) from exc
        except OSError as exc:
            raise NodeUpdateFailed(f"patch node {self.node_name} status: {exc}") from exc

    async def __call__(self, epc_bytes: int) -> None:
        await asyncio.to_thread(self._patch, epc_bytes)
        _log.info("node %s: capacity %s=%d", self.node_name, INTEL_EPC_RESOURCE, epc_bytes)

"""``teegate k8s``: device plugin, admission webhook, KubeVirt TDX hook and the KbsConfig operator."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from teegate.errors import ConfigError, EvidenceError

__all__ = ["k8s"]

_log = logging.getLogger("teegate.k8s")


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


async def _until_signalled(main: Callable[[asyncio.Event], Any]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await main(stop)


@click.group()
def k8s() -> None:
    """Kubernetes integration: node plumbing for SGX/TDX and the KBS operator."""


@k8s.command("device-plugin")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Discover /dev, /sys and /proc/cpuinfo under this directory.",
)
@click.option(
    "--plugin-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/kubelet/device-plugins"),
    show_default=True,
)
@click.option(
    "--epc-mode",
    type=click.Choice(["intel", "azure"]),
    default="intel",
    show_default=True,
    help="intel: sgx.intel.com/epc is a node extended resource (NFD); "
    "azure: serve kubernetes.azure.com/sgx_epc_mem_in_MiB.",
)
@click.option(
    "--out-of-process-quoting/--in-process-quoting",
    default=True,
    show_default=True,
    help="Mount the aesmd socket directory and set SGX_AESM_ADDR=1 on SGX allocations.",
)
@click.option("--enclave-limit", type=int, default=110, show_default=True)
@click.option("--provision-limit", type=int, default=110, show_default=True)
@click.option("--aesmd-dir", default="/var/run/aesmd", show_default=True)
@click.option("--qgs-socket", default="/var/run/tdx-qgs/qgs.socket", show_default=True)
@click.option("--tdx-resource", default="teegate.io/tdx", show_default=True)
@click.option(
    "--tdx-enforced", is_flag=True, help="TDX devices are healthy only while the QGS socket exists."
)
@click.option("--poll-seconds", type=float, default=2.0, show_default=True)
@click.option(
    "--node-name",
    envvar="NODE_NAME",
    default=None,
    help="With --epc-mode intel: publish sgx.intel.com/epc (bytes) in this node's capacity.",
)
def device_plugin(
    *,
    root: Path,
    plugin_dir: Path,
    epc_mode: str,
    out_of_process_quoting: bool,
    enclave_limit: int,
    provision_limit: int,
    aesmd_dir: str,
    qgs_socket: str,
    tdx_resource: str,
    tdx_enforced: bool,
    poll_seconds: float,
    node_name: str | None,
) -> None:
    """Serve SGX and TDX resources to kubelet (device-plugin API v1beta1)."""
    from teegate.k8s.deviceplugin.resources import EpcMode, PluginSettings
    from teegate.k8s.deviceplugin.server import DevicePluginManager

    _logging()
    settings = PluginSettings(
        root=root,
        plugin_dir=plugin_dir,
        enclave_limit=enclave_limit,
        provision_limit=provision_limit,
        epc_mode=EpcMode(epc_mode),
        out_of_process_quoting=out_of_process_quoting,
        aesmd_dir=aesmd_dir,
        qgs_socket=qgs_socket,
        tdx_resource=tdx_resource,
        tdx_enforced=tdx_enforced,
        poll_seconds=poll_seconds,
    )
    reporter = None
    if node_name and epc_mode == "intel":
        from teegate.k8s.deviceplugin.node import KubernetesNodeReporter

        reporter = KubernetesNodeReporter(node_name)
    manager = DevicePluginManager(settings, epc_reporter=reporter)
    _log.info(
        "device plugin: root=%s dir=%s epc=%s out-of-process-quoting=%s tdx=%s%s",
        root,
        plugin_dir,
        epc_mode,
        out_of_process_quoting,
        tdx_resource,
        " (enforced)" if tdx_enforced else "",
    )
    asyncio.run(_until_signalled(manager.run))


@k8s.command("webhook")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, help="host:port to serve HTTPS on.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--aesmd-dir", default="/var/run/aesmd", show_default=True)
def webhook(listen: str, tls_cert: str, tls_key: str, aesmd_dir: str) -> None:
    """Mutating admission webhook wiring SGX quoting into pods (HTTPS only)."""
    import uvicorn

    from teegate.k8s.webhook.app import MUTATE_PATH, create_app
    from teegate.k8s.webhook.mutate import WebhookSettings

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen {listen!r}: expected host:port")
    _logging()
    _log.info("SGX webhook on https://%s%s (TLS cert %s)", listen, MUTATE_PATH, tls_cert)
    uvicorn.run(
        create_app(WebhookSettings(aesmd_dir=aesmd_dir)),
        host=host,
        port=int(port),
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        log_level="warning",
        lifespan="off",
    )


def _tdx_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--policy",
            envvar="TEEGATE_TDX_POLICY",
            default="0x10000000",
            show_default=True,
            help="TD attributes (hex); bit 0 (DEBUG) needs --allow-debug.",
        ),
        click.option(
            "--mr-config-id", envvar="TEEGATE_TDX_MR_CONFIG_ID", default=None, help="base64 SHA-384"
        ),
        click.option("--mr-owner", envvar="TEEGATE_TDX_MR_OWNER", default=None, help="base64 SHA-384"),
        click.option(
            "--mr-owner-config", envvar="TEEGATE_TDX_MR_OWNER_CONFIG", default=None, help="base64 SHA-384"
        ),
        click.option(
            "--qgs-socket",
            envvar="TEEGATE_TDX_QGS_SOCKET",
            default="/var/run/tdx-qgs/qgs.socket",
            show_default=True,
        ),
        click.option(
            "--firmware",
            envvar="TEEGATE_TDX_FIRMWARE",
            default="/usr/share/OVMF/OVMF.inteltdx.fd",
            show_default=True,
        ),
        click.option("--allow-debug", is_flag=True, envvar="TEEGATE_TDX_ALLOW_DEBUG"),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def _tdx_settings(
    *,
    policy: str,
    mr_config_id: str | None,
    mr_owner: str | None,
    mr_owner_config: str | None,
    qgs_socket: str,
    firmware: str,
    allow_debug: bool,
) -> Any:
    from teegate.k8s.kubevirt.tdx import TdxSettings

    try:
        value = int(policy, 16 if policy.lower().startswith("0x") else 10)
    except ValueError as exc:
        raise ConfigError(f"--policy {policy!r}: not an integer") from exc
    return TdxSettings(
        policy=value,
        mr_config_id=mr_config_id,
        mr_owner=mr_owner,
        mr_owner_config=mr_owner_config,
        qgs_socket=qgs_socket,
        firmware=firmware,
        allow_debug=allow_debug,
    )


@k8s.command("kubevirt-hook")
@click.option(
    "--hooks-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/run/kubevirt-hooks"),
    show_default=True,
)
@_tdx_options
def kubevirt_hook(hooks_dir: Path, **tdx: Any) -> None:
    """KubeVirt hook sidecar (Info, Callbacks v1alpha2/v1alpha3) making VMs TDX guests."""
    from teegate.k8s.kubevirt.hook import HookServer

    settings = _tdx_settings(**tdx)
    _logging()
    server = HookServer(settings, hooks_dir)

    async def main(stop: asyncio.Event) -> None:
        await server.start()
        try:
            shutdown = asyncio.ensure_future(server.shutdown_requested.wait())
            signalled = asyncio.ensure_future(stop.wait())
            await asyncio.wait({shutdown, signalled}, return_when=asyncio.FIRST_COMPLETED)
            shutdown.cancel()
            signalled.cancel()
        finally:
            await server.stop()

    asyncio.run(_until_signalled(main))


@k8s.command("on-define-domain")
@click.option("--vmi", required=True, help="VirtualMachineInstance JSON (as sidecar-shim passes it).")
@click.option("--domain", required=True, help="libvirt domain XML.")
@_tdx_options
def on_define_domain(vmi: str, domain: str, **tdx: Any) -> None:
    """sidecar-shim form: print the TDX domain XML on stdout (install as ``onDefineDomain``)."""
    from teegate.k8s.kubevirt.hook import define_domain

    try:
        out = define_domain(domain.encode(), vmi.encode(), _tdx_settings(**tdx))
    except EvidenceError as exc:
        click.echo(f"onDefineDomain: {exc}", err=True)
        sys.exit(1)
    click.echo(out.decode(), nl=False)


@k8s.command("operator")
@click.option("--namespace", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option("--all-namespaces", is_flag=True, help="Watch KbsConfigs cluster-wide.")
def operator(namespaces: tuple[str, ...], all_namespaces: bool) -> None:
    """Run the KbsConfig operator (kopf): KbsConfig → KBS Deployment, Service, session key."""
    import kopf

    from teegate.k8s.operator.handlers import register_handlers

    if bool(namespaces) == all_namespaces:
        raise ConfigError("give either --all-namespaces or at least one --namespace")
    _logging()
    register_handlers()
    _log.info("KbsConfig operator watching %s", "all namespaces" if all_namespaces else ", ".join(namespaces))
    kopf.run(standalone=True, clusterwide=all_namespaces, namespaces=list(namespaces))

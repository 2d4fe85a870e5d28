"""``teegate qgs``: the TDX Quote Generation Service and a QEMU-compatible client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import BinaryIO

import click

from teegate.node._daemon import Listen, run_daemon, start_line
from teegate.node.qgs import client
from teegate.node.qgs.backend import open_backend
from teegate.node.qgs.server import DEFAULT_READ_TIMEOUT, DEFAULT_WORKERS, QgsServer, QgsSettings

__all__ = ["qgs"]

_log = logging.getLogger("teegate.node.qgs")


def _address(socket_path: Path | None, vsock: str | None) -> client.Address:
    if (socket_path is None) == (vsock is None):
        raise click.UsageError("give exactly one of --socket PATH or --vsock CID:PORT")
    if socket_path is not None:
        return socket_path
    assert vsock is not None
    cid, _, port = vsock.partition(":")
    if not cid.isdigit() or not port.isdigit():
        raise click.UsageError(f"--vsock {vsock!r} is not CID:PORT")
    return client.VsockAddress(int(cid), int(port))


@click.group()
def qgs() -> None:
    """TDX Quote Generation Service (QGS)."""


@qgs.command("serve")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), help="Unix socket to listen on.")
@click.option("--vsock", "vsock_port", type=int, help="AF_VSOCK port to listen on (qgsd default 4050).")
@click.option("--platform", "platform_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["sim", "dcap-ql"]), default="sim", show_default=True)
@click.option("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT, show_default=True)
@click.option("--workers", type=int, default=DEFAULT_WORKERS, show_default=True, help="Concurrent signings.")
@click.option("--metrics-listen", help="HOST:PORT for Prometheus /metrics.")
def serve(
    *,
    socket_path: Path | None,
    vsock_port: int | None,
    platform_dir: Path | None,
    backend: str,
    read_timeout: float,
    workers: int,
    metrics_listen: str | None,
) -> None:
    """Serve GET_QUOTE, GET_PLATFORM_INFO, GET_COLLATERAL and raw mode until SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = QgsSettings(
        listen=Listen(unix_path=socket_path, vsock_port=vsock_port),
        backend_name=backend,
        platform_dir=platform_dir,
        read_timeout=read_timeout,
        workers=workers,
        metrics_listen=metrics_listen,
    )
    quoting = open_backend(settings.backend_name, settings.platform_dir)
    server = QgsServer(settings, quoting)

    async def main() -> None:
        listener = await server.start()
        if settings.metrics_listen:
            server.metrics.serve(settings.metrics_listen)
        details = [f"backend {quoting.name}", f"workers {settings.workers}"]
        if settings.metrics_listen:
            details.append(f"metrics http://{settings.metrics_listen}/metrics")
        _log.warning(start_line("qgs", settings.listen.describe(), details, settings.insecure(quoting)))
        cleanup = settings.listen.unix_path.unlink if settings.listen.unix_path is not None else None
        await run_daemon(listener, server.inflight, cleanup=cleanup)

    asyncio.run(main())


@qgs.command("health")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path))
@click.option("--vsock", help="CID:PORT")
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(*, socket_path: Path | None, vsock: str | None, timeout: float) -> None:
    """Probe: a GET_PLATFORM_INFO round trip; any well-formed reply means QGS is serving."""
    address = _address(socket_path, vsock)
    # An error reply is still a well-formed protocol answer: the daemon is serving (its backend
    # may simply lack platform info).
    with contextlib.suppress(client.QgsErrorReply):
        client.get_platform_info(address, timeout=timeout)
    click.echo("ok")


@qgs.command("quote")
@click.argument("tdreport", type=click.File("rb"))
@click.option("--socket", "socket_path", type=click.Path(path_type=Path))
@click.option("--vsock", help="CID:PORT")
@click.option("--raw", is_flag=True, help="Use QGS raw mode instead of GET_QUOTE_REQ.")
@click.option("--out", type=click.File("wb"), default="-", help="Where to write the quote (default stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print {size, quote_hex} as JSON instead of bytes.")
def quote(
    *,
    tdreport: BinaryIO,
    socket_path: Path | None,
    vsock: str | None,
    raw: bool,
    out: BinaryIO,
    as_json: bool,
) -> None:
    """Get a quote for a 1024-byte TDREPORT file, as QEMU would."""
    address = _address(socket_path, vsock)
    report = tdreport.read()
    data = client.get_quote_raw(address, report) if raw else client.get_quote(address, report)
    if as_json:
        click.echo(json.dumps({"size": len(data), "quote_hex": data.hex()}))
    else:
        out.write(data)

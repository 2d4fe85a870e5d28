"""``teegate aesm``: the SGX out-of-process quote helper (AESM socket subset) and its client."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import BinaryIO

import click

from teegate.node._daemon import run_daemon, start_line
from teegate.node.aesm import protocol
from teegate.node.aesm.client import AesmClient
from teegate.node.aesm.server import AesmServer, AesmSettings
from teegate.node.qgs.backend import open_backend

__all__ = ["aesm"]

_log = logging.getLogger("teegate.node.aesm")


@click.group()
def aesm() -> None:
    """SGX quote helper speaking AESM's socket protocol (for SGX_AESM_ADDR=1 enclaves)."""


@aesm.command("serve")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    default=protocol.DEFAULT_SOCKET,
    show_default=True,
)
@click.option(
    "--platform",
    "platform_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Simulated platform directory (teegate sim).",
)
@click.option("--read-timeout", type=float, default=5.0, show_default=True)
@click.option("--workers", type=int, default=4, show_default=True)
@click.option("--metrics-listen", help="HOST:PORT for Prometheus /metrics.")
def serve(
    *, socket_path: Path, platform_dir: Path, read_timeout: float, workers: int, metrics_listen: str | None
) -> None:
    """Serve SelectAttKeyID / InitQuoteEx / GetQuoteSizeEx / GetQuoteEx until SIGTERM."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    settings = AesmSettings(socket_path, platform_dir, read_timeout, workers, metrics_listen)
    backend = open_backend("sim", settings.platform_dir)
    server = AesmServer(settings, backend)

    async def main() -> None:
        listener = await server.start()
        details = [f"backend {backend.name}", f"workers {settings.workers}"]
        if settings.metrics_listen:
            server.metrics.serve(settings.metrics_listen)
            details.append(f"metrics http://{settings.metrics_listen}/metrics")
        insecure = [] if backend.hardware else ["simulated quoting backend: quotes are NOT hardware-backed"]
        _log.warning(start_line("aesm", settings.listen.describe(), details, insecure))
        await run_daemon(listener, server.inflight, cleanup=settings.socket_path.unlink)

    asyncio.run(main())


@aesm.command("health")
@click.option("--socket", "socket_path", default=protocol.DEFAULT_SOCKET, show_default=True)
@click.option("--timeout", type=float, default=5.0, show_default=True)
def health(*, socket_path: str, timeout: float) -> None:
    """Probe: a SelectAttKeyID round trip."""
    AesmClient(socket_path, int(timeout * 1000)).select_att_key_id()
    click.echo("ok")


@aesm.command("quote")
@click.argument("report", type=click.File("rb"))
@click.option("--socket", "socket_path", default=protocol.DEFAULT_SOCKET, show_default=True)
@click.option("--out", type=click.File("wb"), default="-", help="Where to write the quote (default stdout).")
@click.option("--json", "as_json", is_flag=True, help="Print {size, quote_hex} as JSON instead of bytes.")
def quote(*, report: BinaryIO, socket_path: str, out: BinaryIO, as_json: bool) -> None:
    """Quote a 432-byte sgx_report_t file through AESM, as libsgx-quote-ex would."""
    data = AesmClient(socket_path).quote(report.read())
    if as_json:
        click.echo(json.dumps({"size": len(data), "quote_hex": data.hex()}))
    else:
        out.write(data)

"""``teegate pccs``: a PCS v4-compatible collateral caching service."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from teegate.collateral.settings import CollateralSettings
from teegate.node._daemon import parse_host_port, start_line
from teegate.node.pccs.app import build_app
from teegate.node.pccs.settings import DEFAULT_LISTEN, PccsSettings, build_service

__all__ = ["pccs"]

_log = logging.getLogger("teegate.node.pccs")


@click.group()
def pccs() -> None:
    """Provisioning Certificate Caching Service (Intel PCS v4 API)."""


@pccs.command("serve")
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/var/lib/teegate/pccs"),
    show_default=True,
    help="SQLite database and token files (admin-token, user-token).",
)
@click.option("--upstream", help="Intel PCS or another PCCS base URL.")
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), help="Intel PCS API key file."
)
@click.option(
    "--sim-platform", type=click.Path(file_okay=False, path_type=Path), help="Simulated platform dir."
)
@click.option(
    "--directory", type=click.Path(file_okay=False, path_type=Path), help="Directory of PCS documents."
)
@click.option("--mode", type=click.Choice(["lazy", "req", "offline"]), default="lazy", show_default=True)
@click.option("--admin-token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--user-token-file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--insecure-http", is_flag=True, help="INSECURE: allow plain HTTP off loopback.")
@click.option(
    "--database-url",
    envvar="TEEGATE_PCCS_DATABASE_URL",
    help="PostgreSQL DSN (default: SQLite in --data-dir). Also from $TEEGATE_PCCS_DATABASE_URL.",
)
def serve(
    *,
    listen: str,
    data_dir: Path,
    upstream: str | None,
    api_key_file: Path | None,
    sim_platform: Path | None,
    directory: Path | None,
    mode: str,
    admin_token_file: Path | None,
    user_token_file: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_http: bool,
    database_url: str | None,
) -> None:
    """Serve collateral until SIGTERM."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    host, port = parse_host_port(listen)
    api_key = api_key_file.read_text().strip() if api_key_file is not None else None
    chosen = [v for v in (upstream, sim_platform, directory) if v is not None]
    if len(chosen) > 1:
        raise click.UsageError("give at most one of --upstream, --sim-platform, --directory")
    source = (
        CollateralSettings(pccs_url=upstream, sim_platform=sim_platform, directory=directory, api_key=api_key)
        if chosen
        else None
    )
    settings = PccsSettings(
        host=host,
        port=port,
        data_dir=data_dir,
        mode=mode,  # type: ignore[arg-type]
        upstream=source,
        admin_token_file=admin_token_file,
        user_token_file=user_token_file,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure_http=insecure_http,
        database_url=database_url,
    )
    service = build_service(settings)
    app = build_app(service)
    scheme = "https" if settings.tls else "http"
    details = [
        f"mode {settings.mode}",
        f"upstream {settings.describe_upstream()}",
        f"storage {settings.describe_storage()}",
    ]
    if service.writes_enabled:
        details.append("writes need a token")
    else:
        details.append("writes disabled (no token file)")
    _log.warning(start_line("pccs", f"{scheme}://{host}:{port}", details, settings.insecure))
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
    )

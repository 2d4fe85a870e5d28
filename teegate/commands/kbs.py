"""``teegate kbs``: run the Key Broker Service (``serve``) and manage one (``admin``)."""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import click

from teegate.commands.kbs_admin import admin
from teegate.errors import ConfigError

__all__ = ["kbs", "worker_app"]

#: Lifetime of the development admin token written by ``serve --dev``.
_DEV_TOKEN_SECONDS: Final = 7 * 24 * 3600
_STANDARD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
}


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _configure_logging(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    lean_log_records()


def lean_log_records() -> None:
    """Log records without thread, process and multiprocessing names and without the caller's
    file and line: neither format prints them, and each record (an audit line per release, a
    line per token) then skips a getpid() system call, a stack walk and a few lookups. The
    logging module documents ``_srcfile = None`` as the switch for the caller lookup."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None


@click.group("kbs")
def kbs() -> None:
    """Key Broker Service: Trustee-compatible (protocol 0.4.0) attestation and secret release."""


kbs.add_command(admin)


_WORKER_ENV: Final = "TEEGATE_KBS_SERVE_WORKER"
_MAX_WORKERS: Final = 64


def _settings(options: dict[str, Any]) -> Any:
    """KbsSettings from the serve options (also run by every worker process)."""
    from teegate.kbs.config import load_settings, parse_listen

    config_path = Path(options["config"]) if options.get("config") else None
    overrides: dict[str, Any] = {
        "data_dir": Path(options["data_dir"]) if options.get("data_dir") else None,
        "tls_cert": Path(options["tls_cert"]) if options.get("tls_cert") else None,
        "tls_key": Path(options["tls_key"]) if options.get("tls_key") else None,
    }
    if options.get("listen"):
        overrides["listen"] = parse_listen(options["listen"])
    sim_platform = Path(options["sim_platform"]) if options.get("sim_platform") else None
    if sim_platform is not None and not options.get("dev"):
        overrides.update(trust_simulated=True, sim_platform=sim_platform)
    settings = load_settings(config_path, overrides=overrides)
    if options.get("dev"):
        platform_dir = sim_platform or settings.data_dir / "sim-platform"
        settings = load_settings(
            config_path,
            overrides={
                **overrides,
                "data_dir": settings.data_dir,
                "dev": True,
                "allow_sample": True,
                "trust_simulated": True,
                "sim_platform": platform_dir,
            },
        )
        if settings.admin is not None:
            # The development profile owns admin access: a generated key and DIR/admin-token.
            logging.getLogger("teegate.kbs").warning("--dev ignores the [admin] table of %s", config_path)
            settings = dataclasses.replace(settings, admin=None)
    settings.check_transport()
    return settings


def worker_app() -> Any:
    """ASGI app factory for ``--workers`` > 1 (each uvicorn worker process calls it)."""
    from teegate.kbs.app import build_app

    options = json.loads(os.environ[_WORKER_ENV])
    _configure_logging(options["log_format"], options["log_level"])
    app = build_app(_settings(options))
    freeze_startup_objects()
    return app


def http_protocol() -> Any:
    """uvicorn's httptools protocol writing each response in one send (teegate.kbs.httpserver);
    uvicorn's choice where httptools is missing."""
    try:
        from teegate.kbs.httpserver import CoalescingHttpToolsProtocol
    except ImportError:
        return "auto"
    return CoalescingHttpToolsProtocol


def freeze_startup_objects() -> None:
    """Collect once, then leave everything made so far (modules, keys, verifiers) out of later
    collections: a full collection then walks only what requests made (≈ 1 % of a handshake)."""
    gc.collect()
    gc.freeze()


@kbs.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="kbs.toml (Trustee-like).",
)
@click.option("--listen", default=None, help="HOST:PORT (default 127.0.0.1:8080).")
@click.option(
    "--tls-cert", type=click.Path(path_type=Path, dir_okay=False), help="TLS certificate chain (PEM)."
)
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False), help="TLS private key (PEM).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="State directory (default $TEEGATE_DATA_DIR or ~/.local/share/teegate/kbs).",
)
@click.option(
    "--dev", is_flag=True, help="INSECURE development profile: loopback, sample + simulated evidence."
)
@click.option(
    "--sim-platform",
    type=click.Path(path_type=Path, file_okay=False),
    help="Simulated platform directory to trust (--dev: created under the data dir when absent).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, _MAX_WORKERS),
    default=1,
    show_default=True,
    help="Server processes sharing the port (sessions and keys are shared through the data dir).",
)
@click.option("--log-format", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def serve(  # noqa: PLR0917 - click passes options positionally by name
    config_path: Path | None,
    listen: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    data_dir: Path | None,
    dev: bool,
    sim_platform: Path | None,
    workers: int,
    log_format: str,
    log_level: str,
) -> None:
    """Serve the KBS (embedded defaults without --config: SQLite under the data directory)."""
    import uvicorn

    from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token, write_admin_token
    from teegate.kbs.app import build_app
    from teegate.kbs.paths import admin_key_path, admin_token_path

    _configure_logging(log_format, log_level)
    options: dict[str, Any] = {
        "config": str(config_path) if config_path else None,
        "listen": listen,
        "tls_cert": str(tls_cert) if tls_cert else None,
        "tls_key": str(tls_key) if tls_key else None,
        "data_dir": str(data_dir) if data_dir else None,
        "dev": dev,
        "sim_platform": str(sim_platform) if sim_platform else None,
        "log_format": log_format,
        "log_level": log_level,
    }
    settings = _settings(options)
    options["data_dir"] = str(settings.data_dir)  # workers resolve the same directory
    token_path: Path | None = None
    if dev:
        from teegate.sim import PLATFORM_FILE, SimPlatform

        assert settings.sim_platform is not None
        if not (settings.sim_platform / PLATFORM_FILE).exists():
            SimPlatform.create(settings.sim_platform)
    # Built once here even with workers: keys are created and configuration errors surface now.
    app = build_app(settings)
    key_path = admin_key_path(settings.data_dir)
    if dev:
        key = load_or_create_admin_key(key_path)
        token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=_DEV_TOKEN_SECONDS)
        token_path = admin_token_path(settings.data_dir)
        write_admin_token(token_path, token)
    host, port = settings.listen
    scheme = "https" if settings.tls else "http"
    insecure = settings.insecure_options()
    if dev:
        click.echo(
            "=" * 78
            + "\n  teegate KBS DEVELOPMENT PROFILE — INSECURE. Do not use with real secrets.\n"
            + "  Accepts Trustee sample evidence and simulated TDX/SGX quotes from "
            + f"{settings.sim_platform};\n"
            + "  releases resources to them when their report data binds the TEE key.\n"
            + f"  Admin token: {token_path}\n"
            + "=" * 78,
            err=True,
        )
    admin_note = "[admin] from config" if settings.admin is not None else f"admin key {key_path}"
    logging.getLogger("teegate.kbs").info(
        "teegate KBS listening on %s://%s:%d (data %s, %s, %d worker(s)); insecure options: %s",
        scheme,
        host,
        port,
        settings.data_dir,
        admin_note,
        workers,
        ", ".join(insecure) if insecure else "none",
        extra={"listen": f"{scheme}://{host}:{port}", "insecure": insecure, "workers": workers},
    )
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "ssl_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_keyfile": str(settings.tls_key) if settings.tls_key else None,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "server_header": False,
        "http": http_protocol(),
    }
    try:
        if workers > 1:
            del app
            os.environ[_WORKER_ENV] = json.dumps(options)
            uvicorn.run("teegate.commands.kbs:worker_app", factory=True, workers=workers, **common)
        else:
            freeze_startup_objects()
            uvicorn.Server(uvicorn.Config(app, **common)).run()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None

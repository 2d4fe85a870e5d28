"""``teegate register``: deliver the platform's SGX registration request once per boot."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TextIO

import click

from teegate.node._daemon import start_line
from teegate.node.register import (
    DEFAULT_EFI_DIR,
    DEFAULT_STATE_DIR,
    RegisterSettings,
    register,
    register_simulated,
)

__all__ = ["register_command"]

_log = logging.getLogger("teegate.node.register")


@click.command("register")
@click.option(
    "--url", required=True, help="Registration service (Intel RS, or a PCCS in --sim-platform mode)."
)
@click.option(
    "--efi-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_EFI_DIR, show_default=True
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    help="Holds the once-per-boot marker (keep it on a tmpfs such as /run).",
)
@click.option(
    "--sim-platform",
    type=click.Path(file_okay=False, path_type=Path),
    help="Register this simulated platform with a PCCS instead of reading EFI variables.",
)
@click.option(
    "--user-token-file", type=click.File("r"), help="PCCS user token (sent as the user-token header)."
)
@click.option(
    "--ca", type=click.Path(dir_okay=False, path_type=Path), help="CA bundle for the service's TLS cert."
)
@click.option("--timeout", type=float, default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def register_command(
    *,
    url: str,
    efi_dir: Path,
    state_dir: Path,
    sim_platform: Path | None,
    user_token_file: TextIO | None,
    ca: Path | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Run once per boot; exits 0 when registered or nothing is pending, 1 on failure."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    token = user_token_file.read().strip() if user_token_file is not None else None
    settings = RegisterSettings(
        url=url,
        efi_dir=efi_dir,
        state_dir=state_dir,
        timeout=timeout,
        user_token=token,
        verify_tls=str(ca) if ca else True,
    )
    insecure = list(settings.insecure)
    if sim_platform is not None:
        insecure.append("simulated platform registration")
    source = f"simulated platform {sim_platform}" if sim_platform else f"efivars {efi_dir}"
    _log.warning(start_line("register", url, [source], insecure))
    if sim_platform is not None:
        from teegate.sim import SimPlatform

        result = register_simulated(settings, SimPlatform.load(sim_platform))
    else:
        result = register(settings)
    if as_json:
        click.echo(
            json.dumps(
                {"outcome": result.outcome.value, "http_status": result.http_status, "detail": result.detail}
            )
        )
    else:
        click.echo(result.outcome.value)

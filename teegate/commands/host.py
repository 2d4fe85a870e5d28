"""``teegate host check``: is this machine ready to run TDX/SGX workloads?"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from teegate.host.checks import HostCheckSettings, Status, run_checks

__all__ = ["host"]


@click.group()
def host() -> None:
    """Host readiness for confidential workloads."""


@host.command("check")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/"),
    show_default=True,
    help="Read /dev, /sys, /proc and binaries under this directory.",
)
@click.option("--tee", type=click.Choice(["all", "tdx", "sgx"]), default="all", show_default=True)
@click.option("--dmesg", default="/var/log/dmesg", show_default=True, help="Saved kernel log (under --root).")
@click.option("--qgs-socket", default="/var/run/tdx-qgs/qgs.socket", show_default=True)
@click.option("--pccs-url", default="https://localhost:8081", show_default=True)
@click.option(
    "--pccs-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CA bundle for the PCCS certificate.",
)
@click.option("--no-pccs", is_flag=True, help="Skip the PCCS check.")
@click.option("--timeout", type=float, default=5.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def check(
    *,
    root: Path,
    tee: str,
    dmesg: str,
    qgs_socket: str,
    pccs_url: str,
    pccs_ca: Path | None,
    no_pccs: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """A PASS/FAIL table; exits 1 when any check fails (each failure says how to fix it)."""
    settings = HostCheckSettings(
        root=root,
        tdx=tee in ("all", "tdx"),
        sgx=tee in ("all", "sgx"),
        dmesg=dmesg,
        qgs_socket=qgs_socket,
        pccs_url=None if no_pccs else pccs_url,
        pccs_ca=pccs_ca,
        timeout=timeout,
    )
    results = run_checks(settings)
    failed = [r for r in results if r.status is Status.FAIL]
    if as_json:
        click.echo(json.dumps({"ok": not failed, "checks": [r.to_json() for r in results]}, indent=2))
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            click.echo(f"{r.name:<{width}} : {r.status.value:<4}  {r.detail}")
        for r in failed:
            click.echo(f"fix [{r.name}]: {r.fix}", err=True)
    if failed:
        sys.exit(1)

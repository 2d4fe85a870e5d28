"""``teegate sim``: create a simulated platform and make quotes, TDREPORTs and collateral with it."""

from __future__ import annotations

import binascii
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from teegate.sim.collateral import TCB_STATUSES

__all__ = ["sim"]

_WARNING = "teegate sim: SIMULATED platform — its quotes are not hardware-backed and chain to a test root"

_platform_option = click.option(
    "--platform",
    "platform_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Simulated platform directory (made by `teegate sim init`).",
)
_tee_option = click.option("--tee", type=click.Choice(["tdx", "sgx"]), required=True)


def _hex(value: str, what: str) -> bytes:
    text = value.strip()
    if text.startswith(("0x", "0X")):
        text = text[2:]
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        raise click.BadParameter(f"{what} is not valid hex") from None


def _write(out: Path | None, data: bytes, text: str) -> None:
    if out is None:
        click.echo(text)
    else:
        out.write_bytes(data)
        click.echo(f"wrote {out} ({len(data)} bytes)", err=True)


@click.group("sim")
def sim() -> None:
    """Simulated TDX/SGX platform (test PKI; never trusted unless configured)."""


@sim.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--fmspc", default="00C0FFEE0000", show_default=True, help="FMSPC (12 hex digits).")
@click.option(
    "--tcb-level",
    type=click.Choice(TCB_STATUSES, case_sensitive=False),
    default="UpToDate",
    show_default=True,
    help="TCB status the platform's collateral gives it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the platform's identity as JSON.")
def init_command(directory: Path, fmspc: str, tcb_level: str, as_json: bool) -> None:
    """Create a simulated platform in DIRECTORY (refuses to overwrite one)."""
    from teegate.sim import SimPlatform

    platform = SimPlatform.create(directory, fmspc=fmspc, tcb_status=tcb_level)
    info = {
        "directory": str(directory),
        "fmspc": platform.fmspc,
        "tcb_status": platform.tcb_status,
        "qe_id": platform.qe_id.hex(),
        "root_ca_sha256": hashlib.sha256(platform.root_ca_der).hexdigest(),
        "simulated": True,
    }
    print(_WARNING, file=sys.stderr)
    if as_json:
        click.echo(json.dumps(info, indent=1))
    else:
        for key, value in info.items():
            click.echo(f"{key:16} {value}")


@sim.command("quote")
@_platform_option
@_tee_option
@click.option(
    "--version",
    "quote_version",
    type=click.Choice(["4", "5"]),
    default="4",
    show_default=True,
    help="TDX quote version (SGX quotes are always v3).",
)
@click.option("--report-data", required=True, help="REPORTDATA as hex (at most 64 bytes, zero-padded).")
@click.option("--debug", is_flag=True, help="Set the TD / enclave DEBUG attribute.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the binary quote here.")
@click.option(
    "--collateral-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write its collateral bundle (dcap-qvl JSON) here.",
)
def quote_command(
    *,
    platform_dir: Path,
    tee: str,
    quote_version: str,
    report_data: str,
    debug: bool,
    out: Path | None,
    collateral_out: Path | None,
) -> None:
    """Make a simulated quote; prints hex unless --out is given."""
    from teegate.sim import SimPlatform

    data = _hex(report_data, "--report-data")
    platform = SimPlatform.load(platform_dir)
    print(_WARNING, file=sys.stderr)
    if tee == "tdx":
        quote = platform.tdx_quote(data, version=int(quote_version), debug=debug)
    else:
        quote = platform.sgx_quote(data, debug=debug)
    _write(out, quote, quote.hex())
    if collateral_out is not None:
        bundle = platform.collateral("tdx" if tee == "tdx" else "sgx", now=datetime.now(UTC))
        collateral_out.write_text(bundle.to_json())
        click.echo(f"wrote {collateral_out}", err=True)


@sim.command("collateral")
@_platform_option
@_tee_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the bundle here.")
@click.option(
    "--tcb-status",
    type=click.Choice(TCB_STATUSES, case_sensitive=False),
    help="Override the platform's TCB status (scenario).",
)
@click.option("--fmspc", help="Name this FMSPC in the TCB Info instead of the platform's (scenario).")
@click.option("--revoke-pck", is_flag=True, help="Put the PCK certificate on the PCK CRL (scenario).")
@click.option("--expired", is_flag=True, help="Issue collateral whose validity ended a day ago (scenario).")
def collateral_command(
    *,
    platform_dir: Path,
    tee: str,
    out: Path | None,
    tcb_status: str | None,
    fmspc: str | None,
    revoke_pck: bool,
    expired: bool,
) -> None:
    """Collateral for the platform as a dcap-qvl JSON bundle, valid from an hour ago for 30 days."""
    from teegate.sim import SimPlatform

    platform = SimPlatform.load(platform_dir)
    bundle = platform.collateral(
        "tdx" if tee == "tdx" else "sgx",
        now=datetime.now(UTC),
        tcb_status=tcb_status,
        fmspc=fmspc,
        revoke_pck=revoke_pck,
        expired=expired,
    )
    text = bundle.to_json()
    _write(out, text.encode(), text)


@sim.command("tdreport")
@_platform_option
@click.option("--report-data", required=True, help="REPORTDATA as hex (at most 64 bytes, zero-padded).")
@click.option("--debug", is_flag=True, help="Set the TD DEBUG attribute.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the binary TDREPORT here."
)
def tdreport_command(platform_dir: Path, report_data: str, debug: bool, out: Path | None) -> None:
    """The 1024-byte TDREPORT a simulated TD gets; prints hex unless --out is given."""
    from teegate.sim import SimPlatform

    data = _hex(report_data, "--report-data")
    report = SimPlatform.load(platform_dir).tdreport(data, debug=debug)
    _write(out, report, report.hex())


@sim.command("root")
@_platform_option
def root_command(platform_dir: Path) -> None:
    """Print the simulated root CA certificate (PEM), for explicit trust configuration."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from teegate.sim import SimPlatform

    platform = SimPlatform.load(platform_dir)
    click.echo(platform.certificates.root.public_bytes(Encoding.PEM).decode(), nl=False)

"""``teegate collateral``: fetch verification collateral into a dcap-qvl JSON bundle."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from teegate.collateral import INTEL_PCS_URL, CollateralSettings, source_from_settings
from teegate.collateral._documents import bundle_info
from teegate.dcap.collateral import CollateralKey

__all__ = ["collateral"]


@click.group()
def collateral() -> None:
    """Verification collateral (TCB Info, QE Identity, CRLs)."""


@collateral.command("fetch")
@click.option("--fmspc", required=True, help="12 hex digits.")
@click.option("--tee", type=click.Choice(["tdx", "sgx"]), required=True)
@click.option("--ca", type=click.Choice(["platform", "processor"]), default="platform", show_default=True)
@click.option("--pccs", "pccs_url", help=f"PCS or PCCS base URL (default {INTEL_PCS_URL}).")
@click.option(
    "--qcnl-conf", type=click.Path(dir_okay=False, path_type=Path), help="Intel sgx_default_qcnl.conf."
)
@click.option(
    "--directory", type=click.Path(file_okay=False, path_type=Path), help="Directory of PCS documents."
)
@click.option(
    "--sim-platform", type=click.Path(file_okay=False, path_type=Path), help="Simulated platform dir."
)
@click.option(
    "--api-key-file", type=click.Path(dir_okay=False, path_type=Path), help="Intel PCS API key file."
)
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--offline", is_flag=True, help="Use only --cache-dir.")
@click.option("--at", "at", help="Time to check freshness at (ISO 8601; default now).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Bundle file ('-' stdout)."
)
def fetch(
    *,
    fmspc: str,
    tee: str,
    ca: str,
    pccs_url: str | None,
    qcnl_conf: Path | None,
    directory: Path | None,
    sim_platform: Path | None,
    api_key_file: Path | None,
    cache_dir: Path | None,
    offline: bool,
    at: str | None,
    out: Path,
) -> None:
    """Fetch the collateral for one platform and write it as a dcap-qvl JSON bundle."""
    try:
        key = CollateralKey(tee, fmspc.upper(), ca)  # type: ignore[arg-type]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fmspc") from None
    now = datetime.fromisoformat(at.replace("Z", "+00:00")) if at else datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if not offline and not any(v is not None for v in (pccs_url, qcnl_conf, directory, sim_platform)):
        pccs_url = INTEL_PCS_URL
    settings = CollateralSettings(
        pccs_url=pccs_url,
        qcnl_conf=qcnl_conf,
        directory=directory,
        sim_platform=sim_platform,
        cache_dir=cache_dir,
        offline=offline,
        api_key=api_key_file.read_text().strip() if api_key_file else None,
    )
    source = source_from_settings(settings)
    bundle = asyncio.run(source.get(key, now=now))
    text = bundle.to_json() + "\n"
    if str(out) == "-":
        sys.stdout.write(text)
    else:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(out)
        info = bundle_info(bundle)
        click.echo(
            json.dumps(
                {
                    "out": str(out),
                    "tee": info.tee,
                    "fmspc": info.fmspc,
                    "next_update": info.next_update.isoformat(),
                }
            ),
            err=True,
        )

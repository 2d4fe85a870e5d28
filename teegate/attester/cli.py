"""``teegate-attester``: trustee-attester's command line, with operator-readable failures.

    teegate-attester --url URL [--cert-file PEM] [--evidence auto|…] get-resource --path repo/type/tag
    teegate-attester --url URL attest

``get-resource`` prints the resource base64-encoded (as trustee-attester) or raw with ``--raw``;
``attest`` prints the token. Diagnostics go to stderr; the exit status names the failure
(see :class:`teegate.attester.errors.ExitCode`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from teegate.attester.client import KbsClient, RetryPolicy, load_initdata
from teegate.attester.errors import AttesterError, ExitCode
from teegate.attester.keys import KeyAlgorithm
from teegate.attester.providers import EVIDENCE_CHOICES, ProviderOptions, select_provider
from teegate.attester.providers.tsm import DEFAULT_TSM_ROOT
from teegate.attester.uri import ResourceRef, parse_resource
from teegate.errors import ConfigError, TeegateError

__all__ = ["clevis_jwk", "cli", "main"]

_log = logging.getLogger("teegate.attester")
#: Domain separation for the clevis pin key derived from a KBS resource.
_CLEVIS_LABEL = b"teegate clevis pin v1\0"


@dataclass(frozen=True, slots=True)
class _Options:
    url: str | None
    cert_file: Path | None
    evidence: str
    providers: ProviderOptions
    key_algorithm: KeyAlgorithm
    retry: RetryPolicy
    timeout: float
    insecure_http: bool


def _client(options: _Options, ref: ResourceRef | None, initdata: Path | None) -> KbsClient:
    url = options.url
    if url is None and ref is not None and ref.kbs_host:
        url = f"https://{ref.kbs_host}"
    if url is None:
        raise ConfigError("--url is required (or a kbs://host:port/repo/type/tag resource URI)")
    provider, why = select_provider(options.evidence, options.providers)
    _log.warning("evidence provider: %s — %s [%s]", provider.name, provider.describe(), why)
    if provider.name == "sample":
        _log.warning("insecure: sample evidence carries no hardware proof; a production KBS refuses it")
    return KbsClient(
        url,
        provider,
        key_algorithm=options.key_algorithm,
        cert_file=options.cert_file,
        initdata=load_initdata(initdata) if initdata is not None else None,
        retry=options.retry,
        request_timeout=options.timeout,
        insecure_http=options.insecure_http,
    )


_path = click.Path(path_type=Path)


@click.group()
@click.option("--url", help="KBS base URL, e.g. https://kbs.example:8080")
@click.option(
    "--cert-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate (PEM) the KBS's TLS certificate must chain to.",
)
@click.option(
    "--evidence",
    type=click.Choice(EVIDENCE_CHOICES),
    default="auto",
    show_default=True,
    help="Evidence provider.",
)
@click.option(
    "--qgs-socket", type=_path, help="QGS Unix socket (sim; tdx-guest instead of vsock CID 2 port 4050)."
)
@click.option("--sim-platform", type=_path, help="Simulated platform directory (`teegate sim init`).")
@click.option(
    "--aesm-socket", type=_path, help="AESM socket for sgx-aesm [default: /var/run/aesmd/aesm.socket]."
)
@click.option("--tsm-root", type=_path, default=DEFAULT_TSM_ROOT, show_default=True, hidden=True)
@click.option(
    "--tee-key",
    "key_algorithm",
    type=click.Choice([k.value for k in KeyAlgorithm]),
    default=KeyAlgorithm.EC_P256.value,
    show_default=True,
    help="TEE key type.",
)
@click.option(
    "--retries", type=click.IntRange(1, 1000), default=5, show_default=True, help="Attempts before giving up."
)
@click.option(
    "--deadline",
    type=click.FloatRange(min=1.0),
    default=120.0,
    show_default=True,
    help="Total seconds for all attempts.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds per HTTP request.",
)
@click.option("--insecure-http", is_flag=True, help="INSECURE: allow plain http:// to a non-loopback KBS.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.pass_context
def cli(  # noqa: PLR0917 - one parameter per click option
    ctx: click.Context,
    url: str | None,
    cert_file: Path | None,
    evidence: str,
    qgs_socket: Path | None,
    sim_platform: Path | None,
    aesm_socket: Path | None,
    tsm_root: Path,
    key_algorithm: str,
    retries: int,
    deadline: float,
    timeout: float,
    insecure_http: bool,
    quiet: bool,
) -> None:
    """Attest this TEE to a KBS (Trustee protocol 0.4.0) and fetch secrets."""
    logging.basicConfig(
        level=logging.ERROR if quiet else logging.WARNING,
        format="teegate-attester: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = _Options(
        url=url,
        cert_file=cert_file,
        evidence=evidence,
        providers=ProviderOptions(
            tsm_root=tsm_root, qgs_socket=qgs_socket, sim_platform=sim_platform, aesm_socket=aesm_socket
        ),
        key_algorithm=KeyAlgorithm(key_algorithm),
        retry=RetryPolicy(attempts=retries, deadline=deadline),
        timeout=timeout,
        insecure_http=insecure_http,
    )


@cli.command("get-resource")
@click.option("--path", "resource", required=True, help="repo/type/tag or kbs:///repo/type/tag")
@click.option(
    "--initdata", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Init-data TOML to send."
)
@click.option("--raw", is_flag=True, help="Write the raw bytes instead of base64 (for keyscripts).")
@click.option(
    "--as-jwk", is_flag=True, help="Print an A256GCM oct JWK derived from the resource (clevis pin)."
)
@click.pass_obj
def get_resource(options: _Options, resource: str, initdata: Path | None, raw: bool, as_jwk: bool) -> None:
    """Attest, fetch a resource, print it base64-encoded."""
    if raw and as_jwk:
        raise click.UsageError("--raw and --as-jwk exclude each other")
    ref = parse_resource(resource)
    with _client(options, ref, initdata) as client:
        data = client.get_resource(ref)
    if as_jwk:
        click.echo(json.dumps(clevis_jwk(data), separators=(",", ":")))
    elif raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        click.echo(base64.b64encode(data).decode("ascii"))


@cli.command()
@click.option(
    "--initdata", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Init-data TOML to send."
)
@click.pass_obj
def attest(options: _Options, initdata: Path | None) -> None:
    """Attest and print the attestation token."""
    with _client(options, None, initdata) as client:
        click.echo(client.attest())


def clevis_jwk(resource: bytes) -> dict[str, str]:
    """The clevis ``teegate`` pin's content key: ``SHA-256(label || resource)`` as an oct JWK."""
    key = hashlib.sha256(_CLEVIS_LABEL + resource).digest()
    return {"alg": "A256GCM", "k": base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii"), "kty": "oct"}


def main(argv: list[str] | None = None) -> None:
    """Entry point; every failure becomes one stderr line and a distinct exit status."""
    try:
        cli.main(args=argv, prog_name="teegate-attester", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(ExitCode.USAGE if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Abort:
        click.echo("teegate-attester: aborted", err=True)
        sys.exit(130)
    except AttesterError as exc:
        notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", []))
        click.echo(f"teegate-attester: {exc.label}: {exc.diagnostics()}{notes}", err=True)
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"teegate-attester: configuration error: {exc.diagnostics()}", err=True)
        sys.exit(ExitCode.USAGE)
    except TeegateError as exc:
        click.echo(f"teegate-attester: error: {exc.diagnostics()}", err=True)
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()

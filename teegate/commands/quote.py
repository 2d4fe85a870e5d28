"""``teegate quote parse|show|verify``: read a DCAP quote (binary, hex or base64) and show or verify it.

Exit codes: 0 parsed / verified (any TCB status), 1 verification failed, 2 bad input.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from teegate.errors import ParseError, TeegateError

if TYPE_CHECKING:
    from teegate.dcap.anchors import TrustAnchors
    from teegate.dcap.collateral import Collateral
    from teegate.dcap.quote import Quote
    from teegate.dcap.verify import Verdict

__all__ = ["quote"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _fail(code: int, message: str) -> NoReturn:
    click.echo(f"teegate: error: {message}", err=True)
    sys.exit(code)


def _read_quote(path: str, allow_trailing_data: bool) -> Quote:
    from teegate.dcap.quote import MAX_QUOTE_TEXT_BYTES, decode_quote_text, parse_quote

    try:
        if path == "-":
            raw = sys.stdin.buffer.read(MAX_QUOTE_TEXT_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_QUOTE_TEXT_BYTES + 1)
    except OSError as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read quote {path}: {exc.strerror or exc}")
    if len(raw) > MAX_QUOTE_TEXT_BYTES:
        _fail(EXIT_BAD_INPUT, f"quote file {path} is larger than {MAX_QUOTE_TEXT_BYTES} bytes")
    try:
        return parse_quote(decode_quote_text(raw), allow_trailing_data=allow_trailing_data)
    except ParseError as exc:
        _fail(EXIT_BAD_INPUT, f"not a valid quote: {exc}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    return value


def _describe(q: Quote) -> dict[str, Any]:
    from teegate.dcap.pck import parse_pck_extensions, pck_ca_of

    leaf = q.pck_leaf
    pck = parse_pck_extensions(leaf)
    ca = pck_ca_of(leaf)
    chain = q.pck_chain
    out: dict[str, Any] = {
        "version": q.version,
        "tee": q.tee,
        "body_type": q.body_type,
        "size": len(q.raw),
        "padding": q.padding,
        "header": _jsonable(q.header),
        "body": _jsonable(q.body),
        "debug": q.debug,
        "signature": q.signature.hex(),
        "attestation_key": q.attestation_key.hex(),
        "qe_report": _jsonable(q.qe_report),
        "qe_report_signature": q.qe_report_signature.hex(),
        "qe_auth_data": q.qe_auth_data.hex(),
        "cert_data_type": q.outer_cert_data_type,
        "pck_chain": [c.subject.rfc4514_string() for c in chain],
        "pck": {
            **_jsonable(pck),
            "fmspc": pck.fmspc_hex,
            "pce_id": pck.pce_id_hex,
            "sgx_type_name": pck.sgx_type_name,
        },
        "pck_ca": ca,
        "fmspc": pck.fmspc_hex,
    }
    if q.trailing_data:
        out["trailing_data"] = len(q.trailing_data)
    return out


def _print_text(d: dict[str, Any]) -> None:
    def section(title: str, items: dict[str, Any]) -> None:
        click.echo(f"{title}:")
        width = max((len(k) for k in items), default=0)
        for k, v in items.items():
            shown = ", ".join(str(x) for x in v) if isinstance(v, list) else v
            click.echo(f"  {k:<{width}}  {shown}")

    top = {
        "version": d["version"],
        "tee": d["tee"],
        "body type": d["body_type"] if d["body_type"] is not None else "-",
        "size": f"{d['size']} bytes ({d['padding']} bytes zero padding)",
        "debug": d["debug"],
        "fmspc": d["fmspc"],
        "pck ca": d["pck_ca"],
    }
    section("quote", top)
    header = dict(d["header"])
    header["tee_type"] = f"0x{header['tee_type']:08x}"
    section("header", header)
    body = dict(d["body"])
    if "rtmrs" in body:
        rtmrs = body.pop("rtmrs")
        rebuilt: dict[str, Any] = {}
        for key, value in body.items():
            if key == "report_data":
                rebuilt.update({f"rtmr{i}": r for i, r in enumerate(rtmrs)})
            rebuilt[key] = value
        body = rebuilt
    section("body", body)
    section(
        "signature data",
        {
            "signature": d["signature"],
            "attestation_key": d["attestation_key"],
            "qe_report_signature": d["qe_report_signature"],
            "qe_auth_data": d["qe_auth_data"],
            "cert_data_type": d["cert_data_type"],
        },
    )
    section("qe report", d["qe_report"])
    pck = dict(d["pck"])
    tcb = pck.pop("tcb")
    pck["sgx_tcb_components"] = tcb["sgx_components"]
    pck["pcesvn"] = tcb["pcesvn"]
    pck["cpusvn"] = tcb["cpusvn"]
    config = pck.pop("configuration")
    if config is not None:
        pck.update(config)
    section("pck certificate", pck)
    section("pck chain", {str(i): s for i, s in enumerate(d["pck_chain"])})


@click.group()
def quote() -> None:
    """Intel DCAP quotes (SGX v3, TDX v4/v5): show and verify."""


@quote.command("parse")
@click.argument("file", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--allow-trailing-data",
    is_flag=True,
    help="Accept non-zero bytes after the quote (zero padding is always accepted).",
)
def parse_command(*, file: str, as_json: bool, allow_trailing_data: bool) -> None:
    """Parse FILE (binary, hex or base64; - for stdin) and print header, body and PCK certificate."""
    q = _read_quote(file, allow_trailing_data)
    try:
        described = _describe(q)
    except ParseError as exc:
        _fail(EXIT_BAD_INPUT, f"not a valid quote: {exc}")
    if as_json:
        click.echo(json.dumps(described, indent=2))
    else:
        _print_text(described)


quote.add_command(parse_command, "show")


def _parse_at(at: str | None) -> datetime:
    if at is None:
        return datetime.now(UTC)
    text = at.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC)
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        _fail(EXIT_BAD_INPUT, f"--at {at!r} is not an ISO 8601 time (e.g. 2025-07-04T10:16:31Z)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when


def _load_roots(paths: tuple[Path, ...]) -> TrustAnchors:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from teegate.dcap.anchors import TrustAnchor, TrustAnchors

    anchors = TrustAnchors.intel()
    for path in paths:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError, x509.InvalidVersion) as exc:
            _fail(EXIT_BAD_INPUT, f"--trust-root {path}: not a readable PEM certificate ({exc})")
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            _fail(EXIT_BAD_INPUT, f"--trust-root {path}: not an EC public key")
        click.echo(
            f"teegate: WARNING: insecure: trusting an extra root {cert.subject.rfc4514_string()} "
            f"from {path}; verdicts anchored there are marked simulated",
            err=True,
        )
        anchors = anchors.with_anchor(
            TrustAnchor.from_key(cert.subject.rfc4514_string(), key, simulated=True)
        )
    return anchors


def _bundle_file(path: Path) -> Collateral:
    from teegate.dcap.collateral import MAX_BUNDLE_BYTES, Collateral

    try:
        with path.open("rb") as fh:
            text = fh.read(MAX_BUNDLE_BYTES + 1)
    except OSError as exc:
        _fail(EXIT_BAD_INPUT, f"cannot read collateral {path}: {exc.strerror or exc}")
    try:
        return Collateral.from_json(text)
    except ParseError as exc:
        _fail(EXIT_BAD_INPUT, f"bad collateral bundle {path}: {exc}")


def _fetch_collateral(q: Quote, directory: Path | None, pccs_url: str | None, now: datetime) -> Collateral:
    """Collateral for this quote's platform from a directory or a PCCS (the only I/O here)."""
    import asyncio

    from teegate.collateral.files import BundleSource, DirectorySource
    from teegate.collateral.pcs import PcsClient
    from teegate.dcap.pck import collateral_key

    try:
        key = collateral_key(q)
    except ParseError as exc:
        _fail(EXIT_BAD_INPUT, f"not a valid quote: {exc}")
    source: BundleSource | DirectorySource | PcsClient
    if directory is not None:
        # PCS documents are named tcb_info_<tee>_<FMSPC>.json; anything else is a bundle directory.
        has_documents = any(directory.glob("tcb_info_*_*.json"))
        source = DirectorySource(directory) if has_documents else BundleSource(directory)
    else:
        assert pccs_url is not None
        try:
            source = PcsClient(pccs_url)
        except TeegateError as exc:
            _fail(EXIT_BAD_INPUT, f"--pccs {pccs_url}: {exc.diagnostics()}")
    try:
        return asyncio.run(source.get(key, now=now))
    except TeegateError as exc:
        _fail(
            EXIT_FAILED, f"no collateral for {key.tee} FMSPC {key.fmspc} ({key.ca} CA): {exc.diagnostics()}"
        )


def _verdict_json(verdict: Verdict) -> dict[str, Any]:
    from teegate.dcap.verify import verdict_claims

    return {
        "verified": True,
        "status": verdict.status,
        "advisory_ids": list(verdict.advisory_ids),
        "tcb_date": verdict.tcb_date,
        "collateral_expired": verdict.collateral_expired,
        "platform_status": verdict.platform_status,
        "qe_status": verdict.qe_status,
        "tdx_module_status": verdict.tdx_module_status,
        "fmspc": verdict.fmspc,
        "pck_ca": verdict.pck_ca,
        "anchor": verdict.anchor.name,
        "simulated": verdict.anchor.simulated,
        "debug": verdict.debug,
        "claims": verdict_claims(verdict),
    }


@quote.command("verify")
@click.argument("file", type=str)
@click.option(
    "--collateral",
    "collateral_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A collateral bundle (dcap-qvl QuoteCollateralV3 JSON), a directory of bundles "
    "(<tee>-<FMSPC>[-<ca>].json) or a directory of PCS documents (tcb_info_<tee>_<FMSPC>.json, …).",
)
@click.option(
    "--pccs", "pccs_url", default=None, help="Fetch collateral from this PCCS / Intel PCS base URL."
)
@click.option("--at", "at", default=None, help="Verification time (ISO 8601 or Unix seconds); default now.")
@click.option(
    "--trust-root",
    "trust_roots",
    type=click.Path(dir_okay=False, path_type=Path),
    multiple=True,
    help="INSECURE: also trust this root certificate (PEM), e.g. a test PKI.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--allow-trailing-data", is_flag=True, help="Accept non-zero bytes after the quote.")
def verify_command(
    *,
    file: str,
    collateral_path: Path,
    at: str | None,
    trust_roots: tuple[Path, ...],
    as_json: bool,
    allow_trailing_data: bool,
    pccs_url: str | None,
) -> None:
    """Verify FILE with its collateral: exit 0 if it verifies (any TCB status), 1 if not, 2 on bad input."""
    if (collateral_path is None) == (pccs_url is None):
        _fail(EXIT_BAD_INPUT, "give exactly one of --collateral PATH or --pccs URL")
    q = _read_quote(file, allow_trailing_data)
    now = _parse_at(at)
    if collateral_path is not None and not collateral_path.is_dir():
        collateral = _bundle_file(collateral_path)
    else:
        collateral = _fetch_collateral(q, collateral_path, pccs_url, now)
    anchors = _load_roots(trust_roots)
    from teegate.dcap.verify import QuoteVerifier

    try:
        verdict = QuoteVerifier(anchors=anchors).verify(q, collateral, now=now)
    except TeegateError as exc:
        message = exc.diagnostics()
        if as_json:
            code = getattr(exc, "code", type(exc).__name__)
            click.echo(json.dumps({"verified": False, "error": code, "message": message}, indent=2))
        _fail(EXIT_FAILED, f"quote did not verify: {message}")
    result = _verdict_json(verdict)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    width = 18
    for key in ("status", "advisory_ids", "tcb_date", "collateral_expired", "platform_status", "qe_status"):
        value = result[key]
        shown = ", ".join(value) if isinstance(value, list) else value
        click.echo(f"{key:<{width}}  {shown if shown not in (None, '') else '-'}")
    if result["tdx_module_status"] is not None:
        click.echo(f"{'tdx_module_status':<{width}}  {result['tdx_module_status']}")
    click.echo(f"{'anchor':<{width}}  {result['anchor']}{' (SIMULATED)' if result['simulated'] else ''}")
    click.echo(f"{'debug':<{width}}  {result['debug']}")
    click.echo("claims:")
    click.echo(json.dumps(result["claims"], indent=2, default=str))

"""``teegate kbs admin``: the KBS admin API from the command line, mirroring kbs-client ``config``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from teegate.files import read_bounded
from teegate.kbs.admin_auth import MAX_ADMIN_TOKEN_BYTES, load_private_key, mint_admin_token
from teegate.kbs.admin_client import (
    DEFAULT_KBS_URL,
    SAMPLE_RESOURCE_POLICIES,
    AdminClient,
    AdminRequestFailed,
    sample_reference_value,
)
from teegate.kbs.paths import admin_token_path, default_data_dir
from teegate.kbs.policy import RESOURCE_BUILTINS, builtin_policy_text
from teegate.kbs.storage.base import (
    MAX_POLICY_BYTES,
    MAX_RESOURCE_BYTES,
    InvalidName,
    PolicyKind,
    ResourcePath,
    validate_policy_id,
)

__all__ = ["admin"]

#: Lifetime of a token minted on the fly from ``--admin-key``.
_EPHEMERAL_TOKEN_SECONDS = 300
#: Longest ``mint-token --ttl`` (Trustee's docker setup mints 10-year tokens; we cap at one year).
_MAX_TTL_SECONDS = 366 * 24 * 3600
_MAX_KEY_FILE_BYTES = 64 * 1024


def _read_file(path: Path, limit: int, what: str) -> bytes:
    return read_bounded(path, limit, what, click.ClickException)


def _token_from_file(path: Path) -> str:
    token = _read_file(path, MAX_ADMIN_TOKEN_BYTES, "admin token file").decode("ascii", "replace").strip()
    if not token:
        raise click.ClickException(f"admin token file {path} is empty")
    return token


def _find_token(
    token_file: Path | None, admin_key: Path | None, data_dir: Path | None, role: str
) -> tuple[str | None, str]:
    """The token to send and a description of where it came from (for stderr)."""
    if token_file is not None and admin_key is not None:
        raise click.UsageError("give --admin-token-file or --admin-key, not both")
    if token_file is not None:
        return _token_from_file(token_file), str(token_file)
    if admin_key is not None:
        key = load_private_key(_read_file(admin_key, _MAX_KEY_FILE_BYTES, "admin key"), source=str(admin_key))
        token = mint_admin_token(key, role=role, now=datetime.now(UTC), ttl_seconds=_EPHEMERAL_TOKEN_SECONDS)
        return token, f"minted from {admin_key} (role {role}, {_EPHEMERAL_TOKEN_SECONDS}s)"
    candidates = [admin_token_path(data_dir)]
    home = os.environ.get("HOME")
    if home:
        candidates.append(Path(home) / ".trustee" / "admin-token")
    for candidate in candidates:
        if candidate.is_file():
            return _token_from_file(candidate), str(candidate)
    return None, "none found (tried " + ", ".join(
        str(c) for c in candidates
    ) + "); sending anonymous requests"


class _Client(AdminClient):
    """AdminClient plus teegate's own admin endpoints (not in kbs-client)."""

    def __enter__(self) -> _Client:
        return self

    def list_attestation_policies(self) -> list[str]:
        """Stored and built-in attestation policy ids (teegate)."""
        return self._string_list(self._send("GET", "/kbs/v0/attestation-policy"), "policy list")

    def get_attestation_policy(self, policy_id: str) -> str:
        """An attestation policy's Rego text (teegate)."""
        validate_policy_id(policy_id)
        raw = self._send("GET", f"/kbs/v0/attestation-policy/{policy_id}")
        return raw.decode("utf-8", "replace")

    def recent_denials(self, limit: int) -> list[dict[str, Any]]:
        """Recent denied requests, newest first (teegate: GET /kbs/v0/admin/denials)."""
        raw = self._send("GET", f"/kbs/v0/admin/denials?limit={limit}")
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            raise AdminRequestFailed("GET", "denials", 200, None, "denials answer is not JSON") from None
        denials = document.get("denials") if isinstance(document, dict) else None
        if not isinstance(denials, list) or not all(isinstance(d, dict) for d in denials):
            raise AdminRequestFailed("GET", "denials", 200, None, "denials answer has no 'denials' list")
        return denials


class _Ctx:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.json = bool(options["as_json"])

    def client(self) -> _Client:
        o = self.options
        token, source = _find_token(o["admin_token_file"], o["admin_key"], o["data_dir"], o["role"])
        click.echo(f"teegate kbs admin: {o['url']}, admin token: {source}", err=True)
        return _Client(o["url"], token=token, cert_file=o["cert_file"], timeout=o["timeout"])

    def done(self, message: str, **fields: Any) -> None:
        if self.json:
            click.echo(json.dumps({"ok": True, **fields}, sort_keys=True))
        else:
            click.echo(message)


_path_type = click.Path(path_type=Path, dir_okay=False)


@click.group("admin")
@click.option("--url", default=DEFAULT_KBS_URL, show_default=True, help="KBS base URL.")
@click.option("--admin-token-file", type=_path_type, help="File holding an admin JWT.")
@click.option("--admin-key", type=_path_type, help="Private key (PEM) to mint a short-lived admin JWT from.")
@click.option(
    "--role", default="admin", show_default=True, help="Role claimed by a token minted from --admin-key."
)
@click.option(
    "--cert-file", type=_path_type, help="CA certificate (PEM) that signed the KBS's TLS certificate."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where a --dev KBS wrote admin-token (default: $TEEGATE_DATA_DIR or ~/.local/share/teegate/kbs).",
)
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_context
def admin(ctx: click.Context, /, **options: Any) -> None:
    """Manage a KBS (teegate or Trustee): resources, policies, reference values, admin tokens.

    Without --admin-token-file or --admin-key the token is read from <data-dir>/admin-token
    (written by `teegate kbs serve --dev`), then ~/.trustee/admin-token.
    """
    if options["data_dir"] is None:
        options["data_dir"] = default_data_dir()
    ctx.obj = _Ctx(options)


def _resource_path(value: str) -> ResourcePath:
    try:
        return ResourcePath.parse(value)
    except InvalidName as exc:
        raise click.BadParameter(str(exc), param_hint="--path") from None


@admin.command("set-resource")
@click.option("--path", "path", required=True, help="repo/type/tag")
@click.option("--resource-file", type=_path_type, required=True)
@click.pass_obj
def set_resource(obj: _Ctx, path: str, resource_file: Path) -> None:
    """Store (or replace) a resource."""
    where = _resource_path(path)
    data = _read_file(resource_file, MAX_RESOURCE_BYTES, "resource file")
    with obj.client() as client:
        client.set_resource(where, data)
    obj.done(f"set resource {where} ({len(data)} bytes)", path=str(where), bytes=len(data))


@admin.command("delete-resource")
@click.option("--path", "path", required=True, help="repo/type/tag")
@click.pass_obj
def delete_resource(obj: _Ctx, path: str) -> None:
    """Delete a resource."""
    where = _resource_path(path)
    with obj.client() as client:
        client.delete_resource(where)
    obj.done(f"deleted resource {where}", path=str(where))


@admin.command("list-resources")
@click.pass_obj
def list_resources(obj: _Ctx) -> None:
    """List stored resource paths."""
    with obj.client() as client:
        paths = client.list_resources()
    if obj.json:
        click.echo(json.dumps(paths))
    else:
        for item in paths:
            click.echo(item)


@admin.command("set-resource-policy")
@click.option("--policy-file", type=_path_type, help="Rego resource policy.")
@click.option("--allow-all", is_flag=True, help="Release any resource to any attested client.")
@click.option("--deny-all", is_flag=True, help="Release nothing.")
@click.option(
    "--affirming", is_flag=True, help="Release only when every submodule's ear.status is affirming."
)
@click.option(
    "--default",
    "default",
    is_flag=True,
    help="teegate's default (every submodule affirming). Unlike kbs-client's --default, not deny-all.",
)
@click.option(
    "--builtin",
    type=click.Choice(sorted(RESOURCE_BUILTINS)),
    help="Upload one of teegate's built-in resource policies by name (trustee-default: Trustee's).",
)
@click.pass_obj
def set_resource_policy(
    obj: _Ctx,
    /,
    *,
    policy_file: Path | None,
    allow_all: bool,
    deny_all: bool,
    affirming: bool,
    default: bool,
    builtin: str | None,
) -> None:
    """Replace the resource policy."""
    chosen = [
        name
        for name, on in (
            ("allow-all", allow_all),
            ("deny-all", deny_all),
            ("affirming", affirming),
            ("default", default),
        )
        if on
    ]
    if builtin is not None:
        chosen.append(f"builtin:{builtin}")
    if len(chosen) + (policy_file is not None) != 1:
        raise click.UsageError(
            "give exactly one of --policy-file, --allow-all, --deny-all, --affirming, --default, --builtin"
        )
    if policy_file is not None:
        policy, source = _read_file(policy_file, MAX_POLICY_BYTES, "policy file"), str(policy_file)
    elif chosen[0] in SAMPLE_RESOURCE_POLICIES:
        policy, source = SAMPLE_RESOURCE_POLICIES[chosen[0]].encode(), f"built-in {chosen[0]}"
    else:
        name = chosen[0].removeprefix("builtin:")
        policy, source = builtin_policy_text(PolicyKind.RESOURCE, name).encode(), f"built-in {name}"
    with obj.client() as client:
        client.set_resource_policy(policy)
    if chosen in (["allow-all"], ["builtin:allow-all"], ["builtin:dev"]):
        click.echo(
            "warning: the resource policy now releases resources to clients whose evidence is not affirming",
            err=True,
        )
    obj.done(f"set resource policy ({source})", policy=source)


@admin.command("list-policies")
@click.pass_obj
def list_policies(obj: _Ctx) -> None:
    """List resource policy ids (GET /kbs/v0/resource-policy)."""
    with obj.client() as client:
        ids = client.list_resource_policies()
    if obj.json:
        click.echo(json.dumps(ids))
    else:
        for item in ids:
            click.echo(item)


@admin.command("list-attestation-policies")
@click.pass_obj
def list_attestation_policies(obj: _Ctx) -> None:
    """List attestation policy ids, stored and built-in (teegate KBS)."""
    with obj.client() as client:
        ids = client.list_attestation_policies()
    if obj.json:
        click.echo(json.dumps(ids))
    else:
        for item in ids:
            click.echo(item)


@admin.command("get-attestation-policy")
@click.option("--id", "policy_id", default="default_cpu", show_default=True)
@click.pass_obj
def get_attestation_policy(obj: _Ctx, policy_id: str) -> None:
    """Print an attestation policy's Rego text (teegate KBS)."""
    with obj.client() as client:
        text = client.get_attestation_policy(policy_id)
    click.echo(text, nl=not text.endswith("\n"))


def _print_denial(record: dict[str, Any]) -> None:
    where = record.get("resource_path") or ("attestation" if record.get("kind") == "attestation" else "-")
    click.echo(
        f"{record.get('time', '?')}  {where}  tee={record.get('tee') or '-'}  verdict={record.get('verdict')}"
    )
    click.echo(f"  policy:      {record.get('policy_id') or '-'}")
    click.echo(f"  reason:      {record.get('reason') or '-'}")
    if record.get("measurement"):
        click.echo(f"  measurement: {record['measurement']}")
    for reason in record.get("reasons") or []:
        click.echo(f"  - {reason}")
    claims = record.get("claims") or {}
    submods = claims.get("submods") if isinstance(claims, dict) else None
    if isinstance(submods, dict):
        for name, submod in submods.items():
            if not isinstance(submod, dict):
                continue
            vector = submod.get("ear.trustworthiness-vector") or {}
            entries = ", ".join(f"{k}={v}" for k, v in vector.items()) if isinstance(vector, dict) else ""
            click.echo(f"  {name}: {submod.get('ear.status')}  [{entries}]")
    for tee, fields in claims.items() if isinstance(claims, dict) else ():
        if tee in ("submods", "truncated") or not isinstance(fields, dict):
            continue
        for key, value in fields.items():
            click.echo(f"  {tee}.{key} = {json.dumps(value)}")
    if record.get("claims_digest"):
        click.echo(f"  claims sha384: {record['claims_digest']}")


@admin.command("explain-denials")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.pass_obj
def explain_denials(obj: _Ctx, limit: int) -> None:
    """Show recent denied requests: which policy refused, and the claims and trust vector behind it."""
    with obj.client() as client:
        denials = client.recent_denials(limit)
    if obj.json:
        click.echo(json.dumps(denials, sort_keys=True))
        return
    if not denials:
        click.echo("no recent denials")
        return
    for index, record in enumerate(denials):
        if index:
            click.echo("")
        _print_denial(record)


@admin.command("set-attestation-policy")
@click.option("--policy-file", type=_path_type, required=True)
@click.option("--type", "policy_type", default="rego", show_default=True)
@click.option("--id", "policy_id", default="default_cpu", show_default=True)
@click.pass_obj
def set_attestation_policy(obj: _Ctx, policy_file: Path, policy_type: str, policy_id: str) -> None:
    """Set an attestation policy."""
    policy = _read_file(policy_file, MAX_POLICY_BYTES, "policy file")
    with obj.client() as client:
        client.set_attestation_policy(policy, policy_id=policy_id, policy_type=policy_type)
    obj.done(f"set attestation policy {policy_id}", id=policy_id)


@admin.command("set-sample-reference-value")
@click.argument("name")
@click.argument("values", nargs=-1, required=True)
@click.option("--as-integer", is_flag=True)
@click.option("--as-bool", is_flag=True)
@click.option("--as-single-value", is_flag=True, help="Store the value itself, not a one-item list.")
@click.pass_obj
def set_sample_reference_value(
    obj: _Ctx,
    /,
    *,
    name: str,
    values: tuple[str, ...],
    as_integer: bool,
    as_bool: bool,
    as_single_value: bool,
) -> None:
    """Register reference value NAME (one or more VALUEs) through the RVPS sample extractor."""
    value = sample_reference_value(
        values, as_integer=as_integer, as_bool=as_bool, as_single_value=as_single_value
    )
    with obj.client() as client:
        client.set_sample_reference_value(name, value)
    obj.done(f"set reference value {name} = {json.dumps(value)}", name=name, value=value)


@admin.command("get-reference-value")
@click.argument("name", required=False)
@click.option("--id", "id_", help="Same as NAME (kbs-client's flag).")
@click.pass_obj
def get_reference_value(obj: _Ctx, name: str | None, id_: str | None) -> None:
    """Print a stored reference value."""
    if (name is None) == (id_ is None):
        raise click.UsageError("give the reference value NAME (or --id NAME) exactly once")
    wanted = name if name is not None else id_
    assert wanted is not None
    with obj.client() as client:
        text = client.get_reference_value(wanted)
    click.echo(text)


@admin.command("mint-token")
@click.option(
    "--key", "key_file", type=_path_type, required=True, help="Private key PEM (Ed25519, P-256, RSA)."
)
@click.option("--role", required=True)
@click.option(
    "--ttl", type=click.IntRange(1, _MAX_TTL_SECONDS), default=3600, show_default=True, help="Seconds."
)
@click.option("--subject", default="admin", show_default=True)
@click.option("--issuer")
@click.option("--audience", multiple=True)
@click.option("--kid", help="Key id header (when the KBS trusts a JWKS).")
@click.option("--output", type=_path_type, help="Write the token to this file (mode 0600) instead of stdout.")
def mint_token(
    *,
    key_file: Path,
    role: str,
    ttl: int,
    subject: str,
    issuer: str | None,
    audience: tuple[str, ...],
    kid: str | None,
    output: Path | None,
) -> None:
    """Mint an admin JWT (EdDSA / ES256 / RS256 by key type) with `exp` and `role`."""
    key = load_private_key(_read_file(key_file, _MAX_KEY_FILE_BYTES, "key file"), source=str(key_file))
    token = mint_admin_token(
        key,
        role=role,
        now=datetime.now(UTC),
        ttl_seconds=ttl,
        subject=subject,
        issuer=issuer,
        audience=audience,
        kid=kid,
    )
    if output is None:
        click.echo(token)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    click.echo(f"wrote admin token (role {role}, expires in {ttl}s) to {output}", err=True)

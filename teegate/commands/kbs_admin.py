"""``teegate kbs admin``: the KBS admin API from the command line, mirroring kbs-client ``config``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from teegate.kbs.admin_auth import MAX_ADMIN_TOKEN_BYTES, load_private_key, mint_admin_token
from teegate.kbs.admin_client import (
    DEFAULT_KBS_URL,
    SAMPLE_RESOURCE_POLICIES,
    AdminClient,
    sample_reference_value,
)
from teegate.kbs.paths import admin_token_path, default_data_dir
from teegate.kbs.storage.base import MAX_POLICY_BYTES, MAX_RESOURCE_BYTES, InvalidName, ResourcePath

__all__ = ["admin"]

#: Lifetime of a token minted on the fly from ``--admin-key``.
_EPHEMERAL_TOKEN_SECONDS = 300
#: Longest ``mint-token --ttl`` (Trustee's docker setup mints 10-year tokens; we cap at one year).
_MAX_TTL_SECONDS = 366 * 24 * 3600
_MAX_KEY_FILE_BYTES = 64 * 1024


def _read_file(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise click.ClickException(f"{what} {path} is larger than {limit} bytes")
    return data


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


class _Ctx:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.json = bool(options["as_json"])

    def client(self) -> AdminClient:
        o = self.options
        token, source = _find_token(o["admin_token_file"], o["admin_key"], o["data_dir"], o["role"])
        click.echo(f"teegate kbs admin: {o['url']}, admin token: {source}", err=True)
        return AdminClient(o["url"], token=token, cert_file=o["cert_file"], timeout=o["timeout"])

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
@click.pass_obj
def set_resource_policy(
    obj: _Ctx, policy_file: Path | None, allow_all: bool, deny_all: bool, affirming: bool
) -> None:
    """Replace the resource policy."""
    chosen = [
        name
        for name, on in (("allow-all", allow_all), ("deny-all", deny_all), ("affirming", affirming))
        if on
    ]
    if len(chosen) + (policy_file is not None) != 1:
        raise click.UsageError("give exactly one of --policy-file, --allow-all, --deny-all, --affirming")
    if policy_file is not None:
        policy, source = _read_file(policy_file, MAX_POLICY_BYTES, "policy file"), str(policy_file)
    else:
        policy, source = SAMPLE_RESOURCE_POLICIES[chosen[0]].encode(), f"built-in {chosen[0]}"
    with obj.client() as client:
        client.set_resource_policy(policy)
    if chosen == ["allow-all"]:
        click.echo(
            "warning: the resource policy now releases every resource to any attested client", err=True
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

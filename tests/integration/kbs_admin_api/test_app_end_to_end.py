"""Admin API mounted in the real KBS app (teegate.kbs.app.build_app): a guest's denied fetch is
explained by `teegate kbs admin explain-denials`, and admin writes share the resource path with
the protocol's GET without clashing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ed25519

from teegate.commands.kbs_admin import admin
from teegate.kbs.admin_auth import AdminAuthConfig, mint_admin_token
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import StorageSettings
from tests.integration.kbs_flow.harness import Guest, error_type, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[str]:
    settings = KbsSettings(  # type: ignore[call-arg]
        data_dir=tmp_path,
        storage=StorageSettings(data_dir=tmp_path),
        allow_sample=True,
        verify_tdx=False,
        verify_sgx=False,
        dev=True,
        admin=AdminAuthConfig.single_key(KEY.public_key()),
    )
    with serve(build_app(settings)) as url:
        yield url


def _cli(url: str, tmp_path: Path, *args: str) -> Result:
    token = tmp_path / "admin-token"
    token.write_text(mint_admin_token(KEY, role="admin", now=datetime.now(UTC), ttl_seconds=300))
    return CliRunner().invoke(admin, ["--url", url, "--admin-token-file", str(token), *args])


def test_denial_explained_through_the_real_app(kbs: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"disk passphrase")
    assert (
        _cli(
            kbs, tmp_path, "set-resource", "--path", "default/disk/key", "--resource-file", str(secret)
        ).exit_code
        == 0
    )
    listed = _cli(kbs, tmp_path, "list-resources")
    assert listed.exit_code == 0 and listed.stdout == "default/disk/key\n"

    guest = Guest(kbs)
    try:
        assert guest.auth().status_code == 200
        assert guest.attest().status_code == 200
        # The dev profile's built-in policy releases to bound sample evidence.
        assert guest.resource("default/disk/key").status_code == 200
        assert _cli(kbs, tmp_path, "explain-denials").stdout == "no recent denials\n"
        # Production-like policy: sample evidence is contraindicated, so the same fetch is refused.
        assert _cli(kbs, tmp_path, "set-resource-policy", "--affirming").exit_code == 0
        refused = guest.resource("default/disk/key")
        assert refused.status_code == 401 and error_type(refused) == "PolicyDeny"
    finally:
        guest.close()

    explained = _cli(kbs, tmp_path, "explain-denials", "--limit", "5")
    assert explained.exit_code == 0, explained.output
    out = explained.stdout
    assert "default/disk/key  tee=sample  verdict=denied" in out
    assert "policy:      resource-policy" in out
    # The uploaded policy has no `reasons` rule: the engine explains from the token's trust vector.
    assert "- cpu0 is contraindicated: executables=33 (warning: unrecognized executables" in out
    assert "hardware=97 (contraindicated: unrecognized hardware or firmware" in out
    assert "cpu0: contraindicated" in out and "hardware=97" in out
    assert "sample.launch_digest" in out

    # Admin DELETE on the path the protocol serves with GET; then the guest gets Trustee's 401.
    assert _cli(kbs, tmp_path, "set-resource-policy", "--allow-all").exit_code == 0
    assert _cli(kbs, tmp_path, "delete-resource", "--path", "default/disk/key").exit_code == 0
    guest = Guest(kbs)
    try:
        guest.auth()
        guest.attest()
        gone = guest.resource("default/disk/key")
        assert gone.status_code == 401 and error_type(gone) == "PluginInternalError"
    finally:
        guest.close()

"""The existing `teegate kbs admin` CLI tests (tests/integration/kbs_storage/test_admin_cli.py),
run unchanged against the real admin routes (teegate.kbs.admin_api over uvicorn, real SQLite
store, real policy engine) instead of the recording double.

The ``server`` fixture below replaces the double with :class:`AdminApiServer` in recording
mode: the wire bytes are still checked, and ``srv.resources`` & co. read the real store.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from teegate.kbs.admin_auth import AclRule, AdminAuthConfig, mint_admin_token
from teegate.kbs.policy import builtin_policy_text
from teegate.kbs.storage import PolicyKind
from tests.integration.kbs_admin_api.server import AdminApiServer
from tests.integration.kbs_storage import test_admin_cli as cli
from tests.integration.kbs_storage.test_admin_cli import KEY, _ok, _run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[AdminApiServer, str]]:
    base = AdminAuthConfig.single_key(KEY.public_key())
    config = AdminAuthConfig(
        mode=base.mode,
        providers=base.providers,
        acl=(*base.acl, AclRule.create("reader", "^/kbs/v0/resource$", ["GET"])),
    )
    srv = AdminApiServer(tmp_path / "kbs", config, record=True)
    url = srv.start()
    yield srv, url
    srv.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(mint_admin_token(KEY, role="admin", now=datetime.now(UTC), ttl_seconds=600) + "\n")
    return path


# The double-independent CLI tests, collected here a second time with the real server.
test_set_resource_wire = cli.test_set_resource_wire
test_list_and_delete = cli.test_list_and_delete
test_set_resource_policy_builtins = cli.test_set_resource_policy_builtins
test_set_resource_policy_needs_exactly_one = cli.test_set_resource_policy_needs_exactly_one
test_reference_values_wire = cli.test_reference_values_wire
test_default_token_from_data_dir = cli.test_default_token_from_data_dir
test_admin_key_mints_on_the_fly_and_roles_are_enforced = (
    cli.test_admin_key_mints_on_the_fly_and_roles_are_enforced
)
test_bad_tokens_rejected_over_http = cli.test_bad_tokens_rejected_over_http
test_bad_path_refused_before_sending = cli.test_bad_path_refused_before_sending

_VALID_ATTESTATION_POLICY = """package policy
import rego.v1

default hardware := 97

trust_claims := {"hardware": hardware}
"""


def test_set_attestation_policy_wire_real(
    server: tuple[AdminApiServer, str],
    token_file: Path,
    tmp_path: Path,
) -> None:
    """The double's version uploads `package policy` alone, which the real KBS refuses (no
    trust_claims); the same wire check with a policy that compiles, plus that refusal."""
    srv, url = server
    policy = tmp_path / "p.rego"
    policy.write_text(_VALID_ATTESTATION_POLICY)
    base = [
        "--url",
        url,
        "--admin-token-file",
        str(token_file),
        "set-attestation-policy",
        "--policy-file",
        str(policy),
    ]
    assert _ok(_run(base)) == "set attestation policy default_cpu\n"
    encoded = base64.urlsafe_b64encode(_VALID_ATTESTATION_POLICY.encode()).rstrip(b"=")
    assert srv.requests[-1].body == b'{"type":"rego","policy_id":"default_cpu","policy":"' + encoded + b'"}'
    _ok(_run([*base, "--id", "strict_cpu"]))
    assert srv.attestation_policies["strict_cpu"] == _VALID_ATTESTATION_POLICY.encode()
    listed = _ok(
        _run(["--url", url, "--admin-token-file", str(token_file), "--json", "list-attestation-policies"])
    )
    assert json.loads(listed) == ["default_cpu", "strict_cpu"]

    policy.write_text("package policy\n")
    refused = _run([*base, "--id", "empty_cpu"])
    assert isinstance(refused.exception, cli.AdminRequestFailed)
    assert refused.exception.status == 400 and refused.exception.error_type == "ParsePolicyError"
    assert "trust_claims" in refused.exception.detail


@pytest.mark.parametrize(
    ("args", "builtin"),
    [
        (["--default"], "default"),
        (["--builtin", "trustee-default"], "trustee-default"),
        (["--builtin", "dev"], "dev"),
    ],
)
def test_set_resource_policy_teegate_builtins(
    server: tuple[AdminApiServer, str], token_file: Path, args: list[str], builtin: str
) -> None:
    srv, url = server
    result = _run(["--url", url, "--admin-token-file", str(token_file), "set-resource-policy", *args])
    assert _ok(result) == f"set resource policy (built-in {builtin})\n"
    text = builtin_policy_text(PolicyKind.RESOURCE, builtin).encode()
    assert srv.requests[-1].body == b'{"policy":"' + base64.urlsafe_b64encode(text).rstrip(b"=") + b'"}'
    assert srv.resource_policy == text
    assert ("warning" in result.stderr) == (builtin == "dev")
    both = _run(
        [
            "--url",
            url,
            "--admin-token-file",
            str(token_file),
            "set-resource-policy",
            "--default",
            "--deny-all",
        ]
    )
    assert both.exit_code == 2 and "exactly one" in both.output


def test_get_attestation_policy(server: tuple[AdminApiServer, str], token_file: Path) -> None:
    _srv, url = server
    out = _ok(
        _run(
            [
                "--url",
                url,
                "--admin-token-file",
                str(token_file),
                "get-attestation-policy",
                "--id",
                "strict_cpu",
            ]
        )
    )
    assert out == builtin_policy_text(PolicyKind.ATTESTATION, "strict_cpu")
    missing = _run(
        ["--url", url, "--admin-token-file", str(token_file), "get-attestation-policy", "--id", "nope"]
    )
    assert isinstance(missing.exception, cli.AdminRequestFailed) and missing.exception.status == 401

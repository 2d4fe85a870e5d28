"""`teegate kbs admin` end to end over real HTTP, wire bytes checked against the spec.

The server is tests/integration/kbs_storage/admin_server.py (records requests, enforces
admin auth with teegate.kbs.admin_auth).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import regorus
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from teegate.commands.kbs_admin import admin
from teegate.kbs.admin_auth import AclRule, AdminAuthConfig, mint_admin_token
from teegate.kbs.admin_client import SAMPLE_RESOURCE_POLICIES, AdminRequestFailed
from tests.integration.kbs_storage.admin_server import RecordingAdminServer

pytestmark = pytest.mark.integration

KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def server() -> Iterator[tuple[RecordingAdminServer, str]]:
    config = AdminAuthConfig.single_key(KEY.public_key())
    config = AdminAuthConfig(
        mode=config.mode,
        providers=config.providers,
        acl=(*config.acl, AclRule.create("reader", "^/kbs/v0/resource$", ["GET"])),
    )
    srv = RecordingAdminServer(config)
    url = srv.start()
    yield srv, url
    srv.stop()


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "admin-token"
    path.write_text(mint_admin_token(KEY, role="admin", now=datetime.now(UTC), ttl_seconds=600) + "\n")
    return path


def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(admin, args, env=env, catch_exceptions=True)


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_set_resource_wire(
    server: tuple[RecordingAdminServer, str], token_file: Path, tmp_path: Path
) -> None:
    srv, url = server
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00disk passphrase\xff")
    out = _ok(
        _run(
            [
                "--url",
                url,
                "--admin-token-file",
                str(token_file),
                "set-resource",
                "--path",
                "default/kbsres1/key1",
                "--resource-file",
                str(secret),
            ]
        )
    )
    assert out == "set resource default/kbsres1/key1 (17 bytes)\n"
    r = srv.requests[-1]
    assert (r.method, r.path, r.body) == (
        "POST",
        "/kbs/v0/resource/default/kbsres1/key1",
        b"\x00disk passphrase\xff",
    )
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["authorization"] == "Bearer " + token_file.read_text().strip()


def test_list_and_delete(server: tuple[RecordingAdminServer, str], token_file: Path, tmp_path: Path) -> None:
    srv, url = server
    srv.resources.update({"default/a/b": b"1", "prod/c/d": b"2"})
    base = ["--url", url, "--admin-token-file", str(token_file)]
    assert _ok(_run([*base, "list-resources"])) == "default/a/b\nprod/c/d\n"
    assert json.loads(_ok(_run([*base, "--json", "list-resources"]))) == ["default/a/b", "prod/c/d"]
    assert (srv.requests[-1].method, srv.requests[-1].path) == ("GET", "/kbs/v0/resource")
    assert _ok(_run([*base, "delete-resource", "--path", "default/a/b"])) == "deleted resource default/a/b\n"
    assert (srv.requests[-1].method, srv.requests[-1].path, srv.requests[-1].body) == (
        "DELETE",
        "/kbs/v0/resource/default/a/b",
        b"",
    )
    # Deleting again: the server's Trustee-shaped error surfaces with its type and detail.
    result = _run([*base, "delete-resource", "--path", "default/a/b"])
    assert result.exit_code != 0
    assert isinstance(result.exception, AdminRequestFailed)
    assert result.exception.status == 401 and result.exception.error_type == "PluginInternalError"
    assert "not found" in str(result.exception)


@pytest.mark.parametrize("flag", ["--allow-all", "--deny-all", "--affirming"])
def test_set_resource_policy_builtins(
    server: tuple[RecordingAdminServer, str], token_file: Path, flag: str
) -> None:
    srv, url = server
    _ok(_run(["--url", url, "--admin-token-file", str(token_file), "set-resource-policy", flag]))
    text = SAMPLE_RESOURCE_POLICIES[flag[2:]].encode()
    expected = b'{"policy":"' + base64.urlsafe_b64encode(text).rstrip(b"=") + b'"}'
    assert srv.requests[-1].body == expected
    assert srv.requests[-1].headers["content-type"] == "application/json"
    assert srv.resource_policy == text


def _allow(policy: str, data: dict[str, Any], claims: dict[str, Any]) -> bool:
    engine = regorus.Engine()
    engine.add_policy("policy.rego", policy)
    engine.add_data(data)
    engine.set_input(claims)
    return bool(engine.eval_rule("data.policy.allow"))


def test_builtin_policies_compile_and_mean_what_they_say() -> None:
    resource = {"plugin": "resource", "resource-path": "default/key/1"}
    affirming = {"submods": {"cpu0": {"ear.status": "affirming"}}}
    warning = {"submods": {"cpu0": {"ear.status": "affirming"}, "gpu0": {"ear.status": "warning"}}}
    p = SAMPLE_RESOURCE_POLICIES
    assert _allow(p["allow-all"], resource, warning)
    assert not _allow(p["allow-all"], {"plugin": "nebula-ca"}, affirming)
    assert not _allow(p["deny-all"], resource, affirming)
    assert _allow(p["affirming"], resource, affirming)
    assert not _allow(p["affirming"], resource, warning)
    assert not _allow(p["affirming"], resource, {"submods": {}})


def test_set_resource_policy_needs_exactly_one(
    server: tuple[RecordingAdminServer, str], token_file: Path
) -> None:
    srv, url = server
    for args in ([], ["--allow-all", "--deny-all"]):
        result = _run(["--url", url, "--admin-token-file", str(token_file), "set-resource-policy", *args])
        assert result.exit_code == 2 and "exactly one" in result.output
    assert srv.requests == []


def test_set_attestation_policy_wire(
    server: tuple[RecordingAdminServer, str], token_file: Path, tmp_path: Path
) -> None:
    srv, url = server
    policy = tmp_path / "p.rego"
    policy.write_text("package policy\n")
    base = [
        "--url",
        url,
        "--admin-token-file",
        str(token_file),
        "set-attestation-policy",
        "--policy-file",
        str(policy),
    ]
    _ok(_run(base))
    assert (
        srv.requests[-1].body == b'{"type":"rego","policy_id":"default_cpu","policy":"cGFja2FnZSBwb2xpY3kK"}'
    )
    _ok(_run([*base, "--id", "strict_cpu"]))
    assert json.loads(srv.requests[-1].body)["policy_id"] == "strict_cpu"
    assert srv.attestation_policies["strict_cpu"] == b"package policy\n"


def test_reference_values_wire(server: tuple[RecordingAdminServer, str], token_file: Path) -> None:
    srv, url = server
    base = ["--url", url, "--admin-token-file", str(token_file)]
    _ok(_run([*base, "set-sample-reference-value", "mr_td", "abcd"]))
    body = srv.requests[-1].body
    payload = base64.b64encode(b'{"mr_td":["abcd"]}').decode()
    assert body == ('{"payload":"' + payload + '","type":"sample","version":"0.1.0"}').encode()
    _ok(_run([*base, "set-sample-reference-value", "svn", "3", "--as-integer", "--as-single-value"]))
    assert json.loads(base64.b64decode(json.loads(srv.requests[-1].body)["payload"])) == {"svn": 3}
    _ok(_run([*base, "set-sample-reference-value", "debug", "false", "--as-bool"]))
    assert srv.reference_values["debug"] == [False]
    assert _ok(_run([*base, "get-reference-value", "mr_td"])) == '["abcd"]\n'
    assert (srv.requests[-1].method, srv.requests[-1].path) == ("GET", "/kbs/v0/reference-value/mr_td")
    assert _ok(_run([*base, "get-reference-value", "--id", "svn"])) == "3\n"
    bad = _run([*base, "set-sample-reference-value", "svn", "x", "--as-integer"])
    assert bad.exit_code != 0 and "not an integer" in str(bad.exception)


def test_default_token_from_data_dir(server: tuple[RecordingAdminServer, str], tmp_path: Path) -> None:
    srv, url = server
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    token = mint_admin_token(KEY, role="admin", now=datetime.now(UTC), ttl_seconds=60)
    (data_dir / "admin-token").write_text(token)
    result = _run(
        ["--url", url, "list-resources"], env={"TEEGATE_DATA_DIR": str(data_dir), "HOME": str(tmp_path)}
    )
    _ok(result)
    assert srv.requests[-1].headers["authorization"] == f"Bearer {token}"
    assert str(data_dir / "admin-token") in result.stderr


def test_admin_key_mints_on_the_fly_and_roles_are_enforced(
    server: tuple[RecordingAdminServer, str], tmp_path: Path
) -> None:
    _srv, url = server
    key_file = tmp_path / "admin.pem"
    key_file.write_bytes(
        KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    _ok(_run(["--url", url, "--admin-key", str(key_file), "list-resources"]))
    reader = ["--url", url, "--admin-key", str(key_file), "--role", "reader"]
    _ok(_run([*reader, "list-resources"]))
    denied = _run([*reader, "delete-resource", "--path", "a/b/c"])
    assert isinstance(denied.exception, AdminRequestFailed)
    assert denied.exception.status == 403 and denied.exception.error_type == "AdminAuthAccess"


def test_bad_tokens_rejected_over_http(server: tuple[RecordingAdminServer, str], tmp_path: Path) -> None:
    _srv, url = server
    cases = {
        "expired": mint_admin_token(KEY, role="admin", now=datetime(2020, 1, 1, tzinfo=UTC), ttl_seconds=60),
        "wrong key": mint_admin_token(
            ed25519.Ed25519PrivateKey.generate(), role="admin", now=datetime.now(UTC), ttl_seconds=60
        ),
        "wrong role": mint_admin_token(KEY, role="auditor", now=datetime.now(UTC), ttl_seconds=60),
    }
    for name, token in cases.items():
        path = tmp_path / name.replace(" ", "-")
        path.write_text(token)
        result = _run(["--url", url, "--admin-token-file", str(path), "list-resources"])
        assert isinstance(result.exception, AdminRequestFailed), name
        assert result.exception.status == (403 if name == "wrong role" else 401), name
    anonymous = _run(
        ["--url", url, "list-resources"],
        env={"TEEGATE_DATA_DIR": str(tmp_path / "none"), "HOME": str(tmp_path)},
    )
    assert isinstance(anonymous.exception, AdminRequestFailed) and anonymous.exception.status == 401
    assert "sending anonymous requests" in anonymous.stderr


def test_bad_path_refused_before_sending(server: tuple[RecordingAdminServer, str], token_file: Path) -> None:
    srv, url = server
    result = _run(
        ["--url", url, "--admin-token-file", str(token_file), "delete-resource", "--path", "../../etc/passwd"]
    )
    assert result.exit_code == 2 and "--path" in result.output
    assert srv.requests == []


def test_mint_token(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "es.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    out = _ok(
        _run(["mint-token", "--key", str(key_file), "--role", "admin", "--ttl", "120", "--issuer", "ci"])
    )
    header, claims, _sig = out.strip().split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "ES256", "typ": "JWT"}
    body = json.loads(base64.urlsafe_b64decode(claims + "=="))
    assert body["role"] == "admin" and body["exp"] - body["iat"] == 120 and body["iss"] == "ci"
    target = tmp_path / "tok"
    _ok(_run(["mint-token", "--key", str(key_file), "--role", "admin", "--output", str(target)]))
    assert target.stat().st_mode & 0o777 == 0o600 and target.read_text().count(".") == 2


def test_https_with_cert_file(token_file: Path, tmp_path: Path) -> None:
    import ssl

    from tests.netutil import self_signed

    cert_file, key_file = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    srv = RecordingAdminServer(AdminAuthConfig.single_key(KEY.public_key()))
    url = srv.start(tls=context)
    try:
        base = ["--url", url, "--admin-token-file", str(token_file), "list-resources"]
        _ok(_run(["--cert-file", str(cert_file), *base]))
        untrusted = _run(base)
        assert isinstance(untrusted.exception, AdminRequestFailed)
        assert "cannot reach the KBS" in str(untrusted.exception) and "CERTIFICATE_VERIFY_FAILED" in str(
            untrusted.exception
        )
        assert len(srv.requests) == 1
    finally:
        srv.stop()

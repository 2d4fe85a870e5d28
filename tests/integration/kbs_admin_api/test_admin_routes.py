"""The admin API over real HTTP (uvicorn on loopback) with real admin JWTs and a real store."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from teegate.commands.kbs_admin import admin
from teegate.kbs.admin_api import MAX_POLICY_REQUEST_BYTES
from teegate.kbs.admin_auth import (
    AclRule,
    AdminAuthConfig,
    AdminPublicKey,
    IdentityProvider,
    mint_admin_token,
)
from teegate.kbs.policy import builtin_policy_text
from teegate.kbs.storage import PolicyKind, ResourcePath
from teegate.kbs.storage.base import MAX_RESOURCE_BYTES, RESOURCE_POLICY_ID
from tests.integration.kbs_admin_api.server import AdminApiServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ED = ed25519.Ed25519PrivateKey.generate()
ES = ec.generate_private_key(ec.SECP256R1())
RS = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ERR = "https://github.com/confidential-containers/kbs/errors/"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AdminApiServer]:
    config = AdminAuthConfig(
        mode=AdminAuthConfig.single_key(ED.public_key()).mode,
        providers=(
            IdentityProvider(
                "ops",
                (
                    AdminPublicKey(ED.public_key()),
                    AdminPublicKey(ES.public_key()),
                    AdminPublicKey(RS.public_key()),
                ),
            ),
        ),
        acl=(
            AclRule.create("admin", "^/kbs/v0/.+$"),
            AclRule.create("auditor", "^/kbs/v0/(admin/denials|resource|resource-policy)$", ["GET"]),
        ),
    )
    srv = AdminApiServer(tmp_path / "kbs", config)
    srv.start()
    yield srv
    srv.stop()


def _token(key: Any = ED, role: str = "admin", *, now: datetime | None = None, ttl: int = 300) -> str:
    return mint_admin_token(key, role=role, now=now or datetime.now(UTC), ttl_seconds=ttl)


def _client(srv: AdminApiServer, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=10, trust_env=False)


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _err(response: httpx.Response, status: int, variant: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"type", "detail"} and body["type"] == ERR + variant, body
    assert response.headers["content-type"] == "application/json"
    return str(body["detail"])


@pytest.mark.parametrize("key", [ED, ES, RS], ids=["EdDSA", "ES256", "RS256"])
def test_resource_round_trip_with_each_algorithm(server: AdminApiServer, key: Any) -> None:
    with _client(server, _token(key)) as c:
        r = c.post(
            "/kbs/v0/resource/default/key/1",
            content=b"\x00secret\xff",
            headers={"Content-Type": "application/octet-stream"},
        )
        assert (r.status_code, r.content) == (200, b"")
        assert c.get("/kbs/v0/resource").json() == ["default/key/1"]
        assert (
            server.run(server.storage.resources.get(ResourcePath("default", "key", "1"))) == b"\x00secret\xff"
        )
        assert c.delete("/kbs/v0/resource/default/key/1").status_code == 200
        assert c.get("/kbs/v0/resource").json() == []
        assert "not found" in _err(c.delete("/kbs/v0/resource/default/key/1"), 401, "PluginInternalError")


def test_bad_admin_tokens(server: AdminApiServer) -> None:
    past = datetime.now(UTC) - timedelta(hours=2)
    cases = {
        "none": (None, 401),
        "expired": (_token(now=past, ttl=60), 401),
        "wrong key": (_token(ed25519.Ed25519PrivateKey.generate()), 401),
        "wrong role": (_token(role="intern"), 403),
        "role not allowed here": (_token(role="auditor"), 403),
        "garbage": ("not.a.jwt", 401),
    }
    for name, (token, status) in cases.items():
        with _client(server, token) as c:
            r = c.post("/kbs/v0/resource/default/key/1", content=b"x")
            detail = _err(r, status, "AdminAuthAccess")
            assert detail, name
    assert server.run(server.storage.resources.list_paths()) == []
    with _client(server, _token(role="auditor")) as c:
        assert c.get("/kbs/v0/resource").status_code == 200
        assert c.get("/kbs/v0/admin/denials").status_code == 200
        _err(c.get("/kbs/v0/reference-value/x"), 403, "AdminAuthAccess")


def test_deny_all_when_admin_unconfigured(tmp_path: Path) -> None:
    srv = AdminApiServer(tmp_path / "kbs", AdminAuthConfig())
    srv.start()
    try:
        with _client(srv, _token()) as c:
            assert "disabled" in _err(c.get("/kbs/v0/resource"), 403, "AdminAuthAccess")
    finally:
        srv.stop()


def _resource_policy(server: AdminApiServer) -> str | None:
    from teegate.kbs.storage.base import PolicyNotFound

    try:
        return server.run(server.storage.policies.get(PolicyKind.RESOURCE, RESOURCE_POLICY_ID)).text
    except PolicyNotFound:
        return None


def test_resource_policy_set_list_and_bad_input_keeps_old(server: AdminApiServer) -> None:
    good = builtin_policy_text(PolicyKind.RESOURCE, "deny-all")
    with _client(server, _token()) as c:
        assert c.get("/kbs/v0/resource-policy").json() == ["resource-policy"]
        r = c.post("/kbs/v0/resource-policy", json={"policy": _b64(good)})
        assert (r.status_code, r.content) == (200, b"")
        assert _resource_policy(server) == good
        bad = {
            "malformed JSON": (b'{"policy": ', 400, "ParsePolicyError"),
            "not an object": (b"[]", 400, "ParsePolicyError"),
            "no policy": (b"{}", 400, "ParsePolicyError"),
            "policy not a string": (b'{"policy": 1}', 400, "ParsePolicyError"),
            "bad base64": (b'{"policy": "a+b/c"}', 400, "ParsePolicyError"),
            "not utf-8": (json.dumps({"policy": _b64(b"\xff\xfe")}).encode(), 400, "ParsePolicyError"),
            "syntax error": (
                json.dumps({"policy": _b64("package policy\nallow {")}).encode(),
                400,
                "ParsePolicyError",
            ),
            "wrong package": (
                json.dumps({"policy": _b64("package other\nallow := true\n")}).encode(),
                400,
                "ParsePolicyError",
            ),
            "no allow rule": (
                json.dumps({"policy": _b64("package policy\nx := 1\n")}).encode(),
                400,
                "ParsePolicyError",
            ),
            "unknown function": (
                json.dumps(
                    {"policy": _b64("package policy\nimport rego.v1\nallow if no_such_fn(1)\n")}
                ).encode(),
                400,
                "ParsePolicyError",
            ),
            "duplicate member": (b'{"policy":"YQ","policy":"Yg"}', 400, "ParsePolicyError"),
            "oversized": (b'{"policy":"' + b"A" * MAX_POLICY_REQUEST_BYTES + b'"}', 413, "PayloadTooLarge"),
        }
        for name, (body, status, variant) in bad.items():
            r = c.post("/kbs/v0/resource-policy", content=body, headers={"Content-Type": "application/json"})
            detail = _err(r, status, variant)
            assert detail, name
            assert _resource_policy(server) == good, f"{name} changed the stored policy"
    # The syntax error names the place it was found.
    with _client(server, _token()) as c:
        r = c.post("/kbs/v0/resource-policy", json={"policy": _b64("package policy\nallow {")})
        assert "does not compile" in r.json()["detail"] and "if" in r.json()["detail"]
        assert "Stack backtrace" not in r.json()["detail"]


def test_resource_body_too_large(server: AdminApiServer) -> None:
    with _client(server, _token()) as c:
        r = c.post("/kbs/v0/resource/default/big/1", content=b"x" * (MAX_RESOURCE_BYTES + 1))
        _err(r, 413, "PayloadTooLarge")
        # Without Content-Length (chunked), the limit holds too.
        r = c.post("/kbs/v0/resource/default/big/1", content=iter([b"x" * 65536] * 17))
        _err(r, 413, "PayloadTooLarge")
        r = c.post("/kbs/v0/resource/..x/big/1", content=b"x")
        _err(r, 404, "InvalidRequestPath")
    assert server.run(server.storage.resources.list_paths()) == []


def test_attestation_policy_endpoints(server: AdminApiServer) -> None:
    strict = builtin_policy_text(PolicyKind.ATTESTATION, "strict_cpu")
    with _client(server, _token()) as c:
        assert c.get("/kbs/v0/attestation-policy").json() == ["default_cpu", "strict_cpu"]
        assert c.get("/kbs/v0/attestation-policy/default_cpu").text.startswith("# teegate default")
        r = c.post(
            "/kbs/v0/attestation-policy",
            json={"type": "rego", "policy_id": "mine_cpu", "policy": _b64(strict)},
        )
        assert r.status_code == 200
        assert c.get("/kbs/v0/attestation-policy").json() == ["default_cpu", "mine_cpu", "strict_cpu"]
        assert c.get("/kbs/v0/attestation-policy/mine_cpu").text == strict
        for body, what in (
            ({"type": "opa", "policy_id": "x", "policy": _b64(strict)}, "type"),
            ({"type": "rego", "policy_id": "../x", "policy": _b64(strict)}, "policy id"),
            ({"type": "rego", "policy": _b64(strict)}, "policy_id"),
            ({"type": "rego", "policy_id": "x"}, "policy"),
            (
                {"type": "rego", "policy_id": "mine_cpu", "policy": _b64("package policy\nallow := true\n")},
                "trust_claims",
            ),
        ):
            assert what in _err(c.post("/kbs/v0/attestation-policy", json=body), 400, "ParsePolicyError")
        assert c.get("/kbs/v0/attestation-policy/mine_cpu").text == strict
        _err(c.get("/kbs/v0/attestation-policy/nope"), 401, "PolicyEngineError")


def _rv_message(values: dict[str, Any]) -> dict[str, str]:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload}


def test_reference_values(server: AdminApiServer) -> None:
    with _client(server, _token()) as c:
        assert (
            c.post("/kbs/v0/reference-value", json=_rv_message({"mr_td": ["aa", "bb"], "svn": 3})).status_code
            == 200
        )
        r = c.get("/kbs/v0/reference-value/mr_td")
        assert (r.status_code, r.json(), r.headers["content-type"]) == (200, ["aa", "bb"], "application/json")
        assert c.get("/kbs/v0/reference-value/svn").content == b"3"
        _err(c.get("/kbs/v0/reference-value/absent"), 401, "RvpsError")
        bad = [
            b"{not json",
            json.dumps({"version": "0.2.0", "type": "sample", "payload": ""}).encode(),
            json.dumps({"version": "0.1.0", "type": "corim", "payload": ""}).encode(),
            json.dumps({"version": "0.1.0", "type": "sample", "payload": "%%%"}).encode(),
            json.dumps(
                {"version": "0.1.0", "type": "sample", "payload": base64.b64encode(b"[1]").decode()}
            ).encode(),
            json.dumps(_rv_message({"ok": 1, "../bad": 2})).encode(),
        ]
        for body in bad:
            _err(c.post("/kbs/v0/reference-value", content=body), 400, "RvpsError")
        # Nothing of a refused message is stored, not even its good names.
        _err(c.get("/kbs/v0/reference-value/ok"), 401, "RvpsError")
        _err(c.post("/kbs/v0/reference-value", content=b"x" * (600 * 1024)), 413, "PayloadTooLarge")
    assert server.run(server.storage.reference_values.list_names()) == ["mr_td", "svn"]


def _tdx_claims(*, debug: bool, tcb: str = "UpToDate") -> dict[str, Any]:
    return {
        "quote": {
            "header": {"tee_type": "81000000", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
            "body": {
                "mr_td": "aa" * 48,
                "rtmr_1": "11" * 48,
                "rtmr_2": "22" * 48,
                "xfam": "e702060000000000",
            },
        },
        "td_attributes": {"debug": debug},
        "tcb_status": tcb,
        "collateral_expiration_status": "0",
        "report_data": "00" * 64,
    }


def test_explain_denials_via_cli(server: AdminApiServer, tmp_path: Path) -> None:
    """A denial recorded as the protocol records it, then explained by `teegate kbs admin explain-denials`."""
    assert server.ctx is not None
    engine, audit = server.ctx.policy, server.ctx.audit
    rv = {"mr_td": ["aa" * 48], "xfam": ["e702060000000000"], "rtmr_1": ["11" * 48], "rtmr_2": ["22" * 48]}
    with _client(server, _token()) as c:
        assert c.post("/kbs/v0/reference-value", json=_rv_message(rv)).status_code == 200

    async def attempt(debug: bool) -> None:
        appraisal = await engine.appraise(
            "tdx", _tdx_claims(debug=debug), runtime_data_claims={"tee-pubkey": {}}
        )
        token = {"submods": {"cpu0": appraisal.ear_submod()}}
        path = ResourcePath("default", "disk", "passphrase")
        decision = await engine.resource_allowed(token, path)
        audit.record(
            "release" if decision.allowed else "denial",
            tee="tdx",
            resource_path=str(path),
            verdict="released" if decision.allowed else "denied",
            policy_id=decision.policy_id,
            reason=decision.reason,
            claims=token,
            trust_vector=appraisal.trust_vector,
            reasons=list(decision.reasons) + appraisal.explanation["reasons"],
        )

    server.run(attempt(debug=False))
    server.run(attempt(debug=True))
    token_file = tmp_path / "tok"
    token_file.write_text(_token(role="auditor"))
    base = ["--url", server.url, "--admin-token-file", str(token_file)]
    result = CliRunner().invoke(admin, [*base, "explain-denials"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "default/disk/passphrase" in out and "tee=tdx" in out
    assert "policy:      builtin:default" in out
    assert 'submodule cpu0 has ear.status "contraindicated"' in out
    assert "TD is in debug mode" in out
    assert "configuration=96" in out
    assert 'tdx.td_attributes = {"debug": true}' in out
    assert f"measurement: {'aa' * 48}" in out
    assert out.count("default/disk/passphrase") == 1  # the release is not a denial
    as_json = CliRunner().invoke(
        admin, [*base, "--json", "explain-denials", "--limit", "5"], catch_exceptions=False
    )
    records = json.loads(as_json.stdout)
    assert (
        len(records) == 1
        and records[0]["kind"] == "denial"
        and records[0]["trust_vector"]["configuration"] == 96
    )
    assert len(records[0]["claims_digest"]) == 96
    with _client(server, _token()) as c:
        _err(c.get("/kbs/v0/admin/denials", params={"limit": "0"}), 400, "SerdeError")
        _err(c.get("/kbs/v0/admin/denials", params={"limit": "x"}), 400, "SerdeError")


def _jwks(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    return json.dumps(
        {"keys": [{"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(numbers.x), "y": b64(numbers.y)}]}
    )


def test_jwks_rotation(tmp_path: Path) -> None:
    from teegate.kbs.admin_auth import JwksFileProvider

    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(_jwks(first, "k1"))
    provider = JwksFileProvider(jwks_file, name="idp", check_interval=0)
    config = AdminAuthConfig.single_key(ed25519.Ed25519PrivateKey.generate().public_key())
    srv = AdminApiServer(tmp_path / "kbs", config, jwks=[provider])
    srv.start()
    try:
        now = datetime.now(UTC)
        old = mint_admin_token(first, role="admin", now=now, ttl_seconds=300, kid="k1")
        new = mint_admin_token(second, role="admin", now=now, ttl_seconds=300, kid="k2")
        with _client(srv, old) as c:
            assert c.get("/kbs/v0/resource").status_code == 200
        jwks_file.write_text(_jwks(second, "k2") + "\n")
        with _client(srv, old) as c:
            _err(c.get("/kbs/v0/resource"), 401, "AdminAuthAccess")
        with _client(srv, new) as c:
            assert c.get("/kbs/v0/resource").status_code == 200
    finally:
        srv.stop()

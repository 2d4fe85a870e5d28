"""Admin authentication: Bearer JWTs, key types, claims, ACL, JWKS rotation."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto import jwk, jwt

from teegate.errors import ConfigError
from teegate.kbs.admin_auth import (
    AclRule,
    AdminAccessDenied,
    AdminAuthConfig,
    AdminAuthMode,
    AdminKeyFileError,
    AdminPublicKey,
    AdminUnauthenticated,
    IdentityProvider,
    JwksFileProvider,
    authorize,
    load_private_key,
    mint_admin_token,
    parse_jwks,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PATH = "/kbs/v0/resource/default/key/1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keys() -> dict[str, Any]:
    return {
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    }


KEYS = _keys()


def _config(*private: Any, acl: tuple[AclRule, ...] | None = None, **provider: Any) -> AdminAuthConfig:
    keys = tuple(AdminPublicKey(k.public_key()) for k in private)
    return AdminAuthConfig(
        mode=AdminAuthMode.AUTHENTICATED,
        providers=(IdentityProvider("idp", keys, **provider),),
        acl=acl if acl is not None else (AclRule.create("admin", "^/kbs/v0/.+$"),),
    )


def _headers(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_valid_tokens_accepted(alg: str) -> None:
    key = KEYS[alg]
    token = mint_admin_token(key, role="admin", now=NOW, ttl_seconds=600, issuer="me")
    assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["alg"] == alg
    identity = authorize(_config(key), _headers(token), "POST", PATH, NOW + timedelta(seconds=10))
    assert (identity.role, identity.subject, identity.issuer, identity.provider) == (
        "admin",
        "admin",
        "me",
        "idp",
    )
    assert identity.expires_at == int(NOW.timestamp()) + 600


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256"])
def test_independent_library_tokens_accepted(alg: str) -> None:
    """Tokens signed by jwcrypto (as another IdP would) verify; ours verify in jwcrypto."""
    key = KEYS[alg]
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    signer = jwk.JWK.from_pem(pem)
    claims = {"role": "admin", "exp": int(NOW.timestamp()) + 60, "sub": "ci"}
    foreign = jwt.JWT(header={"alg": alg}, claims=claims)
    foreign.make_signed_token(signer)
    assert authorize(_config(key), _headers(foreign.serialize()), "GET", PATH, NOW).subject == "ci"
    ours = mint_admin_token(key, role="admin", now=NOW, ttl_seconds=60)
    checked = jwt.JWT(jwt=ours, key=signer, algs=[alg], check_claims=False)
    assert json.loads(checked.claims)["role"] == "admin"


def test_expired_token_refused() -> None:
    key = KEYS["EdDSA"]
    token = mint_admin_token(key, role="admin", now=NOW, ttl_seconds=60)
    with pytest.raises(AdminUnauthenticated, match="expired") as info:
        authorize(_config(key), _headers(token), "GET", PATH, NOW + timedelta(seconds=60 + 61))
    assert info.value.http_status == 401
    assert info.value.trustee_error == "AdminAuthAccess"
    # Within the leeway it still passes.
    authorize(_config(key), _headers(token), "GET", PATH, NOW + timedelta(seconds=100))


def test_wrong_key_refused() -> None:
    token = mint_admin_token(ed25519.Ed25519PrivateKey.generate(), role="admin", now=NOW, ttl_seconds=60)
    with pytest.raises(AdminUnauthenticated, match="does not verify"):
        authorize(_config(KEYS["EdDSA"], KEYS["ES256"]), _headers(token), "GET", PATH, NOW)


def test_wrong_role_forbidden() -> None:
    key = KEYS["ES256"]
    token = mint_admin_token(key, role="reader", now=NOW, ttl_seconds=60)
    acl = (
        AclRule.create("reader", "^/kbs/v0/resource-policy$", ["GET"]),
        AclRule.create("admin", "^/kbs/.+$"),
    )
    config = _config(key, acl=acl)
    assert authorize(config, _headers(token), "GET", "/kbs/v0/resource-policy", NOW).role == "reader"
    with pytest.raises(AdminAccessDenied, match="'reader' may not call POST /kbs/v0/resource-policy") as info:
        authorize(config, _headers(token), "POST", "/kbs/v0/resource-policy", NOW)
    assert info.value.http_status == 403
    with pytest.raises(AdminAccessDenied):
        authorize(config, _headers(token), "GET", PATH, NOW)


def _forge(key: Any, header: dict[str, Any], claims: dict[str, Any]) -> str:
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    signature = key.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{_b64(signature)}"


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"role": "admin"}, "no 'exp'"),
        ({"exp": 2_000_000_000}, "no 'role'"),
        ({"exp": 2_000_000_000, "role": ""}, "no 'role'"),
        ({"exp": "tomorrow", "role": "admin"}, "'exp' must be a number"),
        ({"exp": 2_000_000_000, "role": "admin", "nbf": 1_900_000_000}, "not valid before"),
    ],
)
def test_missing_or_bad_claims_refused(claims: dict[str, Any], match: str) -> None:
    key = KEYS["EdDSA"]
    token = _forge(key, {"alg": "EdDSA", "typ": "JWT"}, claims)
    with pytest.raises(AdminUnauthenticated, match=match):
        authorize(_config(key), _headers(token), "GET", PATH, NOW)


@pytest.mark.parametrize("alg", ["none", "None", "HS256", "ES384", "PS256", None])
def test_other_algorithms_refused(alg: str | None) -> None:
    claims = _b64(json.dumps({"role": "admin", "exp": 2_000_000_000}).encode())
    header = _b64(json.dumps({"alg": alg}).encode())
    for token in (f"{header}.{claims}.", f"{header}.{claims}.{_b64(b'x' * 64)}"):
        with pytest.raises(AdminUnauthenticated, match="algorithm"):
            authorize(_config(KEYS["EdDSA"]), _headers(token), "GET", PATH, NOW)


def test_algorithm_key_type_confusion_refused() -> None:
    """An RS256 header cannot be verified with an Ed25519 key, and vice versa."""
    key = KEYS["EdDSA"]
    token = _forge(key, {"alg": "RS256"}, {"role": "admin", "exp": 2_000_000_000})
    with pytest.raises(AdminUnauthenticated, match="does not verify"):
        authorize(_config(key), _headers(token), "GET", PATH, NOW)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic YWRtaW46YWRtaW4="},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer a.b"},
        {"Authorization": "Bearer !!!.e30.e30"},
        {"Authorization": "Bearer " + "a" * 20000},
    ],
)
def test_malformed_authorization_refused(headers: dict[str, str]) -> None:
    with pytest.raises(AdminUnauthenticated):
        authorize(_config(KEYS["EdDSA"]), headers, "GET", PATH, NOW)


def test_issuer_and_audience_enforced_when_configured() -> None:
    key = KEYS["EdDSA"]
    config = _config(key, issuer="TrusteeInDocker", audience="KBS")
    good = mint_admin_token(
        key, role="admin", now=NOW, ttl_seconds=60, issuer="TrusteeInDocker", audience=["KBS"]
    )
    authorize(config, _headers(good), "GET", PATH, NOW)
    for bad in (
        mint_admin_token(key, role="admin", now=NOW, ttl_seconds=60, issuer="evil", audience=["KBS"]),
        mint_admin_token(
            key, role="admin", now=NOW, ttl_seconds=60, issuer="TrusteeInDocker", audience=["x"]
        ),
    ):
        with pytest.raises(AdminUnauthenticated, match=r"issuer|audience"):
            authorize(config, _headers(bad), "GET", PATH, NOW)


def test_deny_when_unconfigured() -> None:
    config = AdminAuthConfig.from_mapping(None)
    assert config.mode is AdminAuthMode.DENY_ALL
    token = mint_admin_token(KEYS["EdDSA"], role="admin", now=NOW, ttl_seconds=60)
    with pytest.raises(AdminAccessDenied, match="disabled"):
        authorize(config, _headers(token), "GET", PATH, NOW)
    # Authenticated but no ACL rule: denied.
    empty_acl = _config(KEYS["EdDSA"], acl=())
    with pytest.raises(AdminAccessDenied):
        authorize(empty_acl, _headers(token), "GET", PATH, NOW)


def test_trustee_config_table(tmp_path: Path) -> None:
    pub = (
        KEYS["EdDSA"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "pub.pem").write_bytes(pub)
    table = {
        "authorization_mode": "AuthenticatedAuthorization",
        "authentication": {
            "bearer_jwt": {
                "identity_providers": [
                    {"issuer": "TrusteeInDocker", "audience": "KBS", "public_key_uri": "pub.pem"}
                ]
            }
        },
        "authorization": {"regex_acl": {"acls": [{"role": "admin", "allowed_endpoints": "^/kbs/.+$"}]}},
    }
    config = AdminAuthConfig.from_mapping(table, base_dir=tmp_path)
    token = mint_admin_token(
        KEYS["EdDSA"], role="admin", now=NOW, ttl_seconds=60, issuer="TrusteeInDocker", audience=["KBS"]
    )
    assert authorize(config, _headers(token), "DELETE", PATH, NOW).issuer == "TrusteeInDocker"
    with pytest.raises(ConfigError, match="unknown keys"):
        AdminAuthConfig.from_mapping({**table, "typo": 1}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"must start with '\^/kbs'"):
        AclRule.create("admin", ".*")
    with pytest.raises(ConfigError, match="only local files"):
        AdminAuthConfig.from_mapping(
            {
                **table,
                "authentication": {
                    "bearer_jwt": {"identity_providers": [{"jwk_set_uri": "https://idp/jwks"}]}
                },
            }
        )
    assert (
        AdminAuthConfig.from_mapping({"authorization_mode": "InsecureAllowAll"}).mode
        is AdminAuthMode.INSECURE_ALLOW_ALL
    )


def _jwk_public(key: Any, kid: str) -> dict[str, Any]:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    exported = jwk.JWK.from_pem(pem).export_public(as_dict=True)
    exported["kid"] = kid
    return exported


def test_jwks_parse_and_kid_selection() -> None:
    keys = parse_jwks(json.dumps({"keys": [_jwk_public(k, alg) for alg, k in KEYS.items()]}).encode())
    assert [k.kid for k in keys] == ["EdDSA", "ES256", "RS256"]
    config = AdminAuthConfig(
        mode=AdminAuthMode.AUTHENTICATED,
        providers=(IdentityProvider("jwks", keys),),
        acl=(AclRule.create("admin", "^/kbs/v0/.+$"),),
    )
    for alg, key in KEYS.items():
        token = mint_admin_token(key, role="admin", now=NOW, ttl_seconds=60, kid=alg)
        authorize(config, _headers(token), "GET", PATH, NOW)
    wrong_kid = mint_admin_token(KEYS["EdDSA"], role="admin", now=NOW, ttl_seconds=60, kid="ES256")
    with pytest.raises(AdminUnauthenticated, match="kid 'ES256'"):
        authorize(config, _headers(wrong_kid), "GET", PATH, NOW)
    private = jwk.JWK.from_pem(
        KEYS["ES256"].private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    ).export_private(as_dict=True)
    with pytest.raises(AdminKeyFileError, match="private key"):
        parse_jwks(json.dumps({"keys": [private]}).encode())


def test_jwks_rotation(tmp_path: Path) -> None:
    old, new = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [_jwk_public(old, "old")]}))
    source = JwksFileProvider(path, name="rotating", check_interval=5)
    config = AdminAuthConfig(
        mode=AdminAuthMode.AUTHENTICATED,
        providers=(source.provider(NOW),),
        acl=(AclRule.create("admin", "^/kbs/.+$"),),
    )
    old_token = mint_admin_token(old, role="admin", now=NOW, ttl_seconds=3600, kid="old")
    new_token = mint_admin_token(new, role="admin", now=NOW, ttl_seconds=3600, kid="new")

    def check(token: str, at: datetime) -> None:
        authorize(config, _headers(token), "GET", PATH, at, providers=[source.provider(at)])

    check(old_token, NOW)
    with pytest.raises(AdminUnauthenticated):
        check(new_token, NOW)
    path.write_text(json.dumps({"keys": [_jwk_public(new, "new")]}))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    check(old_token, NOW + timedelta(seconds=1))  # not re-read within the check interval
    later = NOW + timedelta(seconds=10)
    check(new_token, later)
    with pytest.raises(AdminUnauthenticated):
        check(old_token, later)
    # A broken rotation keeps the last good keys and records why.
    path.write_text("{not json")
    os.utime(path, ns=(2, 2))
    check(new_token, later + timedelta(seconds=10))
    assert source.last_error is not None and "not JSON" in source.last_error


def test_private_key_loading_and_bounds(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = weak.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(AdminKeyFileError, match="1024 bits"):
        load_private_key(pem)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(AdminKeyFileError, match="P-256"):
        load_private_key(
            p384.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    with pytest.raises(AdminKeyFileError):
        load_private_key(b"not a key")


def test_admin_key_and_token_files(tmp_path: Path) -> None:
    from teegate.kbs.admin_auth import load_or_create_admin_key, write_admin_token
    from teegate.kbs.paths import admin_key_path, admin_token_path

    key_path = admin_key_path(tmp_path / "data")
    key = load_or_create_admin_key(key_path)
    assert key_path.stat().st_mode & 0o777 == 0o600
    again = load_or_create_admin_key(key_path)
    raw = serialization.Encoding.Raw
    assert again.public_key().public_bytes(
        raw, serialization.PublicFormat.Raw
    ) == key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    token_path = admin_token_path(tmp_path / "data")
    token = mint_admin_token(key, role="admin", now=NOW, ttl_seconds=60)
    write_admin_token(token_path, token)
    assert token_path.read_text() == token + "\n" and token_path.stat().st_mode & 0o777 == 0o600
    authorize(
        AdminAuthConfig.single_key(again.public_key()),
        _headers(token_path.read_text().strip()),
        "GET",
        PATH,
        NOW,
    )
    key_path.write_text("garbage")
    with pytest.raises(AdminKeyFileError):
        load_or_create_admin_key(key_path)
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["admin-key.pem", "admin-token"]


def test_hostile_token_json_refused() -> None:
    """Deep nesting and repeated claims are refused as 401, never a crash or a parser differential."""
    key = KEYS["EdDSA"]
    deep = _b64(b"[" * 4000)
    head = _b64(b'{"alg":"EdDSA"}')
    signed_deep = f"{head}.{deep}.{_b64(key.sign(f'{head}.{deep}'.encode()))}"
    for token in (f"{deep}.{deep}.{deep}", signed_deep):
        with pytest.raises(AdminUnauthenticated, match="not JSON"):
            authorize(_config(key), _headers(token), "GET", PATH, NOW)
    body = _b64(b'{"role":"reader","exp":2000000000,"role":"admin"}')
    token = f"{head}.{body}.{_b64(key.sign(f'{head}.{body}'.encode()))}"
    with pytest.raises(AdminUnauthenticated, match="repeats a member"):
        authorize(_config(key), _headers(token), "GET", PATH, NOW)

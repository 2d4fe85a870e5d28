"""Every refusal over real HTTP, with its status and Trustee error type."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.paths import admin_key_path
from teegate.kbs.storage import StorageSettings
from tests.integration.kbs_flow.harness import Guest, error_type, put_resource, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _settings(tmp_path: Path, **extra: object) -> KbsSettings:
    values: dict[str, object] = {"allow_sample": True, "verify_tdx": False, "verify_sgx": False, "dev": True}
    values.update(extra)
    return KbsSettings(data_dir=tmp_path, storage=StorageSettings(data_dir=tmp_path), **values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def kbs(tmp_path_factory: pytest.TempPathFactory, clock: Clock) -> Iterator[str]:
    data = tmp_path_factory.mktemp("kbs-negatives")
    put_resource(data, "default/key/1", b"secret")
    with serve(build_app(_settings(data, max_body_bytes=64 * 1024), clock=clock)) as url:
        yield url


@pytest.fixture
def guest(kbs: str) -> Iterator[Guest]:
    g = Guest(kbs)
    yield g
    g.close()


def _check(response: httpx.Response, status: int, variant: str, *words: str) -> None:
    assert response.status_code == status, response.text
    assert error_type(response) == variant
    for word in words:
        assert word in response.json()["detail"], response.json()["detail"]


def test_version_mismatch_names_both_versions(guest: Guest) -> None:
    _check(guest.auth(version="0.3.0"), 401, "AttestationError", "=0.4.0", "0.3.0")


def test_unknown_tee_refused(guest: Guest) -> None:
    _check(guest.auth(tee="nosuchtee"), 401, "AttestationError", "nosuchtee")


def test_known_but_disabled_tee_refused(guest: Guest) -> None:
    _check(guest.auth(tee="snp"), 401, "AttestationError", "'snp' is not accepted")


def test_malformed_json(guest: Guest) -> None:
    r = guest.client.post(
        "/kbs/v0/auth", content=b'{"version": "0.4.0",', headers={"content-type": "application/json"}
    )
    _check(r, 401, "AttestationError", "malformed JSON")
    assert guest.auth().status_code == 200
    r = guest.client.post("/kbs/v0/attest", content=b"[1, 2", headers={"content-type": "application/json"})
    _check(r, 401, "AttestationError", "malformed JSON")


def test_duplicate_members_and_deep_nesting_refused(guest: Guest) -> None:
    dup = b'{"version":"0.4.0","version":"0.4.0","tee":"sample","extra-params":{}}'
    _check(guest.client.post("/kbs/v0/auth", content=dup), 401, "AttestationError", "duplicate")
    deep = b'{"version":"0.4.0","tee":"sample","extra-params":' + b"[" * 100 + b"]" * 100 + b"}"
    _check(guest.client.post("/kbs/v0/auth", content=deep), 401, "AttestationError", "nested")


def test_oversized_body(guest: Guest) -> None:
    r = guest.client.post("/kbs/v0/auth", content=b" " * (64 * 1024 + 1))
    _check(r, 413, "PayloadTooLarge")
    # Without Content-Length (chunked): the stream is cut at the limit too.
    r = guest.client.post("/kbs/v0/auth", content=iter([b" " * 40000, b" " * 40000]))
    _check(r, 413, "PayloadTooLarge")


def test_attest_without_session(guest: Guest) -> None:
    r = guest.client.post("/kbs/v0/attest", json={})
    _check(r, 401, "AttestationError", "no kbs-session-id cookie")


def test_forged_session_cookie(guest: Guest) -> None:
    assert guest.auth().status_code == 200
    value = guest.client.cookies.get("kbs-session-id")
    assert value is not None
    forged = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    guest.client.cookies.clear()
    guest.client.cookies.set("kbs-session-id", forged)
    _check(guest.attest(), 401, "AttestationError", "does not authenticate")


def test_expired_session(guest: Guest, clock: Clock) -> None:
    assert guest.auth().status_code == 200
    clock.now += 301
    try:
        _check(guest.attest(), 401, "AttestationError", "expired")
    finally:
        clock.now -= 301


def test_nonce_mismatch(guest: Guest) -> None:
    assert guest.auth().status_code == 200
    other_nonce = "A" * 43 + "="
    body = guest.attestation(guest.sample_evidence(guest.digest(nonce=other_nonce)), nonce=other_nonce)
    _check(guest.attest(body), 401, "AttestationError", "nonce")


def test_wrong_report_data_binding(guest: Guest) -> None:
    assert guest.auth().status_code == 200
    body = guest.attestation(guest.sample_evidence(b"\x00" * 48))
    _check(guest.attest(body), 401, "AttestationError", "REPORT_DATA_MISMATCH")


def test_resent_attestation_cannot_mint_a_second_token(kbs: str, guest: Guest) -> None:
    assert guest.auth().status_code == 200
    cookie = guest.client.cookies.get("kbs-session-id")
    body = guest.attestation(guest.sample_evidence())
    assert guest.attest(body).status_code == 200
    # An eavesdropper replays the Authed cookie and the attestation with its own key: refused.
    thief = Guest(kbs)
    try:
        thief.client.cookies.set("kbs-session-id", cookie or "")
        stolen = dict(body)
        stolen["runtime-data"] = {"nonce": guest.nonce, "tee-pubkey": thief.jwk.to_jwk()}
        _check(thief.attest(stolen), 401, "AttestationError")
        # Even replaying the exact body is refused on this replica (challenge consumed).
        thief.client.cookies.set("kbs-session-id", cookie or "")
        _check(thief.attest(body), 401, "AttestationError", "already used")
    finally:
        thief.close()


def test_no_token(guest: Guest) -> None:
    _check(guest.resource("default/key/1"), 401, "TokenNotFound")
    assert guest.auth().status_code == 200  # authed but not attested
    _check(guest.resource("default/key/1"), 401, "TokenNotFound", "not attested")


def test_bad_bearer_token(guest: Guest) -> None:
    r = guest.resource("default/key/1", headers={"Authorization": "Bearer a.b.c"})
    _check(r, 401, "TokenVerifierError")


@pytest.mark.parametrize(
    "path",
    [
        "default/key",
        "default/key/1/extra",
        "default/../key",
        ".hidden/key/1",
        "default/key/%2e%2e",
        "default/ke%20y/1",
        "default/key/a$b",
        "default//1",
    ],
)
def test_bad_resource_paths(guest: Guest, path: str) -> None:
    assert guest.auth().status_code == 200 and guest.attest().status_code == 200
    r = guest.client.get(f"/kbs/v0/resource/{path}")
    _check(r, 404, "InvalidRequestPath")


def test_missing_resource(guest: Guest) -> None:
    assert guest.auth().status_code == 200 and guest.attest().status_code == 200
    _check(guest.resource("default/key/nope"), 401, "PluginInternalError", "not found")


def test_policy_deny_outside_dev_profile(tmp_path: Path) -> None:
    """teegate's default resource policy refuses non-affirming evidence (sample is contraindicated)."""
    put_resource(tmp_path, "default/key/1", b"secret")
    with serve(build_app(_settings(tmp_path, dev=False))) as url:
        g = Guest(url)
        try:
            assert g.auth().status_code == 200
            assert g.attest().status_code == 200
            _check(g.resource("default/key/1"), 401, "PolicyDeny", "denied")
            # The denial is explained to an admin: which policy, which trust-vector entries.
            key = load_or_create_admin_key(admin_key_path(tmp_path))
            token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=60)
            r = g.client.get("/kbs/v0/admin/denials", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            denial = r.json()["denials"][0]
            assert denial["resource_path"] == "default/key/1" and denial["tee"] == "sample"
            assert denial["verdict"] == "denied" and denial["policy_id"]
            assert denial["trust_vector"]["hardware"] == 97
            assert "secret" not in json.dumps(denial)
        finally:
            g.close()


def test_sample_refused_unless_configured(tmp_path: Path) -> None:
    with serve(build_app(_settings(tmp_path, allow_sample=False, dev=False))) as url:
        g = Guest(url)
        try:
            _check(g.auth(), 401, "AttestationError", "sample evidence is insecure")
        finally:
            g.close()


def test_random_bodies_never_500(guest: Guest) -> None:
    import random

    rng = random.Random(7)
    templates = [
        b'{"version":"0.4.0","tee":"sample","extra-params":%s}',
        b'{"runtime-data":{"nonce":%s,"tee-pubkey":{"kty":"EC"}},"tee-evidence":{}}',
        b"%s",
    ]
    assert guest.auth().status_code == 200
    for i in range(120):
        filler = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        body = templates[i % 3].replace(b"%s", filler)
        for path in ("/kbs/v0/auth", "/kbs/v0/attest"):
            r = guest.client.post(path, content=body)
            assert r.status_code in (401, 413), (path, body, r.status_code, r.text)
            error_type(r)
    r = guest.client.get("/kbs/v0/resource/" + "a/" * 300 + "b")
    assert r.status_code == 404


def test_unknown_plugin_and_method(guest: Guest) -> None:
    _check(guest.client.get("/kbs/v0/nebula-ca/credential"), 404, "PluginNotFound", "nebula-ca")
    _check(guest.client.get("/elsewhere"), 404, "InvalidRequestPath")
    _check(guest.client.put("/kbs/v0/auth", content=b"{}"), 405, "MethodNotAllowed")

"""The whole RCAR handshake over real HTTP with Trustee sample evidence (dev profile)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import StorageSettings
from tests.integration.kbs_flow.harness import Guest, put_resource, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = b"luks-passphrase-\x00\xff"


def _settings(tmp_path: Path, **extra: object) -> KbsSettings:
    values: dict[str, object] = {
        "allow_sample": True,
        "verify_tdx": False,
        "verify_sgx": False,
        "dev": True,
    }
    values.update(extra)
    return KbsSettings(data_dir=tmp_path, storage=StorageSettings(data_dir=tmp_path), **values)  # type: ignore[arg-type]


@pytest.fixture
def kbs(tmp_path: Path) -> Iterator[str]:
    put_resource(tmp_path, "default/key/1", SECRET)
    with serve(build_app(_settings(tmp_path))) as url:
        yield url


def _decrypt_jwcrypto(body: dict[str, str], guest: Guest) -> bytes:
    pem = guest.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = jw_jwk.JWK.from_pem(pem)
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(body), key=key)
    return bytes(token.payload)


def test_sample_handshake_releases_resource(kbs: str) -> None:
    guest = Guest(kbs)
    try:
        auth = guest.auth()
        assert auth.status_code == 200
        challenge = auth.json()
        assert set(challenge) == {"nonce", "extra-params"} and challenge["extra-params"] == ""
        assert len(challenge["nonce"]) == 44
        assert "kbs-session-id=" in auth.headers["set-cookie"]
        attest = guest.attest()
        assert attest.status_code == 200, attest.text
        assert set(attest.json()) == {"token"}
        response = guest.resource("default/key/1")
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
        assert _decrypt_jwcrypto(body, guest) == SECRET
    finally:
        guest.close()


def test_sha512_negotiated_when_client_lacks_sha384(kbs: str) -> None:
    from teegate.kbs.protocol import Challenge, HashAlgorithm, runtime_data_digest

    guest = Guest(kbs)
    try:
        r = guest.client.post(
            "/kbs/v0/auth",
            json={
                "version": "0.4.0",
                "tee": "sample",
                "extra-params": {"supported-hash-algorithms": ["sha512"]},
            },
        )
        assert r.status_code == 200
        challenge = Challenge.parse(r.json())
        assert challenge.extra_params == {"selected-hash-algorithm": "sha512"}
        assert challenge.hash_algorithm() is HashAlgorithm.SHA512
        guest.nonce = challenge.nonce
        digest = runtime_data_digest(guest.nonce, guest.jwk, "", HashAlgorithm.SHA512)
        assert len(digest) == 64
        assert guest.attest(guest.attestation(guest.sample_evidence(digest))).status_code == 200
        assert guest.resource("default/key/1").status_code == 200
        # The default (SHA-384) extra-params stay Trustee's empty string.
        assert guest.auth().json()["extra-params"] == ""
        r = guest.client.post(
            "/kbs/v0/auth",
            json={
                "version": "0.4.0",
                "tee": "sample",
                "extra-params": {"supported-hash-algorithms": ["sm3"]},
            },
        )
        assert r.status_code == 401 and "sm3" in r.json()["detail"]
    finally:
        guest.close()

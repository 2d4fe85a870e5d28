"""No sticky sessions: two replicas sharing a session key file and storage serve one handshake."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import pytest

from teegate.kbs import jwe
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import ResourcePath, StorageSettings, open_storage
from tests.integration.kbs_flow.harness import Guest, error_type, serve
from tests.pg import PostgresServer, postgres_server

__all__ = ["postgres_server"]  # the session-scoped fixture

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _replica(tmp_path: Path, name: str, shared: Path, key_file: Path) -> KbsSettings:
    data = tmp_path / name
    return KbsSettings(
        data_dir=data,
        storage=StorageSettings(data_dir=data, sqlite_path=shared / "kbs.sqlite3"),
        session_key_file=key_file,
        token_key_file=shared / "token-key.pem",
        allow_sample=True,
        verify_tdx=False,
        verify_sgx=False,
        dev=True,
    )


async def _setup(shared: Path) -> None:
    from teegate.kbs.token import load_or_create_token_key

    load_or_create_token_key(shared / "token-key.pem")
    storage = await open_storage(StorageSettings(data_dir=shared, sqlite_path=shared / "kbs.sqlite3"))
    try:
        await storage.resources.set(ResourcePath.parse("default/key/1"), b"replicated")
    finally:
        await storage.close()


def test_each_step_on_another_replica(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    key_file = shared / "session.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    asyncio.run(_setup(shared))
    with (
        serve(build_app(_replica(tmp_path, "a", shared, key_file))) as url_a,
        serve(build_app(_replica(tmp_path, "b", shared, key_file))) as url_b,
    ):
        a, b = Guest(url_a), Guest(url_b, key=None)
        try:
            b.key, b.jwk = a.key, a.jwk
            assert a.auth().status_code == 200
            b.nonce = a.nonce
            b.client.cookies = a.client.cookies
            attest = b.attest()  # replica B finishes what A started
            assert attest.status_code == 200, attest.text
            a.client.cookies = b.client.cookies
            response = a.resource("default/key/1")  # and A releases on B's session
            assert response.status_code == 200, response.text
            assert jwe.decrypt(response.json(), a.key) == b"replicated"
            # B's token is a valid Bearer token on A (shared token key).
            fresh = Guest(url_a, key=a.key)
            try:
                r = fresh.resource(
                    "default/key/1", headers={"Authorization": f"Bearer {attest.json()['token']}"}
                )
                assert r.status_code == 200, r.text
            finally:
                fresh.close()
        finally:
            a.close()
            b.close()


def test_replica_with_another_session_key_refuses_the_cookie(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    asyncio.run(_setup(shared))
    key_a, key_b = shared / "a.key", shared / "b.key"
    key_a.write_bytes(os.urandom(32))
    key_b.write_bytes(os.urandom(32))
    with (
        serve(build_app(_replica(tmp_path, "a", shared, key_a))) as url_a,
        serve(build_app(_replica(tmp_path, "b", shared, key_b))) as url_b,
    ):
        a, b = Guest(url_a), Guest(url_b)
        try:
            assert a.auth().status_code == 200
            b.key, b.jwk, b.nonce = a.key, a.jwk, a.nonce
            b.client.cookies = a.client.cookies
            r = b.attest()
            assert r.status_code == 401 and error_type(r) == "AttestationError"
            assert "another replica's key" in r.json()["detail"]
        finally:
            a.close()
            b.close()


def test_a_challenge_mints_one_token_across_replicas_sharing_postgresql(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """The sealed cookie alone cannot stop a replay on another replica; the shared store does."""
    from teegate.kbs.storage.base import Backend, StateBackend

    dsn = postgres_server.dsn(postgres_server.create_database("ledger"))
    shared = tmp_path / "shared"
    shared.mkdir()
    key_file = shared / "session.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    from teegate.kbs.token import load_or_create_token_key

    load_or_create_token_key(shared / "token-key.pem")

    def replica(name: str) -> KbsSettings:
        data = tmp_path / name
        return KbsSettings(
            data_dir=data,
            storage=StorageSettings(
                data_dir=data,
                backend=Backend.POSTGRES,
                state_backend=StateBackend.POSTGRES,
                postgres_dsn=dsn,
            ),
            session_key_file=key_file,
            token_key_file=shared / "token-key.pem",
            allow_sample=True,
            verify_tdx=False,
            verify_sgx=False,
            dev=True,
        )

    with serve(build_app(replica("a"))) as url_a, serve(build_app(replica("b"))) as url_b:
        a, b = Guest(url_a), Guest(url_b, key=None)
        try:
            b.key, b.jwk = a.key, a.jwk
            assert a.auth().status_code == 200
            b.nonce = a.nonce
            b.client.cookies = dict(a.client.cookies)  # the challenge cookie, before attesting
            body = a.attestation(a.sample_evidence())
            first = a.attest(body)
            assert first.status_code == 200, first.text
            replay = b.attest(body)  # the same challenge and evidence, on the other replica
            assert replay.status_code == 401, replay.text
            assert error_type(replay) == "AttestationError"
            assert "already used" in replay.json()["detail"]
        finally:
            a.close()
            b.close()

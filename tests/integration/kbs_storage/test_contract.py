"""One contract suite run against every storage backend.

Resources: SQLite (temp dir), PostgreSQL 15 (real server, tests/pg.py), the Secret-mount
directory tree (writable), Vault KV v1 and v2 (the in-test server in vault_server.py — Vault
itself is not installable here). Policies and reference values: SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from teegate.errors import StorageUnavailable
from teegate.kbs.storage import (
    InvalidName,
    PolicyKind,
    PolicyNotFound,
    ReferenceValueNotFound,
    ResourceNotFound,
    ResourcePath,
    ResourceStore,
    ValueTooLarge,
)
from teegate.kbs.storage.base import (
    MAX_POLICY_BYTES,
    MAX_REFERENCE_VALUE_BYTES,
    MAX_RESOURCE_BYTES,
    PolicyStore,
    ReferenceValueStore,
)
from teegate.kbs.storage.directory import DirectoryResourceStore
from teegate.kbs.storage.sql import SqlState, open_postgres, open_sqlite
from teegate.kbs.storage.vault import VaultResourceStore
from tests.integration.kbs_storage.vault_server import FakeVault
from tests.netutil import self_signed
from tests.pg import PostgresServer, postgres_server

__all__ = ["postgres_server"]

pytestmark = pytest.mark.integration

_TOKEN = "hvs." + "t" * 24


@pytest.fixture(scope="module")
def vault_v1() -> Iterator[tuple[FakeVault, str]]:
    vault = FakeVault(token=_TOKEN, kv_version=1)
    url = vault.start()
    yield vault, url
    vault.stop()


@pytest.fixture(scope="module")
def vault_v2() -> Iterator[tuple[FakeVault, str]]:
    vault = FakeVault(token=_TOKEN, kv_version=2)
    url = vault.start()
    yield vault, url
    vault.stop()


async def _pg_state(server: PostgresServer) -> SqlState:
    return await open_postgres(server.dsn(server.create_database("contract")), pool_size=8)


@pytest.fixture(params=["sqlite", "postgres", "directory", "vault-kv1", "vault-kv2"])
async def resources(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResourceStore]:
    kind = request.param
    if kind == "sqlite":
        state = await open_sqlite(tmp_path / "kbs.sqlite3")
        yield state.resources
        await state.close()
    elif kind == "postgres":
        state = await _pg_state(request.getfixturevalue("postgres_server"))
        yield state.resources
        await state.close()
    elif kind == "directory":
        root = tmp_path / "tree"
        root.mkdir()
        yield DirectoryResourceStore(root, writable=True)
    else:
        vault, url = request.getfixturevalue("vault_v1" if kind == "vault-kv1" else "vault_v2")
        vault.mount = f"m{secrets.token_hex(4)}"
        store = VaultResourceStore(url, _TOKEN, mount=vault.mount, kv_version=vault.kv_version)
        yield store
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlState]:
    if request.param == "sqlite":
        st = await open_sqlite(tmp_path / "kbs.sqlite3")
    else:
        st = await _pg_state(request.getfixturevalue("postgres_server"))
    yield st
    await st.close()


P = ResourcePath("default", "kbsres1", "key1")


async def test_resource_set_get_overwrite_delete_list(resources: ResourceStore) -> None:
    assert isinstance(resources, ResourceStore)
    assert list(await resources.list_paths()) == []
    await resources.set(P, b"first")
    assert await resources.get(P) == b"first"
    await resources.set(P, b"second value")
    assert await resources.get(P) == b"second value"
    other = ResourcePath("prod", "cert", "tls.crt")
    await resources.set(other, b"\x00\xff binary \x80")
    assert await resources.get(other) == b"\x00\xff binary \x80"
    assert [str(p) for p in await resources.list_paths()] == ["default/kbsres1/key1", "prod/cert/tls.crt"]
    await resources.delete(P)
    with pytest.raises(ResourceNotFound, match="default/kbsres1/key1"):
        await resources.get(P)
    assert [str(p) for p in await resources.list_paths()] == ["prod/cert/tls.crt"]


async def test_resource_missing_is_typed_not_found(resources: ResourceStore) -> None:
    missing = ResourcePath("default", "nope", "absent")
    with pytest.raises(ResourceNotFound) as info:
        await resources.get(missing)
    assert info.value.http_status == 404
    with pytest.raises(ResourceNotFound):
        await resources.delete(missing)


async def test_resource_empty_and_maximum_sizes(resources: ResourceStore) -> None:
    await resources.set(P, b"")
    assert await resources.get(P) == b""
    biggest = secrets.token_bytes(MAX_RESOURCE_BYTES)
    await resources.set(P, biggest)
    assert await resources.get(P) == biggest
    with pytest.raises(ValueTooLarge, match=str(MAX_RESOURCE_BYTES)):
        await resources.set(P, b"x" * (MAX_RESOURCE_BYTES + 1))
    assert await resources.get(P) == biggest


@pytest.mark.parametrize(
    "text", ["default/../etc", "a/b", "a/b/c/d", "../b/c", "a/./c", "a/b/c\x00", "a/ b/c", "/a/b"]
)
async def test_bad_paths_refused(text: str) -> None:
    with pytest.raises(InvalidName):
        ResourcePath.parse(text)


async def test_concurrent_writers(resources: ResourceStore) -> None:
    values = [secrets.token_bytes(2048) for _ in range(16)]
    await asyncio.gather(*(resources.set(P, v) for v in values))
    assert await resources.get(P) in values
    paths = [ResourcePath("default", "many", f"k{i}") for i in range(16)]
    await asyncio.gather(*(resources.set(p, p.tag.encode()) for p in paths))
    got = await asyncio.gather(*(resources.get(p) for p in paths))
    assert got == [p.tag.encode() for p in paths]


async def test_policies_versioned(state: SqlState) -> None:
    policies: PolicyStore = state.policies
    kind = PolicyKind.ATTESTATION
    assert await policies.version(kind, "default_cpu") is None
    with pytest.raises(PolicyNotFound, match="default_cpu"):
        await policies.get(kind, "default_cpu")
    first = await policies.set(kind, "default_cpu", "package policy\n")
    assert first.version == 1
    second = await policies.set(kind, "default_cpu", "package policy\ndefault x := 1\n")
    assert second.version == 2
    got = await policies.get(kind, "default_cpu")
    assert (got.text, got.version) == ("package policy\ndefault x := 1\n", 2)
    assert await policies.version(kind, "default_cpu") == 2
    # The resource policy lives in its own namespace.
    assert list(await policies.list_ids(PolicyKind.RESOURCE)) == []
    kept = await policies.set_if_absent(PolicyKind.RESOURCE, "resource-policy", "package policy\n")
    assert kept.version == 1
    again = await policies.set_if_absent(PolicyKind.RESOURCE, "resource-policy", "other")
    assert (again.text, again.version) == ("package policy\n", 1)
    assert list(await policies.list_ids(kind)) == ["default_cpu"]
    # Delete then re-create never reuses a version number.
    await policies.delete(kind, "default_cpu")
    assert await policies.version(kind, "default_cpu") is None
    with pytest.raises(PolicyNotFound):
        await policies.delete(kind, "default_cpu")
    recreated = await policies.set(kind, "default_cpu", "package policy\n")
    assert recreated.version == 4
    with pytest.raises(ValueTooLarge):
        await policies.set(kind, "big", "x" * (MAX_POLICY_BYTES + 1))
    with pytest.raises(InvalidName):
        await policies.set(kind, "../escape", "x")


async def test_concurrent_policy_sets_get_distinct_versions(state: SqlState) -> None:
    results = await asyncio.gather(
        *(state.policies.set(PolicyKind.ATTESTATION, "p", f"v{i}") for i in range(12))
    )
    assert sorted(r.version for r in results) == list(range(1, 13))


async def test_reference_values(state: SqlState) -> None:
    store: ReferenceValueStore = state.reference_values
    with pytest.raises(ReferenceValueNotFound):
        await store.get("mr_td")
    await store.set("mr_td", b'{"value":["aa"]}')
    await store.set("mr_td", b'{"value":["bb"]}')
    await store.set("tdx/svn", b"[1]")
    assert await store.get("mr_td") == b'{"value":["bb"]}'
    assert list(await store.list_names()) == ["mr_td", "tdx/svn"]
    await store.delete("mr_td")
    with pytest.raises(ReferenceValueNotFound):
        await store.delete("mr_td")
    with pytest.raises(ValueTooLarge):
        await store.set("big", b"x" * (MAX_REFERENCE_VALUE_BYTES + 1))
    for bad in ("", "../x", "a/../b", "a b", "x" * 300):
        with pytest.raises(InvalidName):
            await store.set(bad, b"1")


async def test_sqlite_two_connections_share_one_file(tmp_path: Path) -> None:
    one = await open_sqlite(tmp_path / "kbs.sqlite3")
    two = await open_sqlite(tmp_path / "kbs.sqlite3")
    try:
        await asyncio.gather(
            *(one.resources.set(ResourcePath("r", "a", f"k{i}"), b"1") for i in range(10)),
            *(two.resources.set(ResourcePath("r", "b", f"k{i}"), b"2") for i in range(10)),
        )
        assert len(await one.resources.list_paths()) == 20
        assert await two.resources.get(ResourcePath("r", "a", "k3")) == b"1"
        assert (tmp_path / "kbs.sqlite3").stat().st_mode & 0o777 == 0o600
    finally:
        await one.close()
        await two.close()


async def test_postgres_data_survives_restart(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn(postgres_server.create_database("restart"))
    state = await open_postgres(dsn, pool_size=2)
    await state.resources.set(P, b"kept across restarts")
    await state.policies.set(PolicyKind.ATTESTATION, "default_cpu", "package policy\n")
    await state.close()
    postgres_server.restart()
    state = await open_postgres(dsn, pool_size=2)
    try:
        assert await state.resources.get(P) == b"kept across restarts"
        assert (await state.policies.get(PolicyKind.ATTESTATION, "default_cpu")).version == 1
    finally:
        await state.close()


async def test_postgres_down_is_storage_unavailable(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.dsn(postgres_server.create_database("down"))
    state = await open_postgres(dsn, pool_size=1)
    try:
        postgres_server.stop()
        with pytest.raises(StorageUnavailable) as info:
            await state.resources.get(P)
        assert info.value.http_status == 503
    finally:
        postgres_server.start()
        await state.close()
    with pytest.raises(StorageUnavailable, match="PostgreSQL"):
        await open_postgres(f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=absent_db")


async def test_vault_wire_layout_matches_trustee(vault_v1: tuple[FakeVault, str]) -> None:
    vault, url = vault_v1
    vault.mount = "secret"
    store = VaultResourceStore(url, _TOKEN, mount="secret", kv_version=1)
    try:
        await store.set(P, b"passphrase")
        assert vault.v1["default/kbsres1/key1"] == {"data": "passphrase"}
        method, target, body = vault.requests[-1]
        assert (method, target) == ("POST", "/v1/secret/default/kbsres1/key1")
        assert body == b'{"data": "passphrase"}'
        vault.v1["default/key/trustee-written"] = {"data": "from trustee"}
        assert await store.get(ResourcePath("default", "key", "trustee-written")) == b"from trustee"
    finally:
        await store.close()


async def test_vault_bad_token_is_unavailable(vault_v2: tuple[FakeVault, str]) -> None:
    vault, url = vault_v2
    store = VaultResourceStore(url, "hvs.wrong", mount=vault.mount, kv_version=2)
    try:
        with pytest.raises(StorageUnavailable, match="refused"):
            await store.get(P)
    finally:
        await store.close()


async def test_vault_tls_is_verified(tmp_path: Path) -> None:
    import ssl

    from teegate.errors import ConfigError

    cert_file, key_file = self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    vault = FakeVault(token=_TOKEN, kv_version=2)
    url = vault.start(tls=context)
    try:
        trusted = VaultResourceStore(url, _TOKEN, kv_version=2, ca_file=cert_file)
        await trusted.set(P, b"over tls")
        assert await trusted.get(P) == b"over tls"
        await trusted.close()
        untrusted = VaultResourceStore(url, _TOKEN, kv_version=2)
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await untrusted.get(P)
        await untrusted.close()
    finally:
        vault.stop()
    with pytest.raises(ConfigError, match="plain HTTP"):
        VaultResourceStore("http://vault.example:8200", _TOKEN)


async def test_postgres_two_replicas_and_crash_durability(postgres_server: PostgresServer) -> None:
    """Two pools (two KBS replicas) write concurrently; committed data survives an immediate stop."""
    dsn = postgres_server.dsn(postgres_server.create_database("replicas"))
    one, two = await open_postgres(dsn, pool_size=4), await open_postgres(dsn, pool_size=4)
    try:
        await asyncio.gather(
            *(one.resources.set(ResourcePath("r", "a", f"k{i}"), b"1") for i in range(20)),
            *(two.resources.set(ResourcePath("r", "b", f"k{i}"), b"2") for i in range(20)),
            *(one.policies.set(PolicyKind.ATTESTATION, "shared", f"v{i}") for i in range(5)),
            *(two.policies.set(PolicyKind.ATTESTATION, "shared", f"w{i}") for i in range(5)),
        )
        assert len(await two.resources.list_paths()) == 40
        assert await one.policies.version(PolicyKind.ATTESTATION, "shared") == 10
    finally:
        await one.close()
        await two.close()
    postgres_server.stop("immediate")  # no clean shutdown: WAL replay must restore every commit
    postgres_server.start()
    state = await open_postgres(dsn, pool_size=1)
    try:
        assert len(await state.resources.list_paths()) == 40
        assert (await state.policies.get(PolicyKind.ATTESTATION, "shared")).version == 10
    finally:
        await state.close()


async def test_challenge_ledger_one_time_and_purged(state: SqlState) -> None:
    from teegate.kbs.storage import sql

    ledger = state.challenge_ledger()
    other = state.challenge_ledger()  # another replica over the same database
    assert await ledger.consume("s1", 1_000, now=900.0)
    assert not await other.consume("s1", 1_000, now=901.0)
    assert not await ledger.consume("s1", 1_000, now=902.0)
    # Expired records are purged as consumptions go by (every _PURGE_EVERY per replica).
    for i in range(sql._PURGE_EVERY - 3):  # this replica: 2 calls so far, "late" is the next
        assert await ledger.consume(f"filler-{i}", 1_000, now=950.0)
    assert await ledger.consume("late", 5_000, now=2_000.0)  # the purge ran before this insert
    rows = await state._db.read_all("SELECT id FROM kbs_used_challenges", ())
    assert [r[0] for r in rows] == ["late"]

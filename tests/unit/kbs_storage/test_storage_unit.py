"""Names, settings, the directory backend's symlink and traversal safety, default paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import ConfigError, StorageUnavailable
from teegate.kbs.paths import admin_token_path, default_data_dir
from teegate.kbs.storage import (
    Backend,
    InvalidName,
    PolicyKind,
    ResourceNotFound,
    ResourcePath,
    StateBackend,
    StorageReadOnly,
    StorageSettings,
    ValueTooLarge,
    open_storage,
)
from teegate.kbs.storage.base import MAX_RESOURCE_BYTES, MAX_SEGMENT_CHARS, validate_policy_id
from teegate.kbs.storage.directory import DirectoryResourceStore


@pytest.mark.parametrize(
    "text", ["default/kbsres1/key1", "a/b/c", "repo_1/type-2/tag.3", "d/.dockerconfigjson/x"]
)
def test_good_paths(text: str) -> None:
    assert str(ResourcePath.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a/b",
        "a/b/c/d",
        "a//c",
        "../b/c",
        "a/../c",
        "a/b/..",
        "a/b/.",
        "a/b/...",
        "a/b/..data",
        "a/b/c d",
        "a/b/c\n",
        "a/b/ü",
        "a\\b/c/d",
        "a/b/" + "x" * (MAX_SEGMENT_CHARS + 1),
        "a/b/c%2F",
        "/a/b",
    ],
)
def test_bad_paths(text: str) -> None:
    with pytest.raises(InvalidName) as info:
        ResourcePath.parse(text)
    assert info.value.http_status == 400


def test_policy_ids() -> None:
    assert validate_policy_id("default_cpu") == "default_cpu"
    for bad in ("", "..", "a/b", "x" * 65, "é"):
        with pytest.raises(InvalidName):
            validate_policy_id(bad)


def test_settings_from_mapping(tmp_path: Path) -> None:
    s = StorageSettings.from_mapping({}, data_dir=tmp_path)
    assert s.backend is Backend.SQLITE and s.effective_sqlite_path == tmp_path / "kbs.sqlite3"
    s = StorageSettings.from_mapping({"backend": "postgres", "postgres_dsn": "host=db"}, data_dir=tmp_path)
    assert s.effective_state_backend is StateBackend.POSTGRES
    with pytest.raises(ConfigError, match="unknown keys"):
        StorageSettings.from_mapping({"bakend": "sqlite"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="postgres_dsn"):
        StorageSettings.from_mapping({"backend": "postgres"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="directory_root"):
        StorageSettings.from_mapping({"backend": "directory"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="vault"):
        StorageSettings.from_mapping({"backend": "vault", "vault_url": "https://v"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="kv_version"):
        StorageSettings.from_mapping(
            {"backend": "vault", "vault_url": "https://v", "vault_token_file": "/t", "vault_kv_version": 3},
            data_dir=tmp_path,
        )
    with pytest.raises(ConfigError):
        StorageSettings.from_mapping({"backend": "redis"}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="boolean"):
        StorageSettings.from_mapping({"directory_writable": "yes"}, data_dir=tmp_path)


async def test_open_storage_sqlite_default(tmp_path: Path) -> None:
    storage = await open_storage(StorageSettings(data_dir=tmp_path / "d"))
    try:
        await storage.resources.set(ResourcePath("a", "b", "c"), b"x")
        await storage.policies.set(PolicyKind.RESOURCE, "resource-policy", "package policy")
        await storage.reference_values.set("svn", b"[1]")
        assert await storage.resources.get(ResourcePath("a", "b", "c")) == b"x"
    finally:
        await storage.close()
    assert (tmp_path / "d" / "kbs.sqlite3").is_file()


async def test_open_storage_directory_with_sqlite_state(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "default" / "s").mkdir(parents=True)
    (tree / "default" / "s" / "k").write_bytes(b"v")
    settings = StorageSettings.from_mapping(
        {"backend": "directory", "directory_root": str(tree)}, data_dir=tmp_path / "d"
    )
    storage = await open_storage(settings)
    try:
        assert isinstance(storage.resources, DirectoryResourceStore)
        assert await storage.resources.get(ResourcePath("default", "s", "k")) == b"v"
        with pytest.raises(StorageReadOnly) as info:
            await storage.resources.set(ResourcePath("default", "s", "k"), b"new")
        assert info.value.http_status == 405
        assert await storage.policies.version(PolicyKind.ATTESTATION, "default_cpu") is None
    finally:
        await storage.close()


async def test_sqlite_unwritable_location_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(StorageUnavailable, match="SQLite"):
        await open_storage(StorageSettings(data_dir=blocker / "sub"))


def _k8s_secret_mount(root: Path, secret: str, items: dict[str, bytes]) -> Path:
    """The layout kubelet's atomic writer makes: key -> ..data/key, ..data -> ..<timestamp>."""
    mount = root / "default" / secret
    stamp = mount / "..2026_11_24_12_00_00.000000001"
    stamp.mkdir(parents=True)
    for key, value in items.items():
        (stamp / key).write_bytes(value)
    (mount / "..data").symlink_to(stamp.name)
    for key in items:
        (mount / key).symlink_to(f"..data/{key}")
    return mount


async def test_directory_reads_kubernetes_secret_mounts(tmp_path: Path) -> None:
    _k8s_secret_mount(tmp_path, "kbsres1", {"key1": b"one", "key2": b"two"})
    store = DirectoryResourceStore(tmp_path)
    assert await store.get(ResourcePath("default", "kbsres1", "key1")) == b"one"
    assert [str(p) for p in await store.list_paths()] == ["default/kbsres1/key1", "default/kbsres1/key2"]
    with pytest.raises(InvalidName):
        await store.get(ResourcePath.parse("default/kbsres1/..data"))


async def test_directory_refuses_symlink_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "default" / "s").mkdir(parents=True)
    outside.mkdir()
    (outside / "shadow").write_bytes(b"host secret")
    (root / "default" / "s" / "link").symlink_to(outside / "shadow")
    (root / "default" / "escape").symlink_to(outside)
    (root / "evil").symlink_to(outside)
    store = DirectoryResourceStore(root, writable=True)
    for path in ("default/s/link", "default/escape/shadow", "evil/x/y"):
        with pytest.raises(InvalidName, match="outside the store root"):
            await store.get(ResourcePath.parse(path))
    # Writes through an escaping directory link are refused, and nothing lands outside.
    with pytest.raises(InvalidName, match="outside the store root"):
        await store.set(ResourcePath.parse("default/escape/new"), b"x")
    with pytest.raises(InvalidName):
        await store.set(ResourcePath.parse("default/s/link"), b"x")
    assert sorted(os.listdir(outside)) == ["shadow"]
    assert (outside / "shadow").read_bytes() == b"host secret"
    assert [str(p) for p in await store.list_paths()] == []


async def test_directory_writes_are_atomic_and_private(tmp_path: Path) -> None:
    store = DirectoryResourceStore(tmp_path, writable=True)
    path = ResourcePath("default", "key", "1")
    await store.set(path, b"v1")
    await store.set(path, b"v2")
    target = tmp_path / "default" / "key" / "1"
    assert target.read_bytes() == b"v2"
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(target.parent) == ["1"]  # no temp files left behind
    await store.delete(path)
    with pytest.raises(ResourceNotFound):
        await store.delete(path)


async def test_directory_oversized_and_non_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "big").write_bytes(b"x" * (MAX_RESOURCE_BYTES + 1))
    (tmp_path / "a" / "b" / "dir").mkdir()
    os.mkfifo(tmp_path / "a" / "b" / "fifo")
    store = DirectoryResourceStore(tmp_path)
    with pytest.raises(ValueTooLarge):
        await store.get(ResourcePath("a", "b", "big"))
    for tag in ("dir", "fifo", "missing"):
        with pytest.raises(ResourceNotFound):
            await store.get(ResourcePath("a", "b", tag))
    with pytest.raises(ConfigError):
        DirectoryResourceStore(tmp_path / "absent")


def test_default_data_dir() -> None:
    assert default_data_dir({"TEEGATE_DATA_DIR": "/srv/kbs", "HOME": "/h"}) == Path("/srv/kbs")
    assert default_data_dir({"HOME": "/h"}) == Path("/h/.local/share/teegate/kbs")
    assert default_data_dir({"HOME": "/h", "XDG_DATA_HOME": "/x"}) == Path("/x/teegate/kbs")
    assert admin_token_path(Path("/d")) == Path("/d/admin-token")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab./\\\x00 -_~%:")), max_size=24))
def test_any_accepted_path_stays_three_levels_inside_the_root(text: str) -> None:
    try:
        path = ResourcePath.parse(text)
    except InvalidName:
        return
    root = "/srv/kbs"
    joined = os.path.normpath(os.path.join(root, str(path)))
    assert joined.startswith(root + "/")
    assert joined[len(root) + 1 :].split("/") == [path.repo, path.type, path.tag]
    assert not any(part.startswith("..") for part in (path.repo, path.type, path.tag))

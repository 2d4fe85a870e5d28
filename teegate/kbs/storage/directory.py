"""Resources in a directory tree laid out like trustee-operator's Secret mounts.

``<root>/<repo>/<type>/<tag>`` — mount Secret ``kbsres1`` at ``<root>/default/kbsres1`` and its
key ``key1`` is resource ``default/kbsres1/key1``. Kubernetes' atomic-writer layout (``key1 ->
..data/key1``, ``..data -> ..2026_…``) is followed; any symlink that leaves the root is
refused, and names starting with ``..`` (Kubernetes' bookkeeping, our temp files) are never
resources. Writes (when writable) go to a temp file that is fsynced and renamed into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from teegate.errors import ConfigError, StorageUnavailable
from teegate.kbs.storage.base import (
    MAX_LIST_ITEMS,
    MAX_RESOURCE_BYTES,
    InvalidName,
    ResourceNotFound,
    ResourcePath,
    StorageReadOnly,
    ValueTooLarge,
    check_resource,
)

__all__ = ["DirectoryResourceStore"]

_TEMP_PREFIX = "..tmp-"


class DirectoryResourceStore:
    """A :class:`~teegate.kbs.storage.base.ResourceStore` over ``<root>/<repo>/<type>/<tag>``."""

    def __init__(self, root: Path, *, writable: bool = False) -> None:
        try:
            self._root = Path(os.path.realpath(root, strict=True))
        except OSError as exc:
            raise ConfigError(f"storage: directory_root {root} does not exist: {exc.strerror}") from None
        if not self._root.is_dir():
            raise ConfigError(f"storage: directory_root {root} is not a directory")
        self._writable = writable

    @property
    def root(self) -> Path:
        """The resolved root directory."""
        return self._root

    def _inside(self, real: str) -> bool:
        root = str(self._root)
        return real == root or real.startswith(root.rstrip("/") + "/")

    def _resolve(self, path: ResourcePath) -> str:
        """The real path of the resource file, checked to stay inside the root."""
        candidate = os.path.join(self._root, path.repo, path.type, path.tag)
        real = os.path.realpath(candidate)
        if not self._inside(real):
            raise InvalidName(f"resource {path} resolves outside the store root (symlink escape)")
        return real

    def _read(self, path: ResourcePath) -> bytes:
        real = self._resolve(path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
                raise ResourceNotFound(f"resource {path} not found") from None
            raise StorageUnavailable(f"cannot read resource {path}: {exc.strerror}") from exc
        try:
            # The path may have been swapped between realpath and open: re-check what we opened.
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if not self._inside(opened):
                raise InvalidName(f"resource {path} resolves outside the store root (symlink escape)")
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ResourceNotFound(f"resource {path} not found (not a regular file)")
            if info.st_size > MAX_RESOURCE_BYTES:
                raise ValueTooLarge(f"resource {path} is {info.st_size} bytes; at most {MAX_RESOURCE_BYTES}")
            chunks: list[bytes] = []
            size = 0
            while chunk := os.read(fd, 65536):
                size += len(chunk)
                if size > MAX_RESOURCE_BYTES:
                    raise ValueTooLarge(f"resource {path} grew past {MAX_RESOURCE_BYTES} bytes while read")
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise StorageUnavailable(f"cannot read resource {path}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def _require_writable(self, path: ResourcePath) -> None:
        if not self._writable:
            raise StorageReadOnly(
                f"resource store {self._root} is read-only (directory_writable = false); cannot change {path}"
            )

    def _parent(self, path: ResourcePath, *, create: bool) -> str:
        parent = self._root
        for segment in (path.repo, path.type):
            parent = parent / segment
            if create:
                try:
                    os.mkdir(parent, 0o700)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise StorageUnavailable(f"cannot create {parent}: {exc.strerror}") from exc
        real = os.path.realpath(parent)
        if not self._inside(real):
            raise InvalidName(f"resource {path} directory resolves outside the store root (symlink escape)")
        return real

    def _write(self, path: ResourcePath, data: bytes) -> None:
        self._require_writable(path)
        data = check_resource(data)
        parent = self._parent(path, create=True)
        target = os.path.join(parent, path.tag)
        if os.path.islink(target):
            raise InvalidName(f"resource {path} is a symlink; refusing to replace it")
        temp = os.path.join(parent, f"{_TEMP_PREFIX}{secrets.token_hex(8)}")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, target)
            dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise StorageUnavailable(f"cannot write resource {path}: {exc.strerror}") from exc

    def _delete(self, path: ResourcePath) -> None:
        self._require_writable(path)
        parent = self._parent(path, create=False)
        target = os.path.join(parent, path.tag)
        try:
            info = os.lstat(target)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                raise ResourceNotFound(f"resource {path} not found") from None
            raise StorageUnavailable(f"cannot delete resource {path}: {exc.strerror}") from exc
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise ResourceNotFound(f"resource {path} not found (not a regular file)")
        try:
            os.unlink(target)
        except FileNotFoundError:
            raise ResourceNotFound(f"resource {path} not found") from None
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete resource {path}: {exc.strerror}") from exc

    def _list(self) -> list[ResourcePath]:
        found: list[ResourcePath] = []

        def names(directory: Path) -> list[str]:
            try:
                return sorted(os.listdir(directory))
            except (FileNotFoundError, NotADirectoryError):
                return []
            except OSError as exc:
                raise StorageUnavailable(f"cannot list {directory}: {exc.strerror}") from exc

        for repo in names(self._root):
            for type_ in names(self._root / repo):
                for tag in names(self._root / repo / type_):
                    try:
                        path = ResourcePath(repo, type_, tag)
                        real = self._resolve(path)
                    except InvalidName:
                        continue
                    if not os.path.isfile(real):
                        continue
                    found.append(path)
                    if len(found) > MAX_LIST_ITEMS:
                        raise StorageUnavailable(f"more than {MAX_LIST_ITEMS} resources; refusing to list")
        return sorted(found, key=str)

    async def get(self, path: ResourcePath) -> bytes:
        """Read the resource file."""
        return await asyncio.to_thread(self._read, path)

    async def set(self, path: ResourcePath, data: bytes) -> None:
        """Write atomically (temp file, fsync, rename); refused when read-only."""
        await asyncio.to_thread(self._write, path, data)

    async def delete(self, path: ResourcePath) -> None:
        """Remove the resource file; refused when read-only."""
        await asyncio.to_thread(self._delete, path)

    async def list_paths(self) -> Sequence[ResourcePath]:
        """Every regular file three levels below the root whose names are valid segments."""
        return await asyncio.to_thread(self._list)

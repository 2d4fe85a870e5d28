"""Writing private files (keys, tokens): mode 0600, never seen half-written."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` atomically with mode 0600 (temp file, fsync, rename or link);
    the parent directory is created 0700 when missing.

    With ``exclusive`` an existing ``path`` is kept and False returned (first writer wins, also
    between processes: the file appears whole or not at all). Returns True when written.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if not exclusive:
            os.replace(temp, path)
            return True
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(temp)
        return True
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise

"""Files the services read and write: private ones (keys, tokens) written 0600 and never seen
half-written; bounded reads of configured files."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["read_bounded", "write_private"]


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


def read_bounded(path: Path, limit: int, what: str, error: Callable[[str], Exception]) -> bytes:
    """The bytes of ``path``, refusing more than ``limit`` of them (read stops at limit + 1).

    Failures raise ``error(message)``: "cannot read WHAT PATH: REASON" or "WHAT PATH is larger
    than LIMIT bytes".
    """
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} is larger than {limit} bytes")
    return data

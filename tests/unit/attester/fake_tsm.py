"""A directory tree that behaves like the kernel's configfs-tsm report interface.

``mkdir`` of an entry populates ``provider``, ``generation``, ``inblob`` and an ``outblob``
that, like the kernel's, blocks the reader until the report for the written ``inblob`` is
generated (a FIFO fed by a "kernel" thread); ``rmdir`` removes the entry with its attributes.
Knobs make it misbehave the ways a real system can.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from teegate.attester.providers.tsm import TsmOps


class FakeTsm:
    def __init__(
        self,
        root: Path,
        *,
        provider: str = "tdx_guest",
        report: Callable[[bytes], bytes] = lambda inblob: b"QUOTE:" + inblob,
        extra_writers: int = 0,
        omit_outblob: bool = False,
        mkdir_error: int | None = None,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.provider = provider
        self.report = report
        self.extra_writers = extra_writers
        self.omit_outblob = omit_outblob
        self.mkdir_error = mkdir_error
        self.created: list[Path] = []
        self.inblobs: list[bytes] = []
        self._threads: list[threading.Thread] = []

    @property
    def ops(self) -> TsmOps:
        return TsmOps(mkdir=self.mkdir, rmdir=self.rmdir)

    def mkdir(self, path: Path) -> None:
        if self.mkdir_error is not None:
            raise OSError(self.mkdir_error, os.strerror(self.mkdir_error), str(path))
        os.mkdir(path)
        self.created.append(path)
        (path / "provider").write_text(self.provider + "\n")
        (path / "generation").write_text("0\n")
        (path / "inblob").write_bytes(b"")
        if not self.omit_outblob:
            os.mkfifo(path / "outblob")
            thread = threading.Thread(target=self._serve, args=(path,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, path: Path) -> None:
        fifo = path / "outblob"
        try:
            with fifo.open("wb") as out:  # blocks until the reader opens outblob
                if not (path / "provider").exists():
                    return  # entry removed unread (rmdir unblocked us)
                inblob = (path / "inblob").read_bytes()
                self.inblobs.append(inblob)
                # The kernel bumps generation per write; other writers add theirs.
                (path / "generation").write_text(f"{1 + self.extra_writers}\n")
                out.write(self.report(inblob))
        except (BrokenPipeError, FileNotFoundError):
            pass

    def rmdir(self, path: Path) -> None:
        fifo = path / "outblob"
        (path / "provider").unlink(missing_ok=True)
        if fifo.exists():
            # Unblock a "kernel" thread still waiting for a reader.
            with contextlib.suppress(OSError):
                fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
                os.close(fd)
        shutil.rmtree(path)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


__all__ = ["FakeTsm", "errno"]

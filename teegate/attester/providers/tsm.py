"""configfs-tsm (Linux ≥ 6.7): ``/sys/kernel/config/tsm/report/<entry>/{provider,inblob,outblob,…}``.

One report = one entry: ``mkdir`` it, check ``provider``, note ``generation``, write the
64-byte ``inblob``, read ``outblob`` (and ``auxblob`` where the provider has one), check that
``generation`` advanced by exactly our one write (another writer on the same entry would make
the quote answer someone else's inblob), ``rmdir`` the entry. On TDX the kernel asks QEMU, which
asks the host's QGS, so a quote service that is down surfaces here as EIO/EBUSY/ETIMEDOUT:
those are retryable.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.base import pad_report_data
from teegate.attester.providers.eventlog import CCEL_PATH, read_eventlog
from teegate.attester.providers.snp import snp_evidence
from teegate.attester.providers.tdx_guest import TDX_GUEST_DEVICE, TDX_MEASUREMENTS, check_init_data

__all__ = ["DEFAULT_TSM_ROOT", "MAX_OUTBLOB_BYTES", "TSM_PROVIDERS", "TsmOps", "TsmProvider"]

DEFAULT_TSM_ROOT: Final = Path("/sys/kernel/config/tsm/report")
#: Bound on outblob/auxblob reads (a TDX quote is < 8 KiB; DICE/CWT variants are larger).
MAX_OUTBLOB_BYTES: Final = 1024 * 1024
_MAX_ATTR_BYTES: Final = 64
#: configfs-tsm ``provider`` -> KBS ``tee``.
TSM_PROVIDERS: Final = {"tdx_guest": "tdx", "sev_guest": "snp"}
#: errnos that mean "the quote service may answer later".
_RETRYABLE: Final = frozenset({errno.EBUSY, errno.EIO, errno.ETIMEDOUT, errno.EINTR, errno.EAGAIN})


@dataclass(frozen=True, slots=True)
class TsmOps:
    """How entries are created and removed: configfs populates a directory on ``mkdir`` and
    removes its attributes on ``rmdir``. The default is the real system calls; a test tree that
    behaves like configfs passes its own."""

    mkdir: Callable[[Path], None] = field(default=os.mkdir)
    rmdir: Callable[[Path], None] = field(default=os.rmdir)


def _unavailable(what: str, exc: OSError) -> EvidenceUnavailable:
    if isinstance(exc, PermissionError):
        return EvidenceUnavailable(f"configfs-tsm: permission denied on {what} (run the attester as root)")
    if isinstance(exc, FileNotFoundError):
        return EvidenceUnavailable(f"configfs-tsm: {what} is missing")
    retryable = exc.errno in _RETRYABLE
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = " (the host's quote service may be down)" if retryable else ""
    return EvidenceUnavailable(f"configfs-tsm: {what}: {reason}{hint}", retryable=retryable)


class _Entry:
    def __init__(self, root: Path, ops: TsmOps) -> None:
        self._ops = ops
        self.path = root / f"teegate-{os.getpid()}-{secrets.token_hex(4)}"

    def __enter__(self) -> _Entry:
        try:
            self._ops.mkdir(self.path)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise EvidenceUnavailable(
                    "configfs-tsm: no TSM provider is registered (no TEE guest driver)"
                ) from None
            raise _unavailable(f"creating report entry {self.path}", exc) from None
        return self

    def __exit__(self, *exc: object) -> None:
        # Best effort: a leaked entry holds no secret (inblob is public binding data).
        with contextlib.suppress(OSError):
            self._ops.rmdir(self.path)

    def read(self, name: str, limit: int) -> bytes:
        try:
            with (self.path / name).open("rb") as handle:
                data = handle.read(limit + 1)
        except OSError as exc:
            raise _unavailable(f"reading {name}", exc) from None
        if len(data) > limit:
            raise EvidenceUnavailable(f"configfs-tsm: {name} exceeds {limit} bytes")
        return data

    def write(self, name: str, data: bytes) -> None:
        try:
            with (self.path / name).open("wb", buffering=0) as handle:
                handle.write(data)
        except OSError as exc:
            raise _unavailable(f"writing {name}", exc) from None

    def provider(self) -> str:
        return self.read("provider", _MAX_ATTR_BYTES).decode("ascii", "replace").strip()

    def generation(self) -> int:
        text = self.read("generation", _MAX_ATTR_BYTES).decode("ascii", "replace").strip()
        if not text.isdigit():
            raise EvidenceUnavailable(f"configfs-tsm: generation {text!r} is not a number")
        return int(text)


class TsmProvider:
    """TDX quotes and SEV-SNP reports (with the certificate table) through configfs-tsm."""

    name = "configfs-tsm"

    def __init__(
        self,
        root: Path = DEFAULT_TSM_ROOT,
        *,
        ops: TsmOps | None = None,
        ccel_path: Path = CCEL_PATH,
        aael_path: Path | None = None,
        measurements: Path = TDX_MEASUREMENTS,
        device: Path = TDX_GUEST_DEVICE,
    ) -> None:
        """Probe ``root`` once: create an entry, read its ``provider``, remove it."""
        self._root = root
        self._ops = ops or TsmOps()
        self._ccel_path = ccel_path
        self._aael_path = aael_path
        self._measurements = measurements
        self._device = device
        if not root.is_dir():
            raise EvidenceUnavailable(
                f"configfs-tsm: {root} does not exist (needs Linux >= 6.7 and configfs mounted)"
            )
        with _Entry(root, self._ops) as entry:
            provider = entry.provider()
        if provider not in TSM_PROVIDERS:
            raise EvidenceUnavailable(
                f"configfs-tsm: provider {provider!r} is not supported (known: {sorted(TSM_PROVIDERS)})"
            )
        self.provider = provider
        self.tee = TSM_PROVIDERS[provider]

    def describe(self) -> str:
        return f"configfs-tsm at {self._root} (provider {self.provider})"

    def report(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        """One report for ``report_data``: (outblob, auxblob or None)."""
        inblob = pad_report_data(report_data)
        with _Entry(self._root, self._ops) as entry:
            provider = entry.provider()
            if provider != self.provider:
                raise EvidenceUnavailable(
                    f"configfs-tsm: entry provider is {provider!r}, expected {self.provider!r}"
                )
            before = entry.generation()
            entry.write("inblob", inblob)
            outblob = entry.read("outblob", MAX_OUTBLOB_BYTES)
            auxblob = entry.read("auxblob", MAX_OUTBLOB_BYTES) if (entry.path / "auxblob").exists() else None
            after = entry.generation()
        if after != before + 1:
            raise EvidenceUnavailable(
                f"configfs-tsm: generation went {before} -> {after} around our one inblob write: another "
                "writer used the entry, the report may not carry our report data",
                retryable=True,
            )
        if not outblob:
            raise EvidenceUnavailable("configfs-tsm: outblob is empty")
        return outblob, auxblob

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        if init_data_digest is not None and self.tee == "tdx":
            check_init_data(init_data_digest, measurements=self._measurements, device=self._device)
        quote, aux = self.report(report_data)
        if self.tee == "snp":
            return snp_evidence(quote, aux)
        return {
            "cc_eventlog": read_eventlog(self._ccel_path, self._aael_path),
            "quote": base64.b64encode(quote).decode("ascii"),
        }

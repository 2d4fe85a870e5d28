"""Intel's QCNL configuration (``/etc/sgx_default_qcnl.conf``) → a :class:`PcsClient`.

Accepts the JSON format (with ``//`` and ``/* */`` comments, as Intel ships it) and the legacy
``KEY=value`` format. Keys used: ``pccs_url``, ``use_secure_cert``, ``collateral_service``,
``retry_times``, ``retry_delay``, ``local_pck_url``, ``tcb_update_type``, ``pccs_api_version``.
Other Intel keys are accepted and ignored (logged); ``use_secure_cert: false`` is insecure and
logged as such by the client.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from teegate.collateral.pcs import PcsClient
from teegate.errors import ConfigError
from teegate.files import read_bounded

__all__ = ["MAX_QCNL_BYTES", "QcnlConfig"]

_log = logging.getLogger("teegate.collateral.qcnl")

#: Upper bound on a QCNL configuration file.
MAX_QCNL_BYTES = 256 * 1024

_USED = {
    "pccs_url",
    "use_secure_cert",
    "collateral_service",
    "retry_times",
    "retry_delay",
    "local_pck_url",
    "tcb_update_type",
    "pccs_api_version",
}
_KNOWN_IGNORED = {
    "pck_cache_expire_hours",
    "verify_collateral_cache_expire_hours",
    "local_cache_only",
    "custom_request_options",
    "log_level",
}


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside JSON strings."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ConfigError("QCNL config: unterminated /* comment")
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _legacy(text: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for number, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ConfigError(f"QCNL config line {number}: expected KEY=value")
        values[name.strip().lower()] = value.strip()
    return values


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().upper() in ("TRUE", "FALSE"):
        return value.strip().upper() == "TRUE"
    raise ConfigError(f"QCNL config: {name} must be true or false, got {value!r}")


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"QCNL config: {name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"QCNL config: {name} must be {low}..{high}, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class QcnlConfig:
    """The parts of a QCNL configuration that decide where collateral comes from."""

    pccs_url: str
    use_secure_cert: bool = True
    collateral_service: str | None = None
    retry_times: int = 6
    retry_delay: int = 10
    local_pck_url: str | None = None
    tcb_update_type: Literal["standard", "early"] = "standard"
    pccs_api_version: str | None = None
    ignored: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> QcnlConfig:
        """Parse the JSON (comments allowed) or the legacy KEY=value format."""
        stripped = _strip_comments(text).strip()
        if stripped.startswith("{"):
            try:
                raw = json.loads(stripped)
            except ValueError as exc:
                raise ConfigError(f"QCNL config is not valid JSON: {exc}") from None
            if not isinstance(raw, dict):
                raise ConfigError("QCNL config: expected a JSON object")
        else:
            raw = _legacy(text)
        ignored = tuple(sorted(set(raw) - _USED))
        unknown = sorted(set(ignored) - _KNOWN_IGNORED)
        if unknown:
            _log.warning("QCNL config: ignoring unknown key(s) %s", ", ".join(unknown))
        pccs_url = raw.get("pccs_url")
        if not isinstance(pccs_url, str) or not pccs_url:
            raise ConfigError("QCNL config: pccs_url is required")
        collateral_service = raw.get("collateral_service") or None
        local_pck_url = raw.get("local_pck_url") or None
        for name, value in (("collateral_service", collateral_service), ("local_pck_url", local_pck_url)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"QCNL config: {name} must be a URL string")
        update = str(raw.get("tcb_update_type", "standard")).lower()
        if update not in ("standard", "early"):
            raise ConfigError(f"QCNL config: tcb_update_type {update!r} must be standard or early")
        version = raw.get("pccs_api_version")
        return cls(
            pccs_url=pccs_url,
            use_secure_cert=_bool(raw.get("use_secure_cert", True), "use_secure_cert"),
            collateral_service=collateral_service,
            retry_times=_int(raw.get("retry_times", 6), "retry_times", 0, 20),
            retry_delay=_int(raw.get("retry_delay", 10), "retry_delay", 0, 600),
            local_pck_url=local_pck_url,
            tcb_update_type="early" if update == "early" else "standard",
            pccs_api_version=None if version is None else str(version),
            ignored=ignored,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> QcnlConfig:
        """Read and parse a QCNL configuration file."""
        path = Path(path)
        data = read_bounded(path, MAX_QCNL_BYTES, "QCNL config", ConfigError)
        try:
            return cls.parse(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"QCNL config {path} is not UTF-8") from None
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def client(self, *, api_key: str | None = None, timeout: float = 30.0) -> PcsClient:
        """A PCS/PCCS client as QCNL would use it: collateral from collateral_service or pccs_url."""
        return PcsClient(
            self.pccs_url,
            api_key=api_key,
            verify=self.use_secure_cert,
            timeout=timeout,
            collateral_url=self.collateral_service,
            tcb_update=self.tcb_update_type,
            retry_times=self.retry_times,
            retry_delay=float(self.retry_delay),
        )

"""Reference Value Provider Service: Trustee's RVPS message format over the ReferenceValueStore.

Wire (shared/spec/kbs-protocol.md §3.8): a registration message is
``{"version": "0.1.0", "type": "sample", "payload": "<base64 standard of JSON {name: value}>"}``.
Each name is stored as Trustee's ``ReferenceValue`` document
``{"version": "0.1.0", "name": …, "expiration": "YYYY-MM-DDTHH:MM:SSZ", "value": …}`` (12 months
from registration). A query returns the ``value`` only. Unlike Trustee, an expired reference
value reads as absent for policies (an admin ``get`` still shows it).

Reads are cached for ``cache_seconds`` (default 1 s) so a handshake does not hit the store for
every name; a registration through this process drops its cache at once, other replicas see it
within ``cache_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

from teegate.errors import EvidenceError
from teegate.kbs.storage.base import (
    MAX_REFERENCE_VALUE_BYTES,
    InvalidName,
    ReferenceValueNotFound,
    ReferenceValueStore,
    check_reference_value,
    validate_reference_value_name,
)

__all__ = [
    "MAX_RVPS_MESSAGE_BYTES",
    "MAX_RVPS_VALUES_PER_MESSAGE",
    "MESSAGE_VERSION",
    "REFERENCE_VALUE_VERSION",
    "ReferenceValue",
    "Rvps",
    "RvpsError",
    "parse_message",
]

#: The only RVPS message version (Trustee refuses others).
MESSAGE_VERSION: Final = "0.1.0"
#: Version written into stored ReferenceValue documents.
REFERENCE_VALUE_VERSION: Final = "0.1.0"
#: Largest registration message accepted (a 256 KiB document, base64, plus JSON).
MAX_RVPS_MESSAGE_BYTES: Final = 2 * MAX_REFERENCE_VALUE_BYTES
#: Most reference values one message may register.
MAX_RVPS_VALUES_PER_MESSAGE: Final = 1000
_MONTHS_VALID: Final = 12
_MAX_CACHE_ENTRIES: Final = 4096
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


class RvpsError(EvidenceError):
    """A registration message or stored document is malformed (HTTP 400, Trustee ``RvpsError``)."""

    trustee_error = "RvpsError"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated member name")
    return result


def _loads(data: bytes | str, what: str) -> Any:
    try:
        return json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise RvpsError(f"{what} is not valid JSON: {exc}") from None


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    day = min(moment.day, 28 if month == 2 else 30 if month in (4, 6, 9, 11) else 31)
    return moment.replace(year=year, month=month, day=day, microsecond=0)


class ReferenceValue:
    """One stored reference value (Trustee's ``ReferenceValue``)."""

    __slots__ = ("expiration", "name", "value", "version")

    def __init__(self, name: str, value: Any, expiration: datetime, version: str = REFERENCE_VALUE_VERSION):
        self.name = name
        self.value = value
        self.expiration = expiration
        self.version = version

    def to_bytes(self) -> bytes:
        """The stored JSON document."""
        document = {
            "version": self.version,
            "name": self.name,
            "expiration": self.expiration.strftime(_TIME_FORMAT),
            "value": self.value,
        }
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str) -> ReferenceValue:
        """Parse a stored document; RvpsError if it is not one."""
        document = _loads(data, f"stored reference value {name!r}")
        if not isinstance(document, dict) or "value" not in document:
            raise RvpsError(f"stored reference value {name!r} is not a ReferenceValue document")
        expiration_text = document.get("expiration")
        try:
            expiration = datetime.strptime(str(expiration_text), _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            raise RvpsError(
                f"stored reference value {name!r} has a bad expiration {expiration_text!r}"
            ) from None
        version = document.get("version", REFERENCE_VALUE_VERSION)
        return cls(str(document.get("name", name)), document["value"], expiration, str(version))

    def expired(self, now: datetime) -> bool:
        """Whether ``now`` is past the expiration."""
        return now > self.expiration


def parse_message(message: bytes | str, *, now: datetime) -> list[ReferenceValue]:
    """Parse and check a whole registration message; nothing is stored when any part is bad."""
    raw = message.encode("utf-8") if isinstance(message, str) else message
    if len(raw) > MAX_RVPS_MESSAGE_BYTES:
        raise RvpsError(f"RVPS message is {len(raw)} bytes; at most {MAX_RVPS_MESSAGE_BYTES}")
    body = _loads(raw, "RVPS message")
    if not isinstance(body, dict):
        raise RvpsError("RVPS message must be a JSON object {version, type, payload}")
    unknown = sorted(set(body) - {"version", "type", "payload"})
    if unknown:
        raise RvpsError(f"RVPS message has unknown members {unknown}")
    version = body.get("version", MESSAGE_VERSION)
    if version != MESSAGE_VERSION:
        raise RvpsError(f"RVPS message version {version!r} is not supported; need {MESSAGE_VERSION!r}")
    kind = body.get("type")
    if kind != "sample":
        raise RvpsError(
            f"RVPS message type {kind!r} is not supported; teegate's RVPS extracts 'sample' messages"
        )
    payload = body.get("payload")
    if not isinstance(payload, str):
        raise RvpsError("RVPS message 'payload' must be a base64 string")
    try:
        decoded = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RvpsError(f"RVPS payload is not standard base64: {exc}") from None
    values = _loads(decoded, "RVPS sample payload")
    if not isinstance(values, dict):
        raise RvpsError("RVPS sample payload must be a JSON object {name: value, …}")
    if not values:
        raise RvpsError("RVPS sample payload names no reference values")
    if len(values) > MAX_RVPS_VALUES_PER_MESSAGE:
        raise RvpsError(f"RVPS payload has {len(values)} values; at most {MAX_RVPS_VALUES_PER_MESSAGE}")
    expiration = _add_months(now.astimezone(UTC), _MONTHS_VALID)
    result: list[ReferenceValue] = []
    for name, value in values.items():
        try:
            validate_reference_value_name(name)
        except InvalidName as exc:
            raise RvpsError(f"RVPS payload: {exc}") from None
        item = ReferenceValue(name, value, expiration)
        check_reference_value(item.to_bytes())
        result.append(item)
    return result


class Rvps:
    """Register and query reference values; ``clock`` returns the current UTC time."""

    def __init__(
        self,
        store: ReferenceValueStore,
        *,
        cache_seconds: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self._cache_seconds = cache_seconds
        self._clock = clock or (lambda: datetime.now(UTC))
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, ReferenceValue | None]] = {}
        self._all: tuple[float, list[str]] | None = None

    def invalidate(self) -> None:
        """Forget cached reads (after a registration here)."""
        self._cache.clear()
        self._all = None

    async def register(self, message: bytes | str) -> list[str]:
        """Store every value of a registration message; returns the names stored."""
        items = parse_message(message, now=self._clock())
        try:
            for item in items:
                await self.store.set(item.name, item.to_bytes())
        finally:
            self.invalidate()
        return [item.name for item in items]

    async def _read(self, name: str) -> ReferenceValue | None:
        now = self._monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        try:
            item: ReferenceValue | None = ReferenceValue.from_bytes(await self.store.get(name), name=name)
        except ReferenceValueNotFound:
            item = None
        if self._cache_seconds > 0:
            if len(self._cache) >= _MAX_CACHE_ENTRIES:
                self._cache.clear()
            self._cache[name] = (now, item)
        return item

    async def get(self, name: str) -> ReferenceValue:
        """The stored reference value (even expired); ReferenceValueNotFound if absent."""
        validate_reference_value_name(name)
        return ReferenceValue.from_bytes(await self.store.get(name), name=name)

    async def query(self, name: str) -> Any:
        """The value a policy sees: None when absent, unparsable or expired."""
        try:
            validate_reference_value_name(name)
            item = await self._read(name)
        except RvpsError:
            return None
        except EvidenceError:
            return None
        if item is None or item.expired(self._clock()):
            return None
        return item.value

    async def query_many(self, names: Iterable[str]) -> dict[str, Any]:
        """``{name: value or None}`` for each name, read concurrently."""
        result: dict[str, Any] = {}
        misses: list[str] = []
        now = self._monotonic()
        for name in dict.fromkeys(names):
            cached = self._cache.get(name)
            if cached is not None and now - cached[0] < self._cache_seconds:
                item = cached[1]
                result[name] = None if item is None or item.expired(self._clock()) else item.value
            else:
                misses.append(name)
        if misses:
            values = await asyncio.gather(*(self.query(name) for name in misses))
            result.update(zip(misses, values, strict=True))
        return result

    async def list_names(self) -> list[str]:
        """Every stored name (cached like values)."""
        now = self._monotonic()
        if self._all is not None and now - self._all[0] < self._cache_seconds:
            return list(self._all[1])
        names = list(await self.store.list_names())
        if self._cache_seconds > 0:
            self._all = (now, names)
        return names

    async def query_all(self, *, limit: int) -> dict[str, Any]:
        """Every reference value (for policies that read ``data.reference`` as a whole)."""
        names = await self.list_names()
        if len(names) > limit:
            raise RvpsError(f"{len(names)} reference values stored; a policy may read at most {limit}")
        return await self.query_many(names)

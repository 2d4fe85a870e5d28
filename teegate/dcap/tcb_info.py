"""Intel TCB Info (SGX v2/v3, TDX v3): parse the exact signed JSON and select TCB levels.

The document is the ``tcbInfo`` object exactly as Intel signed it (never re-serialized; the
signature is checked over these bytes by :mod:`teegate.dcap.verify`). Parsing is strict on
what the algorithm reads (types, sizes, 16 components, known statuses, no duplicate keys)
and tolerant of members it does not read, so Intel can add fields without breaking us.

TCB level selection follows Intel QVL ``TcbLevelCheck`` (spec: shared/spec/dcap.md §2.4
steps 12-14): levels sorted descending by (SGX components, PCESVN, TDX components) — never
the JSON order; the first level whose SGX components and PCESVN are all <= the PCK's is the
SGX level; for TDX, the first level from there whose TDX components are also <= the TD's
TEE_TCB_SVN (indices 0 and 1 skipped when TEE_TCB_SVN[1] > 0, the TDX module identity
covers them) is the TDX level.
"""

from __future__ import annotations

import binascii
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import orjson

from teegate.errors import CollateralError, VerificationError

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_LIST_ITEMS",
    "MODULE_STATUSES",
    "TCB_STATUSES",
    "TCB_STATUS_NAMES",
    "ModuleTcbLevel",
    "TcbInfo",
    "TcbLevel",
    "TcbMatch",
    "TdxModuleIdentity",
    "match_tcb_levels",
    "parse_tcb_info",
    "tdx_module_status",
]

#: Status names a TCB level may carry (TCB Info v2/v3), best first.
TCB_STATUS_NAMES: Final = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
    "Revoked",
)
TCB_STATUSES = frozenset(TCB_STATUS_NAMES)
#: Status names a TDX module identity TCB level (and a QE identity level) may carry.
MODULE_STATUSES = frozenset({"UpToDate", "OutOfDate", "Revoked"})

#: Bytes accepted for one signed JSON document (real TCB Info is 3-30 KiB).
MAX_DOCUMENT_BYTES = 256 * 1024
#: Entries accepted in any one list (TCB levels, module identities, components).
MAX_LIST_ITEMS = 256


def _load_object(text: str | bytes, what: str) -> dict[str, Any]:
    if len(text) > MAX_DOCUMENT_BYTES:
        raise CollateralError(f"{what}: larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        # orjson: 3-4x faster than json on these documents; stricter (no NaN, no lone
        # surrogates, nesting depth 1024), and its errors are ValueErrors.
        obj = orjson.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CollateralError(f"{what}: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CollateralError(f"{what}: expected a JSON object")
    return obj


class _Reader:
    """Typed access to one JSON object, naming the path of whatever is wrong."""

    def __init__(self, obj: Any, path: str) -> None:
        if not isinstance(obj, dict):
            raise CollateralError(f"{path}: expected a JSON object")
        self.obj: dict[str, Any] = obj
        self.path = path

    def has(self, key: str) -> bool:
        return key in self.obj

    def _get(self, key: str) -> Any:
        if key not in self.obj:
            raise CollateralError(f"{self.path}.{key}: missing")
        return self.obj[key]

    def int_(self, key: str, *, lo: int = 0, hi: int = 0xFFFFFFFF) -> int:
        value = self._get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise CollateralError(f"{self.path}.{key}: expected an integer in [{lo}, {hi}]")
        return value

    def str_(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise CollateralError(f"{self.path}.{key}: expected a string")
        return value

    def hex_(self, key: str, size: int) -> bytes:
        value = self.str_(key)
        if len(value) != 2 * size:
            raise CollateralError(f"{self.path}.{key}: expected {size} bytes of hex")
        try:
            return binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            raise CollateralError(f"{self.path}.{key}: not valid hex") from None

    def time_(self, key: str) -> datetime:
        value = self.str_(key)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise CollateralError(f"{self.path}.{key}: not an ISO 8601 date-time") from None
        if parsed.tzinfo is None:
            raise CollateralError(f"{self.path}.{key}: date-time without a time zone")
        return parsed

    def list_(self, key: str, *, required: bool = True) -> list[Any]:
        if not required and key not in self.obj:
            return []
        value = self._get(key)
        if not isinstance(value, list):
            raise CollateralError(f"{self.path}.{key}: expected a list")
        if len(value) > MAX_LIST_ITEMS:
            raise CollateralError(f"{self.path}.{key}: more than {MAX_LIST_ITEMS} entries")
        return value

    def strings_(self, key: str) -> tuple[str, ...]:
        items = self.list_(key, required=False)
        if not all(isinstance(item, str) for item in items):
            raise CollateralError(f"{self.path}.{key}: expected a list of strings")
        return tuple(items)

    def child(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self.path}.{key}")


def _status(reader: _Reader, allowed: frozenset[str]) -> str:
    status = reader.str_("tcbStatus")
    if status not in allowed:
        raise CollateralError(f"{reader.path}.tcbStatus: unknown status {status!r}")
    return status


@dataclass(frozen=True, slots=True)
class TcbLevel:
    """One platform TCB level: minimum SVNs and the status a platform at or above them has."""

    sgx_svns: tuple[int, ...]  # 16 components
    pcesvn: int
    tdx_svns: tuple[int, ...] | None  # 16 components for TDX TCB Info
    tcb_date: datetime
    tcb_date_text: str
    status: str
    advisory_ids: tuple[str, ...]

    def sort_key(self) -> tuple[tuple[int, ...], int, tuple[int, ...]]:
        return (self.sgx_svns, self.pcesvn, self.tdx_svns or ())


@dataclass(frozen=True, slots=True)
class ModuleTcbLevel:
    """A TDX module identity TCB level (also the QE identity level shape)."""

    isvsvn: int
    tcb_date: datetime
    tcb_date_text: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModuleIdentity:
    """Expected TDX module signer/attributes (``tdxModule`` or one ``tdxModuleIdentities`` entry)."""

    id: str
    mrsigner: bytes  # 48
    attributes: bytes  # 8
    attributes_mask: bytes  # 8
    tcb_levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    """A parsed TCB Info document; ``tcb_levels`` in Intel's canonical (descending) order."""

    id: Literal["SGX", "TDX"]
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: str  # 12 upper-case hex digits
    pce_id: str  # 4 upper-case hex digits
    tcb_type: int
    tcb_evaluation_data_number: int
    tcb_levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]

    @property
    def is_tdx(self) -> bool:
        return self.id == "TDX"

    def module_identity(self, version: int) -> TdxModuleIdentity | None:
        """The ``tdxModuleIdentities`` entry ``TDX_%02X`` (case-insensitive), if present."""
        wanted = f"TDX_{version:02X}"
        for identity in self.tdx_module_identities:
            if identity.id.upper() == wanted:
                return identity
        return None


def _components(reader: _Reader, key: str) -> tuple[int, ...]:
    items = reader.list_(key)
    if len(items) != 16:
        raise CollateralError(f"{reader.path}.{key}: expected 16 components, got {len(items)}")
    try:
        svns = tuple(item["svn"] for item in items)
    except (TypeError, KeyError):
        raise CollateralError(f"{reader.path}.{key}: each component must be an object with 'svn'") from None
    for svn in svns:
        if type(svn) is not int or not 0 <= svn <= 255:
            raise CollateralError(f"{reader.path}.{key}: svn must be an integer in [0, 255]")
    return svns


_STR_ONLY = frozenset({str})


def _module_level(
    item: Any,
    prefix: str,
    index: int,
    dates: dict[str, datetime],
    slow: Callable[[_Reader], ModuleTcbLevel],
) -> ModuleTcbLevel:
    """One TDX module or QE identity TCB level (hot: real documents have many).

    Checked with C-level builtins; anything unusual goes to ``slow`` (the reader-based parse,
    which accepts exactly the same documents and names what is wrong).
    """
    try:
        isvsvn = item["tcb"]["isvsvn"]
        date_text = item["tcbDate"]
        status = item["tcbStatus"]
        advisories = item.get("advisoryIDs", [])
    except (TypeError, KeyError, AttributeError):
        return slow(_Reader(item, f"{prefix}.tcbLevels[{index}]"))
    if (
        type(isvsvn) is not int
        or not 0 <= isvsvn <= 0xFFFF
        or type(date_text) is not str
        or type(status) is not str
        or status not in MODULE_STATUSES
        or type(advisories) is not list
        or len(advisories) > MAX_LIST_ITEMS
        or not _STR_ONLY.issuperset(map(type, advisories))
    ):
        return slow(_Reader(item, f"{prefix}.tcbLevels[{index}]"))
    date = dates.get(date_text)
    if date is None:
        date = _Reader(item, f"{prefix}.tcbLevels[{index}]").time_("tcbDate")
        dates[date_text] = date
    return ModuleTcbLevel(
        isvsvn=isvsvn, tcb_date=date, tcb_date_text=date_text, status=status, advisory_ids=tuple(advisories)
    )


def _module_level_slow(level: _Reader) -> ModuleTcbLevel:
    return ModuleTcbLevel(
        isvsvn=level.child("tcb").int_("isvsvn", hi=0xFFFF),
        tcb_date=level.time_("tcbDate"),
        tcb_date_text=level.str_("tcbDate"),
        status=_status(level, MODULE_STATUSES),
        advisory_ids=level.strings_("advisoryIDs"),
    )


def _module_levels(reader: _Reader) -> tuple[ModuleTcbLevel, ...]:
    levels = []
    dates: dict[str, datetime] = {}
    prefix = reader.path
    for i, item in enumerate(reader.list_("tcbLevels")):
        levels.append(_module_level(item, prefix, i, dates, _module_level_slow))
    if not levels:
        raise CollateralError(f"{reader.path}.tcbLevels: empty")
    # Intel QVL keeps identity levels in a set ordered by descending ISVSVN.
    return tuple(sorted(levels, key=lambda lvl: lvl.isvsvn, reverse=True))


def _module(reader: _Reader, ident: str, *, with_levels: bool) -> TdxModuleIdentity:
    return TdxModuleIdentity(
        id=ident,
        mrsigner=reader.hex_("mrsigner", 48),
        attributes=reader.hex_("attributes", 8),
        attributes_mask=reader.hex_("attributesMask", 8),
        tcb_levels=_module_levels(reader) if with_levels else (),
    )


def _upper_hex(reader: _Reader, key: str, size: int) -> str:
    value = reader.str_(key)
    reader.hex_(key, size)
    return value.upper()


_V2_KEYS = tuple(f"sgxtcbcomp{n:02d}svn" for n in range(1, 17))


_GET_SVN = operator.itemgetter("svn")
_INT_ONLY = frozenset({int})


def _svns(values: tuple[Any, ...]) -> tuple[int, ...]:
    """``values`` if all are ints in [0, 255] (checked with C-level builtins: this is hot)."""
    if not values or not set(map(type, values)) <= _INT_ONLY or min(values) < 0 or max(values) > 255:
        raise TypeError
    return values


def _tcb_level(item: Any, index: int, version: int, is_tdx: bool, dates: dict[str, datetime]) -> TcbLevel:
    """One platform TCB level; written without helpers because real TCB Info has dozens."""
    path = f"tcbInfo.tcbLevels[{index}]"
    try:
        tcb = item["tcb"]
        if version == 2:
            sgx = _svns(tuple(map(tcb.__getitem__, _V2_KEYS)))
            tdx = None
        else:
            sgx = _svns(tuple(map(_GET_SVN, tcb["sgxtcbcomponents"])))
            tdx = _svns(tuple(map(_GET_SVN, tcb["tdxtcbcomponents"]))) if is_tdx else None
        pcesvn = tcb["pcesvn"]
        date_text = item["tcbDate"]
        status = item["tcbStatus"]
        advisories = item.get("advisoryIDs", [])
    except (TypeError, KeyError, IndexError, AttributeError):
        # Slow path only to name the offending member precisely.
        level = _Reader(item, path)
        tcb_reader = level.child("tcb")
        if version == 2:
            for key in _V2_KEYS:
                tcb_reader.int_(key, hi=255)
        else:
            _components(tcb_reader, "sgxtcbcomponents")
            if is_tdx:
                _components(tcb_reader, "tdxtcbcomponents")
        tcb_reader.int_("pcesvn", hi=0xFFFF)
        level.str_("tcbDate")
        level.str_("tcbStatus")
        level.strings_("advisoryIDs")
        raise CollateralError(f"{path}: malformed TCB level") from None
    if len(sgx) != 16 or (tdx is not None and len(tdx) != 16):
        raise CollateralError(f"{path}.tcb: expected 16 SGX and TDX components")
    if type(pcesvn) is not int or not 0 <= pcesvn <= 0xFFFF:
        raise CollateralError(f"{path}.tcb.pcesvn: expected an integer in [0, 65535]")
    if type(status) is not str or status not in TCB_STATUSES:
        raise CollateralError(f"{path}.tcbStatus: unknown status {status!r}")
    if type(advisories) is not list or len(advisories) > MAX_LIST_ITEMS:
        raise CollateralError(f"{path}.advisoryIDs: expected a list of strings")
    if not _STR_ONLY.issuperset(map(type, advisories)):
        raise CollateralError(f"{path}.advisoryIDs: expected a list of strings")
    if type(date_text) is not str:
        raise CollateralError(f"{path}.tcbDate: expected a string")
    date = dates.get(date_text)
    if date is None:
        date = _Reader(item, path).time_("tcbDate")
        dates[date_text] = date
    return TcbLevel(
        sgx_svns=sgx,
        pcesvn=pcesvn,
        tdx_svns=tdx,
        tcb_date=date,
        tcb_date_text=date_text,
        status=status,
        advisory_ids=tuple(advisories),
    )


def _tcb_type(root: _Reader) -> int:
    tcb_type = root.int_("tcbType") if root.has("tcbType") else 0
    if tcb_type != 0:
        # Only type 0 (16 SGX components compared one by one) is defined.
        raise CollateralError(f"tcbInfo.tcbType: unsupported TCB type {tcb_type}")
    return tcb_type


def parse_tcb_info(text: str | bytes) -> TcbInfo:
    """Parse the ``tcbInfo`` JSON text (v2 SGX, v3 SGX or TDX). Raises CollateralError only."""
    root = _Reader(_load_object(text, "tcbInfo"), "tcbInfo")
    version = root.int_("version", hi=255)
    if version == 2:
        ident: Literal["SGX", "TDX"] = "SGX"
        if root.has("id") and root.str_("id") != "SGX":
            raise CollateralError("tcbInfo.id: version 2 TCB Info is SGX only")
    elif version == 3:
        raw_id = root.str_("id")
        if raw_id not in ("SGX", "TDX"):
            raise CollateralError(f"tcbInfo.id: unknown TCB Info id {raw_id!r}")
        ident = "SGX" if raw_id == "SGX" else "TDX"
    else:
        raise CollateralError(f"tcbInfo.version: unsupported TCB Info version {version} (2 and 3 known)")
    is_tdx = ident == "TDX"
    levels: list[TcbLevel] = []
    dates: dict[str, datetime] = {}
    for i, item in enumerate(root.list_("tcbLevels")):
        levels.append(_tcb_level(item, i, version, is_tdx, dates))
    if not levels:
        raise CollateralError("tcbInfo.tcbLevels: empty")
    levels.sort(key=TcbLevel.sort_key, reverse=True)
    module = None
    identities: list[TdxModuleIdentity] = []
    if is_tdx:
        module = _module(root.child("tdxModule"), "tdxModule", with_levels=False)
        for i, item in enumerate(root.list_("tdxModuleIdentities", required=False)):
            entry = _Reader(item, f"tcbInfo.tdxModuleIdentities[{i}]")
            identities.append(_module(entry, entry.str_("id"), with_levels=True))
    return TcbInfo(
        id=ident,
        version=version,
        issue_date=root.time_("issueDate"),
        next_update=root.time_("nextUpdate"),
        fmspc=_upper_hex(root, "fmspc", 6),
        pce_id=_upper_hex(root, "pceId", 2),
        tcb_type=_tcb_type(root),
        tcb_evaluation_data_number=(
            root.int_("tcbEvaluationDataNumber") if root.has("tcbEvaluationDataNumber") else 0
        ),
        tcb_levels=tuple(levels),
        tdx_module=module,
        tdx_module_identities=tuple(identities),
    )


@dataclass(frozen=True, slots=True)
class TcbMatch:
    """The levels selected for one platform: SGX level, and for TDX the TDX level."""

    sgx_level: TcbLevel
    tdx_level: TcbLevel | None


def match_tcb_levels(
    info: TcbInfo, sgx_svns: Sequence[int], pcesvn: int, tee_tcb_svn: bytes | None, *, step: str
) -> TcbMatch:
    """Intel QVL ``matchTcbLevels``; raises TCB_NOT_SUPPORTED when no level fits."""
    if len(sgx_svns) != 16:
        raise VerificationError("TCB_NOT_SUPPORTED", "PCK certificate does not carry 16 SGX TCB components")
    start = 2 if tee_tcb_svn is not None and tee_tcb_svn[1] > 0 else 0
    sgx_level: TcbLevel | None = None
    for level in info.tcb_levels:
        if pcesvn < level.pcesvn or any(a < b for a, b in zip(sgx_svns, level.sgx_svns, strict=True)):
            continue
        if tee_tcb_svn is None:
            return TcbMatch(sgx_level=level, tdx_level=None)
        if sgx_level is None:
            sgx_level = level
        tdx = level.tdx_svns
        if tdx is not None and all(tee_tcb_svn[i] >= tdx[i] for i in range(start, 16)):
            return TcbMatch(sgx_level=sgx_level, tdx_level=level)
    if sgx_level is None:
        raise VerificationError(
            "TCB_NOT_SUPPORTED",
            f"No matching TCB level found: no SGX TCB level at or below the PCK's "
            f"(components {list(sgx_svns)}, PCESVN {pcesvn}) for FMSPC {info.fmspc}",
            step=step,
        )
    svn_hex = tee_tcb_svn.hex() if tee_tcb_svn else ""
    raise VerificationError(
        "TCB_NOT_SUPPORTED",
        f"No matching TCB level found: no TDX TCB level at or below TEE_TCB_SVN {svn_hex}",
        step=step,
    )


def tdx_module_status(
    info: TcbInfo, tee_tcb_svn: bytes, mr_signer_seam: bytes, seam_attributes: bytes, *, step: str
) -> tuple[TdxModuleIdentity, ModuleTcbLevel | None]:
    """TDX module identity check and module TCB level (QVL 4.1.2.4.11 / ``TdxModuleCheck``).

    TEE_TCB_SVN[1] is the module's major version: 0 means TDX 1.0 numbering, checked against
    ``tdxModule`` with no module level; otherwise identity ``TDX_%02X`` and its TCB level for
    ISVSVN = TEE_TCB_SVN[0]. Raises TDX_MODULE_MISMATCH or TCB_NOT_SUPPORTED.
    """
    if info.tdx_module is None:
        raise VerificationError("TDX_MODULE_MISMATCH", "TDX TCB Info lacks tdxModule", step=step)
    version = tee_tcb_svn[1]
    identity = info.tdx_module
    if version > 0:
        found = info.module_identity(version)
        if found is None:
            raise VerificationError(
                "TDX_MODULE_MISMATCH",
                f"TCB Info has no TDX module identity TDX_{version:02X} for TEE_TCB_SVN[1]={version}",
                step=step,
            )
        identity = found
    if mr_signer_seam != identity.mrsigner:
        raise VerificationError(
            "TDX_MODULE_MISMATCH",
            f"MRSIGNERSEAM {mr_signer_seam.hex()} differs from {identity.id} mrsigner",
            step=step,
        )
    mask = int.from_bytes(identity.attributes_mask, "little")
    actual = int.from_bytes(seam_attributes, "little")
    expected = int.from_bytes(identity.attributes, "little")
    if actual & mask != expected & mask:
        raise VerificationError(
            "TDX_MODULE_MISMATCH",
            f"SEAMATTRIBUTES {seam_attributes.hex()} do not match {identity.id} under its mask",
            step=step,
        )
    if version == 0:
        return identity, None
    for level in identity.tcb_levels:
        if tee_tcb_svn[0] >= level.isvsvn:
            return identity, level
    raise VerificationError(
        "TCB_NOT_SUPPORTED",
        f"TDX module ISVSVN {tee_tcb_svn[0]} is below every level of {identity.id}",
        step=step,
    )

"""The KBS audit log: one structured record per attestation, release and denial — never a secret.

Each record is logged as one JSON line on logger ``teegate.kbs.audit`` (INFO for releases and
affirming attestations, WARNING for denials and non-affirming attestations) and denials (and
attestations refused outright, verdict ``refused``) are kept in a bounded in-memory ring so the
admin API can explain recent refusals (``GET /kbs/v0/admin/denials``). The ring is per process:
with several replicas each shows the denials it served (the log lines carry everything, for
central collection).

What a record may hold is fixed here: TEE, measurement, resource path, verdict, policy id,
reason, a SHA-384 digest of the canonical claims, a bounded excerpt of the claims that explain
a verdict (status, trust vector, TCB status, debug flags, measurements) and the trust vector.
Resource bytes are never passed in, so they cannot be logged.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

import orjson

from teegate.kbs.protocol import sorted_json

__all__ = [
    "DEFAULT_DENIAL_RING",
    "MAX_EXCERPT_BYTES",
    "AuditKind",
    "AuditLog",
    "AuditRecord",
    "claims_digest",
    "claims_excerpt",
    "measurement_of",
]

AuditKind = Literal["release", "denial", "attestation"]

#: Denials kept in memory for the admin API.
DEFAULT_DENIAL_RING: Final = 256
#: Largest claims excerpt (JSON bytes) kept in one record.
MAX_EXCERPT_BYTES: Final = 8 * 1024
_MAX_REASON_CHARS: Final = 2000
_MAX_FIELD_CHARS: Final = 512

_logger = logging.getLogger("teegate.kbs.audit")

# Claims worth showing when explaining a verdict, per TEE (paths inside the TEE's claims).
_EXCERPT_FIELDS: Final[Mapping[str, tuple[tuple[str, ...], ...]]] = {
    "tdx": (
        ("tcb_status",),
        ("advisory_ids",),
        ("collateral_expiration_status",),
        ("td_attributes",),
        ("simulated",),
        ("quote", "header", "tee_type"),
        ("quote", "body", "mr_td"),
        ("quote", "body", "mr_seam"),
        ("quote", "body", "xfam"),
        ("quote", "body", "rtmr_0"),
        ("quote", "body", "rtmr_1"),
        ("quote", "body", "rtmr_2"),
        ("quote", "body", "rtmr_3"),
    ),
    "sgx": (
        ("tcb_status",),
        ("advisory_ids",),
        ("collateral_expiration_status",),
        ("simulated",),
        ("body", "mr_enclave"),
        ("body", "mr_signer"),
        ("body", "isv_prod_id"),
        ("body", "isv_svn"),
        ("body", "attributes.flags"),
    ),
    "sample": (("svn",), ("launch_digest",), ("debug",), ("platform_version",)),
}
# Where the measurement lives, per TEE.
_MEASUREMENT: Final[Mapping[str, tuple[str, ...]]] = {
    "tdx": ("quote", "body", "mr_td"),
    "sgx": ("body", "mr_enclave"),
    "sample": ("launch_digest",),
    "snp": ("measurement",),
    "az-snp-vtpm": ("measurement",),
}


# The same fields with their dotted names, joined once.
_EXCERPT_NAMED: Final[Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]]] = {
    tee: tuple((".".join(path), path) for path in paths) for tee, paths in _EXCERPT_FIELDS.items()
}


def _get(value: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        # JSON objects are dicts: the exact type check spares the ABC lookup.
        if not (type(value) is dict or isinstance(value, Mapping)) or key not in value:
            return None
        value = value[key]
    return value


def _clip(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_FIELD_CHARS:
        return value[:_MAX_FIELD_CHARS] + "…"
    return value


_KNOWN_TEES: Final = frozenset(_MEASUREMENT) | frozenset(_EXCERPT_FIELDS)


def _evidence_by_tee(claims: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """TEE name → its claims (read, not copied), from token claims (submods) or from one
    annotated-evidence object."""
    found: dict[str, Mapping[str, Any]] = {}
    submods = claims.get("submods")
    sources: list[Mapping[str, Any]] = []
    if isinstance(submods, Mapping):
        for submod in submods.values():
            evidence = submod.get("ear.veraison.annotated-evidence") if isinstance(submod, Mapping) else None
            if isinstance(evidence, Mapping):
                sources.append(evidence)
    else:
        sources.append(claims)
    for evidence in sources:
        for tee in _KNOWN_TEES:
            value = evidence.get(tee)
            if isinstance(value, Mapping) and tee not in found:
                found[tee] = value
    return found


def measurement_of(
    claims: Mapping[str, Any], *, _evidence: Mapping[str, Mapping[str, Any]] | None = None
) -> str | None:
    """The workload measurement (TDX MRTD, SGX MRENCLAVE, sample launch digest, …) if present."""
    evidence = _evidence_by_tee(claims) if _evidence is None else _evidence
    for tee, value in evidence.items():
        measurement = _get(value, _MEASUREMENT.get(tee, ()))
        if isinstance(measurement, str):
            return str(_clip(measurement))
    return None


def claims_digest(claims: Mapping[str, Any]) -> str:
    """SHA-384 over the claims' canonical JSON (sorted keys, compact): ties a record to a token.

    The KBS passes the digest of the text it already serialised for the token
    (:func:`teegate.kbs.token.canonical_claims`: the same text for JSON claims)."""
    return hashlib.sha384(sorted_json(claims).encode("utf-8")).hexdigest()


def claims_excerpt(
    claims: Mapping[str, Any], *, _evidence: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """The fields that explain a verdict, bounded to :data:`MAX_EXCERPT_BYTES` of JSON."""
    evidence = _evidence_by_tee(claims) if _evidence is None else _evidence
    excerpt: dict[str, Any] = {}
    submods = claims.get("submods")
    if isinstance(submods, Mapping):
        excerpt["submods"] = {
            str(name): {
                "ear.status": submod.get("ear.status"),
                "ear.trustworthiness-vector": submod.get("ear.trustworthiness-vector"),
                "ear.appraisal-policy-id": submod.get("ear.appraisal-policy-id"),
            }
            for name, submod in sorted(submods.items())
            if isinstance(submod, Mapping)
        }
    for tee, value in sorted(evidence.items()):
        picked: dict[str, Any] = {}
        for name, path in _EXCERPT_NAMED.get(tee, ()):
            found = _get(value, path)
            if found is not None:
                picked[name] = _clip(found)
        excerpt[tee] = picked
    if _json_size(excerpt) > MAX_EXCERPT_BYTES:
        return {"truncated": True, "submods": excerpt.get("submods", {})}
    return excerpt


def _json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (key order does not change the size)."""
    try:
        return len(orjson.dumps(value))
    except TypeError:  # what orjson cannot write: the general serialisation
        return len(sorted_json(value).encode("utf-8"))


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record (what the log line and the admin API show)."""

    kind: AuditKind
    time: str
    verdict: str
    tee: str | None = None
    measurement: str | None = None
    resource_path: str | None = None
    policy_id: str | None = None
    reason: str | None = None
    claims_digest: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
    trust_vector: dict[str, int] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    sequence: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (reasons as a list). The record is frozen and its excerpt was built
        for it alone, so the nested values are shared rather than deep-copied."""
        return {
            "kind": self.kind,
            "time": self.time,
            "verdict": self.verdict,
            "tee": self.tee,
            "measurement": self.measurement,
            "resource_path": self.resource_path,
            "policy_id": self.policy_id,
            "reason": self.reason,
            "claims_digest": self.claims_digest,
            "claims": self.claims,
            "trust_vector": dict(self.trust_vector),
            "reasons": list(self.reasons),
            "sequence": self.sequence,
        }


class AuditLog:
    """Records audit events; keeps the last ``capacity`` denials for :meth:`recent_denials`."""

    def __init__(
        self,
        *,
        capacity: int = DEFAULT_DENIAL_RING,
        clock: Callable[[], datetime] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("audit ring capacity must be at least 1")
        self.capacity = capacity
        self._clock = clock or (lambda: datetime.now(UTC))
        self._logger = logger or _logger
        self._denials: collections.deque[AuditRecord] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._sequence = 0
        self.counts: collections.Counter[str] = collections.Counter()

    def record(
        self,
        kind: AuditKind,
        *,
        tee: str | None = None,
        measurement: str | None = None,
        resource_path: str | None = None,
        verdict: str,
        policy_id: str | None = None,
        reason: str | None = None,
        claims: Mapping[str, Any] | None = None,
        claims_digest_hex: str | None = None,
        trust_vector: Mapping[str, int] | None = None,
        reasons: tuple[str, ...] | list[str] = (),
    ) -> AuditRecord:
        """Log one event. ``claims`` (token claims or annotated evidence) is reduced to a digest
        and an excerpt here; pass no secret material (resource bytes never belong here)."""
        if kind not in ("release", "denial", "attestation"):
            raise ValueError(f"audit kind {kind!r} is not release, denial or attestation")
        excerpt: dict[str, Any] = {}
        if claims is not None:
            evidence = _evidence_by_tee(claims)
            excerpt = claims_excerpt(claims, _evidence=evidence)
            if measurement is None:
                measurement = measurement_of(claims, _evidence=evidence)
        digest = claims_digest_hex or (claims_digest(claims) if claims is not None else None)
        with self._lock:
            self._sequence += 1
            record = AuditRecord(
                kind=kind,
                time=self._clock().astimezone(UTC).isoformat().replace("+00:00", "Z"),
                verdict=verdict,
                tee=tee,
                measurement=_clip(measurement),
                resource_path=resource_path,
                policy_id=policy_id,
                reason=reason[:_MAX_REASON_CHARS] if reason is not None else None,
                claims_digest=digest,
                claims=excerpt,
                trust_vector=dict(trust_vector or {}),
                reasons=tuple(str(r)[:_MAX_FIELD_CHARS] for r in reasons),
                sequence=self._sequence,
            )
            if kind == "denial" or (kind == "attestation" and verdict == "refused"):
                self._denials.append(record)  # a refused attestation is a denied attempt too
            self.counts[kind] += 1
        refused = kind == "denial" or (kind == "attestation" and verdict != "affirming")
        level = logging.WARNING if refused else logging.INFO
        if self._logger.isEnabledFor(level):  # the line is built only when something writes it
            entry = {"audit": record.to_json()}
            line = sorted_json(entry)
            if not line.isascii():
                # Non-ASCII text (a reason quoting a guest's input) escaped as \uXXXX, so no line
                # or paragraph separator can split or forge a log line.
                line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
            self._logger.log(level, line)
        return record

    def recent_denials(self, limit: int = 50) -> list[AuditRecord]:
        """The most recent denials and refused attestations, newest first (at most ``limit``)."""
        if limit < 1:
            return []
        with self._lock:
            items = list(self._denials)
        return list(reversed(items))[:limit]

"""The KBS HTTP application: protocol 0.4.0 routes, admin routes, health, metrics, OpenAPI.

``build_app(settings) -> Starlette``. Start-time work that can fail (keys, verifiers, policy
files) happens in :func:`build_app` so a bad configuration fails before listening; storage is
opened in the lifespan. Request handling:

* ``POST /kbs/v0/auth``: Request → Challenge, sealed ``Authed`` session cookie.
* ``POST /kbs/v0/attest``: session cookie + Attestation → nonce check, one-time challenge (per
  replica), evidence verification, report-data binding, attestation policy → EAR token, sealed
  ``Attested`` cookie.
* ``GET /kbs/v0/resource/{repo}/{type}/{tag}``: claims from the attested cookie or a verified
  Bearer token → resource policy → JWE to the TEE key in the claims. Denied unless the policy
  says ``allow``.

Errors are Trustee's bodies and codes (:mod:`teegate.kbs.errors`); nothing a client sends
escapes as an unhandled exception.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import re
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from teegate.errors import (
    CollateralUnavailable,
    ConfigError,
    EvidenceError,
    PolicyDenied,
    TeegateError,
)
from teegate.kbs.admin_api import AdminContext, admin_routes
from teegate.kbs.admin_auth import AdminAuthConfig, load_or_create_admin_key
from teegate.kbs.audit import AuditLog
from teegate.kbs.config import KbsSettings
from teegate.kbs.errors import KbsError, error_body
from teegate.kbs.jwe import encrypt
from teegate.kbs.paths import admin_key_path
from teegate.kbs.policy import Appraisal, PolicyEngine, PolicyVm
from teegate.kbs.protocol import (
    Attestation,
    Challenge,
    HashAlgorithm,
    InitData,
    Request,
    Tee,
    device_binding_digest,
    make_nonce,
    parse_json,
    runtime_data_digest,
)
from teegate.kbs.session import (
    SESSION_COOKIE,
    SESSION_KEY_FILENAME,
    ChallengeLedger,
    SessionError,
    SessionSealer,
    SessionState,
    load_session_key,
)
from teegate.kbs.storage import ResourceNotFound, ResourcePath, Storage, open_storage
from teegate.kbs.token import (
    TOKEN_KEY_FILENAME,
    TokenError,
    TokenSigner,
    TokenVerifier,
    canonical_claims,
    ear_claims,
    extract_tee_pubkey,
    load_cert_chain,
    load_or_create_token_key,
)
from teegate.verifiers import VerifiedEvidence, Verifier, VerifierSet, check_binding

__all__ = [
    "MAX_RESOURCE_PATH_CHARS",
    "KbsMetrics",
    "KbsRuntime",
    "build_app",
    "build_verifiers",
    "openapi_document",
]

_log = logging.getLogger("teegate.kbs")

#: Longest ``{repo}/{type}/{tag}`` examined.
MAX_RESOURCE_PATH_CHARS: Final = 3 * 128 + 2
#: Trustee's ResourceDesc grammar per segment (no leading dot).
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9_\-]+[A-Za-z0-9_\-.]*")
_JSON: Final = "application/json"
_KBS_HASHES: Final = {
    "sha256": HashAlgorithm.SHA256,
    "sha384": HashAlgorithm.SHA384,
    "sha512": HashAlgorithm.SHA512,
}
_MAX_INIT_DIGEST_BYTES: Final = 48
_MAX_COUNTER_CHILDREN: Final = 64
#: Latency buckets (seconds), 0.5 ms … 1 s as Trustee's ``kbs_http_request_duration_seconds``.
_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class KbsMetrics:
    """Prometheus metrics of one app (own registry: no module-level mutable state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "kbs_http_requests",
            "HTTP requests by route, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "kbs_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.attestations = Counter(
            "kbs_attestations",
            "Attestations by TEE and outcome (EAR status of the primary submodule, or refused).",
            ["tee", "status"],
            registry=self.registry,
        )
        self._attestation_children: dict[tuple[str, str], Any] = {}
        self.releases = Counter(
            "kbs_resource_releases", "Resources released (JWE sent).", registry=self.registry
        )
        self.denials = Counter(
            "kbs_resource_denials",
            "Resource requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )

    def attestation(self, tee: str, status: str) -> None:
        """Count one attestation (label children looked up once per pair)."""
        key = (tee, status)
        child = self._attestation_children.get(key)
        if child is None:
            child = self.attestations.labels(tee, status)
            if len(self._attestation_children) < _MAX_COUNTER_CHILDREN:
                self._attestation_children[key] = child
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


def build_verifiers(settings: KbsSettings) -> VerifierSet:
    """The verifiers ``settings`` enable (sample and simulated only when configured)."""
    from teegate.verifiers.sample import SampleVerifier

    verifiers: dict[Tee, Verifier] = {}
    if settings.allow_sample:
        verifiers[Tee.SAMPLE] = SampleVerifier(Tee.SAMPLE)
        verifiers[Tee.SAMPLE_DEVICE] = SampleVerifier(Tee.SAMPLE_DEVICE)
    if settings.verify_tdx or settings.verify_sgx or settings.trust_simulated:
        from teegate.collateral.settings import CollateralSettings, source_from_settings
        from teegate.dcap.anchors import TrustAnchors
        from teegate.dcap.verify import QuoteVerifier
        from teegate.verifiers.dcap import DcapVerifier

        real = None
        if settings.collateral:
            real = source_from_settings(CollateralSettings.from_mapping(settings.collateral))
        elif not settings.trust_simulated:
            from teegate.collateral.pcs import INTEL_PCS_URL

            real = source_from_settings(CollateralSettings(pccs_url=INTEL_PCS_URL))
        if settings.trust_simulated:
            from teegate.sim import SimPlatform
            from teegate.verifiers.sim import sim_verifiers

            assert settings.sim_platform is not None
            simulated = sim_verifiers(
                SimPlatform.load(settings.sim_platform),
                real_source=real,
                collateral_from_source=settings.sim_collateral == "source",
                collateral_ttl=settings.collateral_ttl_seconds,
            )
            verifiers.update(simulated)
        else:
            assert real is not None
            quote_verifier = QuoteVerifier(TrustAnchors.intel())
            for tee, enabled in ((Tee.TDX, settings.verify_tdx), (Tee.SGX, settings.verify_sgx)):
                if enabled:
                    verifiers[tee] = DcapVerifier(
                        tee, quote_verifier, real, collateral_ttl=settings.collateral_ttl_seconds
                    )
    return VerifierSet(verifiers)


def _load_trusted_keys(paths: tuple[Path, ...]) -> list[ec.EllipticCurvePublicKey]:
    keys: list[ec.EllipticCurvePublicKey] = []
    for path in paths:
        try:
            data = path.read_bytes()[: 1024 * 1024]
        except OSError as exc:
            raise ConfigError(f"cannot read trusted token key {path}: {exc.strerror}") from None
        key: Any
        try:
            key = (
                x509.load_pem_x509_certificate(data).public_key()
                if b"CERTIFICATE" in data
                else (serialization.load_pem_public_key(data))
            )
        except (ValueError, x509.InvalidVersion) as exc:
            raise ConfigError(f"trusted token key {path}: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"trusted token key {path} must be an EC P-256 key (ES256 tokens)")
        keys.append(key)
    return keys


@dataclass
class KbsRuntime:
    """Everything a request needs; built once by :func:`build_app`."""

    settings: KbsSettings
    sealer: SessionSealer
    signer: TokenSigner
    token_verifier: TokenVerifier
    verifiers: VerifierSet
    metrics: KbsMetrics
    clock: Callable[[], float] = time.time
    ledger: ChallengeLedger = field(default_factory=ChallengeLedger)
    storage: Storage | None = None
    policy: PolicyEngine | None = None
    audit: AuditLog = field(default_factory=AuditLog)
    admin_auth: AdminAuthConfig = field(default_factory=AdminAuthConfig)
    admin_context: AdminContext | None = None
    admin_routes: list[BaseRoute] = field(default_factory=list)

    # -- helpers --

    def _require(self) -> tuple[Storage, PolicyEngine]:
        if self.storage is None or self.policy is None:
            raise KbsError("ServiceUnavailable", "the KBS is starting; storage is not open yet")
        return self.storage, self.policy

    async def _read_body(self, request: HttpRequest, variant: str) -> bytes:
        limit = self.settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 12:
                raise KbsError(variant, "bad Content-Length header")
            if int(length) > limit:
                raise KbsError(
                    "PayloadTooLarge", f"request body of {length} bytes exceeds the {limit}-byte limit"
                )
        # The ASGI messages read directly (what Request.stream() does, without its generator).
        chunks: list[bytes] = []
        total = 0
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise KbsError("PayloadTooLarge", f"request body exceeds the {limit}-byte limit")
                chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- protocol --

    async def auth(self, request: HttpRequest) -> Response:
        """``POST /kbs/v0/auth``."""
        try:
            body = await self._read_body(request, "AttestationError")
            req = Request.parse(parse_json(body, "Request"))
            if not self.verifiers.accepts(req.tee):
                self.verifiers.get(req.tee)  # raises the clear error
            hash_algorithm = _select_hash(req)
        except KbsError:
            raise
        except EvidenceError as exc:
            raise KbsError(
                "AttestationError", f"Attestation error: RCAR handshake Auth failed: {exc}"
            ) from None
        extra: Any = (
            ""
            if hash_algorithm is HashAlgorithm.SHA384
            else {"selected-hash-algorithm": hash_algorithm.value}
        )
        challenge = Challenge(nonce=make_nonce(), extra_params=extra)
        state = SessionState.new(
            req.tee,
            challenge.nonce,
            hash_algorithm,
            now=self.clock(),
            timeout=self.settings.session_timeout_seconds,
        )
        response = Response(orjson.dumps(challenge.to_json()), media_type=_JSON)
        response.headers["set-cookie"] = state.set_cookie_header(
            self.sealer.seal(state), secure=self.settings.tls
        )
        return response

    async def attest(self, request: HttpRequest) -> Response:
        """``POST /kbs/v0/attest``."""
        now = self.clock()
        tee_name = "unknown"
        try:
            state = self.sealer.open(request.cookies.get(SESSION_COOKIE), now=now)
            tee_name = state.tee.value
            body = await self._read_body(request, "AttestationError")
            attestation = Attestation.parse(parse_json(body, "Attestation"))
            if state.claims is not None:
                # Trustee returns the session's token again without re-verifying.
                token = self.signer.sign(state.claims)
                return self._token_response(token, state, self.sealer.seal(state))
            if not hmac.compare_digest(attestation.nonce.encode(), state.nonce.encode()):
                raise EvidenceError(
                    "the nonce in the handshake session is different from the client side in KBS protocol's "
                    "Attestation message"
                )
            shared = self.storage.challenges if self.storage is not None else None
            if not self.ledger.consume(state.id, state.expires_at, now=now) or (
                shared is not None and not await shared.consume(state.id, state.expires_at, now=now)
            ):
                raise EvidenceError(
                    "this challenge was already used for an attestation; call /kbs/v0/auth again"
                )
            claims, appraisal = await self._appraise(state, attestation, now)
            status = appraisal.status
            # One serialisation of the claims serves the token payload, the sealed session and
            # the audit digest.
            claims_json = canonical_claims(claims)
            token = self.signer.sign_json(claims_json)
            attested = state.with_claims(claims, claims_json)
            try:
                cookie: str | None = self.sealer.seal(attested)
            except SessionError as exc:  # claims too large for a cookie: the token still works
                _log.warning("attested session not sealed into the cookie: %s", exc)
                cookie = None
        except KbsError:
            self.metrics.attestations.labels(tee_name, "refused").inc()
            raise
        except CollateralUnavailable as exc:
            self.metrics.attestations.labels(tee_name, "unavailable").inc()
            _log.warning("attestation: dependency unavailable (%s): %s", tee_name, exc)
            raise KbsError(
                "ServiceUnavailable", f"collateral or storage unavailable, retry later: {_redact_urls(exc)}"
            ) from None
        except (EvidenceError, PolicyDenied) as exc:
            self.metrics.attestations.labels(tee_name, "refused").inc()
            self.audit.record("attestation", tee=tee_name, verdict="refused", reason=str(exc))
            raise KbsError(
                "AttestationError", f"Attestation error: RCAR handshake Attest failed: {exc}"
            ) from None
        self.metrics.attestation(tee_name, status)
        # Releases and denials get full audit records; a token issued is one structured line.
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "attestation token issued: %s %s by %s",
                tee_name,
                status,
                appraisal.evaluated_policy_id,
                extra={
                    "event": "attestation",
                    "tee": tee_name,
                    "status": status,
                    "policy_id": appraisal.evaluated_policy_id,
                },
            )
        return self._token_response(token, attested, cookie)

    def _token_response(self, token: str, state: SessionState, cookie: str | None) -> Response:
        response = Response(orjson.dumps({"token": token}), media_type=_JSON)
        if cookie is not None:
            response.headers["set-cookie"] = state.set_cookie_header(cookie, secure=self.settings.tls)
        return response

    async def _appraise(
        self, state: SessionState, attestation: Attestation, now: float
    ) -> tuple[dict[str, Any], Appraisal]:
        """Verify primary and additional evidence, check bindings, run the attestation policy."""
        _, policy = self._require()
        moment = datetime.fromtimestamp(now, UTC)
        additional = attestation.additional_items()  # parsed and checked before any costly work
        for tee in additional:
            self.verifiers.get(tee)
        primary = await self.verifiers.get(state.tee).verify(attestation.primary_evidence, now=moment)
        check_binding(
            primary,
            runtime_data_digest(
                attestation.nonce,
                attestation.tee_pubkey,
                attestation.additional_evidence,
                state.hash_algorithm,
            ),
        )
        init_claims = _init_data_claims(attestation.init_data, primary)
        runtime_claims = attestation.runtime_data_claims()
        policy_ids = [self.settings.attestation_policy_id]
        # The explanation's reasons are not used here (a refusal at the resource is explained by
        # the resource policy from the token's trust vector): skip that extra evaluation.
        appraisal = await policy.appraise(
            state.tee.value,
            primary.claims,
            policy_ids=policy_ids,
            init_data_claims=init_claims,
            runtime_data_claims=runtime_claims,
            explain=False,
        )
        submods: dict[str, dict[str, Any]] = {f"{appraisal.tee_class}0": appraisal.ear_submod()}
        counters = {appraisal.tee_class: 1}
        if additional:
            device_digest = device_binding_digest(
                attestation.nonce, attestation.tee_pubkey, state.hash_algorithm
            )
            device_runtime = {"nonce": attestation.nonce, "tee-pubkey": attestation.tee_pubkey.to_jwk()}
        for tee, evidence in additional.items():
            verified = await self.verifiers.get(tee).verify(evidence, now=moment)
            check_binding(verified, device_digest)
            extra = await policy.appraise(
                tee.value,
                verified.claims,
                policy_ids=policy_ids,
                runtime_data_claims=device_runtime,
                explain=False,
            )
            index = counters.get(extra.tee_class, 0)
            counters[extra.tee_class] = index + 1
            submods[f"{extra.tee_class}{index}"] = extra.ear_submod()
        claims = ear_claims(submods=submods, now=int(now), ttl_seconds=self.settings.token_ttl_seconds)
        return claims, appraisal

    async def resource(self, request: HttpRequest) -> Response:
        """``GET /kbs/v0/resource/{repo}/{type}/{tag}``."""
        storage, policy = self._require()
        raw_path = request.path_params.get("path", "")
        path = _resource_path(raw_path)
        if path is None:
            self.metrics.denials.labels("path").inc()
            raise KbsError(
                "InvalidRequestPath",
                f"Request path resource/{raw_path[:MAX_RESOURCE_PATH_CHARS]!r} is invalid: need exactly "
                "repo/type/tag, each matching [A-Za-z0-9_-][A-Za-z0-9_.-]*",
            )
        now = self.clock()
        claims, digest = self._claims(request, now)
        decision = await policy.resource_allowed(claims, path)
        tee = _primary_tee(claims)
        if not decision.allowed:
            self.metrics.denials.labels("policy").inc()
            self.audit.record(
                "denial",
                tee=tee,
                resource_path=str(path),
                verdict="denied",
                policy_id=decision.policy_id,
                reason=decision.reason,
                claims=claims,
                claims_digest_hex=digest,
                trust_vector=_primary_vector(claims),
                reasons=decision.reasons,
            )
            raise KbsError("PolicyDeny", f"Access denied by policy: {decision.reason}")
        try:
            tee_key = extract_tee_pubkey(claims)
            data = await storage.resources.get(path)
            jwe = encrypt(data, tee_key, allow_rsa1_5=self.settings.insecure_allow_rsa1_5)
        except ResourceNotFound:
            self.metrics.denials.labels("missing").inc()
            self.audit.record(
                "denial",
                tee=tee,
                resource_path=str(path),
                verdict="missing",
                policy_id=decision.policy_id,
                reason="resource not found",
                claims=claims,
                claims_digest_hex=digest,
            )
            raise KbsError(
                "PluginInternalError", f"Plugin internal error: resource {path} not found"
            ) from None
        except TokenError as exc:
            raise KbsError("TokenVerifierError", f"Token Verifier error: {exc}") from None
        except EvidenceError as exc:
            raise KbsError("JweError", f"JWE failed: {exc}") from None
        self.metrics.releases.inc()
        self.audit.record(
            "release",
            tee=tee,
            resource_path=str(path),
            verdict="released",
            policy_id=decision.policy_id,
            claims=claims,
            claims_digest_hex=digest,
        )
        return Response(orjson.dumps(jwe), media_type=_JSON)

    def _claims(self, request: HttpRequest, now: float) -> tuple[dict[str, Any], str | None]:
        """Token claims from an attested session cookie (with the digest sealed beside them),
        else a verified Bearer token (digest None: the audit log computes it)."""
        cookie_problem = ""
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            try:
                state = self.sealer.open(cookie, now=now)
            except EvidenceError as exc:
                cookie_problem = f" (session cookie: {exc})"
            else:
                if state.claims is not None:
                    exp = state.claims.get("exp")
                    if isinstance(exp, int) and now <= exp:
                        return state.claims, state.claims_digest
                    cookie_problem = " (session token expired)"
                else:
                    cookie_problem = " (session not attested: call /kbs/v0/attest)"
        authorization = request.headers.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            try:
                return self.token_verifier.verify(credentials.strip(), now=int(now)), None
            except TokenError as exc:
                self.metrics.denials.labels("token").inc()
                raise KbsError("TokenVerifierError", f"Token Verifier error: {exc}") from None
        self.metrics.denials.labels("token").inc()
        raise KbsError("TokenNotFound", f"Attestation Token not found{cookie_problem}")


def _select_hash(req: Request) -> HashAlgorithm:
    """SHA-384 (Trustee's default; SHA-512 for IBM SE) unless the client lists hashes without it."""
    preferred = HashAlgorithm.SHA512 if req.tee is Tee.SE else HashAlgorithm.SHA384
    offered = req.supported_hashes()
    if not offered or preferred.value in offered:
        return preferred
    for candidate in (HashAlgorithm.SHA384, HashAlgorithm.SHA512, HashAlgorithm.SHA256):
        if candidate.value in offered:
            return candidate
    raise EvidenceError(
        f"none of the client's supported-hash-algorithms {offered[:8]} is one of sha384, sha512, sha256"
    )


def _resource_path(raw: str) -> ResourcePath | None:
    if len(raw) > MAX_RESOURCE_PATH_CHARS:
        return None
    parts = raw.split("/")
    if len(parts) != 3 or not all(_SEGMENT_RE.fullmatch(p) for p in parts):
        return None
    try:
        return ResourcePath(parts[0], parts[1], parts[2])
    except EvidenceError:
        return None


def _primary_tee(claims: Mapping[str, Any]) -> str:
    """The TEE name of submodule cpu0 (for logs and the audit record)."""
    submods = claims.get("submods")
    cpu0 = submods.get("cpu0") if isinstance(submods, Mapping) else None
    evidence = cpu0.get("ear.veraison.annotated-evidence") if isinstance(cpu0, Mapping) else None
    if isinstance(evidence, Mapping):
        for name in _TEE_NAMES:
            if name in evidence:
                return name
    return "unknown"


_TEE_NAMES: Final = tuple(tee.value for tee in Tee)


def _primary_vector(claims: Mapping[str, Any]) -> dict[str, int]:
    """The cpu0 trustworthiness vector (EAR names) for the audit record."""
    submods = claims.get("submods")
    cpu0 = submods.get("cpu0") if isinstance(submods, Mapping) else None
    vector = cpu0.get("ear.trustworthiness-vector") if isinstance(cpu0, Mapping) else None
    if not isinstance(vector, Mapping):
        return {}
    return {str(k): v for k, v in vector.items() if isinstance(v, int) and not isinstance(v, bool)}


def _init_data_claims(init_data: InitData | None, primary: VerifiedEvidence) -> Any:
    """The init-data ``data`` table; when the TEE measured init data, its digest must match."""
    if init_data is None:
        return None
    try:
        document = tomllib.loads(init_data.body)
    except tomllib.TOMLDecodeError as exc:
        raise EvidenceError(f"init-data: not TOML: {exc}") from None
    algorithm = _KBS_HASHES.get(str(document.get("algorithm", "")))
    if algorithm is None:
        raise EvidenceError(f"init-data: algorithm {document.get('algorithm')!r} is not sha256/sha384/sha512")
    if primary.init_data is not None:
        digest = algorithm.digest(init_data.body.encode())
        expected = digest[:_MAX_INIT_DIGEST_BYTES].ljust(len(primary.init_data), b"\x00")
        if not hmac.compare_digest(expected, primary.init_data):
            raise EvidenceError("init-data digest does not match the TEE's measured init data (MRCONFIGID)")
    data = document.get("data", {})
    return data if isinstance(data, dict) else {}


# --- the app ------------------------------------------------------------------------------------


async def _http_error(request: HttpRequest, exc: Exception) -> Response:
    """Routing failures (unknown path, wrong method) as Trustee error bodies."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    path = request.url.path[:MAX_RESOURCE_PATH_CHARS]
    if status == 404:
        plugin = path.removeprefix("/kbs/v0/").split("/", 1)[0] if path.startswith("/kbs/v0/") else ""
        if plugin:
            return _error_response(KbsError("PluginNotFound", f"Plugin {plugin[:64]} not found"))
        return _error_response(KbsError("InvalidRequestPath", f"Request path {path} is invalid"))
    if status == 405:
        return _error_response(KbsError("MethodNotAllowed", f"{request.method} is not allowed on {path}"))
    return Response(error_body("HTTPFailed", "request failed"), status_code=status, media_type=_JSON)


def _error_response(exc: KbsError) -> Response:
    return Response(exc.body(), status_code=exc.http_status, media_type=_JSON)


def _endpoint(
    runtime: KbsRuntime, route: str, handler: Callable[[HttpRequest], Awaitable[Response]]
) -> Callable[[HttpRequest], Awaitable[Response]]:
    """Wrap a handler: Trustee error bodies for every failure, metrics per request."""
    metrics = runtime.metrics
    latency = metrics.latency.labels(route)
    # Counter children by (method, status), looked up once each (the route fixes the methods,
    # the handlers a handful of statuses; the bound only guards against surprises).
    counters: dict[tuple[str, int], Any] = {}

    async def wrapped(request: HttpRequest) -> Response:
        started = time.perf_counter()
        try:
            response = await handler(request)
        except KbsError as exc:
            response = _error_response(exc)
        except CollateralUnavailable as exc:
            response = _error_response(
                KbsError("ServiceUnavailable", f"dependency unavailable, retry later: {_redact_urls(exc)}")
            )
        except TeegateError as exc:
            response = _error_response(KbsError("AttestationError", str(exc)))
        except ClientDisconnect:
            # The guest went away mid-body: nobody reads an answer, and it is not our fault.
            response = Response(
                error_body("HTTPFailed", "client disconnected"), status_code=400, media_type=_JSON
            )
        except Exception:
            _log.exception("internal error on %s", route)
            response = Response(error_body("HTTPFailed", "internal error"), status_code=500, media_type=_JSON)
        latency.observe(time.perf_counter() - started)
        key = (request.method, response.status_code)
        counter = counters.get(key)
        if counter is None:
            counter = metrics.requests.labels(route, key[0], str(key[1]))
            if len(counters) < _MAX_COUNTER_CHILDREN:
                counters[key] = counter
        counter.inc()
        return response

    return wrapped


def build_app(
    settings: KbsSettings,
    *,
    clock: Callable[[], float] = time.time,
    verifiers: VerifierSet | None = None,
    extra_routes: list[BaseRoute] | None = None,
) -> Starlette:
    """The KBS as an ASGI app. Keys are loaded or created under ``settings.data_dir`` now."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.token_key_file is not None:
        token_key = load_or_create_token_key(settings.token_key_file, create=False)
    else:
        token_key = load_or_create_token_key(settings.data_dir / TOKEN_KEY_FILENAME)
    x5c = load_cert_chain(settings.token_cert_file, token_key) if settings.token_cert_file else []
    signer = TokenSigner(token_key, x5c=x5c)
    trusted = [token_key.public_key(), *_load_trusted_keys(settings.trusted_token_keys)]
    runtime = KbsRuntime(
        settings=settings,
        sealer=load_session_key(
            settings.session_key_file, generated=settings.data_dir / SESSION_KEY_FILENAME
        ),
        signer=signer,
        token_verifier=TokenVerifier(trusted, insecure_header_jwk=settings.insecure_header_jwk),
        verifiers=verifiers if verifiers is not None else build_verifiers(settings),
        metrics=KbsMetrics(),
        clock=clock,
    )
    if settings.admin is not None:
        runtime.admin_auth = settings.admin
    else:  # ADR 0002: a generated Ed25519 admin key under the data directory
        admin_key = load_or_create_admin_key(admin_key_path(settings.data_dir))
        runtime.admin_auth = AdminAuthConfig.single_key(admin_key.public_key())
    resource_policy_text: str | None = None
    if settings.resource_policy_path is not None:
        try:
            resource_policy_text = settings.resource_policy_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read resource policy {settings.resource_policy_path}: {exc}") from None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        storage = await open_storage(settings.storage)
        try:
            engine = PolicyEngine(
                storage.policies,
                storage.reference_values,
                dev=settings.dev,
                vm=PolicyVm(settings.policy_vm),
                refresh_seconds=settings.policy_refresh_seconds,
            )
            if resource_policy_text is not None:
                await engine.set_resource_policy(resource_policy_text)
            runtime.storage = storage
            runtime.policy = engine
            _mount_admin(app, runtime, storage, engine)
            del engine
            yield
        finally:
            runtime.storage = None
            runtime.policy = None
            _unmount_admin(app, runtime)
            await storage.close()

    async def healthz(request: HttpRequest) -> Response:
        ready = runtime.storage is not None
        return Response(
            json.dumps({"status": "ok" if ready else "starting"}),
            status_code=200 if ready else 503,
            media_type=_JSON,
        )

    async def metrics(request: HttpRequest) -> Response:
        return Response(runtime.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def openapi(request: HttpRequest) -> Response:
        return Response(json.dumps(openapi_document()), media_type=_JSON)

    auth = _endpoint(runtime, "auth", runtime.auth)
    attest = _endpoint(runtime, "attest", runtime.attest)
    resource = _endpoint(runtime, "resource", runtime.resource)
    routes: list[BaseRoute] = [
        Route("/kbs/v0/auth", auth, methods=["POST"]),
        Route("/kbs/v0/attest", attest, methods=["POST"]),
        Route(_RESOURCE_PREFIX + "{path:path}", resource, methods=["GET"]),
        Route("/kbs/v0/openapi.json", openapi, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *(extra_routes or []),
    ]
    app = KbsApp(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.endpoints = {"auth": auth, "attest": attest, "resource": resource}
    app.state.kbs = runtime
    return app


_RESOURCE_PREFIX: Final = "/kbs/v0/resource/"
_HOT_POST: Final = {"/kbs/v0/auth": "auth", "/kbs/v0/attest": "attest"}


class KbsApp(Starlette):
    """Starlette, with the three protocol requests handed straight to their endpoints.

    ``POST /kbs/v0/auth``, ``POST /kbs/v0/attest`` and ``GET /kbs/v0/resource/<path>`` skip the
    middleware stack and the route scan (≈ 20 µs a request, 5 % of a handshake); the endpoints
    are the routes' own, which turn every failure into a Trustee error body already. Anything else
    (other methods, a ``root_path``, paths the resource route would not match) goes through
    Starlette as before.
    """

    #: Route name → endpoint (the same callables the routes hold).
    endpoints: dict[str, Callable[[HttpRequest], Awaitable[Response]]]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            name: str | None = None
            if method == "POST":
                name = _HOT_POST.get(path)
            elif method == "GET" and path.startswith(_RESOURCE_PREFIX) and "\n" not in path:
                name = "resource"  # Starlette's {path:path} matches any rest without a newline
                scope["path_params"] = {"path": path[len(_RESOURCE_PREFIX) :]}
            if name is not None:
                scope["app"] = self
                response = await self.endpoints[name](HttpRequest(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _mount_admin(app: Starlette, runtime: KbsRuntime, storage: Storage, engine: PolicyEngine) -> None:
    """Add the admin API routes (:mod:`teegate.kbs.admin_api`) once storage and policy exist."""
    runtime.admin_context = AdminContext(
        storage=storage, admin_auth=runtime.admin_auth, policy=engine, audit=runtime.audit
    )
    runtime.admin_routes = admin_routes(runtime.admin_context)
    app.router.routes.extend(runtime.admin_routes)


def _unmount_admin(app: Starlette, runtime: KbsRuntime) -> None:
    """Remove the admin routes (and with them the last references to the storage and engine)."""
    mounted = {id(route) for route in runtime.admin_routes}
    app.router.routes[:] = [route for route in app.router.routes if id(route) not in mounted]
    runtime.admin_routes = []
    runtime.admin_context = None


# --- OpenAPI --------------------------------------------------------------------------------------


def _error_ref() -> dict[str, Any]:
    return {
        "description": "Trustee error body",
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\",;)]+", re.IGNORECASE)


def _redact_urls(exc: BaseException) -> str:
    """The error text for a client: internal addresses (PCCS, PostgreSQL, Vault URLs) removed.

    The full text goes to the server log only.
    """
    return _URL.sub("<internal service>", str(exc))


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of the whole KBS HTTP API (protocol, admin, operations)."""
    err = _error_ref()
    admin_security: list[dict[str, list[str]]] = [{"adminBearer": []}]
    path_params = [
        {
            "name": n,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]*$"},
        }
        for n in ("repository", "type", "tag")
    ]
    json_body = {"required": True, "content": {_JSON: {"schema": {"type": "object"}}}}
    ok_empty = {"description": "done"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "teegate Key Broker Service",
            "version": "0.4.0",
            "description": "Trustee KBS protocol 0.4.0 (RCAR) plus the admin API. All errors are "
            '{"type": "https://github.com/confidential-containers/kbs/errors/<Variant>", "detail": "..."}; '
            "401 for everything but InvalidRequestPath/PluginNotFound (404), oversized bodies (413) and "
            "unavailable dependencies (503).",
        },
        "components": {
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
                "attestationToken": {"type": "http", "scheme": "bearer", "bearerFormat": "EAR JWT (ES256)"},
                "adminBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT (EdDSA/ES256/RS256)",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["type", "detail"],
                    "properties": {"type": {"type": "string", "format": "uri"}, "detail": {"type": "string"}},
                },
                "Request": {
                    "type": "object",
                    "required": ["version", "tee", "extra-params"],
                    "properties": {
                        "version": {"const": "0.4.0"},
                        "tee": {"enum": [t.value for t in Tee]},
                        "extra-params": {},
                    },
                },
                "Challenge": {
                    "type": "object",
                    "required": ["nonce", "extra-params"],
                    "properties": {"nonce": {"type": "string"}, "extra-params": {}},
                },
                "TeePubKey": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["kty", "crv", "alg", "x", "y"],
                            "properties": {
                                "kty": {"const": "EC"},
                                "crv": {"enum": ["P-256", "P-521"]},
                                "alg": {"const": "ECDH-ES+A256KW"},
                                "x": {"type": "string"},
                                "y": {"type": "string"},
                            },
                        },
                        {
                            "type": "object",
                            "required": ["kty", "alg", "n", "e"],
                            "properties": {
                                "kty": {"const": "RSA"},
                                "alg": {"enum": ["RSA-OAEP-256", "RSA1_5"]},
                                "n": {"type": "string"},
                                "e": {"type": "string"},
                            },
                        },
                    ]
                },
                "Attestation": {
                    "type": "object",
                    "required": ["runtime-data", "tee-evidence"],
                    "properties": {
                        "init-data": {
                            "type": "object",
                            "properties": {"format": {"const": "toml"}, "body": {"type": "string"}},
                        },
                        "runtime-data": {
                            "type": "object",
                            "required": ["nonce", "tee-pubkey"],
                            "properties": {
                                "nonce": {"type": "string"},
                                "tee-pubkey": {"$ref": "#/components/schemas/TeePubKey"},
                            },
                        },
                        "tee-evidence": {
                            "type": "object",
                            "required": ["primary_evidence"],
                            "properties": {
                                "primary_evidence": {},
                                "additional_evidence": {
                                    "type": "string",
                                    "description": "'' or JSON map TEE → evidence",
                                },
                            },
                        },
                    },
                },
                "Jwe": {
                    "type": "object",
                    "required": ["protected", "encrypted_key", "iv", "ciphertext", "tag"],
                    "properties": {
                        k: {"type": "string"}
                        for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag")
                    },
                },
            },
        },
        "paths": {
            "/kbs/v0/auth": {
                "post": {
                    "summary": "Start a handshake (Request → Challenge, sets kbs-session-id)",
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Request"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "Challenge",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Challenge"}}},
                        },
                        "401": err,
                        "413": err,
                    },
                }
            },
            "/kbs/v0/attest": {
                "post": {
                    "summary": "Send evidence (Attestation → EAR token)",
                    "security": [{"session": []}],
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Attestation"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "token",
                            "content": {
                                _JSON: {
                                    "schema": {"type": "object", "properties": {"token": {"type": "string"}}}
                                }
                            },
                        },
                        "401": err,
                        "413": err,
                        "503": err,
                    },
                }
            },
            "/kbs/v0/resource/{repository}/{type}/{tag}": {
                "parameters": path_params,
                "get": {
                    "summary": "Fetch a resource, encrypted to the TEE key (JWE)",
                    "security": [{"session": []}, {"attestationToken": []}],
                    "responses": {
                        "200": {
                            "description": "JWE",
                            "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Jwe"}}},
                        },
                        "401": err,
                        "404": err,
                    },
                },
                "post": {
                    "summary": "Set a resource (admin; raw bytes)",
                    "security": admin_security,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "responses": {"200": ok_empty, "401": err, "403": err, "413": err},
                },
                "delete": {
                    "summary": "Delete a resource (admin)",
                    "security": admin_security,
                    "responses": {"200": ok_empty, "401": err, "403": err},
                },
            },
            "/kbs/v0/resource": {
                "get": {
                    "summary": "List resources (admin): JSON array of repo/type/tag",
                    "security": admin_security,
                    "responses": {"200": {"description": "paths"}, "401": err, "403": err},
                }
            },
            "/kbs/v0/resource-policy": {
                "post": {
                    "summary": "Set the resource policy (admin; {policy: base64url Rego})",
                    "security": admin_security,
                    "requestBody": json_body,
                    "responses": {"200": ok_empty, "400": err, "401": err, "403": err, "413": err},
                },
                "get": {
                    "summary": "List resource policy ids (admin)",
                    "security": admin_security,
                    "responses": {"200": {"description": "ids"}, "401": err, "403": err},
                },
            },
            "/kbs/v0/attestation-policy": {
                "post": {
                    "summary": "Set an attestation policy (admin; {type, policy_id, policy: base64url Rego})",
                    "security": admin_security,
                    "requestBody": json_body,
                    "responses": {"200": ok_empty, "400": err, "401": err, "403": err},
                },
                "get": {
                    "summary": "List attestation policy ids, stored and built-in (admin)",
                    "security": admin_security,
                    "responses": {"200": {"description": "ids"}, "401": err, "403": err},
                },
            },
            "/kbs/v0/attestation-policy/{policy_id}": {
                "parameters": [
                    {"name": "policy_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "summary": "Get an attestation policy's Rego text (admin)",
                    "security": admin_security,
                    "responses": {"200": {"description": "Rego"}, "400": err, "401": err, "403": err},
                },
            },
            "/kbs/v0/admin/denials": {
                "get": {
                    "summary": "Recent denials with the policy, claims and trust vector behind each (admin)",
                    "security": admin_security,
                    "parameters": [
                        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
                    ],
                    "responses": {
                        "200": {"description": "{denials: [...]}"},
                        "400": err,
                        "401": err,
                        "403": err,
                    },
                },
            },
            "/kbs/v0/reference-value": {
                "post": {
                    "summary": "Register reference values (admin; RVPS message)",
                    "security": admin_security,
                    "requestBody": json_body,
                    "responses": {"200": ok_empty, "400": err, "401": err, "403": err, "413": err},
                }
            },
            "/kbs/v0/reference-value/{name}": {
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "summary": "Get a reference value (admin)",
                    "security": admin_security,
                    "responses": {"200": {"description": "value"}, "401": err, "403": err, "404": err},
                },
            },
            "/kbs/v0/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness/readiness",
                    "responses": {"200": {"description": "ok"}, "503": {"description": "starting"}},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition"}},
                }
            },
        },
    }

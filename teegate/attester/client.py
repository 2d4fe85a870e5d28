"""KBS client, protocol 0.4.0 (RCAR): ``/auth`` → ``/attest`` → ``GET /resource/…`` → JWE.

Behaviour an operator can rely on:

* every attempt is bounded by the remaining deadline; failures that can heal (KBS down or 5xx,
  quote service down) are retried with exponential backoff and jitter until the attempts or the
  deadline run out; a refusal, a missing resource, a broken KBS answer or an untrusted TLS
  certificate stop at once;
* the token is reused until it expires; a 401 on a resource read with a reused token triggers
  one new handshake;
* every response body is read with a size bound; nothing from the KBS is trusted before it is
  parsed, and the resource is accepted only if it decrypts with this process's TEE key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import random
import ssl
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import httpx

from teegate.attester.errors import (
    AttestationRefused,
    AttesterError,
    KbsProtocolError,
    KbsTlsError,
    KbsUnreachable,
    ResourceMissing,
)
from teegate.attester.keys import MAX_JWE_BYTES, KeyAlgorithm, TeeKey
from teegate.attester.providers.base import EvidenceProvider
from teegate.attester.uri import ResourceRef
from teegate.errors import ConfigError, TeegateError
from teegate.files import read_bounded
from teegate.kbs.protocol import (
    MAX_INIT_DATA_BYTES,
    MAX_NONCE_CHARS,
    PROTOCOL_VERSION,
    Challenge,
    HashAlgorithm,
    parse_json,
    runtime_data_digest,
)
from teegate.net import is_loopback

__all__ = [
    "MAX_RESPONSE_BYTES",
    "MAX_TOKEN_BYTES",
    "InitDataFile",
    "KbsClient",
    "RetryPolicy",
    "load_initdata",
]

_log = logging.getLogger("teegate.attester")
_T = TypeVar("_T")

#: Bound on /auth and /attest bodies and on error bodies.
MAX_RESPONSE_BYTES: Final = 1024 * 1024
#: Bound on the attestation token (multi-GPU EAR tokens reach ~170 KiB).
MAX_TOKEN_BYTES: Final = 512 * 1024
_SESSION_COOKIE: Final = "kbs-session-id"
#: Session cookies may be sealed state (teegate seals handshake state into the cookie).
_MAX_COOKIE_CHARS: Final = 4096
#: Trustee's default session lifetime; a token without ``exp`` is reused no longer than this.
_SESSION_SECONDS: Final = 300.0
#: Stop reusing a token this long before it expires.
_EXPIRY_MARGIN: Final = 10.0
_MAX_DETAIL_CHARS: Final = 400
_USER_AGENT: Final = "teegate-attester/0.1 (kbs-protocol 0.4.0)"
_INITDATA_ALGORITHMS: Final = {"sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts and total deadline; delays double from ``initial_delay`` up to ``max_delay``, jittered."""

    attempts: int = 5
    deadline: float = 120.0
    initial_delay: float = 1.0
    max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("--retries must be at least 1")
        if self.deadline <= 0 or self.initial_delay < 0 or self.max_delay < self.initial_delay:
            raise ConfigError("retry deadline and delays must be positive, max_delay >= initial_delay")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Sleep after failed attempt ``attempt`` (1-based): exponential, 50-100% jitter."""
        base = min(self.max_delay, self.initial_delay * (2 ** (attempt - 1)))
        return float(base * (0.5 + rng.random() / 2))


@dataclass(frozen=True, slots=True)
class InitDataFile:
    """``--initdata``: the TOML text sent as ``init-data`` and its digest (bound to MRCONFIGID)."""

    body: str
    digest: bytes


def load_initdata(path: Path) -> InitDataFile:
    """Read an init-data TOML file (Trustee's ``{version, algorithm, data}``) and digest its raw bytes."""
    raw = read_bounded(path, MAX_INIT_DATA_BYTES, "--initdata", ConfigError)
    try:
        text = raw.decode("utf-8")
        document = tomllib.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--initdata {path} is not TOML: {exc}") from None
    algorithm = document.get("algorithm", "sha384")
    if algorithm not in _INITDATA_ALGORITHMS:
        raise ConfigError(f"--initdata algorithm {algorithm!r}; use sha256, sha384 or sha512")
    return InitDataFile(body=text, digest=hashlib.new(_INITDATA_ALGORITHMS[algorithm], raw).digest())


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _jwt_times(token: str) -> tuple[float | None, float | None]:
    """(nbf, exp) of a JWT, read without verifying (only to decide reuse; the KBS verifies)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None, None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None, None
    if not isinstance(claims, dict):
        return None, None
    nbf, exp = claims.get("nbf"), claims.get("exp")
    return (
        float(nbf) if isinstance(nbf, int | float) else None,
        float(exp) if isinstance(exp, int | float) else None,
    )


@dataclass(slots=True)
class _Session:
    token: str
    cookie: str | None
    reuse_until: float  # wall clock


def _detail(body: bytes) -> tuple[str | None, str]:
    """(Trustee error variant, detail) from an error body, printable and bounded."""
    variant: str | None = None
    detail = ""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict) and isinstance(document.get("detail"), str):
        detail = document["detail"]
        if isinstance(document.get("type"), str):
            variant = document["type"].rsplit("/", 1)[-1][:64]
    else:
        detail = body.decode("utf-8", "replace")
    detail = "".join(ch if ch.isprintable() else " " for ch in detail).strip()
    if len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[:_MAX_DETAIL_CHARS] + "…"
    return variant, detail or "(no detail)"


class KbsClient:
    """One guest's conversation with one KBS."""

    def __init__(
        self,
        url: str,
        provider: EvidenceProvider,
        *,
        key_algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256,
        cert_file: Path | None = None,
        initdata: InitDataFile | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 60.0,
        insecure_http: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"KBS URL {url!r} must be http(s)://host[:port]")
        if parts.scheme == "http" and not insecure_http and not is_loopback(parts.hostname):
            raise ConfigError(
                f"KBS URL {url!r} is plain HTTP off loopback: the KBS would not be authenticated; "
                "use https:// (with --cert-file) or pass --insecure-http"
            )
        if parts.scheme == "http":
            _log.warning("insecure: plain HTTP to %s, the KBS is not authenticated", parts.netloc)
        if cert_file is not None and parts.scheme != "https":
            raise ConfigError("--cert-file needs an https:// KBS URL")
        verify: ssl.SSLContext | bool = True
        if parts.scheme == "http":
            # No TLS is spoken (and redirects are refused), so skip loading the system CA
            # store (~90 ms of CPU): a context that verifies but trusts nothing.
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cert_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(cert_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"--cert-file {cert_file}: not a readable PEM CA certificate ({exc})"
                ) from None
        self._base = url.rstrip("/") + "/kbs/v0"
        self._provider = provider
        self._key_algorithm = key_algorithm
        self._initdata = initdata
        self._retry = retry or RetryPolicy()
        self._timeout = request_timeout
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._key: TeeKey | None = None
        self._session: _Session | None = None
        self._http = httpx.Client(verify=verify, follow_redirects=False, headers={"User-Agent": _USER_AGENT})

    def close(self) -> None:
        """Close connections."""
        self._http.close()

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- public operations -------------------------------------------------------------------

    def attest(self) -> str:
        """Run a fresh handshake; return the attestation token."""
        return self._retrying("attestation", lambda timeout: self._handshake(timeout).token)

    def get_resource(self, ref: ResourceRef) -> bytes:
        """Attest (or reuse a live token) and fetch ``ref``, decrypted with the TEE key."""
        return self._retrying(f"resource {ref.path}", lambda timeout: self._get_resource_once(ref, timeout))

    # --- retry loop ----------------------------------------------------------------------------

    def _retrying(self, what: str, operation: Callable[[float], _T]) -> _T:
        start = self._clock()
        deadline = start + self._retry.deadline
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            try:
                return operation(max(0.5, min(self._timeout, remaining)))
            except AttesterError as exc:
                elapsed = self._clock() - start
                if not exc.retryable:
                    raise
                remaining = deadline - self._clock()
                delay = self._retry.delay(attempt, self._rng)
                if attempt >= self._retry.attempts or remaining <= 0.5:
                    exc.add_note(f"gave up on {what} after {attempt} attempt(s) in {elapsed:.1f}s")
                    raise
                delay = min(delay, remaining - 0.5)
                _log.warning(
                    "attempt %d/%d for %s failed: %s: %s; retrying in %.1fs",
                    attempt,
                    self._retry.attempts,
                    what,
                    exc.label,
                    exc,
                    delay,
                )
                self._sleep(delay)

    # --- HTTP ----------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        timeout: float,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, httpx.Headers, bytes]:
        url = f"{self._base}/{path}"
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        send_headers = dict(headers or {})
        if content is not None:
            send_headers["Content-Type"] = "application/json"
        try:
            with self._http.stream(
                method, url, content=content, headers=send_headers, timeout=timeout
            ) as response:
                declared = response.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    raise KbsProtocolError(
                        f"{method} {path}: KBS response of {declared} bytes exceeds {limit}"
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise KbsProtocolError(f"{method} {path}: KBS response exceeds {limit} bytes")
                    chunks.append(chunk)
                return response.status_code, response.headers, b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise KbsUnreachable(
                f"{method} {url}: no answer within {timeout:.1f}s ({type(exc).__name__})"
            ) from None
        except httpx.TransportError as exc:
            tls = _ssl_error(exc)
            if isinstance(tls, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                reason = tls.verify_message if isinstance(tls, ssl.SSLCertVerificationError) else str(exc)
                raise KbsTlsError(
                    f"{url}: the KBS certificate does not verify against the trusted CA ({reason})"
                ) from None
            raise KbsUnreachable(f"{method} {url}: {exc or type(exc).__name__}") from None

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        try:
            value = parse_json(data, what)
        except TeegateError as exc:
            raise KbsProtocolError(f"KBS {what} is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise KbsProtocolError(f"KBS {what} is not a JSON object")
        return value

    @staticmethod
    def _failure(status: int, body: bytes, stage: str) -> AttesterError:
        variant, detail = _detail(body)
        if status >= 500 or status == 429:
            return KbsUnreachable(f"KBS answered {status} to {stage}: {detail}")
        if status in (400, 401, 403):
            return AttestationRefused(stage, detail, variant)
        # Redirects, 404 on the protocol endpoints, anything else: not a KBS speaking 0.4.0 here.
        return KbsProtocolError(f"KBS answered HTTP {status} to {stage} (is --url a KBS?): {detail}")

    # --- protocol ------------------------------------------------------------------------------

    def _handshake(self, timeout: float) -> _Session:
        self._session = None
        status, headers, body = self._send(
            "POST",
            "auth",
            timeout,
            body={
                "version": PROTOCOL_VERSION,
                "tee": self._provider.tee,
                "extra-params": {"supported-hash-algorithms": [h.value for h in HashAlgorithm]},
            },
        )
        if status != 200:
            raise self._failure(status, body, "the handshake (/auth)")
        try:
            challenge = Challenge.parse(self._json(body, "challenge"))
            algorithm = challenge.hash_algorithm()
        except TeegateError as exc:
            raise KbsProtocolError(f"KBS challenge is malformed: {exc}") from None
        if not 0 < len(challenge.nonce) <= MAX_NONCE_CHARS:
            raise KbsProtocolError(f"KBS nonce length {len(challenge.nonce)} outside 1..{MAX_NONCE_CHARS}")
        cookie = self._cookie(headers)

        # A fresh TEE key per handshake: the token binds exactly this key.
        self._key = key = TeeKey(self._key_algorithm)
        digest = runtime_data_digest(challenge.nonce, key.public, "", algorithm)
        init_digest = self._initdata.digest if self._initdata else None
        evidence = self._provider.evidence(digest, init_data_digest=init_digest)
        attestation: dict[str, Any] = {
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": key.public.to_jwk()},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        if self._initdata is not None:
            attestation["init-data"] = {"format": "toml", "body": self._initdata.body}
        cookie_header = {"Cookie": f"{_SESSION_COOKIE}={cookie}"} if cookie else {}
        status, headers, body = self._send(
            "POST", "attest", timeout, body=attestation, headers=cookie_header, limit=MAX_TOKEN_BYTES + 1024
        )
        if status != 200:
            raise self._failure(status, body, "the evidence (/attest)")
        token = self._json(body, "attestation response").get("token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise KbsProtocolError("KBS attestation response has no usable 'token' string")
        nbf, exp = _jwt_times(token)
        now = time.time()
        reuse_until = now + _SESSION_SECONDS
        if exp is not None:
            reuse_until = min(reuse_until, exp - _EXPIRY_MARGIN)
        if nbf is not None and nbf > now + _EXPIRY_MARGIN:
            reuse_until = now  # not yet valid by our clock: do not reuse
        self._session = _Session(token=token, cookie=self._cookie(headers) or cookie, reuse_until=reuse_until)
        return self._session

    @staticmethod
    def _cookie(headers: httpx.Headers) -> str | None:
        for line in headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            if name.strip() == _SESSION_COOKIE:
                value = rest.split(";", 1)[0].strip()
                if value and len(value) <= _MAX_COOKIE_CHARS and value.isascii() and value.isprintable():
                    return value
                raise KbsProtocolError("KBS session cookie is malformed")
        return None

    def _live_session(self) -> _Session | None:
        if self._session is not None and time.time() < self._session.reuse_until:
            return self._session
        return None

    def _get_resource_once(self, ref: ResourceRef, timeout: float) -> bytes:
        session = self._live_session()
        fresh = session is None
        if session is None:
            session = self._handshake(timeout)
        status, body = self._read_resource(ref, session, timeout)
        if status == 401 and not fresh:
            _log.info("KBS answered 401 to a reused token; new handshake")
            session = self._handshake(timeout)
            status, body = self._read_resource(ref, session, timeout)
        if status == 200:
            assert self._key is not None
            return self._key.decrypt(body)
        _variant, detail = _detail(body)
        if status == 404 or (status == 401 and "not found" in detail.lower()):
            raise ResourceMissing(f"the KBS has no resource {ref.path}: {detail}")
        self._session = None
        raise self._failure(status, body, f"resource {ref.path}")

    def _read_resource(self, ref: ResourceRef, session: _Session, timeout: float) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {session.token}"}
        if session.cookie:
            headers["Cookie"] = f"{_SESSION_COOKIE}={session.cookie}"
        path = f"resource/{ref.path}" + (f"?{ref.query}" if ref.query else "")
        status, _, body = self._send("GET", path, timeout, headers=headers, limit=MAX_JWE_BYTES)
        return status, body

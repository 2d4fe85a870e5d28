"""Admin API authentication: Bearer JWTs from configured identity providers, role → endpoint ACL.

Trustee-compatible (shared/spec/kbs-protocol.md §2.1): ``Authorization: Bearer <JWT>``, the
signature checked against a configured provider's keys (PEM public keys or a JWKS file),
``exp`` and ``role`` required, ``iss``/``aud`` checked when the provider names them, and the
request's path (and, as a teegate extension, its method) matched against the role's regexes.

Safer than Trustee: with no ``[admin]`` table everything is denied (Trustee allows all), only
EdDSA (Ed25519), ES256 (P-256) and RS256 (RSA ≥ 2048) are accepted, and the key type must match
the algorithm. :func:`authorize` is pure: headers, method, path and ``now`` in, an
:class:`AdminIdentity` or a typed error out.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from teegate.errors import ConfigError, TeegateError
from teegate.files import read_bounded, write_private

__all__ = [
    "ALLOWED_ALGORITHMS",
    "DEFAULT_LEEWAY_SECONDS",
    "MAX_ADMIN_TOKEN_BYTES",
    "MAX_JWKS_BYTES",
    "MAX_JWKS_KEYS",
    "AclRule",
    "AdminAccessDenied",
    "AdminAuthConfig",
    "AdminAuthError",
    "AdminAuthMode",
    "AdminIdentity",
    "AdminKeyFileError",
    "AdminPublicKey",
    "AdminUnauthenticated",
    "IdentityProvider",
    "JwksFileProvider",
    "authorize",
    "load_or_create_admin_key",
    "load_private_key",
    "load_public_keys_pem",
    "mint_admin_token",
    "parse_jwks",
    "write_admin_token",
]

#: Largest ``Authorization`` header value (bytes) examined.
MAX_ADMIN_TOKEN_BYTES = 16 * 1024
#: Largest JWKS document read.
MAX_JWKS_BYTES = 256 * 1024
#: Most keys one JWKS may hold.
MAX_JWKS_KEYS = 64
#: Most ACL rules / identity providers in a configuration.
MAX_ACL_RULES = 256
MAX_PROVIDERS = 64
#: Longest ACL regex.
MAX_ACL_REGEX_CHARS = 1024
#: Clock skew tolerated on ``exp`` and ``nbf``.
DEFAULT_LEEWAY_SECONDS = 60
#: Smallest RSA modulus accepted.
MIN_RSA_BITS = 2048

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "ES256", "RS256"})

_PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey
_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class AdminAuthError(TeegateError):
    """Root of admin-auth failures; ``trustee_error`` is Trustee's error variant name."""

    http_status = 401
    trustee_error = "AdminAuthAccess"


class AdminUnauthenticated(AdminAuthError):
    """No token, or a token that is malformed, badly signed, expired or missing claims (401)."""

    http_status = 401


class AdminAccessDenied(AdminAuthError):
    """A valid token whose role may not call this endpoint, or admin access is disabled (403)."""

    http_status = 403


class AdminKeyFileError(ConfigError):
    """A configured key or JWKS file cannot be read or parsed."""


class AdminAuthMode(enum.Enum):
    """Trustee's ``authorization_mode`` values."""

    AUTHENTICATED = "AuthenticatedAuthorization"
    INSECURE_ALLOW_ALL = "InsecureAllowAll"
    DENY_ALL = "DenyAll"


@dataclass(frozen=True, slots=True)
class AdminPublicKey:
    """One verification key; ``kid`` is set for keys from a JWKS."""

    key: _PublicKey
    kid: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.key, rsa.RSAPublicKey) and self.key.key_size < MIN_RSA_BITS:
            raise AdminKeyFileError(f"RSA admin key of {self.key.key_size} bits; at least {MIN_RSA_BITS}")
        if isinstance(self.key, ec.EllipticCurvePublicKey) and not isinstance(self.key.curve, ec.SECP256R1):
            raise AdminKeyFileError(f"EC admin key on {self.key.curve.name}; only P-256 (ES256) is accepted")

    def accepts(self, alg: str) -> bool:
        """Whether this key type is the one ``alg`` requires."""
        if alg == "EdDSA":
            return isinstance(self.key, ed25519.Ed25519PublicKey)
        if alg == "ES256":
            return isinstance(self.key, ec.EllipticCurvePublicKey)
        if alg == "RS256":
            return isinstance(self.key, rsa.RSAPublicKey)
        return False


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    """Keys of one token issuer; ``issuer``/``audience`` are enforced when set."""

    name: str
    keys: tuple[AdminPublicKey, ...]
    issuer: str | None = None
    audience: str | None = None


@dataclass(frozen=True, slots=True)
class AclRule:
    """``role`` may call paths matching ``allowed_endpoints`` with ``methods`` (all when None)."""

    role: str
    allowed_endpoints: re.Pattern[str]
    methods: frozenset[str] | None = None

    @classmethod
    def create(cls, role: str, allowed_endpoints: str, methods: Sequence[str] | None = None) -> AclRule:
        """Validate like Trustee: the regex must start with ``^/kbs`` and end with ``$``."""
        if not role:
            raise ConfigError("admin ACL: role is empty")
        if len(allowed_endpoints) > MAX_ACL_REGEX_CHARS:
            raise ConfigError(f"admin ACL for role {role!r}: regex longer than {MAX_ACL_REGEX_CHARS}")
        if not allowed_endpoints.startswith("^/kbs") or not allowed_endpoints.endswith("$"):
            raise ConfigError(
                f"admin ACL for role {role!r}: allowed_endpoints {allowed_endpoints!r} must start with "
                "'^/kbs' and end with '$'"
            )
        try:
            pattern = re.compile(allowed_endpoints)
        except re.error as exc:
            raise ConfigError(f"admin ACL for role {role!r}: bad regex: {exc}") from None
        method_set = None
        if methods is not None:
            method_set = frozenset(m.upper() for m in methods)
            unknown = method_set - {"GET", "POST", "PUT", "DELETE", "PATCH"}
            if unknown or not method_set:
                raise ConfigError(f"admin ACL for role {role!r}: bad methods {sorted(methods)}")
        return cls(role=role, allowed_endpoints=pattern, methods=method_set)

    def allows(self, role: str, method: str, path: str) -> bool:
        """Whether this rule lets ``role`` call ``method path``."""
        if role != self.role:
            return False
        if self.methods is not None and method.upper() not in self.methods:
            return False
        return self.allowed_endpoints.fullmatch(path) is not None


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    """Who made an authorised admin call."""

    role: str
    subject: str | None
    issuer: str | None
    provider: str
    expires_at: int | None
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class AdminAuthConfig:
    """The whole admin-auth configuration; built once at start."""

    mode: AdminAuthMode = AdminAuthMode.DENY_ALL
    providers: tuple[IdentityProvider, ...] = ()
    acl: tuple[AclRule, ...] = ()
    leeway_seconds: int = DEFAULT_LEEWAY_SECONDS

    def __post_init__(self) -> None:
        if self.mode is AdminAuthMode.AUTHENTICATED and not self.providers:
            raise ConfigError("admin: AuthenticatedAuthorization needs at least one identity provider")
        if len(self.providers) > MAX_PROVIDERS or len(self.acl) > MAX_ACL_RULES:
            raise ConfigError("admin: too many identity providers or ACL rules")
        if not 0 <= self.leeway_seconds <= 600:
            raise ConfigError("admin: leeway_seconds must be between 0 and 600")

    @classmethod
    def single_key(cls, key: _PublicKey, *, role: str = "admin", name: str = "generated") -> AdminAuthConfig:
        """One provider with one key; ``role`` may call every ``/kbs/v0/`` endpoint."""
        return cls(
            mode=AdminAuthMode.AUTHENTICATED,
            providers=(IdentityProvider(name=name, keys=(AdminPublicKey(key),)),),
            acl=(AclRule.create(role, "^/kbs/v0/.+$"),),
        )

    @classmethod
    def from_mapping(
        cls, table: Mapping[str, Any] | None, *, base_dir: Path | None = None
    ) -> AdminAuthConfig:
        """Parse Trustee's ``[admin]`` TOML table (see module docstring); absent → deny all.

        Reads the PEM and JWKS files it names (relative paths against ``base_dir``).
        """
        if table is None:
            return cls()
        _known(table, {"authorization_mode", "authentication", "authorization", "leeway_seconds"}, "admin")
        try:
            mode = AdminAuthMode(table.get("authorization_mode", "AuthenticatedAuthorization"))
        except ValueError:
            raise ConfigError(
                f"admin.authorization_mode {table.get('authorization_mode')!r} is not one of "
                f"{[m.value for m in AdminAuthMode]}"
            ) from None
        leeway = table.get("leeway_seconds", DEFAULT_LEEWAY_SECONDS)
        if not isinstance(leeway, int) or isinstance(leeway, bool):
            raise ConfigError("admin.leeway_seconds must be an integer")
        if mode is not AdminAuthMode.AUTHENTICATED:
            return cls(mode=mode, leeway_seconds=leeway)
        authn = _table(table, "authentication", "admin")
        _known(authn, {"bearer_jwt"}, "admin.authentication")
        bearer = _table(authn, "bearer_jwt", "admin.authentication")
        _known(bearer, {"identity_providers"}, "admin.authentication.bearer_jwt")
        providers: list[IdentityProvider] = []
        for index, item in enumerate(_list(bearer, "identity_providers", "admin.authentication.bearer_jwt")):
            providers.append(_provider_from(item, index, base_dir))
        authz = _table(table, "authorization", "admin")
        _known(authz, {"regex_acl"}, "admin.authorization")
        regex_acl = _table(authz, "regex_acl", "admin.authorization")
        _known(regex_acl, {"acls"}, "admin.authorization.regex_acl")
        acl: list[AclRule] = []
        for item in _list(regex_acl, "acls", "admin.authorization.regex_acl"):
            if not isinstance(item, Mapping):
                raise ConfigError("admin.authorization.regex_acl.acls entries must be tables")
            _known(item, {"role", "allowed_endpoints", "methods"}, "admin ACL entry")
            role, regex, methods = item.get("role"), item.get("allowed_endpoints"), item.get("methods")
            if not isinstance(role, str) or not isinstance(regex, str):
                raise ConfigError("admin ACL entry needs string 'role' and 'allowed_endpoints'")
            if methods is not None and (
                not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)
            ):
                raise ConfigError("admin ACL entry 'methods' must be a list of strings")
            acl.append(AclRule.create(role, regex, methods))
        return cls(mode=mode, providers=tuple(providers), acl=tuple(acl), leeway_seconds=leeway)


def _known(table: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(table) - keys)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(keys)}")


def _table(table: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = table.get(key)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.{key} is required and must be a table")
    return value


def _list(table: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = table.get(key)
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{key} is required and must be a list")
    return value


def _resolve(uri: str, base_dir: Path | None) -> Path:
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise ConfigError(
            f"admin identity provider {uri!r}: only local files (path or file://) are supported"
        )
    path = Path(uri).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


def _provider_from(item: Any, index: int, base_dir: Path | None) -> IdentityProvider:
    if not isinstance(item, Mapping):
        raise ConfigError("admin identity providers must be tables")
    _known(item, {"issuer", "audience", "public_key_uri", "jwk_set_uri", "name"}, "admin identity provider")
    issuer, audience = item.get("issuer"), item.get("audience")
    for key, value in (("issuer", issuer), ("audience", audience)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"admin identity provider {index}: {key} must be a string")
    pem_uri, jwks_uri = item.get("public_key_uri"), item.get("jwk_set_uri")
    if (pem_uri is None) == (jwks_uri is None):
        raise ConfigError(f"admin identity provider {index}: set exactly one of public_key_uri, jwk_set_uri")
    uri = pem_uri if pem_uri is not None else jwks_uri
    if not isinstance(uri, str):
        raise ConfigError(f"admin identity provider {index}: key URI must be a string")
    path = _resolve(uri, base_dir)
    data = _read_bounded(path)
    keys = (
        load_public_keys_pem(data, source=str(path))
        if pem_uri is not None
        else parse_jwks(data, source=str(path))
    )
    name = item.get("name") if isinstance(item.get("name"), str) else f"{index}:{path}"
    return IdentityProvider(name=str(name), keys=keys, issuer=issuer, audience=audience)


def _read_bounded(path: Path) -> bytes:
    return read_bounded(path, MAX_JWKS_BYTES, "admin key file", AdminKeyFileError)


def load_public_keys_pem(data: bytes, *, source: str = "PEM") -> tuple[AdminPublicKey, ...]:
    """Every public key (or certificate's key) in a PEM bundle; at least one is required."""
    from cryptography import x509

    keys: list[AdminPublicKey] = []
    for match in re.finditer(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", data, re.S):
        label, pem = match.group(1), match.group(0)
        try:
            if label == b"CERTIFICATE":
                key: Any = x509.load_pem_x509_certificate(pem).public_key()
            elif label == b"PUBLIC KEY":
                key = serialization.load_pem_public_key(pem)
            else:
                raise AdminKeyFileError(f"{source}: PEM block {label.decode()!r} is not a public key")
        except (ValueError, x509.InvalidVersion) as exc:
            raise AdminKeyFileError(f"{source}: cannot parse PEM public key: {exc}") from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise AdminKeyFileError(f"{source}: key type {type(key).__name__} is not Ed25519, P-256 or RSA")
        keys.append(AdminPublicKey(key))
        if len(keys) > MAX_JWKS_KEYS:
            raise AdminKeyFileError(f"{source}: more than {MAX_JWKS_KEYS} keys")
    if not keys:
        raise AdminKeyFileError(f"{source}: no PEM public key found")
    return tuple(keys)


def _b64url(data: str | bytes, what: str) -> bytes:
    if isinstance(data, str):
        try:
            data = data.encode("ascii")
        except UnicodeEncodeError:
            raise AdminUnauthenticated(f"{what} is not base64url") from None
    if not re.fullmatch(rb"[A-Za-z0-9_-]*", data):
        raise AdminUnauthenticated(f"{what} is not base64url (no padding allowed)")
    try:
        return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        raise AdminUnauthenticated(f"{what} is not base64url") from None


def _jwk_int(jwk: Mapping[str, Any], name: str, source: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise AdminKeyFileError(f"{source}: JWK member {name!r} missing")
    try:
        return int.from_bytes(_b64url(value, name), "big")
    except AdminUnauthenticated:
        raise AdminKeyFileError(f"{source}: JWK member {name!r} is not base64url") from None


def parse_jwks(data: bytes, *, source: str = "JWKS") -> tuple[AdminPublicKey, ...]:
    """Parse a JWK Set of OKP/Ed25519, EC/P-256 and RSA public keys (private members refused)."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdminKeyFileError(f"{source}: not JSON") from None
    keys_json = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys_json, list) or not keys_json:
        raise AdminKeyFileError(f"{source}: a JWK Set needs a non-empty 'keys' list")
    if len(keys_json) > MAX_JWKS_KEYS:
        raise AdminKeyFileError(f"{source}: more than {MAX_JWKS_KEYS} keys")
    keys: list[AdminPublicKey] = []
    for jwk in keys_json:
        if not isinstance(jwk, dict):
            raise AdminKeyFileError(f"{source}: JWK entries must be objects")
        if "d" in jwk or "p" in jwk:
            raise AdminKeyFileError(f"{source}: JWK holds a private key; publish public keys only")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AdminKeyFileError(f"{source}: JWK 'kid' must be a string")
        if jwk.get("use") not in (None, "sig"):
            continue
        kty = jwk.get("kty")
        key: _PublicKey
        try:
            if kty == "OKP" and jwk.get("crv") == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(_b64url(str(jwk.get("x", "")), "x"))
            elif kty == "EC" and jwk.get("crv") == "P-256":
                key = ec.EllipticCurvePublicNumbers(
                    _jwk_int(jwk, "x", source), _jwk_int(jwk, "y", source), ec.SECP256R1()
                ).public_key()
            elif kty == "RSA":
                key = rsa.RSAPublicNumbers(
                    _jwk_int(jwk, "e", source), _jwk_int(jwk, "n", source)
                ).public_key()
            else:
                raise AdminKeyFileError(f"{source}: JWK kty={kty!r} crv={jwk.get('crv')!r} is not supported")
        except (ValueError, AdminUnauthenticated) as exc:
            raise AdminKeyFileError(f"{source}: invalid JWK {kid!r}: {exc}") from None
        keys.append(AdminPublicKey(key, kid=kid))
    if not keys:
        raise AdminKeyFileError(f"{source}: no signing keys")
    return tuple(keys)


class JwksFileProvider:
    """An identity provider whose JWKS file is re-read when it changes (key rotation).

    The only impure piece here: :meth:`provider` stats the file, at most once per
    ``check_interval`` seconds of the ``now`` it is given, and re-parses it after a change. A
    rotated file that does not parse keeps the previous keys and the error is recorded.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        check_interval: float = 5.0,
    ) -> None:
        self._path = path
        self._name = name or str(path)
        self._issuer = issuer
        self._audience = audience
        self._interval = check_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self.last_error: str | None = None
        self._current = self._load()

    def _load(self) -> IdentityProvider:
        stat = os.stat(self._path)
        keys = parse_jwks(_read_bounded(self._path), source=str(self._path))
        self._stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        return IdentityProvider(self._name, keys, self._issuer, self._audience)

    def provider(self, now: datetime) -> IdentityProvider:
        """The provider, re-read if the file changed since the last check."""
        instant = now.timestamp()
        with self._lock:
            if instant - self._checked < self._interval:
                return self._current
            self._checked = instant
            try:
                stat = os.stat(self._path)
                if (stat.st_mtime_ns, stat.st_size, stat.st_ino) != self._stamp:
                    self._current = self._load()
                    self.last_error = None
            except (OSError, AdminKeyFileError) as exc:
                self.last_error = str(exc)
            return self._current


def _bearer(headers: Mapping[str, str]) -> str:
    values = [v for k, v in headers.items() if k.lower() == "authorization"]
    if not values:
        raise AdminUnauthenticated("no Authorization header: send 'Authorization: Bearer <admin JWT>'")
    if len(values) > 1:
        raise AdminUnauthenticated("more than one Authorization header")
    value = values[0]
    if len(value) > MAX_ADMIN_TOKEN_BYTES:
        raise AdminUnauthenticated(f"Authorization header longer than {MAX_ADMIN_TOKEN_BYTES} bytes")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AdminUnauthenticated("Authorization header is not 'Bearer <token>'")
    return token.strip()


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuse repeated member names: parsers that keep the first and the last disagree."""
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated member name")
    return result


def _json_part(part: str, what: str) -> dict[str, Any]:
    raw = _b64url(part, what)
    try:
        value = json.loads(raw, object_pairs_hook=_unique_members)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise AdminUnauthenticated(f"token {what} is not JSON (or repeats a member name)") from None
    if not isinstance(value, dict):
        raise AdminUnauthenticated(f"token {what} is not a JSON object")
    return value


def _verify_signature(key: AdminPublicKey, alg: str, signing_input: bytes, signature: bytes) -> bool:
    try:
        if alg == "EdDSA" and isinstance(key.key, ed25519.Ed25519PublicKey):
            key.key.verify(signature, signing_input)
            return True
        if alg == "ES256" and isinstance(key.key, ec.EllipticCurvePublicKey):
            if len(signature) != 64:
                return False
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if alg == "RS256" and isinstance(key.key, rsa.RSAPublicKey):
            key.key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


def _numeric(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdminUnauthenticated(f"token claim {name!r} must be a number (seconds since the epoch)")
    return int(value)


def _audience_ok(claim: Any, wanted: str) -> bool:
    if isinstance(claim, str):
        return claim == wanted
    if isinstance(claim, list):
        return wanted in claim
    return False


def authorize(
    config: AdminAuthConfig,
    headers: Mapping[str, str],
    method: str,
    path: str,
    now: datetime,
    *,
    providers: Sequence[IdentityProvider] | None = None,
) -> AdminIdentity:
    """Authenticate the Bearer token and check the ACL for ``method path`` at time ``now``.

    ``providers`` overrides ``config.providers`` (e.g. from :class:`JwksFileProvider`).
    Raises :class:`AdminUnauthenticated` (401) or :class:`AdminAccessDenied` (403).
    """
    if config.mode is AdminAuthMode.DENY_ALL:
        raise AdminAccessDenied("the admin API is disabled (no [admin] configuration, or DenyAll)")
    if config.mode is AdminAuthMode.INSECURE_ALLOW_ALL:
        return AdminIdentity("insecure-allow-all", None, None, "InsecureAllowAll", None, insecure=True)
    token = _bearer(headers)
    parts = token.split(".")
    if len(parts) != 3:
        raise AdminUnauthenticated("token is not a compact JWS (header.payload.signature)")
    header = _json_part(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise AdminUnauthenticated(
            f"token algorithm {alg!r} is not accepted; use one of {sorted(ALLOWED_ALGORITHMS)}"
        )
    if "crit" in header:
        raise AdminUnauthenticated("token header has 'crit' extensions, which are not supported")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AdminUnauthenticated("token header 'kid' must be a string")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    signature = _b64url(parts[2], "signature")
    matched: IdentityProvider | None = None
    for provider in providers if providers is not None else config.providers:
        candidates = [k for k in provider.keys if k.accepts(alg) and (kid is None or k.kid in (None, kid))]
        if any(_verify_signature(k, alg, signing_input, signature) for k in candidates):
            matched = provider
            break
    if matched is None:
        raise AdminUnauthenticated(
            f"token signature ({alg}{', kid ' + repr(kid) if kid else ''}) does not verify with any "
            "configured identity provider key"
        )
    claims = _json_part(parts[1], "claims")
    instant = int(now.timestamp())
    exp = _numeric(claims, "exp")
    if exp is None:
        raise AdminUnauthenticated("token has no 'exp' claim; admin tokens must expire")
    if instant > exp + config.leeway_seconds:
        raise AdminUnauthenticated(f"token expired at {exp} (now {instant})")
    nbf = _numeric(claims, "nbf")
    if nbf is not None and instant + config.leeway_seconds < nbf:
        raise AdminUnauthenticated(f"token not valid before {nbf} (now {instant})")
    if matched.issuer is not None and claims.get("iss") != matched.issuer:
        raise AdminUnauthenticated(f"token issuer {claims.get('iss')!r} is not {matched.issuer!r}")
    if matched.audience is not None and not _audience_ok(claims.get("aud"), matched.audience):
        raise AdminUnauthenticated(
            f"token audience {claims.get('aud')!r} does not include {matched.audience!r}"
        )
    role = claims.get("role")
    if not isinstance(role, str) or not role:
        raise AdminUnauthenticated("token has no 'role' claim (a non-empty string)")
    if not any(rule.allows(role, method, path) for rule in config.acl):
        raise AdminAccessDenied(f"role {role!r} may not call {method.upper()} {path}")
    subject = claims.get("sub")
    issuer = claims.get("iss")
    return AdminIdentity(
        role=role,
        subject=subject if isinstance(subject, str) else None,
        issuer=issuer if isinstance(issuer, str) else None,
        provider=matched.name,
        expires_at=exp,
    )


# --- minting (client side) --------------------------------------------------------------------


def load_private_key(data: bytes, *, source: str = "key") -> _PrivateKey:
    """Load an Ed25519, P-256 or RSA private key from PEM (PKCS#8 or traditional)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AdminKeyFileError(f"{source}: cannot load PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
        raise AdminKeyFileError(f"{source}: EC key on {key.curve.name}; only P-256 (ES256) is supported")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise AdminKeyFileError(f"{source}: RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise AdminKeyFileError(f"{source}: key type {type(key).__name__} is not Ed25519, P-256 or RSA")
    return key


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def mint_admin_token(
    key: _PrivateKey,
    *,
    role: str,
    now: datetime,
    ttl_seconds: int,
    subject: str | None = "admin",
    issuer: str | None = None,
    audience: Sequence[str] = (),
    kid: str | None = None,
) -> str:
    """Sign an admin JWT (EdDSA / ES256 / RS256 chosen by key type) with ``exp = now + ttl``."""
    if not role:
        raise ConfigError("mint_admin_token: role is empty")
    if ttl_seconds <= 0:
        raise ConfigError("mint_admin_token: ttl must be positive")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "EdDSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        alg = "ES256"
    else:
        alg = "RS256"
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    iat = int(now.timestamp())
    claims: dict[str, Any] = {"role": role, "iat": iat, "exp": iat + ttl_seconds}
    if subject is not None:
        claims["sub"] = subject
    if issuer is not None:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = list(audience)
    signing_input = (
        _b64e(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64e(json.dumps(claims, separators=(",", ":")).encode())
    ).encode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode("ascii") + "." + _b64e(signature)


# --- key and token files (I/O; used by `kbs serve` at start) ---------------------------------


def load_or_create_admin_key(path: Path) -> _PrivateKey:
    """The admin signing key at ``path``; a new Ed25519 key (PKCS#8 PEM, 0600) if absent."""
    try:
        return load_private_key(_read_bounded(path), source=str(path))
    except AdminKeyFileError:
        if path.exists():
            raise
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        created = write_private(path, pem, exclusive=True)
    except OSError as exc:
        raise AdminKeyFileError(f"cannot write admin key {path}: {exc.strerror}") from None
    if not created:  # another process created it first: use theirs
        return load_private_key(_read_bounded(path), source=str(path))
    return key


def write_admin_token(path: Path, token: str) -> None:
    """Write an admin token file (mode 0600, atomic) as ``teegate kbs admin`` expects it."""
    try:
        write_private(path, token.encode("ascii") + b"\n")
    except OSError as exc:
        raise AdminKeyFileError(f"cannot write admin token {path}: {exc.strerror}") from None

"""EAR attestation tokens (shared/spec/kbs-protocol.md §3.5), signed and verified with joserfc.

The token is a JWT signed ES256 by a P-256 key the KBS generates once and keeps under its data
directory (``token-key.pem``, 0600), so every restart and every replica sharing the directory
issues tokens the others verify. The header carries the public ``jwk`` (and ``x5c`` when a
certificate is configured), as Trustee's attestation service does. Claims follow Trustee's EAR
layout: ``submods.cpu0`` holds ``ear.status``, ``ear.trustworthiness-vector``,
``ear.appraisal-policy-id`` and ``ear.veraison.annotated-evidence`` (the TEE's claims plus
``report_data``, ``init_data``, ``init_data_claims`` and ``runtime_data_claims`` whose
``tee-pubkey`` is the key resources are encrypted to).

Bearer tokens are verified against trust anchors only: this KBS's own key plus configured PEM
public keys; a token's header ``jwk`` is trusted only when it *is* one of them (or when the
insecure ``insecure_header_jwk`` option is on).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from teegate.errors import ConfigError, EvidenceError
from teegate.files import write_private
from teegate.kbs.protocol import TeePubKey, sorted_json

__all__ = [
    "DEFAULT_TOKEN_TTL_SECONDS",
    "EAR_PROFILE",
    "MAX_TOKEN_CHARS",
    "TOKEN_KEY_FILENAME",
    "TokenError",
    "TokenSigner",
    "TokenVerifier",
    "canonical_claims",
    "ear_claims",
    "extract_tee_pubkey",
    "load_cert_chain",
    "load_or_create_token_key",
]

EAR_PROFILE: Final = "tag:github.com,2024:confidential-containers/Trustee"
TOKEN_KEY_FILENAME: Final = "token-key.pem"  # noqa: S105 - a file name
DEFAULT_TOKEN_TTL_SECONDS: Final = 300
#: Longest Bearer token examined.
MAX_TOKEN_CHARS: Final = 128 * 1024
_LEEWAY_SECONDS: Final = 60
_ISSUER: Final = "teegate-kbs"
_ALGS: Final = ["ES256"]
_ES256: Final = ec.ECDSA(hashes.SHA256())

#: Where Trustee looks for the TEE key in token claims, in order (T:kbs/src/token/mod.rs).
_TEE_KEY_POINTERS: Final = (
    ("submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims", "tee-pubkey"),
    ("tdx", "attester_runtime_data", "tee-pubkey"),
    ("tdx", "attester_user_data", "tee-pubkey"),
    ("customized_claims", "runtime_data", "tee-pubkey"),
    ("tee-pubkey",),
)


class TokenError(EvidenceError):
    """A token is missing, malformed, expired, or not signed by a trusted key."""

    http_status = 401


def ear_claims(
    *,
    submods: Mapping[str, Mapping[str, Any]],
    now: int,
    ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS,
    build: str = "teegate-kbs",
) -> dict[str, Any]:
    """The EAR claim set around ``submods`` (``cpu0`` → appraisal)."""
    return {
        "eat_profile": EAR_PROFILE,
        "iat": now,
        "exp": now + ttl_seconds,
        "iss": _ISSUER,
        "ear.verifier-id": {"developer": "https://github.com/teegate", "build": build},
        "submods": {name: dict(sub) for name, sub in submods.items()},
    }


def load_or_create_token_key(path: Path, *, create: bool = True) -> ec.EllipticCurvePrivateKey:
    """The P-256 token key at ``path``; generated (PKCS#8 PEM, 0600) the first time if ``create``."""
    if not create and not path.exists():
        raise ConfigError(f"token signing key {path} does not exist")
    for _ in range(2):
        if path.exists():
            try:
                key = serialization.load_pem_private_key(path.read_bytes()[:65536], password=None)
            except (OSError, ValueError, TypeError) as exc:
                raise ConfigError(f"token key {path}: cannot load: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(f"token key {path} must be an EC P-256 private key (ES256)")
            return key
        fresh = ec.generate_private_key(ec.SECP256R1())
        pem = fresh.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            if write_private(path, pem, exclusive=True):
                return fresh
        except OSError as exc:
            raise ConfigError(f"cannot write token key {path}: {exc.strerror}") from None
    raise ConfigError(f"token key {path}: could not be created or read")


def load_cert_chain(path: Path, key: ec.EllipticCurvePrivateKey) -> list[str]:
    """The ``x5c`` list (base64 DER) of a PEM chain whose first certificate holds ``key``."""
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes()[: 1024 * 1024])
    except (OSError, ValueError, x509.InvalidVersion) as exc:
        raise ConfigError(f"token certificate chain {path}: {exc}") from None
    leaf_key = certs[0].public_key()
    if (
        not isinstance(leaf_key, ec.EllipticCurvePublicKey)
        or leaf_key.public_numbers() != key.public_key().public_numbers()
    ):
        raise ConfigError(f"token certificate {path} is not for the token signing key")
    return [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in certs]


def canonical_claims(claims: Mapping[str, Any]) -> str:
    """Claims as compact JSON with sorted keys: the token payload, the attested session's copy and
    the audit digest's input (:func:`teegate.kbs.audit.claims_digest` hashes this same text)."""
    return sorted_json(claims)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenSigner:
    """Signs EAR tokens (ES256 JWS, RFC 7515 compact form) with the KBS token key.

    The protected header (``alg``, ``typ``, ``jwk``, ``x5c``) depends only on the key, so its
    base64url form is computed once; each token is one ECDSA signature over
    ``header.payload``. :class:`TokenVerifier` (joserfc) checks what this produces.
    """

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, x5c: Sequence[str] = ()) -> None:
        self._private = key
        self.public_jwk: dict[str, Any] = ECKey.import_key(key).as_dict(private=False)
        self.public_key = key.public_key()
        self._header: dict[str, Any] = {"alg": "ES256", "typ": "JWT", "jwk": self.public_jwk}
        if x5c:
            self._header["x5c"] = list(x5c)
        self._header_b64 = _b64url(json.dumps(self._header, separators=(",", ":")).encode())

    def sign(self, claims: Mapping[str, Any]) -> str:
        """The compact JWT for ``claims``."""
        return self.sign_json(canonical_claims(claims))

    def sign_json(self, claims_json: str) -> str:
        """The compact JWT whose payload is ``claims_json`` (a JSON object's text)."""
        signing_input = f"{self._header_b64}.{_b64url(claims_json.encode())}"
        der = self._private.sign(signing_input.encode("ascii"), _ES256)
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _thumb(jwk: Mapping[str, Any]) -> tuple[Any, ...]:
    return (jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y"))


class TokenVerifier:
    """Verifies tokens against trusted public keys (the KBS's own key first)."""

    def __init__(
        self, trusted: Sequence[ec.EllipticCurvePublicKey], *, insecure_header_jwk: bool = False
    ) -> None:
        if not trusted and not insecure_header_jwk:
            raise ConfigError("token verifier: no trusted keys")
        self._keys = [ECKey.import_key(k) for k in trusted]
        self._by_thumb = {_thumb(k.as_dict(private=False)): k for k in self._keys}
        self.insecure_header_jwk = insecure_header_jwk

    def verify(self, token: str, *, now: int) -> dict[str, Any]:
        """The claims of ``token`` if its signature, ``exp`` and ``nbf`` check out."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"token is empty or longer than {MAX_TOKEN_CHARS} characters")
        if token.count(".") != 2:
            raise TokenError("token is not a compact JWS")
        try:
            header_part = token.split(".", 1)[0]
            header = json.loads(base64.urlsafe_b64decode(header_part + "=" * (-len(header_part) % 4)))
        except ValueError:
            raise TokenError("token header is not base64url JSON") from None
        if not isinstance(header, dict) or header.get("alg") not in _ALGS:
            raise TokenError(
                f"token alg {header.get('alg') if isinstance(header, dict) else None!r}; only ES256"
            )
        candidates = list(self._keys)
        jwk = header.get("jwk")
        if isinstance(jwk, dict):
            known = self._by_thumb.get(_thumb(jwk))
            if known is not None:
                candidates = [known]
            elif self.insecure_header_jwk:
                try:
                    candidates = [ECKey.import_key(jwk)]
                except (JoseError, ValueError, TypeError):
                    raise TokenError("token header jwk is not an EC key") from None
        result = None
        for key in candidates:
            try:
                result = jwt.decode(token, key, algorithms=_ALGS)
                break
            except (JoseError, ValueError):
                continue
        if result is None:
            raise TokenError("token signature does not verify with any trusted token key")
        claims = result.claims
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise TokenError("token has no numeric 'exp'")
        if now > exp + _LEEWAY_SECONDS:
            raise TokenError(f"token expired at {exp} (now {now})")
        nbf = claims.get("nbf")
        if isinstance(nbf, int) and now + _LEEWAY_SECONDS < nbf:
            raise TokenError(f"token not valid before {nbf}")
        return dict(claims)


def extract_tee_pubkey(claims: Mapping[str, Any]) -> TeePubKey:
    """The TEE key in ``claims`` at Trustee's pointers (EAR first)."""
    for pointer in _TEE_KEY_POINTERS:
        node: Any = claims
        for part in pointer:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            return TeePubKey.parse(node, "token tee-pubkey")
    raise TokenError("Failed to extract Tee public key from claims")

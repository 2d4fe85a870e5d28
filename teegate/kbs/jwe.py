"""The resource response JWE (shared/spec/kbs-protocol.md §1.9), via joserfc.

Flattened JSON serialisation with every header member protected and no ``aad`` member:
``{"protected", "encrypted_key", "iv", "ciphertext", "tag"}``, content ``enc = A256GCM`` with
AAD = ASCII(``protected``). That is exactly the compact serialisation split into members, so
this module builds the compact form with joserfc and renames the five parts. Key management
follows the TEE key: ``ECDH-ES+A256KW`` (P-256, P-521), ``RSA-OAEP-256``; ``RSA1_5`` only when
the caller passes ``allow_rsa1_5`` (an insecure, configured option).
"""

from __future__ import annotations

import warnings
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwe as _jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from teegate.errors import EvidenceError
from teegate.kbs.protocol import TeePubKey

__all__ = [
    "JWE_MEMBERS",
    "JweError",
    "decrypt",
    "encrypt",
]

#: Members of the flattened JWE, in Trustee's order.
JWE_MEMBERS: Final = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
_ENC: Final = "A256GCM"
_SAFE: Final = _jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", _ENC])
_WITH_RSA1_5: Final = _jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "RSA1_5", _ENC])


class JweError(EvidenceError):
    """A JWE could not be produced for this key, or does not decrypt."""


def _jose_key(tee_key: TeePubKey) -> ECKey | RSAKey:
    public = tee_key.public_key()  # validated key material; importing the object is cheapest
    return (
        ECKey.import_key(public)
        if isinstance(public, ec.EllipticCurvePublicKey)
        else RSAKey.import_key(public)
    )


def encrypt(plaintext: bytes, tee_key: TeePubKey, *, allow_rsa1_5: bool = False) -> dict[str, str]:
    """Encrypt ``plaintext`` to ``tee_key``; returns the flattened JWE members."""
    if tee_key.alg == "RSA1_5" and not allow_rsa1_5:
        raise JweError(
            "TEE key alg RSA1_5 is refused (deprecated; enable [kbs] insecure_allow_rsa1_5 to accept it); "
            "use ECDH-ES+A256KW or RSA-OAEP-256"
        )
    header = {"alg": tee_key.alg, "enc": _ENC}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc warns on RSA1_5; the caller announced it
            compact = _jwe.encrypt_compact(
                header, plaintext, _jose_key(tee_key), registry=_WITH_RSA1_5 if allow_rsa1_5 else _SAFE
            )
    except (JoseError, ValueError) as exc:
        raise JweError(f"cannot encrypt to the TEE key ({tee_key.alg}): {exc}") from None
    return dict(zip(JWE_MEMBERS, compact.split("."), strict=True))


def decrypt(
    jwe: dict[str, Any],
    private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    allow_rsa1_5: bool = False,
) -> bytes:
    """Decrypt a flattened JWE from a KBS (client side and tests)."""
    if not isinstance(jwe, dict) or set(jwe) - {*JWE_MEMBERS, "aad", "header", "unprotected"}:
        raise JweError(f"not a flattened JWE: members {sorted(jwe) if isinstance(jwe, dict) else type(jwe)}")
    if "aad" in jwe or "header" in jwe or "unprotected" in jwe:
        raise JweError("JWE with aad or unprotected headers is not the KBS format")
    parts = [jwe.get(name) for name in JWE_MEMBERS]
    if not all(isinstance(p, str) for p in parts):
        raise JweError(f"JWE members {list(JWE_MEMBERS)} must all be strings")
    compact = ".".join(p for p in parts if isinstance(p, str))
    key = (
        ECKey.import_key(private_key)
        if isinstance(private_key, ec.EllipticCurvePrivateKey)
        else RSAKey.import_key(private_key)
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = _jwe.decrypt_compact(compact, key, registry=_WITH_RSA1_5 if allow_rsa1_5 else _SAFE)
    except (JoseError, ValueError) as exc:
        raise JweError(f"JWE does not decrypt: {exc}") from None
    if result.protected.get("enc") != _ENC:
        raise JweError(f"JWE enc {result.protected.get('enc')!r} is not {_ENC}")
    return result.plaintext or b""

"""The resource response JWE (shared/spec/kbs-protocol.md §1.9).

Flattened JSON serialisation with every header member protected and no ``aad`` member:
``{"protected", "encrypted_key", "iv", "ciphertext", "tag"}``, content ``enc = A256GCM`` with
AAD = ASCII(``protected``). Key management follows the TEE key: ``ECDH-ES+A256KW`` (P-256,
P-521), ``RSA-OAEP-256``; ``RSA1_5`` only when the caller passes ``allow_rsa1_5`` (an insecure,
configured option).

:func:`encrypt` (the server's hot path) composes ``cryptography`` primitives as RFC 7518 lays
them out (§4.6 ECDH-ES with the Concat KDF and AES key wrap, §4.3 RSA-OAEP-256, §5.3 AES-GCM):
no JOSE object model per response. :func:`decrypt` (client side and tests) goes through joserfc,
so every test that decrypts checks the server's JWE with an independent implementation.
"""

from __future__ import annotations

import base64
import os
import struct
import warnings
from typing import Any, Final

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwe as _jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from teegate.errors import EvidenceError
from teegate.kbs.protocol import TeePubKey

__all__ = [
    "JWE_MEMBERS",
    "MAX_JWE_CIPHERTEXT_BYTES",
    "JweError",
    "decrypt",
    "encrypt",
]

#: Members of the flattened JWE, in Trustee's order.
JWE_MEMBERS: Final = ("protected", "encrypted_key", "iv", "ciphertext", "tag")
_ENC: Final = "A256GCM"
#: Largest ciphertext decrypt() accepts: a resource of the store's largest size (1 MiB, in
#: base64url as joserfc may count it) with room to spare; joserfc's own default is 64 KiB.
MAX_JWE_CIPHERTEXT_BYTES: Final = 2 * 1024 * 1024
_SAFE: Final = _jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", _ENC])
_WITH_RSA1_5: Final = _jwe.JWERegistry(algorithms=["ECDH-ES+A256KW", "RSA-OAEP-256", "RSA1_5", _ENC])
for _registry in (_SAFE, _WITH_RSA1_5):
    _registry.max_ciphertext_length = MAX_JWE_CIPHERTEXT_BYTES


class JweError(EvidenceError):
    """A JWE could not be produced for this key, or does not decrypt."""


_CEK_BYTES: Final = 32
_IV_BYTES: Final = 12
_TAG_BYTES: Final = 16
_ECDH_ALG: Final = "ECDH-ES+A256KW"
_CURVE_NAMES: Final = {"secp256r1": ("P-256", 32), "secp521r1": ("P-521", 66)}
# RFC 7518 §4.6.2 OtherInfo for ECDH-ES+A256KW without apu/apv: AlgorithmID, PartyUInfo,
# PartyVInfo (both empty), SuppPubInfo (key data length in bits).
_ECDH_OTHERINFO: Final = (
    struct.pack(">I", len(_ECDH_ALG)) + _ECDH_ALG.encode() + struct.pack(">III", 0, 0, _CEK_BYTES * 8)
)
_OAEP_SHA256: Final = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _wrap_ecdh(public: ec.EllipticCurvePublicKey, cek: bytes) -> tuple[dict[str, Any], bytes]:
    """ECDH-ES+A256KW: an ephemeral key on the TEE key's curve, Concat KDF, AES key wrap."""
    named = _CURVE_NAMES.get(public.curve.name)
    if named is None:
        raise JweError(f"TEE key curve {public.curve.name} is not P-256 or P-521")
    crv, size = named
    ephemeral = ec.generate_private_key(public.curve)
    shared = ephemeral.exchange(ec.ECDH(), public)
    kek = ConcatKDFHash(hashes.SHA256(), _CEK_BYTES, otherinfo=_ECDH_OTHERINFO).derive(shared)
    # SEC 1 uncompressed point: 0x04 || X || Y, each coordinate ``size`` bytes.
    point = ephemeral.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    epk = {
        "crv": crv,
        "kty": "EC",
        "x": _b64url(point[1 : 1 + size]),
        "y": _b64url(point[1 + size :]),
    }
    return {"alg": _ECDH_ALG, "enc": _ENC, "epk": epk}, aes_key_wrap(kek, cek)


def encrypt(plaintext: bytes, tee_key: TeePubKey, *, allow_rsa1_5: bool = False) -> dict[str, str]:
    """Encrypt ``plaintext`` to ``tee_key``; returns the flattened JWE members."""
    if tee_key.alg == "RSA1_5" and not allow_rsa1_5:
        raise JweError(
            "TEE key alg RSA1_5 is refused (deprecated; enable [kbs] insecure_allow_rsa1_5 to accept it); "
            "use ECDH-ES+A256KW or RSA-OAEP-256"
        )
    public = tee_key.public_key()  # validated key material (cached per key)
    cek = os.urandom(_CEK_BYTES)
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            if tee_key.alg != _ECDH_ALG:
                raise JweError(f"EC TEE key with alg {tee_key.alg!r}; only {_ECDH_ALG}")
            header, encrypted_key = _wrap_ecdh(public, cek)
        elif tee_key.alg == "RSA-OAEP-256":
            header, encrypted_key = {"alg": tee_key.alg, "enc": _ENC}, public.encrypt(cek, _OAEP_SHA256)
        elif tee_key.alg == "RSA1_5":
            header, encrypted_key = {"alg": tee_key.alg, "enc": _ENC}, public.encrypt(cek, padding.PKCS1v15())
        else:
            raise JweError(f"RSA TEE key with alg {tee_key.alg!r}; use RSA-OAEP-256")
    except ValueError as exc:
        raise JweError(f"cannot encrypt to the TEE key ({tee_key.alg}): {exc}") from None
    protected = _b64url(orjson.dumps(header))
    iv = os.urandom(_IV_BYTES)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return {
        "protected": protected,
        "encrypted_key": _b64url(encrypted_key),
        "iv": _b64url(iv),
        "ciphertext": _b64url(sealed[:-_TAG_BYTES]),
        "tag": _b64url(sealed[-_TAG_BYTES:]),
    }


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
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        # joserfc trusts some header shapes (an unknown "epk" curve raised KeyError; found by
        # fuzzing): whatever a hostile KBS sends is a refusal, never a crash.
        raise JweError(f"JWE header not usable: {type(exc).__name__}: {exc}") from None
    if result.protected.get("enc") != _ENC:
        raise JweError(f"JWE enc {result.protected.get('enc')!r} is not {_ENC}")
    return result.plaintext or b""

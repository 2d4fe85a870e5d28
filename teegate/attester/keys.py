"""The TEE key: an ephemeral key pair whose public half the KBS encrypts resources to.

EC P-256 with ``ECDH-ES+A256KW`` is the default (Trustee's guest default since protocol 0.2.0);
P-521 and RSA-OAEP-256 (RSA-2048) on request. The private half never leaves this process.
The JWK and JWE code is the KBS's own (``teegate.kbs.protocol``, ``teegate.kbs.jwe``).
"""

from __future__ import annotations

import base64
import binascii
import json
from enum import StrEnum
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from teegate.attester.errors import KbsProtocolError
from teegate.errors import TeegateError
from teegate.kbs import jwe
from teegate.kbs.protocol import TeePubKey, parse_json

__all__ = ["MAX_JWE_BYTES", "KeyAlgorithm", "TeeKey"]

#: Largest resource response we read (a KBS resource is at most a few MiB).
MAX_JWE_BYTES: Final = 8 * 1024 * 1024
_ENC: Final = "A256GCM"


class KeyAlgorithm(StrEnum):
    """TEE key types, named as guest-components' ``TeeKeyAlgorithm``."""

    EC_P256 = "ECDH-ES+A256KW-P256"
    EC_P521 = "ECDH-ES+A256KW-P521"
    RSA_OAEP_256 = "RSA-OAEP-256"

    @property
    def jwe_alg(self) -> str:
        """The JWE ``alg`` the KBS must use to wrap the content key."""
        return "RSA-OAEP-256" if self is KeyAlgorithm.RSA_OAEP_256 else "ECDH-ES+A256KW"


class TeeKey:
    """One ephemeral TEE key pair."""

    def __init__(self, algorithm: KeyAlgorithm = KeyAlgorithm.EC_P256) -> None:
        self.algorithm = algorithm
        self._private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
        if algorithm is KeyAlgorithm.RSA_OAEP_256:
            self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            curve: ec.EllipticCurve = ec.SECP256R1() if algorithm is KeyAlgorithm.EC_P256 else ec.SECP521R1()
            self._private = ec.generate_private_key(curve)
        self.public = TeePubKey.from_public_key(self._private.public_key(), algorithm.jwe_alg)

    def decrypt(self, body: bytes) -> bytes:
        """Open a KBS resource response (flattened JSON JWE, ``enc`` A256GCM) addressed to this key."""
        if len(body) > MAX_JWE_BYTES:
            raise KbsProtocolError(f"resource response of {len(body)} bytes exceeds {MAX_JWE_BYTES}")
        try:
            document = parse_json(body, "resource response")
        except TeegateError as exc:
            raise KbsProtocolError(f"resource response is not a JWE: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("protected"), str):
            raise KbsProtocolError("resource response is not a flattened JWE (no 'protected' member)")
        protected = str(document["protected"])
        try:
            header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        except (ValueError, binascii.Error) as exc:
            raise KbsProtocolError(f"resource JWE protected header is not base64url JSON: {exc}") from None
        if not isinstance(header, dict):
            raise KbsProtocolError("resource JWE protected header is not a JSON object")
        if header.get("alg") != self.algorithm.jwe_alg or header.get("enc") != _ENC:
            raise KbsProtocolError(
                f"resource JWE uses alg={header.get('alg')!r} enc={header.get('enc')!r}; "
                f"this TEE key needs alg={self.algorithm.jwe_alg} enc={_ENC}"
            )
        try:
            return jwe.decrypt(document, self._private)
        except TeegateError as exc:
            raise KbsProtocolError(
                f"resource JWE does not decrypt with this TEE key (not encrypted to the key sent at "
                f"attestation): {exc}"
            ) from None

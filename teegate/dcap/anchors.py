"""Trust anchors: the root public keys a collateral or PCK chain must end at.

The Intel SGX Root CA is pinned by its public key (a published figure, see
docs/verification.md); the root *certificate* itself arrives in the collateral chains and is
accepted only if its key equals a pinned one. Other roots (the simulated platform's test
PKI) are trusted only when a caller builds :class:`TrustAnchors` with them explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["INTEL_SGX_ROOT_CA_PUBLIC_KEY", "TrustAnchor", "TrustAnchors"]

#: Uncompressed SEC1 point of the Intel SGX Root CA key (CN=Intel SGX Root CA, serial
#: 22650CD65A9D3489F383B49552BF501B392706AC, valid 2018-05-21 .. 2049-12-31).
INTEL_SGX_ROOT_CA_PUBLIC_KEY = bytes.fromhex(
    "040BA9C4C0C0C86193A3FE23D6B02CDA10A8BBD4E88E48B4458561A36E705525F5"
    "67918E2EDC88E40D860BD0CC4EE26AACC988E505A953558C453F6B0904AE7394"
)


@dataclass(frozen=True)
class TrustAnchor:
    """One trusted root key. ``simulated`` marks a test root: verdicts anchored there say so."""

    name: str
    public_key: bytes  # uncompressed SEC1 P-256 point
    simulated: bool = False

    @classmethod
    def from_key(cls, name: str, key: ec.EllipticCurvePublicKey, *, simulated: bool = False) -> TrustAnchor:
        point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return cls(name=name, public_key=point, simulated=simulated)


@dataclass(frozen=True)
class TrustAnchors:
    """The set of roots a verification accepts. Empty sets are refused."""

    anchors: tuple[TrustAnchor, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.anchors:
            raise ValueError("TrustAnchors needs at least one root key")

    @classmethod
    def intel(cls) -> TrustAnchors:
        """Only the production Intel SGX Root CA."""
        return cls((TrustAnchor("Intel SGX Root CA", INTEL_SGX_ROOT_CA_PUBLIC_KEY),))

    def with_anchor(self, anchor: TrustAnchor) -> TrustAnchors:
        return TrustAnchors((*self.anchors, anchor))

    def find(self, public_key_point: bytes) -> TrustAnchor | None:
        """The anchor whose key equals ``public_key_point`` (uncompressed SEC1), if any."""
        for anchor in self.anchors:
            if anchor.public_key == public_key_point:
                return anchor
        return None

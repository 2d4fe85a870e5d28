"""KBS protocol 0.4.0 wire models (shared/spec/kbs-protocol.md §1.3-§1.7).

Parsing is strict where Trustee's serde is strict (required members, enum values, JWK shapes)
and bounded everywhere (sizes, item counts). The report-data binding is computed exactly as
Trustee and guest-components do: ``H(JCS({"additional-evidence": A, "nonce": N,
"tee-pubkey": JWK}))`` with RFC 8785 canonical JSON; TDX/SGX zero-pad the digest to 64 bytes,
the sample TEE compares the raw digest.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Final

import orjson
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from teegate.errors import EvidenceError, ParseError

__all__ = [
    "MAX_ADDITIONAL_EVIDENCE_ITEMS",
    "MAX_INIT_DATA_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NONCE_CHARS",
    "PROTOCOL_VERSION",
    "REPORT_DATA_BYTES",
    "Attestation",
    "Challenge",
    "HashAlgorithm",
    "InitData",
    "ProtocolVersionMismatch",
    "Request",
    "Tee",
    "TeePubKey",
    "check_json_depth",
    "device_binding_digest",
    "jcs_bytes",
    "make_nonce",
    "pad_report_data",
    "parse_json",
    "runtime_data_digest",
    "sorted_json",
]

#: The one protocol version served (exact match, as Trustee's ``=0.4.0``).
PROTOCOL_VERSION: Final = "0.4.0"
#: Width of TDX/SGX REPORTDATA; the binding digest is zero-padded to it.
REPORT_DATA_BYTES: Final = 64
#: Deepest JSON nesting accepted in any request body.
MAX_JSON_DEPTH: Final = 32
#: Most items in ``additional_evidence``.
MAX_ADDITIONAL_EVIDENCE_ITEMS: Final = 16
#: Longest ``init-data.body`` (bytes of TOML).
MAX_INIT_DATA_BYTES: Final = 64 * 1024
#: Longest nonce string echoed back (the server issues 44 characters).
MAX_NONCE_CHARS: Final = 256
#: Largest RSA modulus accepted for a TEE key (bits) and smallest.
_MAX_RSA_BITS: Final = 8192
_MIN_RSA_BITS: Final = 2048
_NONCE_BYTES: Final = 32


class ProtocolVersionMismatch(EvidenceError):
    """The client speaks another KBS protocol version; the message names both."""


class Tee(enum.Enum):
    """kbs-types ``Tee`` wire names."""

    AZ_SNP_VTPM = "az-snp-vtpm"
    AZ_TDX_VTPM = "az-tdx-vtpm"
    NVIDIA = "nvidia"
    SGX = "sgx"
    SNP = "snp"
    TDX = "tdx"
    CCA = "cca"
    CSV = "csv"
    SE = "se"
    HYGON_DCU = "hygondcu"
    TPM = "tpm"
    SAMPLE = "sample"
    SAMPLE_DEVICE = "sampledevice"
    NVIDIA_DPU = "nvidia-dpu"

    @classmethod
    def parse(cls, value: Any, what: str = "tee") -> Tee:
        """The TEE named ``value``; anything else is a ParseError listing the known names."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ParseError(what, f"unknown TEE {value!r}; known: {[t.value for t in cls]}")


class HashAlgorithm(enum.Enum):
    """Hash algorithms of the runtime-data binding."""

    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    def digest(self, data: bytes) -> bytes:
        """Hash ``data``."""
        return _HASHES[self.value](data).digest()


_HASHES: Final = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def check_json_depth(value: Any, limit: int = MAX_JSON_DEPTH, what: str = "body") -> None:
    """Refuse JSON nested deeper than ``limit`` (iterative: no recursion on attacker input)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise ParseError(what, f"JSON nested deeper than {limit} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate member {key!r}")
        result[key] = value
    return result


def parse_json(data: bytes | str, what: str = "body") -> Any:
    """Strict JSON: UTF-8, no duplicate members, no NaN/Infinity, bounded depth."""
    if isinstance(data, bytes):
        # Compact JSON as guests send it (serde_json): orjson parses it, and writing the value
        # back gives the very same bytes only if no member was repeated (a repeated one would
        # appear once), no whitespace, escape or number was written another way. Anything else
        # is for the careful parser below (same value, or the error it names).
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
        else:
            if orjson.dumps(value) == data:
                check_json_depth(value, what=what)
                return value
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(text, object_pairs_hook=_unique_object, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ParseError(what, f"malformed JSON: {exc}") from None
    check_json_depth(value, what=what)
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(what, f"must be a JSON object, not {type(value).__name__}")
    return value


def _string(obj: dict[str, Any], key: str, what: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ParseError(f"{what}.{key}", "is required and must be a string")
    return value


def _b64url_decode(text: str, what: str) -> bytes:
    if not text or "=" in text or len(text) > 4096:
        raise ParseError(what, "must be non-empty base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ParseError(what, "is not base64url") from None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_EC_CURVES: Final[dict[str, tuple[ec.EllipticCurve, int]]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-521": (ec.SECP521R1(), 66),
}
_EC_ALGS: Final = frozenset({"ECDH-ES+A256KW"})
_RSA_ALGS: Final = frozenset({"RSA-OAEP-256", "RSA1_5"})


#: Validated EC TEE keys kept (a handshake uses its key at /attest and again at the resource).
_EC_KEY_CACHE_SIZE: Final = 4096


@functools.lru_cache(maxsize=_EC_KEY_CACHE_SIZE)
def _ec_public_key(crv: str, x_text: str, y_text: str) -> ec.EllipticCurvePublicKey:
    """The point (x, y) on ``crv``, validated; a pure function of its arguments, so cached
    (failures raise and are not cached)."""
    curve, size = _EC_CURVES[crv]
    x = _b64url_decode(x_text, "tee-pubkey.x")
    y = _b64url_decode(y_text, "tee-pubkey.y")
    if len(x) != size or len(y) != size:
        raise ParseError("tee-pubkey", f"{crv} coordinates must be {size} bytes")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + x + y)
    except ValueError:
        raise ParseError("tee-pubkey", f"(x, y) is not a point on {crv}") from None


@dataclass(frozen=True, slots=True)
class TeePubKey:
    """The TEE's public key as a JWK (kbs-types ``TeePubKey``: ``EC{crv,alg,x,y}`` / ``RSA{alg,n,e}``)."""

    kty: str
    alg: str
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None

    @classmethod
    def parse(cls, value: Any, what: str = "tee-pubkey") -> TeePubKey:
        """Parse and validate: a point on the named curve, or an RSA key of 2048-8192 bits."""
        jwk = _object(value, what)
        kty = _string(jwk, "kty", what)
        alg = _string(jwk, "alg", what)
        if kty == "EC":
            crv = _string(jwk, "crv", what)
            if crv not in _EC_CURVES:
                raise ParseError(f"{what}.crv", f"unsupported curve {crv!r}; use P-256 or P-521")
            if alg not in _EC_ALGS:
                raise ParseError(f"{what}.alg", f"EC key with alg {alg!r}; use ECDH-ES+A256KW")
            key = cls(kty=kty, alg=alg, crv=crv, x=_string(jwk, "x", what), y=_string(jwk, "y", what))
        elif kty == "RSA":
            if alg not in _RSA_ALGS:
                raise ParseError(f"{what}.alg", f"RSA key with alg {alg!r}; use RSA-OAEP-256")
            key = cls(kty=kty, alg=alg, n=_string(jwk, "n", what), e=_string(jwk, "e", what))
        else:
            raise ParseError(f"{what}.kty", f"unsupported key type {kty!r}; use EC or RSA")
        key.public_key()  # validates the key material
        return key

    @classmethod
    def from_public_key(
        cls, key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, alg: str | None = None
    ) -> TeePubKey:
        """The JWK of a ``cryptography`` public key (client side)."""
        if isinstance(key, ec.EllipticCurvePublicKey):
            crv = {"secp256r1": "P-256", "secp521r1": "P-521"}.get(key.curve.name)
            if crv is None:
                raise ParseError("tee-pubkey", f"unsupported curve {key.curve.name}")
            size = _EC_CURVES[crv][1]
            numbers = key.public_numbers()
            return cls(
                kty="EC",
                alg=alg or "ECDH-ES+A256KW",
                crv=crv,
                x=_b64url(numbers.x.to_bytes(size, "big")),
                y=_b64url(numbers.y.to_bytes(size, "big")),
            )
        rsa_numbers = key.public_numbers()
        return cls(
            kty="RSA",
            alg=alg or "RSA-OAEP-256",
            n=_b64url(rsa_numbers.n.to_bytes((rsa_numbers.n.bit_length() + 7) // 8, "big")),
            e=_b64url(rsa_numbers.e.to_bytes((rsa_numbers.e.bit_length() + 7) // 8, "big")),
        )

    def to_jwk(self) -> dict[str, str]:
        """The JWK members kbs-types serialises (and that the binding hashes)."""
        if self.kty == "EC":
            assert self.crv is not None and self.x is not None and self.y is not None
            return {"kty": "EC", "crv": self.crv, "alg": self.alg, "x": self.x, "y": self.y}
        assert self.n is not None and self.e is not None
        return {"kty": "RSA", "alg": self.alg, "n": self.n, "e": self.e}

    def public_key(self) -> ec.EllipticCurvePublicKey | rsa.RSAPublicKey:
        """The key as a ``cryptography`` object; bad material is a ParseError."""
        if self.kty == "EC":
            assert self.crv is not None and self.x is not None and self.y is not None
            return _ec_public_key(self.crv, self.x, self.y)
        assert self.n is not None and self.e is not None
        n = int.from_bytes(_b64url_decode(self.n, "tee-pubkey.n"), "big")
        e = int.from_bytes(_b64url_decode(self.e, "tee-pubkey.e"), "big")
        if not _MIN_RSA_BITS <= n.bit_length() <= _MAX_RSA_BITS:
            raise ParseError(
                "tee-pubkey.n", f"RSA modulus of {n.bit_length()} bits; {_MIN_RSA_BITS}-{_MAX_RSA_BITS}"
            )
        if e < 3 or e % 2 == 0 or e.bit_length() > 64:
            raise ParseError("tee-pubkey.e", "bad RSA public exponent")
        try:
            return rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise ParseError("tee-pubkey", f"bad RSA key: {exc}") from None


@dataclass(frozen=True, slots=True)
class Request:
    """Body of ``POST /kbs/v0/auth``."""

    version: str
    tee: Tee
    extra_params: Any

    @classmethod
    def parse(cls, value: Any) -> Request:
        """Parse; the version must be exactly :data:`PROTOCOL_VERSION` (message names both)."""
        obj = _object(value, "Request")
        version = _string(obj, "version", "Request")
        if "extra-params" not in obj:
            raise ParseError("Request.extra-params", "is required (any JSON value, e.g. {})")
        if version != PROTOCOL_VERSION:
            raise ProtocolVersionMismatch(
                f"KBS Client Protocol Version Mismatch: expect ={PROTOCOL_VERSION} while the request is "
                f"{version[:64]}"
            )
        return cls(
            version=version, tee=Tee.parse(obj.get("tee"), "Request.tee"), extra_params=obj["extra-params"]
        )

    def supported_hashes(self) -> list[str]:
        """``extra-params["supported-hash-algorithms"]`` when present (strings only)."""
        if isinstance(self.extra_params, dict):
            listed = self.extra_params.get("supported-hash-algorithms")
            if isinstance(listed, list):
                return [h for h in listed[:32] if isinstance(h, str)]
        return []

    def to_json(self) -> dict[str, Any]:
        """The wire object."""
        return {"version": self.version, "tee": self.tee.value, "extra-params": self.extra_params}


def make_nonce() -> str:
    """32 random bytes, base64 standard with padding (Trustee's ``make_nonce``)."""
    return base64.b64encode(secrets.token_bytes(_NONCE_BYTES)).decode("ascii")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Body of the ``/auth`` answer: ``{"nonce": …, "extra-params": ""}``."""

    nonce: str
    extra_params: Any = ""

    def to_json(self) -> dict[str, Any]:
        """The wire object."""
        return {"nonce": self.nonce, "extra-params": self.extra_params}

    @classmethod
    def parse(cls, value: Any) -> Challenge:
        """Parse (client side)."""
        obj = _object(value, "Challenge")
        return cls(nonce=_string(obj, "nonce", "Challenge"), extra_params=obj.get("extra-params", ""))

    def hash_algorithm(self) -> HashAlgorithm:
        """``extra-params["selected-hash-algorithm"]`` else SHA-384 (guest-components' rule)."""
        if isinstance(self.extra_params, dict):
            selected = self.extra_params.get("selected-hash-algorithm")
            if isinstance(selected, str):
                try:
                    return HashAlgorithm(selected)
                except ValueError:
                    raise ParseError("Challenge.extra-params", f"unknown hash {selected!r}") from None
        return HashAlgorithm.SHA384


@dataclass(frozen=True, slots=True)
class InitData:
    """``init-data``: ``{"format": "toml", "body": "<TOML>"}``."""

    format: str
    body: str

    @classmethod
    def parse(cls, value: Any) -> InitData:
        """Parse; only ``toml`` is accepted (as Trustee's CoCo AS backends)."""
        obj = _object(value, "init-data")
        fmt = _string(obj, "format", "init-data")
        body = _string(obj, "body", "init-data")
        if fmt != "toml":
            raise ParseError("init-data.format", f"{fmt!r} is not supported; use 'toml'")
        if len(body.encode()) > MAX_INIT_DATA_BYTES:
            raise ParseError("init-data.body", f"larger than {MAX_INIT_DATA_BYTES} bytes")
        return cls(format=fmt, body=body)


@dataclass(frozen=True, slots=True)
class Attestation:
    """Body of ``POST /kbs/v0/attest`` (protocol 0.4.0, composite evidence)."""

    nonce: str
    tee_pubkey: TeePubKey
    primary_evidence: Any
    additional_evidence: str
    init_data: InitData | None = None

    @classmethod
    def parse(cls, value: Any) -> Attestation:
        """Parse; inner evidence keys are snake_case, outer keys kebab-case (kbs-types)."""
        obj = _object(value, "Attestation")
        runtime = _object(obj.get("runtime-data"), "Attestation.runtime-data")
        nonce = _string(runtime, "nonce", "runtime-data")
        if len(nonce) > MAX_NONCE_CHARS:
            raise ParseError("runtime-data.nonce", f"longer than {MAX_NONCE_CHARS} characters")
        key = TeePubKey.parse(runtime.get("tee-pubkey"), "runtime-data.tee-pubkey")
        evidence = _object(obj.get("tee-evidence"), "Attestation.tee-evidence")
        if "primary_evidence" not in evidence:
            raise ParseError("tee-evidence.primary_evidence", "is required")
        additional = evidence.get("additional_evidence", "")
        if not isinstance(additional, str):
            raise ParseError(
                "tee-evidence.additional_evidence", "must be a JSON string ('' or a serialised map)"
            )
        init_raw = obj.get("init-data")
        init = InitData.parse(init_raw) if init_raw is not None else None
        return cls(
            nonce=nonce,
            tee_pubkey=key,
            primary_evidence=evidence["primary_evidence"],
            additional_evidence=additional,
            init_data=init,
        )

    def additional_items(self) -> dict[Tee, Any]:
        """``additional_evidence`` parsed as the map TEE → evidence (empty for ``""``)."""
        if self.additional_evidence == "":
            return {}
        parsed = _object(parse_json(self.additional_evidence, "additional_evidence"), "additional_evidence")
        if len(parsed) > MAX_ADDITIONAL_EVIDENCE_ITEMS:
            raise ParseError("additional_evidence", f"more than {MAX_ADDITIONAL_EVIDENCE_ITEMS} items")
        return {Tee.parse(name, "additional_evidence key"): item for name, item in parsed.items()}

    def runtime_data_claims(self) -> dict[str, Any]:
        """The structured runtime data echoed into the token (``runtime_data_claims``)."""
        return {
            "nonce": self.nonce,
            "tee-pubkey": self.tee_pubkey.to_jwk(),
            "additional-evidence": self.additional_evidence,
        }

    def to_json(self) -> dict[str, Any]:
        """The wire object (client side)."""
        out: dict[str, Any] = {
            "runtime-data": {"nonce": self.nonce, "tee-pubkey": self.tee_pubkey.to_jwk()},
            "tee-evidence": {
                "primary_evidence": self.primary_evidence,
                "additional_evidence": self.additional_evidence,
            },
        }
        if self.init_data is not None:
            out["init-data"] = {"format": self.init_data.format, "body": self.init_data.body}
        return out


def _string_tree(value: Any) -> bool:
    """Objects with ASCII keys whose leaves are all strings (what the binding hashes)."""
    if isinstance(value, str):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and k.isascii() and _string_tree(v) for k, v in value.items())
    return False


def sorted_json(value: Any) -> str:
    """Compact JSON with sorted keys and UTF-8 text (not JCS: numbers as orjson writes them).

    The one serialisation of EAR claims: the token payload, the attested session's copy and the
    audit digest's input are this same text. Values orjson cannot write (integers beyond 64 bits,
    non-string keys, other types) go through the standard library, other types as ``str``.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def jcs_bytes(value: Any) -> bytes:
    """RFC 8785 canonical JSON of ``value``.

    For objects of ASCII keys and string leaves (the runtime-data binding) orjson with sorted keys
    produces exactly JCS: keys sorted (ASCII code points sort as UTF-16 units do), no spaces,
    non-ASCII text as UTF-8, and only ``"``, ``\\`` and control characters escaped (short forms,
    else lower-case ``\\u00xx``). Anything else (numbers, lone surrogates) goes through rfc8785.
    """
    if _string_tree(value):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # orjson.JSONEncodeError: a lone surrogate, which rfc8785 reports
            pass
    canonical: bytes = rfc8785.dumps(value)
    return canonical


def runtime_data_digest(
    nonce: str,
    tee_pubkey: TeePubKey,
    additional_evidence: str,
    algorithm: HashAlgorithm = HashAlgorithm.SHA384,
) -> bytes:
    """Primary binding: ``H(JCS({"additional-evidence": A, "nonce": N, "tee-pubkey": JWK}))``."""
    return algorithm.digest(
        jcs_bytes(
            {"additional-evidence": additional_evidence, "nonce": nonce, "tee-pubkey": tee_pubkey.to_jwk()}
        )
    )


def device_binding_digest(
    nonce: str, tee_pubkey: TeePubKey, algorithm: HashAlgorithm = HashAlgorithm.SHA384
) -> bytes:
    """Additional-evidence binding: ``H(JCS({"nonce": N, "tee-pubkey": JWK}))``."""
    return algorithm.digest(jcs_bytes({"nonce": nonce, "tee-pubkey": tee_pubkey.to_jwk()}))


def pad_report_data(digest: bytes, width: int = REPORT_DATA_BYTES) -> bytes:
    """Zero-pad (or truncate, as Trustee's ``regularize_data``) ``digest`` to ``width`` bytes."""
    return digest[:width].ljust(width, b"\x00")

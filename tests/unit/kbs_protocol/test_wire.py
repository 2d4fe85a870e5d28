"""Wire fixtures byte-checked against shared/spec/kbs-protocol.md §1.3-§1.10."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

from teegate.errors import ParseError
from teegate.kbs import jwe
from teegate.kbs.errors import KbsError, error_body, status_for
from teegate.kbs.protocol import (
    Attestation,
    Challenge,
    HashAlgorithm,
    ProtocolVersionMismatch,
    Request,
    Tee,
    TeePubKey,
    device_binding_digest,
    make_nonce,
    pad_report_data,
    parse_json,
    runtime_data_digest,
)

# A fixed P-256 key (RFC 7515 appendix A.3 public key) so the canonical bytes are literal.
X = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"
Y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"
JWK = TeePubKey.parse({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": X, "y": Y, "use": "enc"})
NONCE = "q0x6Hn2lDWW6xpFdTKVU7JcvU3ZJ7ooZCGDgK2ADk9M="


def test_runtime_data_jcs_bytes_and_sha384() -> None:
    canonical = (
        '{"additional-evidence":"","nonce":"' + NONCE + '","tee-pubkey":{"alg":"ECDH-ES+A256KW",'
        '"crv":"P-256","kty":"EC","x":"' + X + '","y":"' + Y + '"}}'
    ).encode()
    digest = runtime_data_digest(NONCE, JWK, "")
    assert digest == hashlib.sha384(canonical).digest()
    assert len(digest) == 48
    padded = pad_report_data(digest)
    assert padded == digest + b"\x00" * 16 and len(padded) == 64


def test_runtime_data_with_additional_evidence_and_sha512() -> None:
    additional = json.dumps({"sampledevice": {"svn": "1", "report_data": "AA=="}})
    canonical = (
        '{"additional-evidence":' + json.dumps(additional) + ',"nonce":"' + NONCE + '","tee-pubkey":'
        '{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"' + X + '","y":"' + Y + '"}}'
    ).encode()
    assert (
        runtime_data_digest(NONCE, JWK, additional, HashAlgorithm.SHA512)
        == hashlib.sha512(canonical).digest()
    )
    device = (
        '{"nonce":"'
        + NONCE
        + '","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"'
        + X
        + '","y":"'
        + Y
        + '"}}'
    ).encode()
    assert device_binding_digest(NONCE, JWK) == hashlib.sha384(device).digest()


def test_rsa_jwk_canonical_member_order() -> None:
    key = rsa.generate_private_key(65537, 2048).public_key()
    jwk = TeePubKey.from_public_key(key)
    canonical = json.dumps(
        {
            "additional-evidence": "",
            "nonce": "n",
            "tee-pubkey": {"alg": "RSA-OAEP-256", "e": jwk.e, "kty": "RSA", "n": jwk.n},
        },
        separators=(",", ":"),
    ).encode()
    assert runtime_data_digest("n", jwk, "") == hashlib.sha384(canonical).digest()


def test_request_challenge_shapes() -> None:
    req = Request.parse(
        {"version": "0.4.0", "tee": "tdx", "extra-params": {"supported-hash-algorithms": ["sha384"]}}
    )
    assert req.tee is Tee.TDX and req.supported_hashes() == ["sha384"]
    assert Request.parse({"version": "0.4.0", "tee": "sample", "extra-params": ""}).extra_params == ""
    with pytest.raises(ParseError, match="extra-params"):
        Request.parse({"version": "0.4.0", "tee": "tdx"})
    with pytest.raises(ProtocolVersionMismatch, match=r"expect =0\.4\.0 while the request is 0\.2\.0"):
        Request.parse({"version": "0.2.0", "tee": "tdx", "extra-params": {}})
    with pytest.raises(ParseError, match="unknown TEE 'sev'"):
        Request.parse({"version": "0.4.0", "tee": "sev", "extra-params": {}})
    nonce = make_nonce()
    assert len(base64.b64decode(nonce, validate=True)) == 32 and len(nonce) == 44
    assert (
        json.dumps(Challenge(nonce).to_json(), separators=(",", ":"))
        == f'{{"nonce":"{nonce}","extra-params":""}}'
    )
    assert Challenge(nonce).hash_algorithm() is HashAlgorithm.SHA384
    assert Challenge(nonce, {"selected-hash-algorithm": "sha512"}).hash_algorithm() is HashAlgorithm.SHA512


def test_attestation_shape_and_strictness() -> None:
    body = {
        "init-data": {"format": "toml", "body": 'algorithm = "sha384"\nversion = "0.1.0"\n'},
        "runtime-data": {"nonce": NONCE, "tee-pubkey": JWK.to_jwk()},
        "tee-evidence": {
            "primary_evidence": {"svn": "1"},
            "additional_evidence": '{"sampledevice": {"svn": "1"}}',
        },
    }
    att = Attestation.parse(body)
    assert att.additional_items() == {Tee.SAMPLE_DEVICE: {"svn": "1"}}
    assert att.runtime_data_claims() == {
        "nonce": NONCE,
        "tee-pubkey": JWK.to_jwk(),
        "additional-evidence": att.additional_evidence,
    }
    bad = json.loads(json.dumps(body))
    bad["tee-evidence"]["additional_evidence"] = {"sampledevice": {}}
    with pytest.raises(ParseError, match="additional_evidence"):
        Attestation.parse(bad)
    bad = json.loads(json.dumps(body))
    bad["init-data"]["format"] = "json"
    with pytest.raises(ParseError, match="toml"):
        Attestation.parse(bad)
    bad = json.loads(json.dumps(body))
    bad["tee-evidence"]["additional_evidence"] = '{"gpu9000": {}}'
    with pytest.raises(ParseError, match="gpu9000"):
        Attestation.parse(bad).additional_items()


@pytest.mark.parametrize(
    ("jwk", "match"),
    [
        ({"kty": "EC", "crv": "P-384", "alg": "ECDH-ES+A256KW", "x": X, "y": Y}, "unsupported curve"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES", "x": X, "y": Y}, "ECDH-ES\\+A256KW"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": X, "y": X}, "not a point"),
        ({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": X}, "y"),
        ({"kty": "oct", "alg": "A256KW", "k": "AAAA"}, "unsupported key type"),
        ({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"}, "RSA modulus"),
    ],
)
def test_tee_pubkey_refuses_bad_keys(jwk: dict[str, str], match: str) -> None:
    with pytest.raises(ParseError, match=match):
        TeePubKey.parse(jwk)


def test_parse_json_strictness() -> None:
    with pytest.raises(ParseError, match="NaN"):
        parse_json(b'{"a": NaN}')
    with pytest.raises(ParseError, match="malformed"):
        parse_json(b"\xff\xfe")
    assert parse_json(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jwcrypto_decrypt(body: dict[str, str], private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(body), key=jw_jwk.JWK.from_pem(pem))
    return bytes(token.payload)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP521R1()])
def test_jwe_ecdh_layout_and_independent_decrypt(curve: ec.EllipticCurve) -> None:
    private = ec.generate_private_key(curve)
    body = jwe.encrypt(b"top secret", TeePubKey.from_public_key(private.public_key()))
    assert list(body) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    assert all("=" not in v for v in body.values())
    header = json.loads(_b64d(body["protected"]))
    assert header["alg"] == "ECDH-ES+A256KW" and header["enc"] == "A256GCM"
    assert header["epk"]["kty"] == "EC" and header["epk"]["crv"] in ("P-256", "P-521")
    assert len(_b64d(body["iv"])) == 12 and len(_b64d(body["tag"])) == 16
    assert len(_b64d(body["encrypted_key"])) == 40
    assert _jwcrypto_decrypt(body, private) == b"top secret"
    assert jwe.decrypt(body, private) == b"top secret"
    # AAD is the protected header: changing it breaks decryption.
    tampered = dict(
        body, protected=body["protected"][:-2] + ("AA" if not body["protected"].endswith("AA") else "BB")
    )
    with pytest.raises(jwe.JweError):
        jwe.decrypt(tampered, private)


def test_jwe_rsa_oaep_and_rsa1_5_only_when_allowed() -> None:
    private = rsa.generate_private_key(65537, 2048)
    body = jwe.encrypt(b"k", TeePubKey.from_public_key(private.public_key()))
    assert json.loads(_b64d(body["protected"])) == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    assert _jwcrypto_decrypt(body, private) == b"k"
    legacy = TeePubKey.from_public_key(private.public_key(), alg="RSA1_5")
    with pytest.raises(jwe.JweError, match="RSA1_5 is refused"):
        jwe.encrypt(b"k", legacy)
    body = jwe.encrypt(b"k", legacy, allow_rsa1_5=True)
    assert json.loads(_b64d(body["protected"]))["alg"] == "RSA1_5"
    assert jwe.decrypt(body, private, allow_rsa1_5=True) == b"k"
    with pytest.raises(jwe.JweError):
        jwe.decrypt(body, private)


def test_error_bodies_bytes_and_status() -> None:
    assert error_body("PolicyDeny", "Access denied by policy") == (
        b'{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny",'
        b'"detail":"Access denied by policy"}'
    )
    assert status_for("InvalidRequestPath") == 404 and status_for("PluginNotFound") == 404
    for variant in ("PolicyDeny", "TokenNotFound", "AttestationError", "PluginInternalError", "JweError"):
        assert status_for(variant) == 401
    assert status_for("PayloadTooLarge") == 413 and status_for("ServiceUnavailable") == 503
    err = KbsError("TokenNotFound", "Attestation Token not found")
    assert err.http_status == 401 and json.loads(err.body())["detail"] == "Attestation Token not found"


def test_jwe_with_an_unknown_epk_curve_is_refused_not_a_crash() -> None:
    """Found by fuzzing (tests/fuzz/corpus/jwe/epk-unknown-curve.json): joserfc raised KeyError."""
    from pathlib import Path

    seed = Path(__file__).resolve().parents[2] / "fuzz" / "corpus" / "jwe" / "epk-unknown-curve.json"
    hostile = json.loads(seed.read_bytes())
    with pytest.raises(jwe.JweError, match=r"header not usable|does not decrypt"):
        jwe.decrypt(hostile, ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP521R1()])
def test_jwe_carries_a_resource_of_the_largest_stored_size(curve: ec.EllipticCurve) -> None:
    from teegate.kbs.storage.base import MAX_RESOURCE_BYTES

    key = ec.generate_private_key(curve)
    secret = bytes(range(256)) * (MAX_RESOURCE_BYTES // 256)
    sealed = jwe.encrypt(secret, TeePubKey.from_public_key(key.public_key()))
    assert jwe.decrypt(sealed, key) == secret

"""The hot path's shortcuts give exactly what the general code gives.

JCS by orjson for string trees (vs rfc8785), ES256 tokens signed without a JOSE
object model (checked by joserfc and jwcrypto), the attested session carrying its claims text
and digest, and the validated TEE key cache refusing bad keys every time."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto import jwk as jw_jwk
from jwcrypto import jws as jw_jws

from teegate.errors import ParseError
from teegate.kbs.audit import claims_digest
from teegate.kbs.protocol import HashAlgorithm, Tee, TeePubKey, jcs_bytes, runtime_data_digest
from teegate.kbs.session import SessionSealer, SessionState
from teegate.kbs.token import TokenError, TokenSigner, TokenVerifier, canonical_claims, ear_claims
from tests.strategies import json_values

pytestmark = pytest.mark.timeout(30)

_TRICKY = [
    "",
    "plain",
    'quote " backslash \\ slash /',
    "controls \x00\x01\x07\x08\t\n\x0b\x0c\r\x1f end",
    "DEL \x7f and NBSP \xa0",
    "unicode é ü 中文 \u2028 \u2029",
    "astral \U0001f600 \U00010000",
    "</script>",
]


@pytest.mark.parametrize("text", _TRICKY)
def test_jcs_of_string_trees_matches_rfc8785(text: str) -> None:
    value = {
        "nonce": text,
        "additional-evidence": text[::-1],
        "tee-pubkey": {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": text, "y": "y"},
    }
    assert jcs_bytes(value) == rfc8785.dumps(value)


@settings(max_examples=500, deadline=None)
@given(st.text(), st.text(alphabet=st.characters(max_codepoint=127), max_size=8))
def test_jcs_of_any_string_tree_matches_rfc8785(text: str, key: str) -> None:
    value = {"nonce": text, key: {"x": text[::-1], "y": key}, "z": ""}
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:  # lone surrogates
        with pytest.raises(rfc8785.CanonicalizationError):
            jcs_bytes(value)
        return
    assert jcs_bytes(value) == expected


def test_jcs_falls_back_to_rfc8785_for_other_values() -> None:
    numbers = {"b": 1.5, "a": [True, None, 10**3]}
    assert jcs_bytes(numbers) == rfc8785.dumps(numbers)
    non_ascii_keys = {"é": "x", "z": "y", "\U0001f600": "a", "\uffff": "b"}
    assert jcs_bytes(non_ascii_keys) == rfc8785.dumps(non_ascii_keys)
    with pytest.raises(rfc8785.CanonicalizationError):
        jcs_bytes({"nonce": "lone \ud800 surrogate"})


def test_runtime_data_digest_is_sha384_of_rfc8785() -> None:
    key = TeePubKey.from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    canonical = rfc8785.dumps({"additional-evidence": "", "nonce": "n\u00e9", "tee-pubkey": key.to_jwk()})
    assert runtime_data_digest("n\u00e9", key, "") == HashAlgorithm.SHA384.digest(canonical)


def _claims() -> dict[str, object]:
    return ear_claims(
        submods={"cpu0": {"ear.status": "affirming", "ear.veraison.annotated-evidence": {"tdx": {"é": 1}}}},
        now=int(time.time()),
    )


def test_signed_token_verifies_with_joserfc_and_jwcrypto() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signer = TokenSigner(key)
    claims = _claims()
    token = signer.sign(claims)
    # Same signing input (header and canonical payload); ECDSA signatures differ per call.
    assert token.rsplit(".", 1)[0] == signer.sign_json(canonical_claims(claims)).rsplit(".", 1)[0]
    assert TokenVerifier([key.public_key()]).verify(token, now=int(time.time())) == claims
    verifier = jw_jws.JWS()
    verifier.deserialize(token)
    verifier.verify(jw_jwk.JWK.from_pyca(key.public_key()), alg="ES256")
    assert json.loads(verifier.payload) == claims
    header = verifier.jose_header
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and header["jwk"] == signer.public_jwk
    other = TokenVerifier([ec.generate_private_key(ec.SECP256R1()).public_key()])
    with pytest.raises(TokenError, match="does not verify"):
        other.verify(token, now=int(time.time()))


def test_attested_session_keeps_claims_and_their_digest() -> None:
    sealer = SessionSealer.generate()
    claims = _claims()
    state = SessionState.new(Tee.TDX, "nonce", HashAlgorithm.SHA384, now=time.time(), timeout=60)
    attested = state.with_claims(claims, canonical_claims(claims))
    opened = sealer.open(sealer.seal(attested), now=time.time())
    assert opened.claims == claims
    assert opened.claims_digest == claims_digest(claims) == attested.claims_digest
    # A state whose claims came from a cookie (no text kept) seals the same way.
    again = sealer.open(sealer.seal(opened), now=time.time())
    assert again.claims == claims and again.claims_digest == opened.claims_digest


def test_cached_tee_key_validation_refuses_bad_points_every_time() -> None:
    good = TeePubKey.from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert good.public_key() is good.public_key()  # validated once, then reused
    bad = {**good.to_jwk(), "y": good.to_jwk()["x"]}
    for _ in range(2):
        with pytest.raises(ParseError, match="not a point"):
            TeePubKey.parse(bad)


# --- request JSON: the compact fast path agrees with the careful parser ------------------------

_JSON_VALUES = json_values(max_text=8, max_items=4)


def _careful(data: bytes) -> Any:
    from teegate.errors import ParseError
    from teegate.kbs import protocol

    text = data.decode("utf-8")
    try:
        value = json.loads(
            text, object_pairs_hook=protocol._unique_object, parse_constant=protocol._reject_constant
        )
    except (ValueError, RecursionError):
        raise ParseError("body", "malformed") from None
    protocol.check_json_depth(value)
    return value


def _outcome(fn: Any, data: bytes) -> Any:
    from teegate.errors import ParseError

    try:
        return ("ok", fn(data))
    except (ParseError, UnicodeDecodeError):
        return ("refused",)


@settings(max_examples=1500, deadline=None)
@given(_JSON_VALUES, st.booleans())
def test_compact_json_fast_path_agrees_with_the_careful_parser(value: Any, spaced: bool) -> None:
    from teegate.kbs.protocol import parse_json

    separators = (", ", ": ") if spaced else (",", ":")
    data = json.dumps(value, separators=separators, ensure_ascii=False).encode()
    assert _outcome(parse_json, data) == _outcome(_careful, data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"x":{"a":1,"a":1}}',
        b'[{"a":"\\ud800"}]',
        b'{"a":1e5}',
        b'{"a":18446744073709551616}',
        b'{"a":NaN}',
        b"\xef\xbb\xbf{}",
        b'{"a":"\\u00e9"}',
        b"[" * 40 + b"]" * 40,
        b'{"version":"0.4.0","tee":"tdx","extra-params":{}}',
    ],
)
def test_json_edge_cases_agree(data: bytes) -> None:
    from teegate.kbs.protocol import parse_json

    assert _outcome(parse_json, data) == _outcome(_careful, data)


def test_a_compact_attestation_body_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from teegate.kbs import protocol

    key = TeePubKey.from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
    body = {
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": key.to_jwk()},
        "tee-evidence": {
            "primary_evidence": {"quote": "AAAA", "cc_eventlog": None},
            "additional_evidence": "",
        },
    }
    data = json.dumps(body, separators=(",", ":")).encode()  # as serde_json writes it

    def no_careful_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the careful parser ran for compact JSON")

    monkeypatch.setattr(protocol.json, "loads", no_careful_parse)
    assert protocol.parse_json(data) == body

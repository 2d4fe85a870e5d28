"""Sealed sessions, the challenge ledger and EAR tokens."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from teegate.errors import ConfigError
from teegate.kbs.protocol import HashAlgorithm, Tee, TeePubKey
from teegate.kbs.session import (
    MAX_COOKIE_CHARS,
    ChallengeLedger,
    SessionError,
    SessionSealer,
    SessionState,
    load_session_key,
)
from teegate.kbs.token import (
    TokenError,
    TokenSigner,
    TokenVerifier,
    ear_claims,
    extract_tee_pubkey,
    load_or_create_token_key,
)

NOW = 1_800_000_000.0


def _state() -> SessionState:
    return SessionState.new(Tee.TDX, "bm9uY2U=", HashAlgorithm.SHA384, now=NOW, timeout=300)


def test_seal_open_roundtrip_and_replicas_share_key() -> None:
    key = os.urandom(32)
    one, two = SessionSealer(key), SessionSealer(key)
    state = _state()
    opened = two.open(one.seal(state), now=NOW + 10)
    assert opened == state and opened.claims is None and opened.expires_at == int(NOW) + 300
    attested = two.open(one.seal(state.with_claims({"exp": 1, "submods": {}})), now=NOW)
    assert attested.attested and attested.claims == {"exp": 1, "submods": {}}
    assert attested.expires_at == state.expires_at  # not extended (as Trustee)


def test_open_refuses_forged_expired_foreign() -> None:
    sealer = SessionSealer(os.urandom(32))
    cookie = sealer.seal(_state())
    with pytest.raises(SessionError, match="expired"):
        sealer.open(cookie, now=NOW + 300)
    with pytest.raises(SessionError, match="does not authenticate"):
        SessionSealer(os.urandom(32)).open(cookie, now=NOW)
    flipped = cookie[:-3] + ("A" if cookie[-3] != "A" else "B") + cookie[-2:]
    with pytest.raises(SessionError, match="does not authenticate"):
        sealer.open(flipped, now=NOW)
    for bad in ("", "v2.abc", "v1.", "v1.!!!", "x" * (MAX_COOKIE_CHARS + 1)):
        with pytest.raises(SessionError):
            sealer.open(bad, now=NOW)


def _count_decryptions(sealer: SessionSealer, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    decrypted: list[str] = []
    unseal = sealer._unseal

    def counting(value: str) -> SessionState:
        decrypted.append(value)
        return unseal(value)

    monkeypatch.setattr(sealer, "_unseal", counting)
    return decrypted


def test_recent_cookies_open_without_decrypting_but_still_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    sealer = SessionSealer(os.urandom(32))
    decrypted = _count_decryptions(sealer, monkeypatch)
    attested = _state().with_claims({"exp": 1, "submods": {"cpu0": {}}})
    cookie = sealer.seal(attested)
    opened = sealer.open(cookie, now=NOW)
    assert opened == attested and opened.claims == attested.claims and decrypted == []
    with pytest.raises(SessionError, match="expired"):  # a remembered cookie still expires
        sealer.open(cookie, now=NOW + 300)
    # A cookie sealed by another replica is decrypted once, then remembered.
    key = os.urandom(32)
    here, there = SessionSealer(key), SessionSealer(key)
    decrypted = _count_decryptions(here, monkeypatch)
    fresh = _state()
    foreign = there.seal(fresh)
    assert here.open(foreign, now=NOW) == here.open(foreign, now=NOW) == fresh
    assert decrypted == [foreign]
    # Forged cookies are never remembered: each one is refused again.
    flipped = foreign[:-3] + ("A" if foreign[-3] != "A" else "B") + foreign[-2:]
    for _ in range(2):
        with pytest.raises(SessionError, match="does not authenticate"):
            here.open(flipped, now=NOW)
    assert decrypted == [foreign, flipped, flipped]


def test_small_states_sealed_plain_and_older_compressed_cookies_still_open() -> None:
    import secrets
    import zlib

    from teegate.kbs import session as session_module

    key = os.urandom(32)
    sealer = SessionSealer(key)
    state = _state()
    cookie = sealer.seal(state)
    raw = base64.urlsafe_b64decode(cookie.removeprefix("v1.") + "==")
    aead = AESGCM(key)
    assert aead.decrypt(raw[:12], raw[12:], session_module._AAD).startswith(b"{")  # not compressed
    attested = state.with_claims({"exp": 1, "submods": {"cpu0": {"x": "ab" * 400}}})
    raw = base64.urlsafe_b64decode(sealer.seal(attested).removeprefix("v1.") + "==")
    assert aead.decrypt(raw[:12], raw[12:], session_module._AAD)[0] & 0x0F == 8  # zlib (deflate)
    # A cookie from a replica that compressed every state still opens.
    text = json.dumps({"id": "abc", "tee": "tdx", "nonce": "n", "hash": "sha384", "exp": int(NOW) + 300})
    iv = secrets.token_bytes(12)
    sealed = iv + aead.encrypt(iv, zlib.compress(text.encode(), 1), session_module._AAD)
    older = "v1." + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
    opened = SessionSealer(key).open(older, now=NOW)
    assert (opened.id, opened.nonce, opened.claims) == ("abc", "n", None)


def _sealed_plain(key: bytes, plain: bytes) -> str:
    import secrets

    from teegate.kbs import session as session_module

    iv = secrets.token_bytes(12)
    sealed = iv + AESGCM(key).encrypt(iv, plain, session_module._AAD)
    return "v1." + base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()


def test_attested_states_deflated_with_the_pinned_preset_dictionary() -> None:
    import zlib
    from importlib import resources

    from teegate.kbs import session as session_module

    # Released dictionaries never change: cookies name them by Adler-32 (a new one is added
    # beside, see _DICTIONARY_FILES).
    dictionary = resources.files("teegate.kbs").joinpath("session-dictionary-1.txt").read_bytes()
    assert (len(dictionary), zlib.adler32(dictionary)) == (6915, 0x17633033)
    assert len(dictionary) <= 1 << session_module._WINDOW_BITS
    key = os.urandom(32)
    sealer = SessionSealer(key)
    nonce = base64.b64encode(os.urandom(32)).decode()
    state = SessionState.new(Tee.TDX, nonce, HashAlgorithm.SHA384, now=NOW, timeout=300)
    evidence = {
        "tdx": {
            "quote": {"body": {name: os.urandom(48).hex() for name in ("mr_td", "rtmr_0", "rtmr_1")}},
            "td_attributes": {"debug": False},
            "tcb_status": "UpToDate",
        },
        "report_data": os.urandom(48).hex() + "00" * 16,
    }
    claims = {"exp": int(NOW) + 300, "submods": {"cpu0": {"ear.veraison.annotated-evidence": evidence}}}
    attested = state.with_claims(claims)
    cookie = sealer.seal(attested)
    raw = base64.urlsafe_b64decode(cookie.removeprefix("v1.") + "==")
    plain = AESGCM(key).decrypt(raw[:12], raw[12:], session_module._AAD)
    assert plain[0] == 0x58 and plain[1] & 0x20  # zlib, 8 KiB window, FDICT
    assert int.from_bytes(plain[2:6], "big") == 0x17633033
    text = zlib.decompressobj(zlib.MAX_WBITS, dictionary).decompress(plain)
    assert json.loads(text)["claims"] == claims
    assert len(plain) < len(zlib.compress(text, 1))  # the dictionary pays for itself
    # Another replica opens it; one sealed with a dictionary it lacks is refused as forged.
    assert SessionSealer(key).open(cookie, now=NOW).claims == claims
    other = zlib.compressobj(1, zlib.DEFLATED, 13, 8, zlib.Z_DEFAULT_STRATEGY, b"another dictionary")
    foreign = _sealed_plain(key, other.compress(text) + other.flush())
    with pytest.raises(SessionError, match="does not authenticate"):
        SessionSealer(key).open(foreign, now=NOW)
    # A deflate stream cut short (as only a bug could seal it) is refused, not half-read.
    truncated = _sealed_plain(key, plain[: len(plain) // 2])
    with pytest.raises(SessionError, match="does not authenticate"):
        SessionSealer(key).open(truncated, now=NOW)


def test_recent_cookies_are_bounded() -> None:
    from teegate.kbs.session import MAX_RECENT_SESSIONS

    sealer = SessionSealer(os.urandom(32))
    state = _state()
    first = sealer.seal(state)
    for _ in range(MAX_RECENT_SESSIONS + 10):
        sealer.seal(_state())
    assert len(sealer._recent) == MAX_RECENT_SESSIONS and first not in sealer._recent
    assert sealer.open(first, now=NOW) == state  # forgotten: decrypted again


def test_cookie_header_attributes() -> None:
    header = _state().set_cookie_header("v1.abc", secure=True)
    assert header.startswith("kbs-session-id=v1.abc; Expires=")
    assert "GMT" in header and "HttpOnly" in header and header.endswith("Secure")


def test_session_key_file_base64_or_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = os.urandom(32)
    b64 = tmp_path / "b64"
    b64.write_text(base64.b64encode(key).decode() + "\n")
    raw = tmp_path / "raw"
    raw.write_bytes(key)
    cookie = load_session_key(b64).seal(_state())
    assert load_session_key(raw).open(cookie, now=NOW).nonce == "bm9uY2U="
    monkeypatch.setenv("TEEGATE_KBS_SESSION_KEY_FILE", str(b64))
    assert not load_session_key().ephemeral
    monkeypatch.delenv("TEEGATE_KBS_SESSION_KEY_FILE")
    assert load_session_key().ephemeral
    short = tmp_path / "short"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(ConfigError, match="16 bytes"):
        load_session_key(short)


def test_ledger_one_time_and_expiry() -> None:
    ledger = ChallengeLedger(max_entries=3)
    assert ledger.consume("a", 100, now=50)
    assert not ledger.consume("a", 100, now=60)
    assert ledger.consume("b", 100, now=60)
    assert ledger.consume("a", 200, now=150)  # the old entry expired


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def test_token_sign_verify_and_tee_key_pointer(tmp_path: Path) -> None:
    path = tmp_path / "token-key.pem"
    key = load_or_create_token_key(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_or_create_token_key(path).private_numbers() == key.private_numbers()
    tee = TeePubKey.from_public_key(_key().public_key())
    claims = ear_claims(
        submods={
            "cpu0": {
                "ear.status": "affirming",
                "ear.trustworthiness-vector": {"hardware": 2},
                "ear.veraison.annotated-evidence": {"runtime_data_claims": {"tee-pubkey": tee.to_jwk()}},
            }
        },
        now=int(NOW),
    )
    token = TokenSigner(key).sign(claims)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["jwk"]["crv"] == "P-256"
    verified = TokenVerifier([key.public_key()]).verify(token, now=int(NOW) + 10)
    assert verified["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert verified["exp"] == int(NOW) + 300
    assert extract_tee_pubkey(verified) == tee
    with pytest.raises(TokenError, match="expired"):
        TokenVerifier([key.public_key()]).verify(token, now=int(NOW) + 301 + 60)


def test_token_from_untrusted_key_refused_even_with_header_jwk() -> None:
    rogue = _key()
    token = TokenSigner(rogue).sign(ear_claims(submods={}, now=int(NOW)))
    with pytest.raises(TokenError, match="does not verify"):
        TokenVerifier([_key().public_key()]).verify(token, now=int(NOW))
    # Only the named-insecure option trusts the key in the header.
    assert TokenVerifier([_key().public_key()], insecure_header_jwk=True).verify(token, now=int(NOW))["iss"]
    with pytest.raises(TokenError):
        TokenVerifier([_key().public_key()]).verify("not-a-token", now=int(NOW))
    with pytest.raises(TokenError, match="Failed to extract"):
        extract_tee_pubkey({"submods": {}})


def test_configured_signer_key_and_x5c(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from teegate.kbs.token import load_cert_chain

    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kbs token signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "k.pem", tmp_path / "c.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    loaded = load_or_create_token_key(key_path, create=False)
    x5c = load_cert_chain(cert_path, loaded)
    token = TokenSigner(loaded, x5c=x5c).sign(ear_claims(submods={}, now=int(NOW)))
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["x5c"] == [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
    with pytest.raises(ConfigError, match="not for the token signing key"):
        load_cert_chain(cert_path, _key())
    with pytest.raises(ConfigError, match="does not exist"):
        load_or_create_token_key(tmp_path / "missing.pem", create=False)

"""Handshake sessions sealed into the ``kbs-session-id`` cookie (no sticky sessions).

The session state (TEE, nonce, hash, expiry and, after ``/attest``, the token claims) is
compressed (when over 512 bytes, with a preset dictionary), encrypted and authenticated with
AES-256-GCM under a key every replica shares, so any replica can serve any step of a handshake
without a shared store. A client cannot read or change its session; a forged or expired cookie
is refused. See docs/adr/0005-kbs-stateless-sessions.md for what this buys and what it does not
(one-time use of a challenge across replicas).

Key: ``TEEGATE_KBS_SESSION_KEY_FILE`` (or ``[session] key_file``), a file holding 32 bytes
base64-encoded (what the operator's Secret mounts) or raw; without one, a key generated once under
the data directory (``session-key``: replicas that do not share the directory need the file).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import os
import secrets
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from teegate.errors import ConfigError, EvidenceError
from teegate.files import read_bounded, write_private
from teegate.kbs.protocol import HashAlgorithm, Tee, sorted_json

__all__ = [
    "DEFAULT_SESSION_TIMEOUT_SECONDS",
    "MAX_COOKIE_CHARS",
    "MAX_SESSION_STATE_BYTES",
    "SESSION_COOKIE",
    "SESSION_KEY_ENV",
    "SESSION_KEY_FILENAME",
    "ChallengeLedger",
    "SessionError",
    "SessionSealer",
    "SessionState",
    "load_session_key",
]

SESSION_COOKIE: Final = "kbs-session-id"
SESSION_KEY_ENV: Final = "TEEGATE_KBS_SESSION_KEY_FILE"
#: The generated session key inside the data directory.
SESSION_KEY_FILENAME: Final = "session-key"
DEFAULT_SESSION_TIMEOUT_SECONDS: Final = 300
#: Longest cookie value accepted (and produced).
MAX_COOKIE_CHARS: Final = 16 * 1024
#: Largest decompressed session state.
MAX_SESSION_STATE_BYTES: Final = 256 * 1024
#: Most challenges remembered per process for one-time use.
MAX_LEDGER_ENTRIES: Final = 200_000
#: Cookies this process sealed or opened lately, kept with their state so the next step of the
#: handshake on this replica does not decrypt and parse them again.
MAX_RECENT_SESSIONS: Final = 512
_KEY_BYTES: Final = 32
_MAX_KEY_FILE_BYTES: Final = 4096
_VERSION: Final = "v1"
_AAD: Final = b"teegate-kbs-session-v1"
#: States up to this size are sealed uncompressed.
_PLAIN_STATE_BYTES: Final = 512
#: Larger states are deflated with a preset dictionary (the layout of attested SGX and TDX
#: states with their per-session values blanked) in an 8 KiB window: an attested TDX state
#: seals to about half the bytes of plain deflate (1,218 cookie characters instead of 2,362)
#: for about the same CPU. A dictionary file is never changed once released (cookies name it by
#: its Adler-32, RFC 1950's DICTID): a new one is added beside it, and replicas of both
#: versions open either.
_DICTIONARY_FILES: Final = ("session-dictionary-1.txt",)
_WINDOW_BITS: Final = 13
_FDICT: Final = 0x20


@functools.cache
def _dictionaries() -> dict[int, bytes]:
    """Preset dictionaries by Adler-32, oldest first (package data, read once)."""
    package = resources.files("teegate.kbs")
    found: dict[int, bytes] = {}
    for name in _DICTIONARY_FILES:
        data = package.joinpath(name).read_bytes()
        found[zlib.adler32(data)] = data
    return found


@functools.cache
def _seal_dictionary() -> bytes:
    """The dictionary new states are sealed with (the newest)."""
    return list(_dictionaries().values())[-1]


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(
        1, zlib.DEFLATED, _WINDOW_BITS, 8, zlib.Z_DEFAULT_STRATEGY, _seal_dictionary()
    )
    return compressor.compress(data) + compressor.flush()


def _inflate(data: bytes) -> bytes:
    """Inflate a sealed state (bounded by :data:`MAX_SESSION_STATE_BYTES`); raises ValueError or
    zlib.error when it is not one."""
    if len(data) < 6:
        raise ValueError("too short")
    if data[1] & _FDICT:
        dictionary = _dictionaries().get(int.from_bytes(data[2:6], "big"))
        if dictionary is None:
            raise ValueError("sealed with a dictionary this KBS does not have")
        inflater = zlib.decompressobj(zlib.MAX_WBITS, dictionary)
    else:  # sealed before dictionaries
        inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_SESSION_STATE_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError("state too large")
    if not inflater.eof:
        raise ValueError("truncated")
    return out


class SessionError(EvidenceError):
    """The session cookie is missing, forged, expired or in the wrong state."""

    http_status = 401


@dataclass(frozen=True, slots=True)
class SessionState:
    """What a session remembers between ``/auth``, ``/attest`` and resource requests."""

    id: str
    tee: Tee
    nonce: str
    hash_algorithm: HashAlgorithm
    expires_at: int
    claims: dict[str, Any] | None = field(default=None, compare=False)
    #: ``claims`` as the canonical JSON text the token was signed over (kept so neither the
    #: cookie nor the audit digest serialises the claims again).
    claims_json: str | None = field(default=None, compare=False, repr=False)
    #: SHA-384 (hex) of that text, sealed with the claims: the audit record's ``claims_digest``.
    claims_digest: str | None = field(default=None, compare=False)

    @classmethod
    def new(
        cls, tee: Tee, nonce: str, hash_algorithm: HashAlgorithm, *, now: float, timeout: int
    ) -> SessionState:
        """A fresh ``Authed`` session expiring ``timeout`` seconds after ``now``."""
        return cls(secrets.token_hex(16), tee, nonce, hash_algorithm, int(now) + timeout)

    @property
    def attested(self) -> bool:
        """Whether ``/attest`` succeeded on this session."""
        return self.claims is not None

    def with_claims(self, claims: dict[str, Any], claims_json: str | None = None) -> SessionState:
        """The ``Attested`` successor (same id, nonce and expiry: Trustee does not extend it).

        ``claims_json``, when given, must be the canonical JSON text of ``claims``
        (:func:`teegate.kbs.token.canonical_claims`)."""
        if claims_json is None:
            claims_json = sorted_json(claims)
        digest = hashlib.sha384(claims_json.encode()).hexdigest()
        return SessionState(
            self.id, self.tee, self.nonce, self.hash_algorithm, self.expires_at, claims, claims_json, digest
        )

    def set_cookie_header(self, value: str, *, secure: bool) -> str:
        """The ``Set-Cookie`` value for this session."""
        expires = _http_date(self.expires_at)
        attrs = f"{SESSION_COOKIE}={value}; Expires={expires}; Path=/kbs/v0; HttpOnly; SameSite=Strict"
        return attrs + ("; Secure" if secure else "")


@functools.lru_cache(maxsize=64)
def _http_date(timestamp: int) -> str:
    """RFC 7231 date of ``timestamp`` (sessions started in the same second share one)."""
    return formatdate(timestamp, usegmt=True)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class SessionSealer:
    """Seals and opens :class:`SessionState` cookies with AES-256-GCM."""

    def __init__(self, key: bytes, *, ephemeral: bool = False) -> None:
        if len(key) != _KEY_BYTES:
            raise ConfigError(f"session key must be {_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        #: True when the key is random per process (single replica only).
        self.ephemeral = ephemeral
        # Cookie value → its state, for cookies sealed or opened here lately (oldest first). A
        # value is only ever added with the state it authenticates, so a hit is what decrypting
        # it would give; expiry is still checked on every open. The states are shared: callers
        # read them, never change them.
        self._recent: OrderedDict[str, SessionState] = OrderedDict()

    @classmethod
    def generate(cls) -> SessionSealer:
        """A sealer with a random key (one process only)."""
        return cls(secrets.token_bytes(_KEY_BYTES), ephemeral=True)

    def seal(self, state: SessionState) -> str:
        """The cookie value for ``state``."""
        payload: dict[str, Any] = {
            "id": state.id,
            "tee": state.tee.value,
            "nonce": state.nonce,
            "hash": state.hash_algorithm.value,
            "exp": state.expires_at,
        }
        if state.claims is not None and state.claims_json is None:
            state = state.with_claims(state.claims)
        if state.claims_digest is not None:
            payload["claims_digest"] = state.claims_digest
        text = orjson.dumps(payload).decode()
        if state.claims_json is not None:
            # The claims text is spliced in as it is, not parsed and serialised again.
            text = f'{text[:-1]},"claims":{state.claims_json}}}'
        raw_text = text.encode()
        # A small state (before /attest) is sealed as JSON: zlib's set-up alone costs more than
        # it saves there. Readers tell the two apart by the first byte ("{" is never a zlib
        # header's first byte).
        plain = raw_text if len(raw_text) <= _PLAIN_STATE_BYTES else _deflate(raw_text)
        iv = secrets.token_bytes(12)
        value = f"{_VERSION}.{_b64url(iv + self._aead.encrypt(iv, plain, _AAD))}"
        if len(value) > MAX_COOKIE_CHARS:
            raise SessionError(
                f"session state of {len(value)} characters exceeds the {MAX_COOKIE_CHARS}-character cookie "
                "limit; use the returned token as a Bearer token"
            )
        self._remember(value, state)
        return value

    def _remember(self, value: str, state: SessionState) -> None:
        recent = self._recent
        recent[value] = state
        if len(recent) > MAX_RECENT_SESSIONS:
            with contextlib.suppress(KeyError):  # another thread got there
                recent.popitem(last=False)

    def open(self, value: str | None, *, now: float) -> SessionState:
        """The state sealed in cookie ``value``; raises :class:`SessionError` naming what is wrong."""
        if not value:
            raise SessionError(f"no {SESSION_COOKIE} cookie; call /kbs/v0/auth first")
        if len(value) > MAX_COOKIE_CHARS:
            raise SessionError(f"{SESSION_COOKIE} cookie longer than {MAX_COOKIE_CHARS} characters")
        state = self._recent.get(value)
        if state is None:
            state = self._unseal(value)
            self._remember(value, state)
        if now >= state.expires_at:
            raise SessionError(
                f"session expired at {state.expires_at} (now {int(now)}); call /kbs/v0/auth again"
            )
        return state

    def _unseal(self, value: str) -> SessionState:
        version, _, body = value.partition(".")
        if version != _VERSION:
            raise SessionError(f"{SESSION_COOKIE} cookie is not a session issued by this KBS")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            if len(raw) < 12 + 16:
                raise ValueError("too short")
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD)
            data = plain if plain[:1] == b"{" else _inflate(plain)
            payload = orjson.loads(data)
            state = SessionState(
                id=str(payload["id"]),
                tee=Tee(payload["tee"]),
                nonce=str(payload["nonce"]),
                hash_algorithm=HashAlgorithm(payload["hash"]),
                expires_at=int(payload["exp"]),
                claims=payload.get("claims"),
                claims_digest=payload.get("claims_digest"),
            )
            if state.claims is not None and not isinstance(state.claims, dict):
                raise TypeError("claims")
            if state.claims_digest is not None and not isinstance(state.claims_digest, str):
                raise TypeError("claims_digest")
        except (binascii.Error, ValueError, InvalidTag, zlib.error, KeyError, TypeError):
            raise SessionError(
                f"{SESSION_COOKIE} cookie does not authenticate (forged, corrupted, or sealed with another "
                "replica's key)"
            ) from None
        return state


def _read_key_file(path: Path) -> SessionSealer:
    data = read_bounded(path, _MAX_KEY_FILE_BYTES, "session key file", ConfigError)
    if len(data) == _KEY_BYTES:
        return SessionSealer(data)
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"session key file {path} must hold 32 bytes, raw or base64") from None
    if len(key) != _KEY_BYTES:
        raise ConfigError(f"session key file {path} decodes to {len(key)} bytes; need {_KEY_BYTES}")
    return SessionSealer(key)


def _create_key_file(path: Path) -> None:
    """Write a fresh base64 key to ``path`` (0600) unless it exists (first writer wins)."""
    try:
        write_private(path, base64.b64encode(secrets.token_bytes(_KEY_BYTES)) + b"\n", exclusive=True)
    except OSError as exc:
        raise ConfigError(f"cannot create session key {path}: {exc.strerror}") from None


def load_session_key(path: Path | None = None, *, generated: Path | None = None) -> SessionSealer:
    """The sealer for the key at ``path`` (else ``$TEEGATE_KBS_SESSION_KEY_FILE``); else the key
    kept at ``generated`` (created once, 0600: survives restarts, shared by local workers); else
    an ephemeral per-process key (one process only)."""
    if path is None:
        env = os.environ.get(SESSION_KEY_ENV)
        path = Path(env) if env else None
    if path is not None:
        return _read_key_file(path)
    if generated is not None:
        _create_key_file(generated)
        return _read_key_file(generated)
    return SessionSealer.generate()


class ChallengeLedger:
    """Per-process memory of consumed challenges: a session id mints at most one token here.

    Across replicas the sealed cookie alone cannot enforce one-time use (ADR 0005); the
    binding of the evidence to the TEE key is what keeps a replayed attestation useless.
    """

    def __init__(self, max_entries: int = MAX_LEDGER_ENTRIES) -> None:
        self._used: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries

    def consume(self, session_id: str, expires_at: int, *, now: float | None = None) -> bool:
        """Mark ``session_id`` used; False if it already was (and has not expired)."""
        instant = time.time() if now is None else now
        while self._used:
            oldest_id, oldest_exp = next(iter(self._used.items()))
            if oldest_exp > instant and len(self._used) < self._max:
                break
            del self._used[oldest_id]
        if session_id in self._used:
            return False
        self._used[session_id] = expires_at
        return True

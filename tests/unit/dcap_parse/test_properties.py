"""Property tests: nothing but teegate's own errors escapes the parsers, whatever the input."""

from __future__ import annotations

import contextlib
import datetime
import struct

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ObjectIdentifier, UnrecognizedExtension
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.dcap.claims import quote_claims
from teegate.dcap.pck import (
    SGX_EXTENSION_OID,
    collateral_key,
    parse_pck_extensions,
    parse_sgx_extension,
    pck_ca_of,
)
from teegate.dcap.quote import Quote, decode_quote_text, parse_quote
from teegate.errors import TeegateError
from tests.conftest import vectors_dir
from tests.unit.dcap_parse._vectors import load

_REAL = [
    load(vectors_dir(), n)
    for n in ("dcap-qvl/sgx_quote", "dcap-qvl/tdx_quote", "go-tdx-guest/quote_v5_sample.dat")
]


def _ext_der(quote: bytes) -> bytes:
    ext = parse_quote(quote).pck_leaf.extensions.get_extension_for_oid(ObjectIdentifier(SGX_EXTENSION_OID))
    assert isinstance(ext.value, UnrecognizedExtension)
    return ext.value.value


_EXT = [_ext_der(q) for q in _REAL]
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _use(q: Quote) -> None:
    """Touch everything a caller may touch after a successful parse."""
    _ = q.pck_chain, q.report_data, q.signed_region, q.tee, q.debug
    collateral_key(q)
    quote_claims(q)


def _try_parse(data: bytes) -> None:
    try:
        q = parse_quote(data)
    except TeegateError:
        return
    with contextlib.suppress(TeegateError):
        _use(q)


@_SETTINGS
@given(st.binary(max_size=6000))
def test_random_bytes(data: bytes) -> None:
    _try_parse(data)


@_SETTINGS
@given(
    st.sampled_from([3, 4, 5]),
    st.integers(0, 0xFFFF),
    st.sampled_from([0, 0x81, 1]),
    st.binary(max_size=2000),
)
def test_plausible_headers(version: int, akt: int, tee: int, rest: bytes) -> None:
    _try_parse(struct.pack("<HHI", version, akt, tee) + rest)


@_SETTINGS
@given(
    st.sampled_from(range(len(_REAL))),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_real_quotes(which: int, edits: list[tuple[int, int]]) -> None:
    data = bytearray(_REAL[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    _try_parse(bytes(data))


@_SETTINGS
@given(st.sampled_from(range(len(_REAL))), st.integers(0, 6000), st.integers(0, 6000))
def test_sliced_real_quotes(which: int, start: int, stop: int) -> None:
    _try_parse(_REAL[which][start:stop])
    _try_parse(_REAL[which][:stop])


@_SETTINGS
@given(st.one_of(st.binary(max_size=3000), st.text(max_size=3000)))
def test_decode_quote_text(data: bytes | str) -> None:
    try:
        out = decode_quote_text(data)
    except TeegateError:
        return
    assert isinstance(out, bytes) and out
    _try_parse(out)


@_SETTINGS
@given(st.text(alphabet="0123456789abcdefABCDEFxX \n+/=-_", max_size=400))
def test_decode_quote_text_near_valid(text: str) -> None:
    with contextlib.suppress(TeegateError):
        decode_quote_text(text)


@_SETTINGS
@given(st.binary(max_size=1200))
def test_sgx_extension_random(data: bytes) -> None:
    with contextlib.suppress(TeegateError):
        parse_sgx_extension(data)


@_SETTINGS
@given(
    st.sampled_from(range(len(_EXT))),
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 2000),
)
def test_sgx_extension_mutated(which: int, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_EXT[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        with contextlib.suppress(TeegateError):
            parse_sgx_extension(candidate)


_CERT_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=600), st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
)
def test_parse_pck_extensions_on_certificates(ext_value: bytes, issuer: str) -> None:
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or "x")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(_CERT_KEY.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(UnrecognizedExtension(ObjectIdentifier(SGX_EXTENSION_OID), ext_value), critical=False)
        .sign(_CERT_KEY, hashes.SHA256())
    )
    with contextlib.suppress(TeegateError):
        parse_pck_extensions(cert)
    with contextlib.suppress(TeegateError):
        pck_ca_of(cert)

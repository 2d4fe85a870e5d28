"""Speed paths of teegate.dcap.pck agree with the generic strict walk and the Name-object path."""

from __future__ import annotations

import datetime
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.dcap import pck
from teegate.dcap.pck import SGX_EXTENSION_OID, parse_sgx_extension, pck_ca_of
from teegate.dcap.quote import parse_quote
from teegate.errors import ParseError
from tests.conftest import vectors_dir
from tests.unit.dcap_parse._vectors import load
from tests.unit.dcap_parse.test_pck import ROOT, ext, integer, pair, seq, tcb, tlv


def _with_tcb(tcb_pair: bytes) -> bytes:
    return ext(**{"2": tcb_pair})  # type: ignore[arg-type]


def _generic(der: bytes) -> pck.PckExtensions:
    """The same extension parsed with the TCB template disabled (generic walk only)."""
    saved = pck._TCB_TEMPLATE
    pck._TCB_TEMPLATE = re.compile(b"(?!)")  # never matches
    try:
        return parse_sgx_extension(der)
    finally:
        pck._TCB_TEMPLATE = saved


def _tcb_body(der: bytes) -> bytes:
    start = der.index(bytes.fromhex("060a2a864886f84d010d0102")) + 12
    return der[start:]


@pytest.mark.parametrize("name", ["dcap-qvl/tdx_quote", "dcap-qvl/sgx_quote"])
def test_real_extensions_take_the_fast_path_and_agree(name: str) -> None:
    leaf = parse_quote(load(vectors_dir(), name)).pck_leaf
    value = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(value, x509.UnrecognizedExtension)
    der = value.value
    assert pck._TCB_TEMPLATE.search(_tcb_body(der)) is not None
    assert parse_sgx_extension(der) == _generic(der)


@pytest.mark.parametrize(
    ("svns", "pcesvn", "fast"),
    [
        (list(range(16)), 13, True),
        ([127, 128, 255, 0, *range(12)], 127, True),
        ([255] * 16, 128, True),
        ([0] * 16, 0x7FFF, True),
        ([0] * 16, 0x8000, False),  # three content bytes: generic walk
        ([0] * 16, 0xFFFF, False),
    ],
)
def test_tcb_values_fast_and_generic_agree(svns: list[int], pcesvn: int, fast: bool) -> None:
    der = _with_tcb(tcb(svns, pcesvn=pcesvn, cpusvn=bytes(range(10, 26))))
    assert (pck._TCB_TEMPLATE.search(der) is not None) is fast
    parsed = parse_sgx_extension(der)
    assert parsed == _generic(der)
    assert parsed.tcb.sgx_components == tuple(svns)
    assert parsed.tcb.pcesvn == pcesvn
    assert parsed.tcb.cpusvn == bytes(range(10, 26))


def test_reordered_tcb_uses_the_generic_walk() -> None:
    items = [pair(f"2.{i + 1}", integer(i)) for i in range(16)]
    items += [pair("2.17", integer(9)), pair("2.18", tlv(0x04, bytes(16)))]
    items[0], items[1] = items[1], items[0]
    der = _with_tcb(pair("2", seq(*items)))
    assert pck._TCB_TEMPLATE.search(der) is None
    assert parse_sgx_extension(der).tcb.sgx_components == tuple(range(16))


@pytest.mark.parametrize(
    "bad",
    [
        b"\x02\x02\x00\x05",  # SVN not minimally encoded
        b"\x02\x01\x80",  # negative SVN
        b"\x02\x02\x01\x00",  # SVN 256
        b"\x04\x01\x05",  # wrong type
    ],
)
def test_malformed_svn_is_refused_like_before(bad: bytes) -> None:
    items = [pair(f"2.{i + 1}", integer(i)) for i in range(16)]
    items[3] = pair("2.4", bad)
    items += [pair("2.17", integer(9)), pair("2.18", tlv(0x04, bytes(16)))]
    der = _with_tcb(pair("2", seq(*items)))
    with pytest.raises(ParseError) as info:
        parse_sgx_extension(der)
    assert f"{ROOT}.2.4" in str(info.value)
    with pytest.raises(ParseError) as generic:
        _generic(der)
    assert str(generic.value) == str(info.value)


def _issuer_cert(name: x509.Name) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX PCK Certificate")])
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def _raw_issuer(cert: x509.Certificate) -> bytes:
    return cert.issuer.public_bytes()


def _attr(
    oid: x509.ObjectIdentifier, value: str, tag: x509.name._ASN1Type | None = None
) -> x509.NameAttribute[str]:
    return x509.NameAttribute(oid, value) if tag is None else x509.NameAttribute(oid, value, _type=tag)


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ([_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA")], "platform"),
        (
            [
                _attr(NameOID.COMMON_NAME, "Intel SGX PCK Processor CA"),
                _attr(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
                _attr(NameOID.COUNTRY_NAME, "US"),
            ],
            "processor",
        ),
        (
            [_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA", x509.name._ASN1Type.PrintableString)],
            "platform",
        ),
        (
            [_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA", x509.name._ASN1Type.BMPString)],
            "platform",
        ),
        ([_attr(NameOID.COMMON_NAME, "Intel SGX Root CA")], ParseError),
        ([_attr(NameOID.ORGANIZATION_NAME, "no common name")], ParseError),
        (
            [_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA")] * 2,
            ParseError,
        ),
    ],
)
def test_raw_issuer_name_agrees_with_name_objects(
    attrs: list[x509.NameAttribute[str]], expected: object
) -> None:
    cert = _issuer_cert(x509.Name(attrs))
    raw = _raw_issuer(cert)
    if expected is ParseError:
        for kwargs in ({}, {"issuer_der": raw}):
            with pytest.raises(ParseError) as info:
                pck_ca_of(cert, **kwargs)
            assert info.value.field == "pck_leaf.issuer"
    else:
        assert pck_ca_of(cert) == expected
        assert pck_ca_of(cert, issuer_der=raw) == expected


def test_raw_common_names_reads_plain_names_and_declines_the_rest() -> None:
    utf8 = _raw_issuer(_issuer_cert(x509.Name([_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA")])))
    assert pck._raw_common_names(utf8) == ["Intel SGX PCK Platform CA"]
    bmp = _raw_issuer(
        _issuer_cert(
            x509.Name(
                [_attr(NameOID.COMMON_NAME, "Intel SGX PCK Platform CA", x509.name._ASN1Type.BMPString)]
            )
        )
    )
    assert pck._raw_common_names(bmp) is None  # decoded by the Name path instead
    assert pck._raw_common_names(utf8 + b"\x00") is None  # trailing byte
    assert pck._raw_common_names(utf8[:-1]) is None  # truncated
    assert pck._raw_common_names(b"\x30\x02\x31\x00") is None  # empty RDN
    assert pck._raw_common_names(b"\x30\x00") == []


@pytest.mark.parametrize("name", ["dcap-qvl/tdx_quote", "dcap-qvl/sgx_quote"])
def test_real_leaf_issuer_raw_and_name_paths_agree(name: str) -> None:
    leaf = parse_quote(load(vectors_dir(), name)).pck_leaf
    der = leaf.public_bytes(Encoding.DER)
    raw = leaf.issuer.public_bytes()
    assert raw in der
    assert pck_ca_of(leaf, issuer_der=raw) == pck_ca_of(leaf)


# --- quote text: the one-pass base64 path agrees with the careful decoder -----------------------

_TEXT_ALPHABET = "ABCDEFabcdef0123456789xX+/-_= \n\t"


def _both(text: bytes) -> tuple[bytes | str, bytes | str]:
    from teegate.dcap.quote import _decode_text, decode_quote_text

    def run(fn: object) -> bytes | str:
        try:
            return fn(text)  # type: ignore[operator,no-any-return]
        except ParseError:
            return "refused"

    return run(decode_quote_text), run(_decode_text)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=_TEXT_ALPHABET, min_size=1, max_size=24))
def test_quote_text_fast_path_agrees_with_careful_decoder(text: str) -> None:
    fast, careful = _both(text.encode())
    assert fast == careful


@pytest.mark.parametrize(
    "text",
    [b"AAAA", b"AAAA====", b"AAAA=", b"AAA=", b"AA==", b"AA=A", b"=AAA", b"0xAAAA", b"BAAC", b"QUJD"],
)
def test_quote_text_fast_path_edge_cases(text: bytes) -> None:
    fast, careful = _both(text)
    assert fast == careful


def test_real_quotes_in_base64_take_the_one_pass_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    from teegate.dcap import quote as quote_module
    from tests.unit.dcap_parse._vectors import quote_files

    vectors = vectors_dir()
    quotes = [load(vectors, name) for name in quote_files(vectors)]
    assert quotes

    def careful(raw: bytes) -> bytes:
        raise AssertionError("the careful decoder ran for canonical base64")

    monkeypatch.setattr(quote_module, "_decode_text", careful)
    for data in quotes:
        assert quote_module.decode_quote_text(base64.b64encode(data).decode()) == data

"""Refusals: each names the field and the byte offset (STYLE.md, practice 2)."""

from __future__ import annotations

import struct

import pytest

from teegate.dcap import quote as Q
from teegate.dcap.quote import decode_quote_text, parse_quote
from teegate.errors import EvidenceError, ParseError
from tests.conftest import vectors_dir
from tests.unit.dcap_parse import _build as b
from tests.unit.dcap_parse._vectors import load

PEM = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\0"
REAL = {
    "v3": "dcap-qvl/sgx_quote",
    "v4": "dcap-qvl/tdx_quote",
    "v5": "go-tdx-guest/quote_v5_sample.dat",
}


def _refused(data: bytes, field: str, offset: int | None, **kw: bool) -> ParseError:
    with pytest.raises(ParseError) as exc:
        parse_quote(data, **kw)
    assert exc.value.field == field, str(exc.value)
    assert exc.value.offset == offset, str(exc.value)
    assert isinstance(exc.value, EvidenceError)
    return exc.value


def _v4(**kw: object) -> bytes:
    return b.quote(4, 0x81, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), PEM, **kw))  # type: ignore[arg-type]


def _v3(**kw: object) -> bytes:
    return b.quote(3, 0, b.pattern(384, 2), b.sig_data_v3(b.pattern(384, 3), PEM, **kw))  # type: ignore[arg-type]


def test_synthetic_quotes_parse() -> None:
    assert parse_quote(_v4()).version == 4
    assert parse_quote(_v3()).version == 3


@pytest.mark.parametrize("version", [0, 1, 2, 6, 0xFFFF])
def test_bad_version(version: int) -> None:
    data = struct.pack("<H", version) + _v4()[2:]
    err = _refused(data, "header.version", 0)
    assert str(version) in str(err)


@pytest.mark.parametrize("akt", [0, 1, 3, 0xFFFF])
def test_bad_att_key_type(akt: int) -> None:
    data = _v4()[:2] + struct.pack("<H", akt) + _v4()[4:]
    _refused(data, "header.att_key_type", 2)


@pytest.mark.parametrize(("version", "tee"), [(3, 0x81), (3, 1), (4, 0), (4, 0x80), (5, 0x82)])
def test_bad_tee_type(version: int, tee: int) -> None:
    base = _v3() if version == 3 else _v4()
    data = struct.pack("<HHI", version, 2, tee) + base[8:]
    _refused(data, "header.tee_type", 4)


@pytest.mark.parametrize(("body_type", "tee"), [(0, 0x81), (4, 0x81), (1, 0x81), (2, 0), (3, 0)])
def test_bad_v5_body_type(body_type: int, tee: int) -> None:
    raw = b.quote(5, tee, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), PEM), body_type=body_type)
    _refused(raw, "body_type", 48)


@pytest.mark.parametrize(("body_type", "size"), [(2, 648), (3, 584), (1, 584), (2, 0)])
def test_bad_v5_body_size(body_type: int, size: int) -> None:
    tee = 0 if body_type == 1 else 0x81
    raw = b.quote(5, tee, b.pattern(size, 4), b.sig_data_v4(b.pattern(384, 3), PEM), body_type=body_type)
    _refused(raw, "body_size", 50)


@pytest.mark.parametrize("outer", [1, 2, 3, 4, 5, 7, 0xFFFF])
def test_bad_outer_cert_type_v4(outer: int) -> None:
    _refused(_v4(outer_type=outer), "cert_data.type", 764)


@pytest.mark.parametrize("inner", [1, 2, 3, 4, 6, 7])
def test_bad_inner_cert_type(inner: int) -> None:
    _refused(_v4(inner_type=inner), "pck_cert_data.type", 1252)


@pytest.mark.parametrize("ctype", [1, 2, 3, 4, 6, 7])
def test_bad_cert_type_v3(ctype: int) -> None:
    _refused(_v3(cert_type=ctype), "pck_cert_data.type", 1046)


def test_trailing_nonzero_refused_and_zero_padding_accepted() -> None:
    data = _v4()
    assert parse_quote(data + bytes(100)).padding == 100
    _refused(data + bytes(5) + b"x", "quote", len(data) + 5)
    q = parse_quote(data + b"xyz", allow_trailing_data=True)
    assert q.trailing_data == b"xyz" and q.padding == 0


def test_oversized_quote() -> None:
    data = _v4()
    big = data + bytes(Q.MAX_QUOTE_BYTES - len(data) + 1)
    _refused(big, "quote", None)
    assert parse_quote(big[:-1]).padding == Q.MAX_QUOTE_BYTES - len(data)


def test_oversized_sig_data_len() -> None:
    data = bytearray(_v4())
    struct.pack_into("<I", data, 632, Q.MAX_SIG_DATA_BYTES + 1)
    _refused(bytes(data), "sig_data_len", 632)
    struct.pack_into("<I", data, 632, 0xFFFFFFFF)
    _refused(bytes(data), "sig_data_len", 632)


def test_sig_data_len_past_end() -> None:
    data = bytearray(_v4())
    struct.pack_into("<I", data, 632, len(data) - 636 + 1)
    _refused(bytes(data), "sig_data_len", 632)


def test_sig_data_len_short_leaves_trailing_bytes() -> None:
    data = bytearray(_v4())
    struct.pack_into("<I", data, 632, len(data) - 636 - 10)
    err = _refused(bytes(data), "cert_data.size", 766)
    assert "should end" in str(err)


def test_oversized_auth_data() -> None:
    _refused(_v4(auth=bytes(Q.MAX_AUTH_DATA_BYTES + 1)), "qe_auth_data.size", 1218)
    assert len(parse_quote(_v4(auth=bytes(Q.MAX_AUTH_DATA_BYTES))).qe_auth_data) == Q.MAX_AUTH_DATA_BYTES
    assert parse_quote(_v4(auth=b"")).qe_auth_data == b""


def test_auth_len_past_signature_data() -> None:
    data = bytearray(_v4())
    struct.pack_into("<H", data, 1218, 900)
    _refused(bytes(data), "qe_auth_data", 1220)


def test_oversized_cert_data() -> None:
    data = bytearray(_v4())
    struct.pack_into("<I", data, 766, Q.MAX_CERT_DATA_BYTES + 1)
    _refused(bytes(data), "cert_data.size", 766)
    data = bytearray(_v4())
    struct.pack_into("<I", data, 1254, Q.MAX_CERT_DATA_BYTES + 1)
    _refused(bytes(data), "pck_cert_data.size", 1254)


def test_inner_cert_size_inconsistent() -> None:
    data = bytearray(_v4())
    size = struct.unpack_from("<I", data, 1254)[0]
    struct.pack_into("<I", data, 1254, size - 1)
    _refused(bytes(data), "pck_cert_data.size", 1254)


def test_pem_not_ascii_or_without_certificate() -> None:
    bad = b"-----BEGIN CERTIFICATE-----\n\xff\n"
    _refused(
        b.quote(4, 0x81, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), bad)),
        "pck_cert_chain",
        1258 + 28,
    )
    _refused(
        b.quote(4, 0x81, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), b"hello\0")),
        "pck_cert_chain",
        1258,
    )
    _refused(
        b.quote(
            4, 0x81, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), b"-----BEGIN CERTIFICATE-----\0x")
        ),
        "pck_cert_chain",
        1258,
    )


def test_bad_pem_chain_refused_lazily() -> None:
    q = parse_quote(_v4())
    with pytest.raises(ParseError) as exc:
        _ = q.pck_chain
    assert exc.value.field == "pck_chain"
    five = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n" * 5
    q = parse_quote(b.quote(4, 0x81, b.pattern(584, 4), b.sig_data_v4(b.pattern(384, 3), five)))
    with pytest.raises(ParseError, match="more than"):
        _ = q.pck_leaf


@pytest.mark.parametrize("kind", sorted(REAL))
def test_every_truncation_refused(kind: str) -> None:
    raw = load(vectors_dir(), REAL[kind])
    q = parse_quote(raw)
    end = len(raw) - q.padding
    for k in range(end):
        with pytest.raises(ParseError) as exc:
            parse_quote(raw[:k])
        assert exc.value.offset is not None and exc.value.offset <= max(k, 0), (k, str(exc.value))


# Where the parser must stop for a quote cut at a structure boundary: (cut, field, offset).
@pytest.mark.parametrize(
    ("cut", "field", "offset"),
    [
        (0, "header", 0),
        (47, "header", 0),
        (48, "body", 48),
        (631, "body", 48),
        (632, "sig_data_len", 632),
        (635, "sig_data_len", 632),
        (636, "sig_data_len", 632),
        (4935, "sig_data_len", 632),
    ],
)
def test_truncation_at_v4_boundaries(cut: int, field: str, offset: int) -> None:
    raw = load(vectors_dir(), REAL["v4"])
    _refused(raw[:cut], field, offset)


@pytest.mark.parametrize(
    ("cut", "field", "offset"),
    [
        (48, "body_type", 48),
        (53, "body_type", 48),
        (54, "body", 54),
        (701, "body", 54),
        (702, "sig_data_len", 702),
    ],
)
def test_truncation_at_v5_boundaries(cut: int, field: str, offset: int) -> None:
    raw = load(vectors_dir(), REAL["v5"])
    _refused(raw[:cut], field, offset)


# The signature data cut short with sig_data_len shrunk to match: inner structures are checked.
@pytest.mark.parametrize(
    ("inner_len", "field", "offset"),
    [
        (0, "sig_data_len", 632),
        (133, "sig_data_len", 632),
        (134, "cert_data.size", 766),
        (500, "cert_data.size", 766),
        (4299, "cert_data.size", 766),
    ],
)
def test_inner_truncation_v4(inner_len: int, field: str, offset: int) -> None:
    raw = bytearray(load(vectors_dir(), REAL["v4"])[: 636 + inner_len])
    struct.pack_into("<I", raw, 632, inner_len)
    _refused(bytes(raw), field, offset)


@pytest.mark.parametrize(
    ("inner_len", "field", "offset"),
    [
        (134, "qe_report", 564),
        (577, "qe_report", 564),
        (578, "qe_auth_data", 1014),
        (609, "qe_auth_data", 1014),
        (610, "pck_cert_data.type", 1046),
        (615, "pck_cert_data.type", 1046),
        (616, "pck_cert_data.size", 1048),
        (4000, "pck_cert_data.size", 1048),
    ],
)
def test_inner_truncation_v3(inner_len: int, field: str, offset: int) -> None:
    raw = bytearray(load(vectors_dir(), REAL["v3"])[: 436 + inner_len])
    struct.pack_into("<I", raw, 432, inner_len)
    _refused(bytes(raw), field, offset)


def test_not_bytes() -> None:
    with pytest.raises(ParseError):
        parse_quote("0400")  # type: ignore[arg-type]
    assert parse_quote(bytearray(_v4())).version == 4
    assert parse_quote(memoryview(_v4())).version == 4  # type: ignore[arg-type]


class TestDecodeQuoteText:
    def test_binary_as_is(self) -> None:
        data = _v4()
        assert decode_quote_text(data) == data

    def test_hex_variants(self) -> None:
        data = _v4()
        h = data.hex()
        assert decode_quote_text(h) == data
        assert decode_quote_text(h.upper().encode()) == data
        assert decode_quote_text("0x" + h) == data
        wrapped = "\n".join(h[i : i + 64] for i in range(0, len(h), 64)) + "\n"
        assert decode_quote_text(wrapped) == data

    def test_base64_variants(self) -> None:
        import base64

        data = _v4()
        assert decode_quote_text(base64.b64encode(data)) == data
        assert decode_quote_text(base64.b64encode(data).decode().rstrip("=")) == data
        assert decode_quote_text(base64.urlsafe_b64encode(data)) == data
        assert decode_quote_text(base64.encodebytes(data)) == data

    @pytest.mark.parametrize(
        "text",
        ["", "   \n", "abc", "0x123", "zz!!", "héllo", "AAAA====", "ab=cd", "+-", b"\x00"],
    )
    def test_refused(self, text: str | bytes) -> None:
        if text == b"\x00":
            assert decode_quote_text(text) == b"\x00"  # binary: parse_quote will judge it
            return
        with pytest.raises(ParseError):
            decode_quote_text(text)

    def test_bounds(self) -> None:
        with pytest.raises(ParseError, match="MAX_QUOTE_TEXT_BYTES"):
            decode_quote_text("0" * (Q.MAX_QUOTE_TEXT_BYTES + 2))
        with pytest.raises(ParseError, match="MAX_QUOTE_BYTES"):
            decode_quote_text("00" * (Q.MAX_QUOTE_BYTES + 1))
        with pytest.raises(ParseError, match="MAX_QUOTE_BYTES"):
            decode_quote_text(b"\x04\x00" + bytes(Q.MAX_QUOTE_BYTES))
        with pytest.raises(ParseError):
            decode_quote_text(123)  # type: ignore[arg-type]

    def test_real_text_vectors(self) -> None:
        v = vectors_dir()
        for name in (
            "dcap-qvl/tdx-quote.hex",
            "dcap-qvl/quote-from-tappd.hex",
            "automata-dcap-rs/sgx_quote_v3_from_lib_rs.hex",
        ):
            data = decode_quote_text((v / name).read_bytes())
            assert data[:2] in (b"\x03\x00", b"\x04\x00")

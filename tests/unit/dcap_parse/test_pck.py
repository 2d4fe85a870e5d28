"""PCK certificate SGX extension: real certificates match dcap-qvl; malformed DER is refused by OID."""

from __future__ import annotations

import datetime

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from teegate.dcap.collateral import CollateralKey
from teegate.dcap.pck import (
    MAX_SGX_EXTENSION_BYTES,
    SGX_EXTENSION_OID,
    collateral_key,
    parse_pck_extensions,
    parse_sgx_extension,
    pck_ca_of,
)
from teegate.dcap.quote import parse_quote
from teegate.errors import ParseError
from tests.conftest import vectors_dir
from tests.unit.dcap_parse._vectors import NONZERO_TRAILING, load, quote_files

ROOT = SGX_EXTENSION_OID


# --- a tiny DER encoder, independent of the code under test --------------------------------
def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + value


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for first in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [first & 0x7F]
        rest = first >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return tlv(0x06, bytes(out))


def integer(v: int) -> bytes:
    return tlv(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def pair(suffix: str, value: bytes) -> bytes:
    return seq(oid(f"{ROOT}.{suffix}"), value)


def tcb(
    svns: list[int], pcesvn: int = 13, cpusvn: bytes = bytes(16), extra: list[bytes] | None = None
) -> bytes:
    items = [pair(f"2.{i + 1}", integer(s)) for i, s in enumerate(svns)]
    items += [pair("2.17", integer(pcesvn)), pair("2.18", tlv(0x04, cpusvn))]
    return pair("2", seq(*items, *(extra or [])))


def ext(*, platform: bool = True, **override: bytes | None) -> bytes:
    parts: dict[str, bytes | None] = {
        "1": pair("1", tlv(0x04, bytes(range(16)))),
        "2": tcb(list(range(16))),
        "3": pair("3", tlv(0x04, b"\x00\x01")),
        "4": pair("4", tlv(0x04, bytes.fromhex("90C06F000000"))),
        "5": pair("5", tlv(0x0A, b"\x01")),
        "6": pair("6", tlv(0x04, bytes(range(100, 116)))) if platform else None,
        "7": pair(
            "7",
            seq(
                pair("7.1", tlv(0x01, b"\xff")),
                pair("7.2", tlv(0x01, b"\x00")),
                pair("7.3", tlv(0x01, b"\xff")),
            ),
        )
        if platform
        else None,
    }
    parts.update(override)
    return seq(*(v for v in parts.values() if v is not None))


def _refused(der: bytes, field: str) -> ParseError:
    with pytest.raises(ParseError) as exc:
        parse_sgx_extension(der)
    assert exc.value.field == field, str(exc.value)
    return exc.value


# --- real certificates ---------------------------------------------------------------------
@pytest.mark.parametrize("name", quote_files(vectors_dir()))
def test_real_pck_matches_dcap_qvl(name: str) -> None:
    data = load(vectors_dir(), name)
    q = parse_quote(data, allow_trailing_data=name in NONZERO_TRAILING)
    e = parse_pck_extensions(q.pck_leaf)
    ref = dcap_qvl.parse_quote(data)
    r = ref.pck_extension()
    assert e.ppid == bytes(r.ppid)
    assert e.fmspc == bytes(r.fmspc)
    assert e.pce_id == bytes(r.pce_id)
    assert e.tcb.pcesvn == r.pce_svn
    assert e.tcb.cpusvn == bytes(r.cpu_svn)
    assert e.sgx_type == r.sgx_type
    ref_piid = bytes(r.platform_instance_id) if r.platform_instance_id else None
    assert e.platform_instance_id == ref_piid
    assert len(e.tcb.sgx_components) == 16
    assert (e.configuration is not None) == (e.platform_instance_id is not None)
    key = collateral_key(q)
    assert key == CollateralKey(tee=q.tee, fmspc=ref.fmspc().upper(), ca=ref.ca())
    assert pck_ca_of(q.pck_leaf) == ref.ca()


def test_synthetic_roundtrip() -> None:
    e = parse_sgx_extension(ext())
    assert e.ppid == bytes(range(16))
    assert e.tcb.sgx_components == tuple(range(16))
    assert (e.tcb.pcesvn, e.tcb.cpusvn) == (13, bytes(16))
    assert e.pce_id_hex == "0001" and e.fmspc_hex == "90C06F000000"
    assert e.sgx_type == 1 and e.sgx_type_name == "Scalable"
    assert e.platform_instance_id == bytes(range(100, 116))
    assert e.configuration is not None
    assert (e.configuration.dynamic_platform, e.configuration.cached_keys, e.configuration.smt_enabled) == (
        True,
        False,
        True,
    )
    p = parse_sgx_extension(ext(platform=False))
    assert p.platform_instance_id is None and p.configuration is None
    partial = parse_sgx_extension(ext(**{"7": pair("7", seq(pair("7.2", tlv(0x01, b"\xff"))))}))
    assert partial.configuration is not None
    assert partial.configuration.cached_keys is True and partial.configuration.smt_enabled is None
    big = parse_sgx_extension(ext(**{"2": tcb([255] * 16, pcesvn=65535)}))
    assert big.tcb.sgx_components == (255,) * 16 and big.tcb.pcesvn == 65535


@pytest.mark.parametrize("missing", ["1", "2", "3", "4", "5"])
def test_missing_required(missing: str) -> None:
    err = _refused(ext(**{missing: None}), f"{ROOT}.{missing}")
    assert "missing" in str(err)


def test_duplicate_oid() -> None:
    der = ext()
    body = der[2:] if der[1] < 0x80 else der[2 + (der[1] & 0x7F) :]
    dup = seq(body, pair("4", tlv(0x04, bytes(6))))
    _refused(dup, f"{ROOT}.4")
    dup_tcb = ext(**{"2": tcb(list(range(16)), extra=[pair("2.5", integer(1))])})
    _refused(dup_tcb, f"{ROOT}.2.5")


def test_unknown_oids() -> None:
    _refused(ext(**{"8": pair("8", tlv(0x04, b"x"))}), f"{ROOT}.8")
    _refused(ext(**{"2": tcb(list(range(16)), extra=[pair("2.19", integer(1))])}), f"{ROOT}.2.19")
    _refused(ext(**{"7": pair("7", seq(pair("7.4", tlv(0x01, b"\xff"))))}), f"{ROOT}.7.4")


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"1": pair("1", tlv(0x04, bytes(15)))}, ROOT),  # PPID size
        ({"1": pair("1", integer(5))}, f"{ROOT}.1"),  # wrong tag
        ({"3": pair("3", tlv(0x04, bytes(3)))}, ROOT),
        ({"4": pair("4", tlv(0x04, bytes(5)))}, ROOT),
        ({"5": pair("5", integer(1))}, f"{ROOT}.5"),  # INTEGER, not ENUMERATED
        ({"5": pair("5", tlv(0x0A, b"\x03"))}, f"{ROOT}.5"),  # unknown SGX type
        ({"5": pair("5", tlv(0x0A, b"\xff"))}, ROOT),  # negative
        ({"2": tcb([256] + [0] * 15)}, ROOT),  # SVN > 255
        ({"2": tcb([0] * 16, pcesvn=65536)}, ROOT),
        ({"2": tcb([0] * 16, cpusvn=bytes(15))}, ROOT),
        ({"2": pair("2", tlv(0x04, b""))}, f"{ROOT}.2"),
        ({"6": pair("6", tlv(0x04, bytes(8)))}, ROOT),
        ({"7": pair("7", seq(pair("7.1", tlv(0x01, b"\x01"))))}, ROOT),  # BOOLEAN not DER
        ({"7": pair("7", seq(pair("7.1", integer(1))))}, f"{ROOT}.7.1"),
    ],
)
def test_bad_values(override: dict[str, bytes], field: str) -> None:
    _refused(ext(**override), field)


def test_non_minimal_encodings() -> None:
    # INTEGER 5 as 00 05
    bad_int = pair("2.1", tlv(0x02, b"\x00\x05"))
    items = [bad_int] + [pair(f"2.{i}", integer(0)) for i in range(2, 17)]
    items += [pair("2.17", integer(1)), pair("2.18", tlv(0x04, bytes(16)))]
    _refused(ext(**{"2": pair("2", seq(*items))}), ROOT)
    # long-form length (0x81 n) for a value shorter than 128 bytes
    good = ext()
    assert good[1] == 0x82  # the synthetic extension is > 255 bytes: 0x82 hi lo
    short = seq(pair("1", tlv(0x04, bytes(16))))
    _refused(bytes([0x30, 0x81, len(short) - 2]) + short[2:], ROOT)
    # a two-byte length with a leading zero
    _refused(bytes([0x30, 0x82, 0x00, len(short) - 2]) + short[2:], ROOT)
    # indefinite length
    _refused(bytes([0x30, 0x80]) + good[4:] + b"\x00\x00", ROOT)
    # non-minimal OID arc
    _refused(seq(seq(bytes([0x06, 0x02, 0x80, 0x01]), tlv(0x04, b""))), ROOT)


def test_structure_errors() -> None:
    good = ext()
    _refused(good + b"\x00", ROOT)  # trailing byte
    _refused(good[:-1], ROOT)  # truncated
    _refused(b"", ROOT)
    _refused(tlv(0x31, good[4:]), ROOT)  # SET, not SEQUENCE
    _refused(seq(tlv(0x04, b"x")), ROOT)  # entry not a SEQUENCE
    _refused(seq(seq(oid(f"{ROOT}.1"))), ROOT)  # entry without value
    _refused(seq(seq(integer(1), tlv(0x04, b""))), ROOT)  # entry without OID
    _refused(seq(seq(oid(f"{ROOT}.1"), tlv(0x04, b""), tlv(0x04, b""))), ROOT)
    _refused(bytes(MAX_SGX_EXTENSION_BYTES + 1), ROOT)
    _refused(bytes([0x1F, 0x01, 0x00]), ROOT)  # multi-byte tag


def _cert(issuer_cn: str, *, with_ext: bytes | None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Intel SGX PCK Certificate")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if with_ext is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), with_ext), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_certificate_level() -> None:
    cert = _cert("Intel SGX PCK Processor CA", with_ext=ext(platform=False))
    assert pck_ca_of(cert) == "processor"
    assert parse_pck_extensions(cert).fmspc_hex == "90C06F000000"
    assert pck_ca_of(_cert("Intel SGX PCK Platform CA", with_ext=None)) == "platform"
    with pytest.raises(ParseError) as exc:
        parse_pck_extensions(_cert("Intel SGX PCK Platform CA", with_ext=None))
    assert exc.value.field == ROOT
    with pytest.raises(ParseError) as exc:
        pck_ca_of(_cert("Intel SGX Root CA", with_ext=None))
    assert exc.value.field == "pck_leaf.issuer"
    with pytest.raises(ParseError):
        parse_pck_extensions(_cert("x", with_ext=b"\x30\x03\x02\x01"))


def test_root_cert_of_real_chain_has_no_extension() -> None:
    q = parse_quote(load(vectors_dir(), "dcap-qvl/tdx_quote"))
    with pytest.raises(ParseError):
        parse_pck_extensions(q.pck_chain[-1])

"""Byte-exact layout: every field is read from the offset the spec's tables give (dcap.md §1)."""

from __future__ import annotations

import pytest

from teegate.dcap.quote import (
    HEADER_BYTES,
    SgxReportBody,
    TdReport10,
    TdReport15,
    parse_quote,
)
from tests.conftest import vectors_dir
from tests.unit.dcap_parse import _build as b
from tests.unit.dcap_parse._vectors import load

# (name, offset, size) relative to the body start — spec §1.3 and §1.4.
SGX_FIELDS = [
    ("cpu_svn", 0, 16),
    ("reserved1", 20, 12),
    ("isv_ext_prod_id", 32, 16),
    ("attributes", 48, 16),
    ("mr_enclave", 64, 32),
    ("reserved2", 96, 32),
    ("mr_signer", 128, 32),
    ("reserved3", 160, 32),
    ("config_id", 192, 64),
    ("reserved4", 262, 42),
    ("isv_family_id", 304, 16),
    ("report_data", 320, 64),
]
SGX_INTS = [("misc_select", 16, 4), ("isv_prod_id", 256, 2), ("isv_svn", 258, 2), ("config_svn", 260, 2)]
TD_FIELDS = [
    ("tee_tcb_svn", 0, 16),
    ("mr_seam", 16, 48),
    ("mr_signer_seam", 64, 48),
    ("seam_attributes", 112, 8),
    ("td_attributes", 120, 8),
    ("xfam", 128, 8),
    ("mr_td", 136, 48),
    ("mr_config_id", 184, 48),
    ("mr_owner", 232, 48),
    ("mr_owner_config", 280, 48),
    ("report_data", 520, 64),
]
TD15_FIELDS = [("tee_tcb_svn2", 584, 16), ("mr_servicetd", 600, 48)]
RTMR_OFFSETS = (328, 376, 424, 472)


@pytest.fixture(scope="module")
def pem() -> bytes:
    q = parse_quote(load(vectors_dir(), "dcap-qvl/sgx_quote"))
    return q.pck_chain_pem.encode() + b"\0"


def _check_sgx_body(body: SgxReportBody, raw: bytes, start: int) -> None:
    for name, off, size in SGX_FIELDS:
        assert getattr(body, name) == raw[start + off : start + off + size], name
    for name, off, size in SGX_INTS:
        assert getattr(body, name) == int.from_bytes(raw[start + off : start + off + size], "little"), name


def _check_td_body(body: TdReport10, raw: bytes, start: int) -> None:
    for name, off, size in TD_FIELDS:
        assert getattr(body, name) == raw[start + off : start + off + size], name
    assert body.rtmrs == tuple(raw[start + o : start + o + 48] for o in RTMR_OFFSETS)
    if isinstance(body, TdReport15):
        for name, off, size in TD15_FIELDS:
            assert getattr(body, name) == raw[start + off : start + off + size], name


def test_header_fields(pem: bytes) -> None:
    raw = b.quote(3, 0, b.pattern(384, 2), b.sig_data_v3(b.pattern(384, 3), pem))
    q = parse_quote(raw)
    h = q.header
    assert (h.version, h.att_key_type, h.tee_type, h.qe_svn, h.pce_svn) == (3, 2, 0, 0x0A0B, 0x0C0D)
    assert h.qe_vendor_id == raw[12:28] == b.INTEL_VENDOR
    assert h.user_data == raw[28:48]
    assert h.reserved == raw[8:12]


def test_sgx_v3_layout(pem: bytes) -> None:
    body, qe = b.pattern(384, 2), b.pattern(384, 3)
    auth = b.pattern(17, 9)
    raw = b.quote(3, 0, body, b.sig_data_v3(qe, pem, auth=auth))
    q = parse_quote(raw)
    assert isinstance(q.body, SgxReportBody)
    _check_sgx_body(q.body, raw, 48)
    assert q.signed_region == raw[:432]
    assert int.from_bytes(raw[432:436], "little") == len(raw) - 436
    assert q.signature == raw[436:500]
    assert q.attestation_key == raw[500:564]
    assert q.qe_report_raw == raw[564:948] == qe
    _check_sgx_body(q.qe_report, raw, 564)
    assert q.qe_report_signature == raw[948:1012]
    assert q.qe_auth_data == auth
    assert q.pck_chain_pem.encode() == pem.rstrip(b"\0")
    assert q.outer_cert_data_type == 5
    assert q.tee == "sgx" and not q.is_tdx and q.body_type is None
    assert q.report_data == raw[48 + 320 : 48 + 384]


def test_tdx_v4_layout(pem: bytes) -> None:
    body, qe = b.pattern(584, 4), b.pattern(384, 3)
    raw = b.quote(4, 0x81, body, b.sig_data_v4(qe, pem))
    q = parse_quote(raw)
    assert type(q.body) is TdReport10
    _check_td_body(q.body, raw, 48)
    # absolute offsets from the spec's v4 list
    assert q.body.report_data == raw[568:632]
    assert q.body.mr_td == raw[184:232]
    assert q.signed_region == raw[:632]
    assert q.signature == raw[636:700]
    assert q.attestation_key == raw[700:764]
    assert int.from_bytes(raw[764:766], "little") == 6
    assert q.qe_report_raw == raw[770:1154] == qe
    assert q.qe_report_signature == raw[1154:1218]
    assert int.from_bytes(raw[1218:1220], "little") == 32
    assert q.qe_auth_data == raw[1220:1252]
    assert q.outer_cert_data_type == 6
    assert q.tee == "tdx" and q.is_tdx


@pytest.mark.parametrize(("body_type", "size"), [(2, 584), (3, 648)])
def test_tdx_v5_layout(pem: bytes, body_type: int, size: int) -> None:
    body, qe = b.pattern(size, 5), b.pattern(384, 3)
    raw = b.quote(5, 0x81, body, b.sig_data_v4(qe, pem), body_type=body_type)
    q = parse_quote(raw)
    assert q.body_type == body_type
    assert isinstance(q.body, TdReport15) == (body_type == 3)
    _check_td_body(q.body, raw, 54)
    assert q.body.report_data == raw[574:638]
    if isinstance(q.body, TdReport15):
        assert q.body.tee_tcb_svn2 == raw[638:654]
        assert q.body.mr_servicetd == raw[654:702]
    assert q.signed_region == raw[: 54 + size]
    assert q.signature == raw[58 + size : 122 + size]
    assert q.qe_report_raw == qe


def test_sgx_v5_layout(pem: bytes) -> None:
    body = b.pattern(384, 6)
    raw = b.quote(5, 0, body, b.sig_data_v4(b.pattern(384, 3), pem), body_type=1)
    q = parse_quote(raw)
    assert isinstance(q.body, SgxReportBody)
    _check_sgx_body(q.body, raw, 54)
    assert q.tee == "sgx" and q.body_type == 1
    assert q.signed_region == raw[:438]


def test_attribute_flags() -> None:
    td = b.pattern(584, 4)
    attrs = (1 | 1 << 28 | 1 << 30 | 1 << 31 | 1 << 63).to_bytes(8, "little")
    td = td[:120] + attrs + td[128:]
    q = parse_quote(b.quote(4, 0x81, td, b.sig_data_v4(b.pattern(384, 3), b"-----BEGIN CERTIFICATE-----\n")))
    assert isinstance(q.body, TdReport10)
    assert q.body.debug and q.body.sept_ve_disable and q.body.protection_keys
    assert q.body.key_locker and q.body.perfmon and q.debug
    zero = td[:120] + bytes(8) + td[128:]
    q = parse_quote(
        b.quote(4, 0x81, zero, b.sig_data_v4(b.pattern(384, 3), b"-----BEGIN CERTIFICATE-----\n"))
    )
    assert isinstance(q.body, TdReport10)
    assert not (q.body.debug or q.body.sept_ve_disable or q.body.perfmon or q.debug)
    sgx = bytearray(b.pattern(384, 2))
    sgx[48:64] = (0x07).to_bytes(8, "little") + (0xE7).to_bytes(8, "little")
    q = parse_quote(
        b.quote(3, 0, bytes(sgx), b.sig_data_v3(b.pattern(384, 3), b"-----BEGIN CERTIFICATE-----\n"))
    )
    assert isinstance(q.body, SgxReportBody)
    assert q.body.debug and q.body.attributes_flags == 7 and q.body.attributes_xfrm == 0xE7
    sgx[48] = 0x05
    q = parse_quote(
        b.quote(3, 0, bytes(sgx), b.sig_data_v3(b.pattern(384, 3), b"-----BEGIN CERTIFICATE-----\n"))
    )
    assert not q.debug


# Real-quote offsets quoted in the spec (§1.2), read back through the parser.
def test_real_v4_offsets() -> None:
    raw = load(vectors_dir(), "dcap-qvl/tdx_quote")
    q = parse_quote(raw)
    assert q.signature == raw[636:700]
    assert q.attestation_key == raw[700:764]
    assert q.qe_report_raw == raw[770:1154]
    assert q.qe_report_signature == raw[1154:1218]
    assert q.qe_auth_data == raw[1220:1252]
    assert q.pck_chain_pem.encode() == raw[1258:4936].rstrip(b"\0")
    assert q.padding == len(raw) - 4936 == 70


def test_real_v5_offsets() -> None:
    raw = load(vectors_dir(), "go-tdx-guest/quote_v5_sample.dat")
    q = parse_quote(raw)
    assert q.signed_region == raw[:702]
    assert q.signature == raw[706:770]
    assert q.attestation_key == raw[770:834]
    assert q.qe_report_raw == raw[840:1224]
    assert q.pck_chain_pem.encode() == raw[1328:5006].rstrip(b"\0")
    assert q.padding == 0


def test_real_v3_offsets() -> None:
    raw = load(vectors_dir(), "dcap-qvl/sgx_quote")
    q = parse_quote(raw)
    assert q.signed_region == raw[:432]
    assert q.signature == raw[436:500]
    assert q.attestation_key == raw[500:564]
    assert q.qe_report_raw == raw[564:948]
    assert q.qe_report_signature == raw[948:1012]
    assert q.pck_chain_pem.encode() == raw[1052:].rstrip(b"\0")
    assert len(raw[:HEADER_BYTES]) == 48


def test_models_are_frozen() -> None:
    q = parse_quote(load(vectors_dir(), "dcap-qvl/tdx_quote"))
    with pytest.raises(AttributeError):
        q.header.version = 5  # type: ignore[misc]
    with pytest.raises(AttributeError):
        q.body.report_data = b""  # type: ignore[misc]
    with pytest.raises(AttributeError):
        q.raw = b""  # type: ignore[misc]


def test_signature_data_model() -> None:
    q = parse_quote(load(vectors_dir(), "dcap-qvl/tdx_quote"))
    sd = q.signature_data
    assert (sd.signature, sd.attestation_key, sd.cert_data_type) == (q.signature, q.attestation_key, 6)
    assert sd.qe.qe_report == q.qe_report and sd.qe.qe_report_raw == q.qe_report_raw
    assert sd.qe.qe_report_signature == q.qe_report_signature and sd.qe.qe_auth_data == q.qe_auth_data
    assert sd.qe.certification_data.type == 5
    assert sd.qe.certification_data.pem == q.pck_chain_pem
    assert parse_quote(load(vectors_dir(), "dcap-qvl/sgx_quote")).signature_data.cert_data_type == 5

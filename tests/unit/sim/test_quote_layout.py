"""Byte layout of simulated quotes, checked at the offsets of shared/spec/dcap.md §1."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.errors import ParseError
from teegate.sim import SimPlatform
from teegate.sim.layout import TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE

REPORT_DATA = bytes(range(64))
INTEL_VENDOR = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")


def _verify(point64: bytes, sig: bytes, data: bytes) -> None:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + point64)
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    key.verify(der, data, ec.ECDSA(hashes.SHA256()))


def _check_qe_block(platform: SimPlatform, block: bytes, att_key: bytes, prod_id: int) -> bytes:
    """QE report, its PCK signature, auth data, type-5 chain; returns the PEM chain."""
    qe_report = block[:384]
    pck = platform.certificates.pck.public_key()
    assert isinstance(pck, ec.EllipticCurvePublicKey)
    r, s = block[384:416], block[416:448]
    pck.verify(
        encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big")),
        qe_report,
        ec.ECDSA(hashes.SHA256()),
    )
    (auth_len,) = struct.unpack_from("<H", block, 448)
    auth = block[450 : 450 + auth_len]
    assert auth == bytes(range(32))
    assert qe_report[320:352] == hashlib.sha256(att_key + auth).digest()
    assert qe_report[352:384] == bytes(32)
    assert struct.unpack_from("<H", qe_report, 256)[0] == prod_id
    cert_type, cert_len = struct.unpack_from("<HI", block, 450 + auth_len)
    assert cert_type == 5
    pem = block[456 + auth_len :]
    assert len(pem) == cert_len
    return pem


@pytest.mark.parametrize(("version", "body_type", "body_len"), [(4, None, 584), (5, 2, 584), (5, 3, 648)])
def test_tdx_quote_layout(platform: SimPlatform, version: int, body_type: int | None, body_len: int) -> None:
    quote = platform.tdx_quote(REPORT_DATA, version=version, body_type=body_type)
    ver, key_type, tee, qe_svn, pce_svn, vendor, user = struct.unpack_from("<HHIHH16s20s", quote)
    assert (ver, key_type, tee) == (version, 2, 0x81)
    assert vendor == INTEL_VENDOR
    assert user == platform.qe_id + bytes(4)
    assert (qe_svn, pce_svn) == (0, 0)  # reserved in real TDX quotes
    body_off = 48 if version == 4 else 54
    if version == 5:
        assert struct.unpack_from("<HI", quote, 48) == (body_type, body_len)
    body = quote[body_off : body_off + body_len]
    assert body[520:584] == REPORT_DATA
    td_attributes = struct.unpack_from("<Q", body, 120)[0]
    assert td_attributes & TD_ATTR_SEPT_VE_DISABLE and not td_attributes & TD_ATTR_DEBUG
    signed_end = body_off + body_len
    (sig_len,) = struct.unpack_from("<I", quote, signed_end)
    sig_data = quote[signed_end + 4 :]
    assert len(sig_data) == sig_len
    att_key = sig_data[64:128]
    assert att_key == platform.attestation_public_key
    _verify(att_key, sig_data[:64], quote[:signed_end])
    outer_type, outer_len = struct.unpack_from("<HI", sig_data, 128)
    assert outer_type == 6
    assert len(sig_data) == 134 + outer_len
    pem = _check_qe_block(platform, sig_data[134:], att_key, prod_id=2)
    certs = x509.load_pem_x509_certificates(pem)
    names = [c.subject.rfc4514_string() for c in certs]
    assert "SIMULATED SGX PCK Certificate" in names[0]
    assert "SIMULATED SGX PCK Platform CA" in names[1]
    assert "SIMULATED SGX Root CA" in names[2]


def test_tdx_v4_absolute_offsets(platform: SimPlatform) -> None:
    quote = platform.tdx_quote(REPORT_DATA, mr_td=b"\x11" * 48)
    assert quote[184:232] == b"\x11" * 48  # mr_td
    assert quote[568:632] == REPORT_DATA
    assert struct.unpack_from("<H", quote, 764)[0] == 6  # outer cert type, as in real v4 quotes
    assert struct.unpack_from("<H", quote, 1218)[0] == 32  # QE auth data size


def test_tdx_v5_absolute_offsets(platform: SimPlatform) -> None:
    quote = platform.tdx_quote(REPORT_DATA, version=5)
    assert quote[574:638] == REPORT_DATA
    assert quote[654:702] == bytes(48)  # mr_servicetd
    assert struct.unpack_from("<H", quote, 834)[0] == 6  # as in go-tdx-guest quote_v5_sample.dat


def test_sgx_quote_layout(platform: SimPlatform) -> None:
    quote = platform.sgx_quote(REPORT_DATA, isv_prod_id=7, isv_svn=3)
    ver, key_type, tee, qe_svn, pce_svn, vendor, user = struct.unpack_from("<HHIHH16s20s", quote)
    assert user == platform.qe_id + bytes(4)
    assert (ver, key_type, tee, vendor) == (3, 2, 0, INTEL_VENDOR)
    _tdqe, pce, _pid, cpusvn = platform.platform_info()
    assert pce_svn == pce and qe_svn > 0
    body = quote[48:432]
    assert body[0:16] == cpusvn
    assert body[320:384] == REPORT_DATA
    assert struct.unpack_from("<HH", body, 256) == (7, 3)
    assert not body[48] & 0x02  # not a debug enclave
    (sig_len,) = struct.unpack_from("<I", quote, 432)
    sig_data = quote[436:]
    assert len(sig_data) == sig_len
    _verify(sig_data[64:128], sig_data[:64], quote[:432])
    _check_qe_block(platform, sig_data[128:], sig_data[64:128], prod_id=1)


def test_debug_bits(platform: SimPlatform) -> None:
    assert platform.tdx_quote(b"", debug=True)[168] & 0x01
    assert platform.sgx_quote(b"", debug=True)[48 + 48] & 0x02


def test_quotes_differ_only_in_report_data_and_signature(platform: SimPlatform) -> None:
    a = platform.tdx_quote(b"a")
    b = platform.tdx_quote(b"b")
    assert len(a) == len(b)
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    assert diff[0] >= 568 and diff[-1] < 636 + 64


def test_bad_inputs_are_refused(platform: SimPlatform) -> None:
    with pytest.raises(ParseError, match="report_data"):
        platform.tdx_quote(bytes(65))
    with pytest.raises(ParseError, match="version"):
        platform.tdx_quote(b"", version=3)
    with pytest.raises(ParseError, match="body_type"):
        platform.tdx_quote(b"", version=5, body_type=1)
    with pytest.raises(ParseError, match="sgx report body"):
        platform.quote_from_sgx_report(bytes(383))
    with pytest.raises(ParseError, match="mr_td"):
        platform.tdx_quote(b"", mr_td=bytes(47))

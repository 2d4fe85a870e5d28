"""Every real quote parses, and every field equals what dcap-qvl's parser reads (differential)."""

from __future__ import annotations

import hashlib

import dcap_qvl
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teegate.dcap.quote import (
    Quote,
    SgxReportBody,
    TdReport10,
    TdReport15,
    parse_quote,
)
from teegate.errors import ParseError
from tests.conftest import vectors_dir
from tests.unit.dcap_parse._vectors import NONZERO_TRAILING, load, quote_files

FILES = quote_files(vectors_dir())


def _parse(name: str) -> tuple[bytes, Quote]:
    data = load(vectors_dir(), name)
    return data, parse_quote(data, allow_trailing_data=name in NONZERO_TRAILING)


def test_vector_list_is_complete() -> None:
    assert len(FILES) >= 30
    assert sum(1 for f in FILES if f.startswith("raw/")) >= 1


@pytest.mark.parametrize("name", FILES)
def test_vector_matches_dcap_qvl(name: str) -> None:
    data, q = _parse(name)
    ref = dcap_qvl.parse_quote(data)
    h = ref.header
    assert (q.header.version, q.header.att_key_type, q.header.tee_type) == (
        h.version,
        h.attestation_key_type,
        h.tee_type,
    )
    assert (q.header.qe_svn, q.header.pce_svn) == (h.qe_svn, h.pce_svn)
    assert q.header.qe_vendor_id == bytes(h.qe_vendor_id)
    assert q.header.user_data == bytes(h.user_data)
    assert q.is_tdx == ref.is_tdx()
    assert q.tee == ("tdx" if ref.is_tdx() else "sgx")
    r = ref.report
    assert q.report_data == bytes(r.report_data)
    b = q.body
    if isinstance(b, SgxReportBody):
        assert type(r).__name__ == "PySgxEnclaveReport"
        assert b.cpu_svn == bytes(r.cpu_svn)
        assert b.attributes == bytes(r.attributes)
        assert b.mr_enclave == bytes(r.mr_enclave)
        assert b.mr_signer == bytes(r.mr_signer)
    else:
        assert isinstance(b, TdReport10)
        assert b.tee_tcb_svn == bytes(r.tee_tcb_svn)
        assert b.mr_seam == bytes(r.mr_seam)
        assert b.mr_signer_seam == bytes(r.mr_signer_seam)
        assert b.seam_attributes == bytes(r.seam_attributes)
        assert b.td_attributes == bytes(r.td_attributes)
        assert b.xfam == bytes(r.xfam)
        assert b.mr_td == bytes(r.mr_td)
        assert b.mr_config_id == bytes(r.mr_config_id)
        assert b.mr_owner == bytes(r.mr_owner)
        assert b.mr_owner_config == bytes(r.mr_owner_config)
        assert b.rtmrs == (bytes(r.rt_mr0), bytes(r.rt_mr1), bytes(r.rt_mr2), bytes(r.rt_mr3))
        if isinstance(b, TdReport15):
            assert type(r).__name__ == "PyTdReport15"
            assert b.tee_tcb_svn2 == bytes(r.tee_tcb_svn2)
            assert b.mr_servicetd == bytes(r.mr_service_td)
        else:
            assert type(r).__name__ == "PyTdReport10"
    pem = bytes(ref.cert_chain_pem_bytes()).rstrip(b"\0").decode()
    assert q.pck_chain_pem.strip() == pem.strip()
    assert q.raw == data


@pytest.mark.parametrize("name", FILES)
def test_vector_structure(name: str) -> None:
    data, q = _parse(name)
    assert len(q.signature) == 64
    assert len(q.attestation_key) == 64
    assert len(q.qe_report_raw) == 384
    assert len(q.qe_report_signature) == 64
    assert len(q.report_data) == 64
    assert data.startswith(q.signed_region)
    chain = q.pck_chain
    assert len(chain) == 3
    assert "SGX PCK Certificate" in chain[0].subject.rfc4514_string()
    assert "Intel SGX Root CA" in chain[-1].subject.rfc4514_string()
    assert q.pck_leaf is q.pck_chain[0] or q.pck_leaf == q.pck_chain[0]


def test_nonzero_trailing_vector_refused_by_default() -> None:
    (name,) = NONZERO_TRAILING
    data = load(vectors_dir(), name)
    with pytest.raises(ParseError) as exc:
        parse_quote(data)
    assert exc.value.field == "quote"
    assert exc.value.offset == 4935
    q = parse_quote(data, allow_trailing_data=True)
    assert q.trailing_data.startswith(b"\nextra bytes")


def _ecdsa_ok(public_key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@pytest.mark.parametrize("name", FILES)
def test_extracted_regions_verify_cryptographically(name: str) -> None:
    """The parser cut the right bytes: the real signatures verify over exactly these regions."""
    _, q = _parse(name)
    att_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + q.attestation_key)
    assert _ecdsa_ok(att_key, q.signature, q.signed_region)
    assert not _ecdsa_ok(att_key, q.signature, q.signed_region + b"\0")
    pck_key = q.pck_leaf.public_key()
    assert isinstance(pck_key, ec.EllipticCurvePublicKey)
    assert _ecdsa_ok(pck_key, q.qe_report_signature, q.qe_report_raw)
    binding = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
    assert q.qe_report.report_data[:32] == binding

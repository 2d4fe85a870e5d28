"""The test PKI: names, profiles, and the PCK SGX extension encoded exactly as Intel's."""

from __future__ import annotations

import json
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.dcap.pck import parse_pck_extensions, parse_sgx_extension
from teegate.sim import SimPlatform
from teegate.sim.pki import SGX_EXTENSION_OID, PckFields, sgx_extension_der


def _real_pck_cert(vectors: Path) -> x509.Certificate:
    quote = (vectors / "dcap-qvl" / "tdx_quote").read_bytes()
    pem = bytes(dcap_qvl.parse_quote(quote).cert_chain_pem_bytes())
    return x509.load_pem_x509_certificates(pem)[0]


def test_sgx_extension_matches_intel_encoding_byte_for_byte(vectors: Path) -> None:
    cert = _real_pck_cert(vectors)
    real = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(real, x509.UnrecognizedExtension)
    ext = parse_sgx_extension(real.value)
    assert ext.configuration is not None and ext.platform_instance_id is not None
    fields = PckFields(
        ppid=ext.ppid,
        sgx_tcb_components=ext.tcb.sgx_components,
        pce_svn=ext.tcb.pcesvn,
        cpu_svn=ext.tcb.cpusvn,
        pce_id=ext.pce_id,
        fmspc=ext.fmspc,
        platform_instance_id=ext.platform_instance_id,
        sgx_type=ext.sgx_type,
        dynamic_platform=bool(ext.configuration.dynamic_platform),
        cached_keys=bool(ext.configuration.cached_keys),
        smt_enabled=bool(ext.configuration.smt_enabled),
    )
    assert sgx_extension_der(fields) == real.value


def test_pck_leaf_profile_mirrors_intel(platform: SimPlatform, vectors: Path) -> None:
    real = _real_pck_cert(vectors)
    ours = platform.certificates.pck
    assert [e.oid for e in ours.extensions] == [e.oid for e in real.extensions]
    assert [e.critical for e in ours.extensions] == [e.critical for e in real.extensions]
    ext = parse_pck_extensions(ours)
    assert ext.fmspc_hex == platform.fmspc
    assert ext.tcb.cpusvn == platform.platform_info()[3]


def test_chain_signatures_and_names(platform: SimPlatform) -> None:
    c = platform.certificates
    c.pck.verify_directly_issued_by(c.platform_ca)
    c.platform_ca.verify_directly_issued_by(c.root)
    c.tcb_signing.verify_directly_issued_by(c.root)
    c.root.verify_directly_issued_by(c.root)
    for cert in (c.root, c.platform_ca, c.pck, c.tcb_signing):
        cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
        assert "SIMULATED" in str(cn)
    assert c.platform_ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0


def test_anchor_is_simulated_root_key(platform: SimPlatform) -> None:
    anchor = platform.anchor()
    assert anchor.simulated
    key = platform.certificates.root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert anchor.public_key == key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    assert "SIMULATED" in anchor.name


def test_registration_and_platform_info(platform: SimPlatform) -> None:
    reg = platform.registration()
    assert set(reg) == {"qe_id", "pce_id", "cpu_svn", "pce_svn", "enc_ppid", "platform_manifest"}
    assert reg["platform_manifest"] is None
    tdqe, pce, platform_id, cpusvn = platform.platform_info()
    assert reg["qe_id"] == platform.qe_id.hex() == platform_id.hex()
    assert reg["cpu_svn"] == cpusvn.hex()
    assert reg["pce_svn"] == pce.to_bytes(2, "big").hex()
    assert len(bytes.fromhex(str(reg["enc_ppid"]))) == 384
    assert tdqe > 0
    json.dumps(reg)


def test_sim_crls_load_through_the_verifier_whatever_their_last_byte(platform: SimPlatform) -> None:
    from datetime import UTC, datetime

    from teegate.dcap.certs import load_crl

    now = datetime(2026, 6, 1, tzinfo=UTC)
    for _ in range(100):
        col = platform.collateral("tdx", now=now)
        for crl in (col.root_ca_crl, col.pck_crl):
            assert load_crl(crl, "sim CRL") == x509.load_der_x509_crl(crl)

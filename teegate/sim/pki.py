"""The simulated platform's test PKI, shaped like Intel's SGX PKI.

``teegate SIMULATED SGX Root CA`` (self-signed) issues ``… PCK Platform CA`` (which issues the
PCK leaf carrying the real SGX extension, OID 1.2.840.113741.1.13.1) and ``… TCB Signing``
(which signs TCB Info and QE Identity). Every name says SIMULATED: nothing here is Intel's.
Certificate profiles (key usage, basic constraints, key identifiers, CRL distribution points)
copy Intel's so strict verifiers (webpki in dcap-qvl, our own) accept the chain.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from teegate.sim import _der

__all__ = [
    "PCK_CERT_CN",
    "PLATFORM_CA_CN",
    "ROOT_CA_CN",
    "SGX_EXTENSION_OID",
    "TCB_SIGNING_CN",
    "CertSet",
    "PckFields",
    "issue_pki",
    "make_crl",
    "sgx_extension_der",
]

ROOT_CA_CN = "teegate SIMULATED SGX Root CA"
PLATFORM_CA_CN = "teegate SIMULATED SGX PCK Platform CA"
PCK_CERT_CN = "teegate SIMULATED SGX PCK Certificate"
TCB_SIGNING_CN = "teegate SIMULATED SGX TCB Signing"
_ORG = "teegate SIMULATED platform (not Intel)"

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
_CRL_BASE = "https://simulated.teegate.invalid"
ROOT_CRL_URL = f"{_CRL_BASE}/IntelSGXRootCA.der"
PCK_CRL_URL = f"{_CRL_BASE}/sgx/certification/v4/pckcrl?ca=platform&encoding=der"

# Fixed validity windows keep quotes verifiable at any pinned test clock in that range.
_CA_NOT_BEFORE = datetime(2018, 1, 1, tzinfo=UTC)
_CA_NOT_AFTER = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PckFields:
    """What the PCK leaf's SGX extension says about the platform."""

    ppid: bytes  # 16
    sgx_tcb_components: tuple[int, ...]  # 16 SVNs
    pce_svn: int
    cpu_svn: bytes  # 16
    pce_id: bytes  # 2
    fmspc: bytes  # 6
    platform_instance_id: bytes  # 16
    sgx_type: int = 1  # Scalable, as on Xeon platforms with TDX
    dynamic_platform: bool = True
    cached_keys: bool = True
    smt_enabled: bool = True


@dataclass(frozen=True, slots=True)
class CertSet:
    root: x509.Certificate
    platform_ca: x509.Certificate
    pck: x509.Certificate
    tcb_signing: x509.Certificate


def _oid(suffix: str) -> bytes:
    return _der.oid(f"{SGX_EXTENSION_OID}.{suffix}" if suffix else SGX_EXTENSION_OID)


def sgx_extension_der(fields: PckFields) -> bytes:
    """DER of the SGX extension value, laid out exactly as in Intel's PCK certificates."""
    if len(fields.sgx_tcb_components) != 16:
        raise ValueError("the SGX TCB has 16 components")
    tcb_items = [
        _der.sequence(_oid(f"2.{i + 1}"), _der.integer(svn))
        for i, svn in enumerate(fields.sgx_tcb_components)
    ]
    tcb_items.append(_der.sequence(_oid("2.17"), _der.integer(fields.pce_svn)))
    tcb_items.append(_der.sequence(_oid("2.18"), _der.octet_string(fields.cpu_svn)))
    return _der.sequence(
        _der.sequence(_oid("1"), _der.octet_string(fields.ppid)),
        _der.sequence(_oid("2"), _der.sequence(*tcb_items)),
        _der.sequence(_oid("3"), _der.octet_string(fields.pce_id)),
        _der.sequence(_oid("4"), _der.octet_string(fields.fmspc)),
        _der.sequence(_oid("5"), _der.enumerated(fields.sgx_type)),
        _der.sequence(_oid("6"), _der.octet_string(fields.platform_instance_id)),
        _der.sequence(
            _oid("7"),
            _der.sequence(
                _der.sequence(_oid("7.1"), _der.boolean(fields.dynamic_platform)),
                _der.sequence(_oid("7.2"), _der.boolean(fields.cached_keys)),
                _der.sequence(_oid("7.3"), _der.boolean(fields.smt_enabled)),
            ),
        ),
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORG),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Nowhere"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def _serial() -> int:
    return int.from_bytes(secrets.token_bytes(20), "big") >> 1  # positive, 20 bytes at most


def _cdp(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _issue(
    *,
    subject_cn: str,
    subject_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    ca_path_length: int | None,
    is_ca: bool,
    crl_url: str,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    issuer_name = issuer.subject if issuer is not None else _name(subject_cn)
    issuer_pub = issuer_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject_cn))
        .issuer_name(issuer_name)
        .public_key(subject_key)
        .serial_number(_serial())
        .not_valid_before(_CA_NOT_BEFORE)
        .not_valid_after(_CA_NOT_AFTER)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)
        .add_extension(_cdp(crl_url), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(_ca_usage() if is_ca else _leaf_usage(), critical=True)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=ca_path_length), critical=True)
    )
    if extra is not None:
        builder = builder.add_extension(extra, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def issue_pki(
    *,
    root_key: ec.EllipticCurvePrivateKey,
    platform_ca_key: ec.EllipticCurvePrivateKey,
    pck_key: ec.EllipticCurvePrivateKey,
    tcb_signing_key: ec.EllipticCurvePrivateKey,
    pck: PckFields,
) -> CertSet:
    """Issue the four certificates of a simulated platform."""
    root = _issue(
        subject_cn=ROOT_CA_CN,
        subject_key=root_key.public_key(),
        issuer=None,
        issuer_key=root_key,
        ca_path_length=1,
        is_ca=True,
        crl_url=ROOT_CRL_URL,
    )
    platform_ca = _issue(
        subject_cn=PLATFORM_CA_CN,
        subject_key=platform_ca_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        ca_path_length=0,
        is_ca=True,
        crl_url=ROOT_CRL_URL,
    )
    leaf = _issue(
        subject_cn=PCK_CERT_CN,
        subject_key=pck_key.public_key(),
        issuer=platform_ca,
        issuer_key=platform_ca_key,
        ca_path_length=None,
        is_ca=False,
        crl_url=PCK_CRL_URL,
        extra=x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension_der(pck)),
    )
    tcb_signing = _issue(
        subject_cn=TCB_SIGNING_CN,
        subject_key=tcb_signing_key.public_key(),
        issuer=root,
        issuer_key=root_key,
        ca_path_length=None,
        is_ca=False,
        crl_url=ROOT_CRL_URL,
    )
    return CertSet(root=root, platform_ca=platform_ca, pck=leaf, tcb_signing=tcb_signing)


def make_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    this_update: datetime,
    next_update: datetime,
    revoked_serials: tuple[int, ...] = (),
    number: int = 1,
) -> bytes:
    """A DER CRL like Intel's: CRL number, authority key id, key-compromise entries."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    for serial in revoked_serials:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(this_update - timedelta(minutes=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    der = builder.sign(issuer_key, hashes.SHA256()).public_bytes(Encoding.DER)
    return der

"""The software quoting engine: DCAP quotes (SGX v3, TDX v4, TDX v5) signed like a real QE.

Per quote only the header+body and one ECDSA signature by the attestation key are new; the QE
report (it binds the attestation key, not the report data), its PCK signature and the whole
certification data are built once per engine, so quoting costs little more than one P-256 sign.
Layouts: shared/spec/dcap.md §1.1, §1.2, §1.5.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from teegate.errors import ParseError
from teegate.sim.layout import SGX_REPORT_BODY_SIZE, EnclaveReport, TdReport, td_body_from_tdreport

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "CERT_TYPE_PCK_CHAIN",
    "CERT_TYPE_QE_REPORT",
    "HEADER_SIZE",
    "INTEL_QE_VENDOR_ID",
    "QE_AUTH_DATA",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "QeParams",
    "QuoteEngine",
    "raw_signature",
]

HEADER_SIZE = 48
ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
#: QE authentication data as real QEs send it: bytes 00..1F.
QE_AUTH_DATA = bytes(range(32))
#: v5 body types.
BODY_TYPE_SGX = 1
BODY_TYPE_TD10 = 2
BODY_TYPE_TD15 = 3

_HEADER = struct.Struct("<HHIHH16s20s")
_ECDSA = ec.ECDSA(hashes.SHA256())


def raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data`` as raw big-endian ``r || s`` (64 bytes)."""
    r, s = decode_dss_signature(key.sign(data, _ECDSA))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class QeParams:
    """The simulated quoting enclave's identity for one TEE type (QE for SGX, TD_QE for TDX)."""

    mr_enclave: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int


class QuoteEngine:
    """Builds and signs quotes for one platform; holds its keys and the precomputed tails."""

    def __init__(
        self,
        *,
        attestation_key: ec.EllipticCurvePrivateKey,
        pck_key: ec.EllipticCurvePrivateKey,
        pck_chain_pem: bytes,
        cpu_svn: bytes,
        pce_svn: int,
        qe_id: bytes,
        sgx_qe: QeParams,
        td_qe: QeParams,
    ) -> None:
        self._att_key = attestation_key
        att_pub = attestation_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
        self.attestation_public_key = att_pub
        self._pce_svn = pce_svn
        self._sgx_qe_svn = sgx_qe.isv_svn
        self._user_data = qe_id + bytes(4)
        binding = hashlib.sha256(att_pub + QE_AUTH_DATA).digest() + bytes(32)

        def qe_block(qe: QeParams) -> bytes:
            report = EnclaveReport(
                report_data=binding,
                cpu_svn=cpu_svn,
                attributes=bytes([0x15]) + bytes(7) + bytes([0xE7]) + bytes(7),
                mr_enclave=qe.mr_enclave,
                mr_signer=qe.mr_signer,
                isv_prod_id=qe.isv_prod_id,
                isv_svn=qe.isv_svn,
            ).encode()
            return (
                report
                + raw_signature(pck_key, report)
                + struct.pack("<H", len(QE_AUTH_DATA))
                + QE_AUTH_DATA
                + struct.pack("<HI", CERT_TYPE_PCK_CHAIN, len(pck_chain_pem))
                + pck_chain_pem
            )

        # v3 (SGX): att key, QE report, its signature, auth data, type-5 chain — all fixed.
        self._sgx_tail = att_pub + qe_block(sgx_qe)
        # v4/v5 (TDX): att key, then type 6 wrapping the TD-QE's report and the type-5 chain.
        td_block = qe_block(td_qe)
        self._tdx_tail = att_pub + struct.pack("<HI", CERT_TYPE_QE_REPORT, len(td_block)) + td_block
        self._sgx_header = _HEADER.pack(
            3,
            ATT_KEY_TYPE_ECDSA_P256,
            TEE_TYPE_SGX,
            sgx_qe.isv_svn,
            pce_svn,
            INTEL_QE_VENDOR_ID,
            self._user_data,
        )
        # Real TDX quotes leave header bytes 8..11 (qe_svn, pce_svn) zero: Intel calls them reserved.
        self._tdx_headers = {
            v: _HEADER.pack(
                v, ATT_KEY_TYPE_ECDSA_P256, TEE_TYPE_TDX, 0, 0, INTEL_QE_VENDOR_ID, self._user_data
            )
            for v in (4, 5)
        }

    def _finish(self, signed: bytes, tail: bytes) -> bytes:
        sig = raw_signature(self._att_key, signed)
        return signed + struct.pack("<I", 64 + len(tail)) + sig + tail

    def sgx_quote(self, report_body: bytes) -> bytes:
        """An SGX v3 quote over a 384-byte enclave REPORT body."""
        if len(report_body) != SGX_REPORT_BODY_SIZE:
            raise ParseError("sgx report body", f"{len(report_body)} bytes, expected {SGX_REPORT_BODY_SIZE}")
        return self._finish(self._sgx_header + report_body, self._sgx_tail)

    def sgx_enclave_quote(self, report: EnclaveReport) -> bytes:
        return self.sgx_quote(report.encode())

    def tdx_quote(self, report: TdReport, *, version: int = 4, body_type: int | None = None) -> bytes:
        """A TDX quote: v4 (TD report 1.0) or v5 (body type 2 = TD 1.0, 3 = TD 1.5; default 3)."""
        kind = _body_kind(version, body_type)
        return self._tdx_finish(version, kind, report.body(tdx15=kind == BODY_TYPE_TD15))

    def tdx_quote_from_tdreport(
        self, tdreport: bytes, *, version: int = 4, body_type: int | None = None
    ) -> bytes:
        """A TDX quote for a 1024-byte TDREPORT (fields copied as bytes; the MAC is not checked)."""
        kind = _body_kind(version, body_type)
        return self._tdx_finish(version, kind, td_body_from_tdreport(tdreport, tdx15=kind == BODY_TYPE_TD15))

    def _tdx_finish(self, version: int, kind: int, body: bytes) -> bytes:
        if version == 4:
            return self._finish(self._tdx_headers[4] + body, self._tdx_tail)
        return self._finish(self._tdx_headers[5] + struct.pack("<HI", kind, len(body)) + body, self._tdx_tail)


def _body_kind(version: int, body_type: int | None) -> int:
    if version == 4:
        if body_type not in (None, BODY_TYPE_TD10):
            raise ParseError("body_type", f"a v4 quote carries a TD 1.0 body, not type {body_type}")
        return BODY_TYPE_TD10
    if version == 5:
        kind = BODY_TYPE_TD15 if body_type is None else body_type
        if kind not in (BODY_TYPE_TD10, BODY_TYPE_TD15):
            raise ParseError("body_type", f"{kind} is not a TD report body type (2 or 3)")
        return kind
    raise ParseError("version", f"TDX quote version {version} is not 4 or 5")

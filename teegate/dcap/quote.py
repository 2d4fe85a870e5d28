"""Intel DCAP quotes (SGX v3, TDX v4, v5) parsed into frozen, typed models. Pure: no I/O.

Layouts: shared/spec/dcap.md §1 (Intel ``sgx_quote_3.h`` / ``sgx_quote_4.h`` / ``sgx_quote_5.h``).
Anything this module does not know is refused with :class:`teegate.errors.ParseError` naming
the field and the byte offset: versions other than 3/4/5, TEE types other than SGX/TDX,
attestation key types other than ECDSA-256-with-P-256, certification data other than a PEM PCK
chain (type 5, directly or nested in QE report certification data, type 6), inconsistent sizes
and trailing bytes. The one tolerance: real TDX quotes arrive in zero-filled buffers (a quote of
4936 bytes in a 5006- or 8000-byte buffer), so trailing *zero* bytes are accepted and counted in
:attr:`Quote.padding`; any other trailing byte is refused unless the caller passes
``allow_trailing_data=True``.

Parsing is on the verification hot path: one ``struct.unpack_from`` per fixed-layout block,
no per-field reads, the PCK chain's X.509 parsing deferred until first asked for.
"""

from __future__ import annotations

import binascii
import re
import struct
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from cryptography import x509

from teegate.errors import ParseError

__all__ = [
    "ATT_KEY_TYPE_ECDSA_P256",
    "BODY_TYPE_SGX",
    "BODY_TYPE_TDX10",
    "BODY_TYPE_TDX15",
    "CERT_TYPE_PCK_CHAIN",
    "CERT_TYPE_QE_REPORT",
    "HEADER_BYTES",
    "INTEL_QE_VENDOR_ID",
    "MAX_AUTH_DATA_BYTES",
    "MAX_CERT_DATA_BYTES",
    "MAX_PCK_CHAIN_CERTS",
    "MAX_QUOTE_BYTES",
    "MAX_QUOTE_TEXT_BYTES",
    "MAX_SIG_DATA_BYTES",
    "QE_REPORT_BYTES",
    "SGX_REPORT_BYTES",
    "TDX10_REPORT_BYTES",
    "TDX15_REPORT_BYTES",
    "TEE_TYPE_SGX",
    "TEE_TYPE_TDX",
    "PckCertChainData",
    "QeReportCertificationData",
    "Quote",
    "QuoteBody",
    "QuoteHeader",
    "SgxReportBody",
    "SignatureData",
    "TdReport10",
    "TdReport15",
    "decode_quote_text",
    "parse_quote",
]

#: Upper bound on a whole quote (real ones: 4.6-5 KiB, padded buffers up to 8000 bytes).
MAX_QUOTE_BYTES = 64 * 1024
#: Upper bound on a quote given as hex or base64 text (hex doubles it, plus whitespace).
MAX_QUOTE_TEXT_BYTES = 3 * MAX_QUOTE_BYTES
#: Upper bound on the signature data (``sig_data_len``); real ones: 4.1-4.3 KiB.
MAX_SIG_DATA_BYTES = 32 * 1024
#: Upper bound on a certification data block (outer or inner); real PEM chains: 3.5-3.7 KiB.
MAX_CERT_DATA_BYTES = 16 * 1024
#: Upper bound on the QE authentication data (u16 on the wire; 32 bytes in every real quote).
MAX_AUTH_DATA_BYTES = 1024
#: Upper bound on certificates in the PCK chain (leaf, Platform/Processor CA, root).
MAX_PCK_CHAIN_CERTS = 4

HEADER_BYTES = 48
SGX_REPORT_BYTES = 384
QE_REPORT_BYTES = SGX_REPORT_BYTES
TDX10_REPORT_BYTES = 584
TDX15_REPORT_BYTES = 648

ATT_KEY_TYPE_ECDSA_P256 = 2
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
BODY_TYPE_SGX = 1
BODY_TYPE_TDX10 = 2
BODY_TYPE_TDX15 = 3
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
#: Intel's quoting enclaves' vendor id (checked by verification, not by parsing).
INTEL_QE_VENDOR_ID = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")

_HEADER = struct.Struct("<HHIHH16s20s")
# cpu_svn, misc_select, reserved1, isv_ext_prod_id, attributes, mr_enclave, reserved2, mr_signer,
# reserved3, config_id, isv_prod_id, isv_svn, config_svn, reserved4, isv_family_id, report_data
_SGX_REPORT = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
# tee_tcb_svn, mr_seam, mr_signer_seam, seam_attributes, td_attributes, xfam, mr_td, mr_config_id,
# mr_owner, mr_owner_config, rtmr0..3, report_data
_TD10 = struct.Struct("<16s48s48s8s8s8s48s48s48s48s48s48s48s48s64s")
_TD15_EXTRA = struct.Struct("<16s48s")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_V5_BODY = struct.Struct("<HI")
_CERT_HEADER = struct.Struct("<HI")
assert _SGX_REPORT.size == SGX_REPORT_BYTES
assert _TD10.size == TDX10_REPORT_BYTES
assert _TD10.size + _TD15_EXTRA.size == TDX15_REPORT_BYTES

# v5 body type -> (TEE type it belongs to, fixed body size)
_V5_BODIES = {
    BODY_TYPE_SGX: (TEE_TYPE_SGX, SGX_REPORT_BYTES),
    BODY_TYPE_TDX10: (TEE_TYPE_TDX, TDX10_REPORT_BYTES),
    BODY_TYPE_TDX15: (TEE_TYPE_TDX, TDX15_REPORT_BYTES),
}

_TD_DEBUG = 1 << 0
_TD_SEPT_VE_DISABLE = 1 << 28
_TD_PKS = 1 << 30
_TD_KEY_LOCKER = 1 << 31
_TD_PERFMON = 1 << 63
_SGX_DEBUG = 1 << 1


@dataclass(frozen=True, slots=True)
class QuoteHeader:
    """The 48-byte quote header (spec §1.1). In v3 ``tee_type`` is ``att_key_data_0`` (0)."""

    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @property
    def reserved(self) -> bytes:
        """Bytes 8..11 as on the wire (TDX calls them reserved; v3 reads qe_svn/pce_svn there)."""
        return _U16.pack(self.qe_svn) + _U16.pack(self.pce_svn)


@dataclass(frozen=True, slots=True)
class SgxReportBody:
    """An SGX REPORT body (``sgx_report_body_t``, 384 bytes): an enclave quote body or the QE report."""

    cpu_svn: bytes
    misc_select: int
    reserved1: bytes
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    reserved2: bytes
    mr_signer: bytes
    reserved3: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    reserved4: bytes
    isv_family_id: bytes
    report_data: bytes

    @property
    def attributes_flags(self) -> int:
        """ATTRIBUTES.FLAGS (u64 LE, first half of ``attributes``)."""
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def attributes_xfrm(self) -> int:
        """ATTRIBUTES.XFRM (u64 LE, second half of ``attributes``)."""
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        """The enclave's DEBUG attribute (FLAGS bit 1): its memory is readable by the host."""
        return bool(self.attributes[0] & _SGX_DEBUG)


@dataclass(frozen=True, slots=True)
class TdReport10:
    """A TD report body as quoted (TDX 1.0, 584 bytes; spec §1.4). Byte fields as on the wire."""

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rtmrs: tuple[bytes, bytes, bytes, bytes]
    report_data: bytes

    @property
    def td_attributes_flags(self) -> int:
        """TD_ATTRIBUTES as a u64 (little-endian on the wire)."""
        return int.from_bytes(self.td_attributes, "little")

    @property
    def debug(self) -> bool:
        """TD_ATTRIBUTES.DEBUG (bit 0): the host can read and change the TD's state."""
        return bool(self.td_attributes[0] & _TD_DEBUG)

    @property
    def sept_ve_disable(self) -> bool:
        """TD_ATTRIBUTES.SEPT_VE_DISABLE (bit 28)."""
        return bool(self.td_attributes_flags & _TD_SEPT_VE_DISABLE)

    @property
    def protection_keys(self) -> bool:
        """TD_ATTRIBUTES.PKS (bit 30)."""
        return bool(self.td_attributes_flags & _TD_PKS)

    @property
    def key_locker(self) -> bool:
        """TD_ATTRIBUTES.KL (bit 31)."""
        return bool(self.td_attributes_flags & _TD_KEY_LOCKER)

    @property
    def perfmon(self) -> bool:
        """TD_ATTRIBUTES.PERFMON (bit 63)."""
        return bool(self.td_attributes_flags & _TD_PERFMON)


@dataclass(frozen=True, slots=True)
class TdReport15(TdReport10):
    """A TDX 1.5 TD report body (648 bytes): the 1.0 fields plus TEE_TCB_SVN2 and MR_SERVICETD."""

    tee_tcb_svn2: bytes
    mr_servicetd: bytes


QuoteBody: TypeAlias = SgxReportBody | TdReport10 | TdReport15


@dataclass(frozen=True, slots=True)
class PckCertChainData:
    """Certification data type 5: the PEM PCK certificate chain (leaf, intermediate CA, root)."""

    pem: str
    type: int = CERT_TYPE_PCK_CHAIN


@dataclass(frozen=True, slots=True)
class QeReportCertificationData:
    """The QE's report, its signature by the PCK key, its authentication data and the PCK chain.

    In v4/v5 quotes this is certification data type 6; in v3 the same fields sit directly in the
    signature data.
    """

    qe_report: SgxReportBody
    qe_report_raw: bytes
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: PckCertChainData


@dataclass(frozen=True, slots=True)
class SignatureData:
    """The quote's signature data: signature over the signed region, attestation key, QE data."""

    signature: bytes
    attestation_key: bytes
    #: 5 for v3 (PCK chain directly), 6 for v4/v5 (QE report certification data).
    cert_data_type: int
    qe: QeReportCertificationData


class _ChainCache:
    """The PCK chain parsed on first use (a frozen slots dataclass cannot cache by itself)."""

    __slots__ = ("certs",)

    def __init__(self) -> None:
        self.certs: tuple[x509.Certificate, ...] | None = None


@dataclass(frozen=True, slots=True)
class Quote:
    """A parsed DCAP quote. ``raw`` is the input as given (padding included)."""

    header: QuoteHeader
    body: QuoteBody
    #: v5 body type (1 SGX, 2 TDX 1.0, 3 TDX 1.5); None for v3/v4.
    body_type: int | None
    #: The bytes the attestation key signs: header and body (for v5 with type and size).
    signed_region: bytes
    #: ECDSA-P256 signature over ``signed_region``, raw r||s (64 bytes, big-endian halves).
    signature: bytes
    #: The attestation public key, raw X||Y (64 bytes; prepend 0x04 for SEC1).
    attestation_key: bytes
    qe_report: SgxReportBody
    #: The 384 bytes of the QE report exactly as the PCK key signed them.
    qe_report_raw: bytes
    #: ECDSA-P256 signature by the PCK key over ``qe_report_raw``, raw r||s.
    qe_report_signature: bytes
    qe_auth_data: bytes
    #: Certification data type wrapping the chain: 5 (v3) or 6 (v4/v5, QE report cert. data).
    outer_cert_data_type: int
    #: The PEM PCK chain (type 5) as text, terminating NULs removed.
    pck_chain_pem: str
    raw: bytes
    #: Zero bytes after the quote (buffers from QGS/configfs are often zero-filled).
    padding: int
    #: Non-zero trailing bytes accepted because the caller asked for ``allow_trailing_data``.
    trailing_data: bytes = b""
    _chain: _ChainCache = field(default_factory=_ChainCache, repr=False, compare=False)

    @property
    def version(self) -> int:
        return self.header.version

    @property
    def report_data(self) -> bytes:
        """The 64 bytes of report data the TD or enclave chose (nonce, key hash)."""
        return self.body.report_data

    @property
    def is_tdx(self) -> bool:
        return self.header.tee_type == TEE_TYPE_TDX

    @property
    def tee(self) -> Literal["sgx", "tdx"]:
        return "tdx" if self.header.tee_type == TEE_TYPE_TDX else "sgx"

    @property
    def debug(self) -> bool:
        """The TD's or enclave's debug attribute."""
        return self.body.debug

    @property
    def pck_chain(self) -> list[x509.Certificate]:
        """The PCK chain from the certification data, leaf first, parsed on first use."""
        certs = self._chain.certs
        if certs is None:
            certs = _parse_pem_chain(self.pck_chain_pem)
            self._chain.certs = certs
        return list(certs)

    @property
    def signature_data(self) -> SignatureData:
        """The signature data as one model (built on demand from this quote's fields)."""
        return SignatureData(
            self.signature,
            self.attestation_key,
            self.outer_cert_data_type,
            QeReportCertificationData(
                self.qe_report,
                self.qe_report_raw,
                self.qe_report_signature,
                self.qe_auth_data,
                PckCertChainData(self.pck_chain_pem),
            ),
        )

    @property
    def pck_leaf(self) -> x509.Certificate:
        """The PCK leaf certificate (first in the chain)."""
        certs = self._chain.certs
        if certs is None:
            certs = _parse_pem_chain(self.pck_chain_pem)
            self._chain.certs = certs
        return certs[0]


def _parse_pem_chain(pem: str) -> tuple[x509.Certificate, ...]:
    count = pem.count("-----BEGIN CERTIFICATE-----")
    if count == 0:
        raise ParseError("pck_chain", "certification data holds no PEM certificate")
    if count > MAX_PCK_CHAIN_CERTS:
        raise ParseError("pck_chain", f"{count} certificates, more than {MAX_PCK_CHAIN_CERTS}")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise ParseError("pck_chain", f"not a PEM certificate chain: {exc}") from None
    if len(certs) != count:
        raise ParseError("pck_chain", "a PEM certificate block could not be parsed")
    return tuple(certs)


def _need(data: bytes, offset: int, size: int, what: str) -> None:
    if offset + size > len(data):
        raise ParseError(
            what, f"truncated: needs {size} bytes, {max(len(data) - offset, 0)} left", offset=offset
        )


def _sgx_report(data: bytes, offset: int) -> SgxReportBody:
    f = _SGX_REPORT.unpack_from(data, offset)
    return SgxReportBody(*f)


def _td_report(data: bytes, offset: int, tdx15: bool) -> TdReport10:
    f = _TD10.unpack_from(data, offset)
    rtmrs = (f[10], f[11], f[12], f[13])
    if tdx15:
        svn2, servicetd = _TD15_EXTRA.unpack_from(data, offset + TDX10_REPORT_BYTES)
        return TdReport15(
            f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], rtmrs, f[14], svn2, servicetd
        )
    return TdReport10(f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], rtmrs, f[14])


def _pem_from_cert_data(data: bytes, offset: int, size: int) -> str:
    chunk = data[offset : offset + size].rstrip(b"\x00")
    if b"\x00" in chunk:
        raise ParseError("pck_cert_chain", "NUL byte inside the PEM chain", offset=offset)
    try:
        text = chunk.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ParseError("pck_cert_chain", "PEM chain is not ASCII text", offset=offset + exc.start) from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ParseError("pck_cert_chain", "no PEM certificate in certification data", offset=offset)
    return text


def _cert_header(data: bytes, offset: int, end: int, what: str) -> tuple[int, int]:
    """Read (type, size) of a certification data block that must end exactly at ``end``."""
    if offset + _CERT_HEADER.size > end:
        raise ParseError(f"{what}.type", "truncated certification data header", offset=offset)
    ctype, size = _CERT_HEADER.unpack_from(data, offset)
    if size > MAX_CERT_DATA_BYTES:
        raise ParseError(f"{what}.size", f"{size} bytes, more than {MAX_CERT_DATA_BYTES}", offset=offset + 2)
    start = offset + _CERT_HEADER.size
    if start + size != end:
        raise ParseError(
            f"{what}.size",
            f"certification data of {size} bytes should end at offset {end}, ends at {start + size}",
            offset=offset + 2,
        )
    return ctype, size


def parse_quote(data: bytes, *, allow_trailing_data: bool = False) -> Quote:
    """Parse an SGX v3, TDX v4 or v5 quote; refuse anything unknown or inconsistent (ParseError)."""
    if not isinstance(data, bytes):
        if isinstance(data, bytearray | memoryview):
            data = bytes(data)
        else:
            raise ParseError("quote", f"expected bytes, got {type(data).__name__}")
    n = len(data)
    if n > MAX_QUOTE_BYTES:
        raise ParseError("quote", f"{n} bytes, more than MAX_QUOTE_BYTES={MAX_QUOTE_BYTES}")
    _need(data, 0, HEADER_BYTES, "header")
    version, akt, tee_type, qe_svn, pce_svn, vendor, user_data = _HEADER.unpack_from(data, 0)
    if version not in (3, 4, 5):
        raise ParseError("header.version", f"unsupported quote version {version} (3, 4, 5)", offset=0)
    if akt != ATT_KEY_TYPE_ECDSA_P256:
        raise ParseError(
            "header.att_key_type",
            f"unsupported attestation key type {akt} (only 2, ECDSA-256-with-P-256)",
            offset=2,
        )
    header = QuoteHeader(version, akt, tee_type, qe_svn, pce_svn, vendor, user_data)

    body_type: int | None = None
    body: QuoteBody
    off = HEADER_BYTES
    if version == 3:
        if tee_type != TEE_TYPE_SGX:
            raise ParseError("header.tee_type", f"0x{tee_type:08x} in a v3 quote (only SGX, 0)", offset=4)
        _need(data, off, SGX_REPORT_BYTES, "body")
        body = _sgx_report(data, off)
        off += SGX_REPORT_BYTES
    elif version == 4:
        if tee_type != TEE_TYPE_TDX:
            raise ParseError("header.tee_type", f"0x{tee_type:08x} in a v4 quote (only TDX, 0x81)", offset=4)
        _need(data, off, TDX10_REPORT_BYTES, "body")
        body = _td_report(data, off, False)
        off += TDX10_REPORT_BYTES
    else:
        if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
            raise ParseError(
                "header.tee_type", f"unknown TEE type 0x{tee_type:08x} (0 SGX, 0x81 TDX)", offset=4
            )
        _need(data, off, _V5_BODY.size, "body_type")
        body_type, body_size = _V5_BODY.unpack_from(data, off)
        expected = _V5_BODIES.get(body_type)
        if expected is None:
            raise ParseError(
                "body_type", f"unknown v5 body type {body_type} (1 SGX, 2 TDX 1.0, 3 TDX 1.5)", offset=off
            )
        if expected[0] != tee_type:
            raise ParseError(
                "body_type",
                f"body type {body_type} does not match TEE type 0x{tee_type:08x}",
                offset=off,
            )
        if body_size != expected[1]:
            raise ParseError(
                "body_size",
                f"{body_size} bytes for body type {body_type}, must be {expected[1]}",
                offset=off + 2,
            )
        off += _V5_BODY.size
        _need(data, off, body_size, "body")
        if body_type == BODY_TYPE_SGX:
            body = _sgx_report(data, off)
        else:
            body = _td_report(data, off, body_type == BODY_TYPE_TDX15)
        off += body_size

    signed_end = off
    _need(data, off, 4, "sig_data_len")
    (sig_len,) = _U32.unpack_from(data, off)
    if sig_len > MAX_SIG_DATA_BYTES:
        raise ParseError(
            "sig_data_len", f"{sig_len} bytes, more than MAX_SIG_DATA_BYTES={MAX_SIG_DATA_BYTES}", offset=off
        )
    off += 4
    sig_end = off + sig_len
    if sig_end > n:
        raise ParseError(
            "sig_data_len", f"{sig_len} bytes of signature data, only {n - off} left", offset=off - 4
        )
    # signature (64) + attestation key (64) + certification data header (6) at least
    if sig_len < 64 + 64 + _CERT_HEADER.size:
        raise ParseError("sig_data_len", f"{sig_len} bytes is too short for signature data", offset=off - 4)
    signature = data[off : off + 64]
    attestation_key = data[off + 64 : off + 128]
    off += 128

    if version == 3:
        qe_off = off
        fixed = QE_REPORT_BYTES + 64 + 2
        if off + fixed > sig_end:
            raise ParseError("qe_report", "signature data too short for the QE report", offset=off)
        off += QE_REPORT_BYTES + 64
        outer_type = CERT_TYPE_PCK_CHAIN
    else:
        ctype, csize = _cert_header(data, off, sig_end, "cert_data")
        if ctype != CERT_TYPE_QE_REPORT:
            raise ParseError(
                "cert_data.type",
                f"certification data type {ctype} unsupported in a v{version} quote "
                "(only 6, QE report certification data)",
                offset=off,
            )
        off += _CERT_HEADER.size
        qe_off = off
        if off + QE_REPORT_BYTES + 64 + 2 > sig_end:
            raise ParseError("qe_report", "certification data too short for the QE report", offset=off)
        off += QE_REPORT_BYTES + 64
        outer_type = CERT_TYPE_QE_REPORT
    qe_report_raw = data[qe_off : qe_off + QE_REPORT_BYTES]
    qe_report = _sgx_report(data, qe_off)
    qe_report_signature = data[qe_off + QE_REPORT_BYTES : qe_off + QE_REPORT_BYTES + 64]

    (auth_len,) = _U16.unpack_from(data, off)
    if auth_len > MAX_AUTH_DATA_BYTES:
        raise ParseError(
            "qe_auth_data.size",
            f"{auth_len} bytes, more than MAX_AUTH_DATA_BYTES={MAX_AUTH_DATA_BYTES}",
            offset=off,
        )
    off += 2
    if off + auth_len > sig_end:
        raise ParseError("qe_auth_data", "runs past the end of the signature data", offset=off)
    qe_auth_data = data[off : off + auth_len]
    off += auth_len

    ctype, csize = _cert_header(data, off, sig_end, "pck_cert_data")
    if ctype != CERT_TYPE_PCK_CHAIN:
        raise ParseError(
            "pck_cert_data.type",
            f"certification data type {ctype} unsupported (only 5, PCK certificate chain)",
            offset=off,
        )
    off += _CERT_HEADER.size
    pem = _pem_from_cert_data(data, off, csize)

    padding = n - sig_end
    trailing = b""
    if padding and data.count(0, sig_end) != padding:
        if not allow_trailing_data:
            first = next(i for i in range(sig_end, n) if data[i])
            raise ParseError(
                "quote",
                f"{n - sig_end} bytes after the signature data and they are not zero padding",
                offset=first,
            )
        trailing = data[sig_end:]
        padding = 0

    return Quote(
        header=header,
        body=body,
        body_type=body_type,
        signed_region=data[:signed_end],
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_raw=qe_report_raw,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        outer_cert_data_type=outer_type,
        pck_chain_pem=pem,
        raw=data,
        padding=padding,
        trailing_data=trailing,
    )


_HEX_DIGITS = b"0123456789abcdefABCDEF"
# Text that reads as hex (whitespace allowed): never tried as base64 first.
_HEX_TEXT = re.compile(rb"[ \t\r\n\v\f]*(?:0[xX])?[0-9a-fA-F \t\r\n\v\f]*")
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_WS = b" \t\r\n\v\f"
_TEXT_BYTES = frozenset(range(0x20, 0x7F)) | frozenset(_WS)


def _decode_base64(text: bytes) -> bytes:
    body = text.rstrip(b"=")
    pad = len(text) - len(body)
    leftover = body.translate(None, _B64_CHARS + b"+/-_")
    if leftover:
        bad = text.index(leftover[:1])
        raise ParseError(
            "quote text", f"neither hex nor base64 (character {chr(text[bad])!r} at position {bad})"
        )
    url = b"-" in body or b"_" in body
    if url and (b"+" in body or b"/" in body):
        raise ParseError("quote text", "base64 mixes the standard and the URL-safe alphabets")
    if pad > 2 or (pad and (len(body) + pad) % 4):
        raise ParseError("quote text", "bad base64 padding")
    if len(body) % 4 == 1:
        raise ParseError("quote text", f"bad base64: {len(body)} characters cannot encode whole bytes")
    if url:
        body = body.translate(_URL_TO_STD)
    try:
        return binascii.a2b_base64(body + b"=" * (-len(body) % 4), strict_mode=True)
    except binascii.Error as exc:
        raise ParseError("quote text", f"bad base64: {exc}") from None


def decode_quote_text(data: bytes | str) -> bytes:
    """A quote given as binary (returned as is), hex (optional ``0x``) or base64 text (std or url-safe).

    Which one is decided by the content, never by trying decoders in turn: a binary quote always
    holds non-text bytes (its version is a little-endian u16, so byte 1 is 0); text made only of
    hex digits is hex; other text must be base64. Whitespace in text is ignored.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("ascii")
        except UnicodeEncodeError:
            raise ParseError("quote text", "not ASCII: neither hex nor base64") from None
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    else:
        raise ParseError("quote", f"expected bytes or str, got {type(data).__name__}")
    if not raw:
        raise ParseError("quote", "empty input")
    is_text = isinstance(data, str) or all(b in _TEXT_BYTES for b in raw[:HEADER_BYTES])
    if not is_text:
        if len(raw) > MAX_QUOTE_BYTES:
            raise ParseError("quote", f"{len(raw)} bytes, more than MAX_QUOTE_BYTES={MAX_QUOTE_BYTES}")
        return raw
    if len(raw) > MAX_QUOTE_TEXT_BYTES:
        raise ParseError(
            "quote text", f"{len(raw)} bytes, more than MAX_QUOTE_TEXT_BYTES={MAX_QUOTE_TEXT_BYTES}"
        )
    pad_at = raw.find(b"=")
    if not len(raw) % 4 and pad_at in (-1, len(raw) - 1, len(raw) - 2) and _HEX_TEXT.fullmatch(raw) is None:
        # The common case, padded standard base64 without whitespace, in one pass (strict mode
        # refuses other characters; length and padding are checked here, as 3.11's strict mode
        # lets excess padding through); anything else takes the careful path below (same
        # result, precise errors).
        try:
            out = binascii.a2b_base64(raw, strict_mode=True)
        except binascii.Error:
            pass
        else:
            if out and len(out) <= MAX_QUOTE_BYTES:
                return out
    return _decode_text(raw)


def _decode_text(raw: bytes) -> bytes:
    """Hex or base64 text (whitespace ignored) → bytes; ParseError naming what is wrong."""
    text = raw.translate(None, _WS)
    if not text:
        raise ParseError("quote text", "only whitespace")
    digits = text[2:] if text[:2] in (b"0x", b"0X") else text
    if not digits.translate(None, _HEX_DIGITS):
        if len(digits) % 2:
            raise ParseError("quote text", f"hex text of odd length {len(digits)}")
        out = binascii.unhexlify(digits)
    else:
        out = _decode_base64(text)
    if not out:
        raise ParseError("quote text", "decodes to nothing")
    if len(out) > MAX_QUOTE_BYTES:
        raise ParseError("quote", f"{len(out)} bytes, more than MAX_QUOTE_BYTES={MAX_QUOTE_BYTES}")
    return out

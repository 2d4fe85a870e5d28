"""AESM wire constants and framing: 4-byte host-order (little-endian on x86) length + protobuf."""

from __future__ import annotations

import enum
import hashlib
import struct
import sys

from teegate.errors import ParseError

__all__ = [
    "ATT_KEY_ID_SIZE",
    "DEFAULT_SOCKET",
    "ECDSA_ATT_KEY_ID",
    "IPC_LATENCY_MS",
    "MAX_MESSAGE_SIZE",
    "QE_REPORT_INFO_SIZE",
    "SGX_REPORT_SIZE",
    "TARGET_INFO_SIZE",
    "AesmError",
    "att_key_algorithm",
    "decode_length",
    "ecdsa_att_key_id",
    "frame",
    "qe_identity_from_quote",
]

DEFAULT_SOCKET = "/var/run/aesmd/aesm.socket"
#: libsgx-quote-ex's timeout in release builds (psw/uae_service/config.h), ms.
IPC_LATENCY_MS = 15000
#: Largest AESM message accepted (an SGX quote with its certificate chain is ~5 KiB).
MAX_MESSAGE_SIZE = 64 * 1024
SGX_REPORT_SIZE = 432
TARGET_INFO_SIZE = 512
ATT_KEY_ID_SIZE = 256
QE_REPORT_INFO_SIZE = 16 + TARGET_INFO_SIZE + SGX_REPORT_SIZE
_SGX_QL_ALG_ECDSA_P256 = 2

# SGX v3 quote offsets (dcap.md §1.2/§1.5): header 48, report body 384, sig_len 4, then
# signature 64, attestation key 64, QE report body 384.
_SIG_DATA = 48 + 384 + 4
_ATTEST_KEY = _SIG_DATA + 64
_QE_REPORT = _ATTEST_KEY + 64
_QUOTE_MIN = _QE_REPORT + 384

# Length prefix in the host's byte order, as SocketTransporter memcpy's it.
_LENGTH = struct.Struct("=I")


class AesmError(enum.IntEnum):
    """aesm_error_t values the quoting subset returns."""

    SUCCESS = 0
    UNEXPECTED_ERROR = 1
    NO_DEVICE_ERROR = 2
    PARAMETER_ERROR = 3
    BUSY = 18
    SERVICE_UNAVAILABLE = 30
    UNSUPPORTED_ATT_KEY_ID = 38
    ATT_KEY_NOT_INITIALIZED = 42
    INVALID_REPORT = 47


def frame(payload: bytes) -> bytes:
    """Prefix a serialized message with its host-order 4-byte length."""
    if len(payload) > MAX_MESSAGE_SIZE:
        raise ParseError("aesm message", f"{len(payload)} bytes exceeds MAX_MESSAGE_SIZE {MAX_MESSAGE_SIZE}")
    return _LENGTH.pack(len(payload)) + payload


def decode_length(prefix: bytes) -> int:
    """Decode and bound a length prefix."""
    (length,) = _LENGTH.unpack(prefix)
    if not 0 < length <= MAX_MESSAGE_SIZE:
        raise ParseError("aesm length", f"{length} outside (0, {MAX_MESSAGE_SIZE}] ({sys.byteorder}-endian)")
    return int(length)


def ecdsa_att_key_id(qe_mrsigner: bytes = bytes(32), qe_prod_id: int = 1) -> bytes:
    """``sgx_att_key_id_ext_t`` (256 B) naming Intel's ECDSA-P256 QE, as ``sgx_ql_get_keyid`` does."""
    body = struct.pack(
        "<HHH48sI16s64s16sI",
        0,  # id
        0,  # version
        len(qe_mrsigner),
        qe_mrsigner.ljust(48, b"\0"),
        qe_prod_id,
        bytes(16),
        bytes(64),
        bytes(16),
        _SGX_QL_ALG_ECDSA_P256,
    )
    return body + bytes(ATT_KEY_ID_SIZE - len(body))


ECDSA_ATT_KEY_ID = ecdsa_att_key_id()


def att_key_algorithm(att_key_id: bytes) -> int:
    """The ``algorithm_id`` of an ``sgx_att_key_id_ext_t``."""
    if len(att_key_id) < 158:
        raise ParseError("att_key_id", f"{len(att_key_id)} bytes, need at least 158")
    return int(struct.unpack_from("<I", att_key_id, 154)[0])


def qe_identity_from_quote(quote: bytes) -> tuple[bytes, bytes]:
    """(QE ``sgx_target_info_t``, pub_key_id) derived from an SGX v3 quote's QE report and key."""
    if len(quote) < _QUOTE_MIN:
        raise ParseError("quote", f"{len(quote)} bytes is too short for an SGX v3 quote with a QE report")
    qe = quote[_QE_REPORT : _QE_REPORT + 384]
    target = bytearray(TARGET_INFO_SIZE)
    target[0:32] = qe[64:96]  # mr_enclave
    target[32:48] = qe[48:64]  # attributes
    target[50:52] = qe[260:262]  # config_svn
    target[52:56] = qe[16:20]  # misc_select
    target[64:128] = qe[192:256]  # config_id
    pub_key_id = hashlib.sha256(quote[_ATTEST_KEY : _ATTEST_KEY + 64]).digest()
    return bytes(target), pub_key_id

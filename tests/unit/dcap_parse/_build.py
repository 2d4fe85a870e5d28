"""Build synthetic quotes byte by byte from the spec's tables (shared/spec/dcap.md §1)."""

from __future__ import annotations

import struct

INTEL_VENDOR = bytes.fromhex("939A7233F79C4CA9940A0DB3957F0607")


def pattern(size: int, seed: int) -> bytes:
    """Distinct, recognisable bytes so a field read at a wrong offset shows."""
    return bytes((seed * 37 + i * 11 + 1) & 0xFF for i in range(size))


def header(
    version: int, tee_type: int, *, att_key_type: int = 2, qe_svn: int = 0x0A0B, pce_svn: int = 0x0C0D
) -> bytes:
    return struct.pack(
        "<HHIHH16s20s", version, att_key_type, tee_type, qe_svn, pce_svn, INTEL_VENDOR, pattern(20, 1)
    )


def sig_data_v3(qe_report: bytes, pem: bytes, *, auth: bytes = bytes(range(32)), cert_type: int = 5) -> bytes:
    return (
        pattern(64, 50)
        + pattern(64, 51)
        + qe_report
        + pattern(64, 52)
        + struct.pack("<H", len(auth))
        + auth
        + struct.pack("<HI", cert_type, len(pem))
        + pem
    )


def sig_data_v4(
    qe_report: bytes,
    pem: bytes,
    *,
    auth: bytes = bytes(range(32)),
    outer_type: int = 6,
    inner_type: int = 5,
) -> bytes:
    inner = (
        qe_report
        + pattern(64, 52)
        + struct.pack("<H", len(auth))
        + auth
        + struct.pack("<HI", inner_type, len(pem))
        + pem
    )
    return pattern(64, 50) + pattern(64, 51) + struct.pack("<HI", outer_type, len(inner)) + inner


def quote(
    version: int,
    tee_type: int,
    body: bytes,
    sig_data: bytes,
    *,
    body_type: int | None = None,
    hdr: bytes | None = None,
) -> bytes:
    h = hdr if hdr is not None else header(version, tee_type)
    if version == 5:
        assert body_type is not None
        h += struct.pack("<HI", body_type, len(body))
    return h + body + struct.pack("<I", len(sig_data)) + sig_data

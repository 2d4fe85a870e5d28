"""SEV-SNP report and certificate table → the sev crate's serde JSON (what Trustee deserialises)."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.snp import SNP_REPORT_SIZE, snp_cert_table, snp_report_json
from teegate.attester.providers.tsm import TsmProvider
from tests.unit.attester.fake_tsm import FakeTsm

ARK = uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae")
VCEK = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
ODD = uuid.UUID("12345678-1234-5678-1234-567812345678")


def _report(version: int, family: int = 0x1A, model: int = 0x01, report_data: bytes = bytes(64)) -> bytes:
    r = bytearray(SNP_REPORT_SIZE)
    struct.pack_into("<IIQ", r, 0, version, 7, 0x30000)
    r[0x38:0x40] = bytes([1, 2, 3, 4, 0, 0, 5, 6])  # current TCB
    struct.pack_into("<QI", r, 0x40, 0x25, 1)
    r[0x50:0x90] = report_data
    r[0x90:0xC0] = b"\xaa" * 48
    r[0x188], r[0x189], r[0x18A] = family, model, 2
    r[0x1A0:0x1E0] = b"\x01" * 64
    r[0x1E8:0x1EB] = bytes([9, 8, 1])  # build, minor, major
    struct.pack_into("<QQ", r, 0x1F8, 11, 12)
    r[0x2A0:0x2E8] = b"\x05" * 72
    r[0x2E8:0x330] = b"\x06" * 72
    return bytes(r)


def test_v5_turin_report() -> None:
    j = snp_report_json(_report(5, report_data=b"\x42" * 64))
    assert j["version"] == 5 and j["guest_svn"] == 7 and j["policy"] == 0x30000
    assert j["current_tcb"] == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 6}
    assert j["plat_info"] == 0x25 and j["key_info"] == 1
    assert j["report_data"] == [0x42] * 64 and j["measurement"] == [0xAA] * 48
    assert (j["cpuid_fam_id"], j["cpuid_mod_id"], j["cpuid_step"]) == (0x1A, 0x01, 2)
    assert j["current"] == {"major": 1, "minor": 8, "build": 9}
    assert (j["launch_mit_vector"], j["current_mit_vector"]) == (11, 12)
    assert j["signature"] == {"r": [5] * 72, "s": [6] * 72}


def test_v3_milan_report_uses_legacy_tcb_and_no_mit_vectors() -> None:
    j = snp_report_json(_report(3, family=0x19, model=0x01))
    assert j["current_tcb"] == {"fmc": None, "bootloader": 1, "tee": 2, "snp": 5, "microcode": 6}
    assert j["launch_mit_vector"] is None and j["current_mit_vector"] is None


def test_v2_report_has_no_cpuid() -> None:
    j = snp_report_json(_report(2))
    assert j["cpuid_fam_id"] is None
    assert j["current_tcb"]["fmc"] is None  # chip id not Turin-like: Genoa layout


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (b"\0" * 100, "1184"),
        (_report(1), "version 1"),
        (_report(5, family=0x17), "not a known SEV-SNP processor"),
    ],
)
def test_bad_reports(report: bytes, message: str) -> None:
    with pytest.raises(EvidenceUnavailable, match=message):
        snp_report_json(report)


def _table(entries: list[tuple[uuid.UUID, bytes]]) -> bytes:
    header = b""
    data = b""
    start = 24 * (len(entries) + 1)
    for guid, blob in entries:
        header += guid.bytes + struct.pack("<II", start + len(data), len(blob))
        data += blob
    return header + bytes(24) + data


def test_cert_table() -> None:
    table = snp_cert_table(_table([(ARK, b"ark"), (VCEK, b"vcek!"), (ODD, b"x")]))
    assert table == [
        {"cert_type": "ARK", "data": list(b"ark")},
        {"cert_type": "VCEK", "data": list(b"vcek!")},
        {"cert_type": {"OTHER": str(ODD)}, "data": [ord("x")]},
    ]
    with pytest.raises(EvidenceUnavailable, match=r"outside"):
        snp_cert_table(ARK.bytes + struct.pack("<II", 48, 1000) + bytes(24))
    with pytest.raises(EvidenceUnavailable, match=r"terminating"):
        snp_cert_table(ARK.bytes + struct.pack("<II", 0, 0))


def test_sev_guest_through_configfs_tsm(tmp_path: Path) -> None:
    table = _table([(VCEK, b"vcek")])

    def report(inblob: bytes) -> bytes:
        return _report(5, report_data=inblob)

    fake = FakeTsm(tmp_path / "tsm", provider="sev_guest", report=report)
    original = fake.mkdir

    def mkdir_with_aux(path: Path) -> None:
        original(path)
        (path / "auxblob").write_bytes(table)

    fake.mkdir = mkdir_with_aux  # type: ignore[method-assign]
    provider = TsmProvider(fake.root, ops=fake.ops, ccel_path=tmp_path / "x", aael_path=tmp_path / "x")
    assert provider.tee == "snp"
    evidence = provider.evidence(b"\x07" * 48)
    assert evidence["attestation_report"]["report_data"] == [7] * 48 + [0] * 16
    assert evidence["cert_chain"] == [{"cert_type": "VCEK", "data": list(b"vcek")}]

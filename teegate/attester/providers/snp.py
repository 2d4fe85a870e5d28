"""SEV-SNP evidence in Trustee's JSON: the ``sev`` crate's serde layout of the report and certs.

Trustee's SNP verifier deserialises ``{"attestation_report": AttestationReport, "cert_chain":
[CertTableEntry] | null}`` with serde (virtee/sev at the revision Trustee pins). This module
decodes the 1184-byte firmware report (configfs-tsm ``outblob``) and the extended-report
certificate table (``auxblob``) into exactly that JSON: byte arrays as arrays of numbers,
newtype bitfields as integers, TCB versions per processor generation.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any, Final

from teegate.attester.errors import EvidenceUnavailable

__all__ = ["SNP_REPORT_SIZE", "snp_cert_table", "snp_evidence", "snp_report_json"]

#: ``ATT_REP_FW_LEN``.
SNP_REPORT_SIZE: Final = 1184
#: Bound on certificate-table entries we decode.
MAX_CERT_ENTRIES: Final = 64
_CERT_TYPES: Final = {
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ARK",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ASK",
    "63da758d-e664-4564-adc5-f4b93be8accd": "VCEK",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "VLEK",
    "92f81bc3-5811-4d3d-97ff-d19f88dc67ea": "CRL",
}


def _generation(report: bytes, version: int) -> str:
    """``sev::Generation`` as the crate's decoder determines it (Milan, Genoa, Turin)."""
    if version == 2:
        chip_id = report[0x1A0:0x1E0]
        if chip_id == bytes(64):
            raise EvidenceUnavailable("SNP report v2 with a masked CHIP_ID: processor generation unknown")
        return "Turin" if chip_id[8:] == bytes(56) else "Genoa"
    family, model = report[0x188], report[0x189]
    if family == 0x19 and model <= 0x0F:
        return "Milan"
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return "Genoa"
    if family == 0x1A and model <= 0x11:
        return "Turin"
    raise EvidenceUnavailable(
        f"SNP report CPUID family 0x{family:x} model 0x{model:x} is not a known SEV-SNP processor"
    )


def _tcb(raw: bytes, generation: str) -> dict[str, Any]:
    if generation == "Turin":
        return {"fmc": raw[0], "bootloader": raw[1], "tee": raw[2], "snp": raw[3], "microcode": raw[7]}
    return {"fmc": None, "bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


def _version(raw: bytes) -> dict[str, int]:
    return {"major": raw[2], "minor": raw[1], "build": raw[0]}


def snp_report_json(report: bytes) -> dict[str, Any]:
    """The ``sev::firmware::guest::AttestationReport`` serde JSON of a firmware report."""
    if len(report) != SNP_REPORT_SIZE:
        raise EvidenceUnavailable(f"SNP report is {len(report)} bytes, expected {SNP_REPORT_SIZE}")
    (version,) = struct.unpack_from("<I", report, 0)
    if version < 2:
        raise EvidenceUnavailable(f"SNP report version {version} is not supported (need >= 2)")
    generation = _generation(report, version)

    def u32(at: int) -> int:
        return int(struct.unpack_from("<I", report, at)[0])

    def u64(at: int) -> int:
        return int(struct.unpack_from("<Q", report, at)[0])

    def array(start: int, size: int) -> list[int]:
        return list(report[start : start + size])

    v3 = version >= 3
    v5 = version >= 5
    return {
        "version": version,
        "guest_svn": u32(0x04),
        "policy": u64(0x08),
        "family_id": array(0x10, 16),
        "image_id": array(0x20, 16),
        "vmpl": u32(0x30),
        "sig_algo": u32(0x34),
        "current_tcb": _tcb(report[0x38:0x40], generation),
        "plat_info": u64(0x40),
        "key_info": u32(0x48),
        "report_data": array(0x50, 64),
        "measurement": array(0x90, 48),
        "host_data": array(0xC0, 32),
        "id_key_digest": array(0xE0, 48),
        "author_key_digest": array(0x110, 48),
        "report_id": array(0x140, 32),
        "report_id_ma": array(0x160, 32),
        "reported_tcb": _tcb(report[0x180:0x188], generation),
        "cpuid_fam_id": report[0x188] if v3 else None,
        "cpuid_mod_id": report[0x189] if v3 else None,
        "cpuid_step": report[0x18A] if v3 else None,
        "chip_id": array(0x1A0, 64),
        "committed_tcb": _tcb(report[0x1E0:0x1E8], generation),
        "current": _version(report[0x1E8:0x1EB]),
        "committed": _version(report[0x1EC:0x1EF]),
        "launch_tcb": _tcb(report[0x1F0:0x1F8], generation),
        "launch_mit_vector": u64(0x1F8) if v5 else None,
        "current_mit_vector": u64(0x200) if v5 else None,
        "signature": {"r": array(0x2A0, 72), "s": array(0x2E8, 72)},
    }


def snp_cert_table(table: bytes) -> list[dict[str, Any]]:
    """``Vec<CertTableEntry>`` serde JSON from the kernel's certificate table (GUID, offset, length)."""
    entries: list[dict[str, Any]] = []
    for index in range(MAX_CERT_ENTRIES + 1):
        at = index * 24
        if at + 24 > len(table):
            raise EvidenceUnavailable("SNP certificate table has no terminating zero entry")
        guid = uuid.UUID(bytes=table[at : at + 16])
        if guid.int == 0:
            return entries
        if index == MAX_CERT_ENTRIES:
            break
        offset, length = struct.unpack_from("<II", table, at + 16)
        if offset + length > len(table):
            raise EvidenceUnavailable(f"SNP certificate {guid} lies outside the {len(table)}-byte table")
        name = _CERT_TYPES.get(str(guid))
        entries.append(
            {
                "cert_type": name if name else {"OTHER": str(guid)},
                "data": list(table[offset : offset + length]),
            }
        )
    raise EvidenceUnavailable(f"SNP certificate table has more than {MAX_CERT_ENTRIES} entries")


def snp_evidence(report: bytes, auxblob: bytes | None) -> dict[str, Any]:
    """Trustee's ``SnpEvidence``."""
    return {
        "attestation_report": snp_report_json(report),
        "cert_chain": snp_cert_table(auxblob) if auxblob else None,
    }

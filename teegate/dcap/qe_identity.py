"""Intel Enclave Identity (QE / TD_QE, version 2): parse the signed JSON and match a QE report.

The document is the ``enclaveIdentity`` object exactly as Intel signed it (the signature is
checked by :mod:`teegate.dcap.verify`). Matching follows Intel QVL ``EnclaveReportVerifier``
(shared/spec/dcap.md §2.4 step 10): masked MISCSELECT and ATTRIBUTES, MRSIGNER, ISVPRODID
must equal the identity's (else QE_IDENTITY_MISMATCH); the QE TCB status is the first level,
by descending ISVSVN, at or below the QE's ISVSVN (none: ISVSVN_NOT_SUPPORTED).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from teegate.dcap.quote import SgxReportBody
from teegate.dcap.tcb_info import MODULE_STATUSES, ModuleTcbLevel, _load_object, _module_level, _Reader
from teegate.errors import CollateralError, VerificationError

__all__ = ["QeIdentity", "match_qe_report", "parse_qe_identity"]


@dataclass(frozen=True, slots=True)
class QeIdentity:
    """A parsed Enclave Identity; ``tcb_levels`` by descending ISVSVN."""

    id: Literal["QE", "TD_QE", "QVE", "QAE"]
    version: int
    issue_date: datetime
    next_update: datetime
    tcb_evaluation_data_number: int
    miscselect: int
    miscselect_mask: int
    attributes: bytes  # 16
    attributes_mask: bytes  # 16
    mrsigner: bytes  # 32
    isvprodid: int
    tcb_levels: tuple[ModuleTcbLevel, ...]


_IDS: dict[str, Literal["QE", "TD_QE", "QVE", "QAE"]] = {
    "QE": "QE",
    "TD_QE": "TD_QE",
    "QVE": "QVE",
    "QAE": "QAE",
}


def _level_slow(level: _Reader) -> ModuleTcbLevel:
    """One level by the reader: names the offending member (status is checked first)."""
    status = level.str_("tcbStatus")
    if status not in MODULE_STATUSES:
        raise CollateralError(f"{level.path}.tcbStatus: unknown status {status!r}")
    return ModuleTcbLevel(
        isvsvn=level.child("tcb").int_("isvsvn", hi=0xFFFF),
        tcb_date=level.time_("tcbDate"),
        tcb_date_text=level.str_("tcbDate"),
        status=status,
        advisory_ids=level.strings_("advisoryIDs"),
    )


def parse_qe_identity(text: str | bytes) -> QeIdentity:
    """Parse the ``enclaveIdentity`` JSON text. Raises CollateralError only."""
    root = _Reader(_load_object(text, "enclaveIdentity"), "enclaveIdentity")
    version = root.int_("version", hi=255)
    if version not in (2, 3):
        raise CollateralError(f"enclaveIdentity.version: unsupported version {version} (2 and 3 known)")
    raw_id = root.str_("id")
    ident = _IDS.get(raw_id)
    if ident is None:
        raise CollateralError(f"enclaveIdentity.id: unknown identity {raw_id!r}")
    levels = []
    dates: dict[str, datetime] = {}
    for i, item in enumerate(root.list_("tcbLevels")):
        levels.append(_module_level(item, "enclaveIdentity", i, dates, _level_slow))
    if not levels:
        raise CollateralError("enclaveIdentity.tcbLevels: empty")
    levels.sort(key=lambda lvl: lvl.isvsvn, reverse=True)
    return QeIdentity(
        id=ident,
        version=version,
        issue_date=root.time_("issueDate"),
        next_update=root.time_("nextUpdate"),
        tcb_evaluation_data_number=root.int_("tcbEvaluationDataNumber"),
        miscselect=int.from_bytes(root.hex_("miscselect", 4), "little"),
        miscselect_mask=int.from_bytes(root.hex_("miscselectMask", 4), "little"),
        attributes=root.hex_("attributes", 16),
        attributes_mask=root.hex_("attributesMask", 16),
        mrsigner=root.hex_("mrsigner", 32),
        isvprodid=root.int_("isvprodid", hi=0xFFFF),
        tcb_levels=tuple(levels),
    )


def match_qe_report(identity: QeIdentity, report: SgxReportBody, *, step: str) -> ModuleTcbLevel:
    """Check the QE report against the identity; return the QE's TCB level."""
    # MISCSELECT hex is read as the report's little-endian u32 bytes, as dcap-qvl does.
    if report.misc_select & identity.miscselect_mask != identity.miscselect & identity.miscselect_mask:
        raise VerificationError(
            "QE_IDENTITY_MISMATCH",
            f"QE MISCSELECT {report.misc_select:08X} does not match {identity.miscselect:08X} under mask "
            f"{identity.miscselect_mask:08X}",
            step=step,
        )
    mask = int.from_bytes(identity.attributes_mask, "big")
    if int.from_bytes(report.attributes, "big") & mask != int.from_bytes(identity.attributes, "big") & mask:
        raise VerificationError(
            "QE_IDENTITY_MISMATCH",
            f"QE ATTRIBUTES {report.attributes.hex()} do not match {identity.attributes.hex()} under mask",
            step=step,
        )
    if report.mr_signer != identity.mrsigner:
        raise VerificationError(
            "QE_IDENTITY_MISMATCH",
            f"QE MRSIGNER {report.mr_signer.hex()} is not {identity.id}'s {identity.mrsigner.hex()}",
            step=step,
        )
    if report.isv_prod_id != identity.isvprodid:
        raise VerificationError(
            "QE_IDENTITY_MISMATCH",
            f"QE ISVPRODID {report.isv_prod_id} is not {identity.id}'s {identity.isvprodid}",
            step=step,
        )
    for level in identity.tcb_levels:
        if report.isv_svn >= level.isvsvn:
            return level
    raise VerificationError(
        "ISVSVN_NOT_SUPPORTED",
        f"QE ISVSVN {report.isv_svn} is below every level of {identity.id} "
        f"(lowest {identity.tcb_levels[-1].isvsvn})",
        step=step,
    )

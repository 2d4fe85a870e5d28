"""Collateral for a simulated platform: TCB Info v3, QE Identity v2, CRLs, issuer chains.

Documents are built as exact JSON text and signed with the simulated TCB signing key (ECDSA
P-256, raw ``r||s``), as Intel's PCS serves them; CRLs are DER signed by the simulated CAs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.dcap.collateral import Collateral
from teegate.dcap.tcb_info import TCB_STATUS_NAMES
from teegate.sim.engine import QeParams, raw_signature
from teegate.sim.pki import make_crl

__all__ = ["TCB_STATUSES", "CollateralInputs", "build_collateral"]

#: The TCB statuses a simulated platform can be given (Intel's names, best first).
TCB_STATUSES = TCB_STATUS_NAMES
#: Advisory IDs attached to non-UpToDate simulated levels (clearly not Intel's).
SIM_ADVISORIES = ("SIM-SA-00001", "SIM-SA-00002")
TCB_EVALUATION_DATA_NUMBER = 17
_UP_TO_DATE_DATE = "2024-03-13T00:00:00Z"
_OLD_DATE = "2018-01-04T00:00:00Z"
_QE_ATTRIBUTES = "11000000000000000000000000000000"
_QE_ATTRIBUTES_MASK = "FBFFFFFFFFFFFFFF0000000000000000"


@dataclass(frozen=True, slots=True)
class CollateralInputs:
    """What the collateral says about the platform (from platform.json) and the keys signing it."""

    fmspc: str
    pce_id: bytes
    sgx_tcb_components: tuple[int, ...]
    pce_svn: int
    tee_tcb_svn: bytes
    mr_signer_seam: bytes
    sgx_qe: QeParams
    td_qe: QeParams
    root: x509.Certificate
    platform_ca: x509.Certificate
    tcb_signing: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    platform_ca_key: ec.EllipticCurvePrivateKey
    tcb_signing_key: ec.EllipticCurvePrivateKey


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pem(*certs: x509.Certificate) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def _level(
    sgx: tuple[int, ...],
    pce_svn: int,
    tdx: bytes | None,
    *,
    status: str,
    date: str,
    advisories: tuple[str, ...] = (),
) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": s} for s in sgx], "pcesvn": pce_svn}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": s} for s in tdx]
    level: dict[str, Any] = {"tcb": tcb, "tcbDate": date, "tcbStatus": status}
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


def _tcb_levels(inputs: CollateralInputs, tee: str, status: str) -> list[dict[str, Any]]:
    sgx = inputs.sgx_tcb_components
    tdx = inputs.tee_tcb_svn if tee == "tdx" else None
    if status == "UpToDate":
        return [
            _level(sgx, inputs.pce_svn, tdx, status="UpToDate", date=_UP_TO_DATE_DATE),
            _level(
                (0,) * 16,
                0,
                bytes(16) if tdx is not None else None,
                status="OutOfDate",
                date=_OLD_DATE,
                advisories=SIM_ADVISORIES,
            ),
        ]
    # A newer level the platform does not reach, then the platform's own level with ``status``.
    newer_sgx = (sgx[0] + 1, *sgx[1:])
    newer_tdx = None if tdx is None else bytes([*tdx[:2], tdx[2] + 1, *tdx[3:]])
    return [
        _level(newer_sgx, inputs.pce_svn, newer_tdx, status="UpToDate", date=_UP_TO_DATE_DATE),
        _level(sgx, inputs.pce_svn, tdx, status=status, date=_OLD_DATE, advisories=SIM_ADVISORIES[:1]),
    ]


def _tcb_info(inputs: CollateralInputs, tee: str, *, status: str, fmspc: str, issue: str, nxt: str) -> str:
    doc: dict[str, Any] = {
        "id": tee.upper(),
        "version": 3,
        "issueDate": issue,
        "nextUpdate": nxt,
        "fmspc": fmspc,
        "pceId": inputs.pce_id.hex().upper(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
    }
    if tee == "tdx":
        module = {
            "mrsigner": inputs.mr_signer_seam.hex().upper(),
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        }
        doc["tdxModule"] = module
        major = inputs.tee_tcb_svn[1]
        if major > 0:
            doc["tdxModuleIdentities"] = [
                {
                    "id": f"TDX_{major:02X}",
                    **module,
                    "tcbLevels": [
                        {
                            "tcb": {"isvsvn": inputs.tee_tcb_svn[0]},
                            "tcbDate": _UP_TO_DATE_DATE,
                            "tcbStatus": "UpToDate",
                        },
                        {"tcb": {"isvsvn": 0}, "tcbDate": _OLD_DATE, "tcbStatus": "OutOfDate"},
                    ],
                }
            ]
    doc["tcbLevels"] = _tcb_levels(inputs, tee, status)
    return json.dumps(doc, separators=(",", ":"))


def _qe_identity(qe: QeParams, tee: str, issue: str, nxt: str) -> str:
    doc = {
        "id": "TD_QE" if tee == "tdx" else "QE",
        "version": 2,
        "issueDate": issue,
        "nextUpdate": nxt,
        "tcbEvaluationDataNumber": TCB_EVALUATION_DATA_NUMBER,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": _QE_ATTRIBUTES,
        "attributesMask": _QE_ATTRIBUTES_MASK,
        "mrsigner": qe.mr_signer.hex().upper(),
        "isvprodid": qe.isv_prod_id,
        "tcbLevels": [
            {"tcb": {"isvsvn": qe.isv_svn}, "tcbDate": _UP_TO_DATE_DATE, "tcbStatus": "UpToDate"},
            {"tcb": {"isvsvn": 0}, "tcbDate": _OLD_DATE, "tcbStatus": "OutOfDate"},
        ],
    }
    return json.dumps(doc, separators=(",", ":"))


def build_collateral(
    inputs: CollateralInputs,
    tee: Literal["sgx", "tdx"],
    *,
    now: datetime,
    status: str,
    fmspc: str | None = None,
    revoked_pck_serials: tuple[int, ...] = (),
    expired: bool = False,
) -> Collateral:
    """Signed collateral valid around ``now`` (issued 1 h before, next update 30 days after).

    ``expired`` moves the whole window into the past (issued 31 days, expired 1 day before
    ``now``); ``fmspc`` overrides the FMSPC the TCB Info names; ``revoked_pck_serials`` go on
    the PCK CRL.
    """
    if tee not in ("sgx", "tdx"):
        raise ValueError(f"TEE type must be 'sgx' or 'tdx', not {tee!r}")
    if status not in TCB_STATUSES:
        raise ValueError(f"unknown TCB status {status!r}; choose one of {', '.join(TCB_STATUSES)}")
    now = now.replace(microsecond=0)
    if expired:
        issued, next_update = now - timedelta(days=31), now - timedelta(days=1)
    else:
        issued, next_update = now - timedelta(hours=1), now + timedelta(days=30)
    issue_s, next_s = _time(issued), _time(next_update)
    tcb_info = _tcb_info(inputs, tee, status=status, fmspc=fmspc or inputs.fmspc, issue=issue_s, nxt=next_s)
    qe = inputs.td_qe if tee == "tdx" else inputs.sgx_qe
    qe_identity = _qe_identity(qe, tee, issue_s, next_s)
    signing_chain = _pem(inputs.tcb_signing, inputs.root)
    return Collateral(
        pck_crl_issuer_chain=_pem(inputs.platform_ca, inputs.root),
        root_ca_crl=make_crl(inputs.root, inputs.root_key, this_update=issued, next_update=next_update),
        pck_crl=make_crl(
            inputs.platform_ca,
            inputs.platform_ca_key,
            this_update=issued,
            next_update=next_update,
            revoked_serials=revoked_pck_serials,
        ),
        tcb_info_issuer_chain=signing_chain,
        tcb_info=tcb_info,
        tcb_info_signature=raw_signature(inputs.tcb_signing_key, tcb_info.encode()),
        qe_identity_issuer_chain=signing_chain,
        qe_identity=qe_identity,
        qe_identity_signature=raw_signature(inputs.tcb_signing_key, qe_identity.encode()),
    )

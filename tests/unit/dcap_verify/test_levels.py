"""TCB level selection, TDX module identity and status convergence (Intel QVL rules) on small documents."""

from __future__ import annotations

import json
from typing import Any

import pytest

from teegate.dcap.quote import TdReport15
from teegate.dcap.tcb_info import match_tcb_levels, parse_tcb_info, tdx_module_status
from teegate.dcap.verify import _converge_module, _converge_qe, _relaunch
from teegate.errors import CollateralError, VerificationError

ZERO48 = "00" * 48


def _level(
    sgx: int, pce: int, tdx: list[int] | None, status: str, advisories: list[str] | None = None
) -> dict[str, Any]:
    tcb: dict[str, Any] = {"sgxtcbcomponents": [{"svn": sgx}] * 16, "pcesvn": pce}
    if tdx is not None:
        tcb["tdxtcbcomponents"] = [{"svn": v} for v in tdx]
    out: dict[str, Any] = {"tcb": tcb, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}
    if advisories:
        out["advisoryIDs"] = advisories
    return out


def _tdx(levels: list[dict[str, Any]], identities: list[dict[str, Any]] | None = None) -> str:
    doc: dict[str, Any] = {
        "id": "TDX",
        "version": 3,
        "issueDate": "2025-01-01T00:00:00Z",
        "nextUpdate": "2025-02-01T00:00:00Z",
        "fmspc": "00806f050000",
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {
            "mrsigner": ZERO48,
            "attributes": "0000000000000000",
            "attributesMask": "FFFFFFFFFFFFFFFF",
        },
        "tcbLevels": levels,
    }
    if identities is not None:
        doc["tdxModuleIdentities"] = identities
    return json.dumps(doc)


def _svn(*head: int) -> bytes:
    return bytes(head) + bytes(16 - len(head))


def test_levels_sorted_not_json_order() -> None:
    info = parse_tcb_info(
        _tdx(
            [
                _level(2, 10, [0] * 16, "OutOfDate", ["INTEL-SA-1"]),
                _level(5, 13, [3] + [0] * 15, "UpToDate"),
                _level(5, 13, [1] + [0] * 15, "OutOfDate", ["INTEL-SA-2"]),
            ]
        )
    )
    assert [lvl.status for lvl in info.tcb_levels] == ["UpToDate", "OutOfDate", "OutOfDate"]
    assert info.fmspc == "00806F050000"
    m = match_tcb_levels(info, [5] * 16, 13, _svn(3), step="t")
    assert m.tdx_level is not None and m.tdx_level.status == "UpToDate"
    m = match_tcb_levels(info, [5] * 16, 13, _svn(2), step="t")
    assert m.tdx_level is not None and m.tdx_level.advisory_ids == ("INTEL-SA-2",)
    assert m.sgx_level.status == "UpToDate"  # the SGX level is the first SGX match
    m = match_tcb_levels(info, [4] * 16, 13, _svn(3), step="t")
    assert m.sgx_level.status == "OutOfDate" and m.tdx_level is not None
    with pytest.raises(VerificationError) as info_:
        match_tcb_levels(info, [1] * 16, 13, _svn(3), step="t")
    assert info_.value.code == "TCB_NOT_SUPPORTED"
    with pytest.raises(VerificationError):
        match_tcb_levels(info, [5] * 16, 9, _svn(3), step="t")  # PCESVN below every level


def test_module_version_skips_first_two_tdx_components() -> None:
    """With TEE_TCB_SVN[1] > 0 the module identity covers indices 0/1 (Intel QVL, unlike dcap-qvl)."""
    identity = {
        "id": "TDX_03",
        "mrsigner": ZERO48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [
            {"tcb": {"isvsvn": 5}, "tcbDate": "2024-06-01T00:00:00Z", "tcbStatus": "UpToDate"},
            {
                "tcb": {"isvsvn": 2},
                "tcbDate": "2024-01-01T00:00:00Z",
                "tcbStatus": "OutOfDate",
                "advisoryIDs": ["SA-M"],
            },
        ],
    }
    info = parse_tcb_info(_tdx([_level(1, 1, [9, 9, 2] + [0] * 13, "UpToDate")], [identity]))
    svn = _svn(3, 3, 2)
    m = match_tcb_levels(info, [1] * 16, 1, svn, step="t")
    assert m.tdx_level is not None
    with pytest.raises(VerificationError):
        match_tcb_levels(info, [1] * 16, 1, _svn(3, 0, 2), step="t")  # module 1.0 numbering: 0/1 compared
    _ident, level = tdx_module_status(info, svn, bytes(48), bytes(8), step="t")
    assert level is not None and level.status == "OutOfDate" and level.advisory_ids == ("SA-M",)
    _ident, level = tdx_module_status(info, _svn(6, 3), bytes(48), bytes(8), step="t")
    assert level is not None and level.status == "UpToDate"
    with pytest.raises(VerificationError) as err:
        tdx_module_status(info, _svn(1, 3), bytes(48), bytes(8), step="t")
    assert err.value.code == "TCB_NOT_SUPPORTED"
    with pytest.raises(VerificationError) as err:
        tdx_module_status(info, _svn(6, 4), bytes(48), bytes(8), step="t")
    assert err.value.code == "TDX_MODULE_MISMATCH"
    with pytest.raises(VerificationError) as err:
        tdx_module_status(info, _svn(6, 3), b"\x01" * 48, bytes(8), step="t")
    assert err.value.code == "TDX_MODULE_MISMATCH"
    with pytest.raises(VerificationError) as err:
        tdx_module_status(info, _svn(6, 0), bytes(48), b"\x01" + bytes(7), step="t")
    assert err.value.code == "TDX_MODULE_MISMATCH"
    assert tdx_module_status(info, _svn(6, 0), bytes(48), bytes(8), step="t")[1] is None


@pytest.mark.parametrize(
    ("tcb", "qe", "expected"),
    [
        ("UpToDate", "UpToDate", "UpToDate"),
        ("UpToDate", "OutOfDate", "OutOfDate"),
        ("SWHardeningNeeded", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("ConfigurationAndSWHardeningNeeded", "OutOfDate", "OutOfDateConfigurationNeeded"),
        ("OutOfDate", "OutOfDate", "OutOfDate"),
        ("ConfigurationNeeded", "Revoked", "Revoked"),
        ("TDRelaunchAdvised", "UpToDate", "TDRelaunchAdvised"),
    ],
)
def test_converge(tcb: str, qe: str, expected: str) -> None:
    assert _converge_qe(tcb, qe) == expected
    assert _converge_module(tcb, qe) == expected


def _td15(svn2: bytes) -> TdReport15:
    z = bytes(48)
    return TdReport15(
        _svn(1, 3), z, z, bytes(8), bytes(8), bytes(8), z, z, z, z, (z, z, z, z), bytes(64), svn2, z
    )


def test_td_relaunch() -> None:
    identity = {
        "id": "TDX_03",
        "mrsigner": ZERO48,
        "attributes": "0000000000000000",
        "attributesMask": "FFFFFFFFFFFFFFFF",
        "tcbLevels": [{"tcb": {"isvsvn": 5}, "tcbDate": "2024-06-01T00:00:00Z", "tcbStatus": "UpToDate"}],
    }
    info = parse_tcb_info(_tdx([_level(1, 1, [5, 0, 4] + [0] * 13, "UpToDate")], [identity]))
    kw = {
        "sgx_status": "UpToDate",
        "tdx_status": "OutOfDate",
        "module_status": "OutOfDate",
        "qe_status": "UpToDate",
    }
    assert _relaunch(_td15(_svn(5, 0, 4)), info, **kw) == "TDRelaunchAdvised"
    assert _relaunch(_td15(_svn(5, 3, 4)), info, **kw) == "TDRelaunchAdvised"
    assert _relaunch(_td15(_svn(4, 3, 4)), info, **kw) == "OutOfDate"
    assert _relaunch(_td15(_svn(5, 0, 3)), info, **kw) == "OutOfDate"
    conf = dict(kw, sgx_status="ConfigurationNeeded")
    assert _relaunch(_td15(_svn(5, 0, 4)), info, **conf) == "TDRelaunchAdvisedConfigurationNeeded"
    assert _relaunch(_td15(_svn(5, 0, 4)), info, **dict(kw, qe_status="OutOfDate")) == "OutOfDate"
    assert _relaunch(_td15(_svn(5, 0, 4)), info, **dict(kw, module_status="UpToDate")) == "OutOfDate"
    with pytest.raises(VerificationError):
        _relaunch(_td15(_svn(5, 7, 4)), info, **kw)


def test_tcb_info_v2_and_refusals() -> None:
    v2 = {
        "version": 2,
        "issueDate": "2025-01-01T00:00:00Z",
        "nextUpdate": "2025-02-01T00:00:00Z",
        "fmspc": "00606a000000",
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tcbLevels": [
            {
                "tcb": {**{f"sgxtcbcomp{n:02d}svn": 3 for n in range(1, 17)}, "pcesvn": 11},
                "tcbDate": "2024-01-01T00:00:00Z",
                "tcbStatus": "SWHardeningNeeded",
            }
        ],
    }
    info = parse_tcb_info(json.dumps(v2))
    assert info.id == "SGX" and info.version == 2
    assert match_tcb_levels(info, [3] * 16, 11, None, step="t").sgx_level.status == "SWHardeningNeeded"
    for broken in (
        {**v2, "version": 4},
        {**v2, "fmspc": "00606a"},
        {**v2, "tcbLevels": []},
        {**v2, "tcbLevels": [{"tcb": {"pcesvn": 1}, "tcbDate": "x", "tcbStatus": "UpToDate"}]},
        {**v2, "tcbLevels": [{**v2["tcbLevels"][0], "tcbStatus": "Fine"}]},  # type: ignore[index]
        {**v2, "issueDate": "2025-01-01T00:00:00"},
    ):
        with pytest.raises(CollateralError):
            parse_tcb_info(json.dumps(broken))

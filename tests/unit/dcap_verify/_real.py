"""Two real vectors (TDX v4, SGX v3) and their collateral, read from shared/vectors at their case time."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from teegate.dcap.collateral import Collateral
from teegate.dcap.quote import decode_quote_text

REAL = {
    "tdx": ("dcap-qvl/tdx_quote", "_collateral_sets/dcapqvl_tdx_B0C06F000000_2025-06.json"),
    "sgx": ("dcap-qvl/sgx_quote", "_collateral_sets/dcapqvl_sgx_00A067110000_2025-06.json"),
    "tdx-v5": ("go-tdx-guest/quote_v5_sample.dat", "_collateral_sets/dcapqvl_tdx_90C06F000000_2026-02.json"),
}


@dataclass(frozen=True)
class Vector:
    raw: bytes
    collateral: Collateral
    now: datetime
    status: str


def load(vectors: Path, tee: str) -> Vector:
    quote_path, collateral_path = REAL[tee]
    case = next(
        c
        for c in json.loads((vectors / "cases.json").read_text())
        if c["quote"] == quote_path and c["collateral"] == collateral_path
    )
    return Vector(
        raw=decode_quote_text((vectors / quote_path).read_bytes()),
        collateral=Collateral.from_json((vectors / collateral_path).read_text()),
        now=datetime.fromtimestamp(case["at"], UTC),
        status=case["dcap_qvl"]["status"],
    )

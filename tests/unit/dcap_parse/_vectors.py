"""The real quotes under shared/vectors that these tests read (never copied into the repo)."""

from __future__ import annotations

import json
from pathlib import Path

from teegate.dcap.quote import decode_quote_text

#: Quote files under raw/ (not referenced by cases.json).
RAW_QUOTES = ("raw/go-tdx-guest/ccel/cos-113-tdx-quote.dat",)
#: Quotes in the vector tree that are not in cases.json (parsed too).
EXTRA_QUOTES = ("trustee/occlum_quote.dat", "zkdcap/types/data/quote_v4.dat")
#: go-tdx-guest appends a text line on purpose ("extra bytes(only for testing purpose)").
NONZERO_TRAILING = frozenset({"go-tdx-guest/tdx_prod_quote_SPR_E4.dat"})


def quote_files(vectors: Path) -> list[str]:
    cases = json.loads((vectors / "cases.json").read_text())
    listed = sorted({c["quote"] for c in cases})
    return listed + [f for f in (*EXTRA_QUOTES, *RAW_QUOTES) if f not in listed]


def load(vectors: Path, name: str) -> bytes:
    return decode_quote_text((vectors / name).read_bytes())

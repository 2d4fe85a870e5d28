"""Shared test fixtures: where the real DCAP vectors live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"


def vectors_dir() -> Path:
    """../shared/vectors beside the checkout, or $TEEGATE_VECTORS. Missing vectors fail, never skip."""
    path = Path(os.environ.get("TEEGATE_VECTORS", str(_DEFAULT_VECTORS)))
    if not (path / "INDEX.md").is_file():
        raise RuntimeError(
            f"real DCAP vectors not found at {path}; set TEEGATE_VECTORS to the shared/vectors directory"
        )
    return path


@pytest.fixture(scope="session")
def vectors() -> Path:
    return vectors_dir()

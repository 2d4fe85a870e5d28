"""`python -m teegate.demo` (what `make demo` runs) end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_demo_unlocks_the_disk_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "teegate.demo"], capture_output=True, text=True, timeout=230, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for step in range(1, 9):
        assert f"[{step}/8]" in out
    assert "UNLOCKED: cryptsetup open" in out
    assert "evidence provider: sim" in out
    assert "failed: evidence unavailable" in out  # the guest retried until QGS came up
    assert "Demo complete" in out
    removed = re.search(r"removed (\S+)", out)
    assert removed is not None and not Path(removed.group(1)).exists()

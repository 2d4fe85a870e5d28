"""docs/security.md names real tests: every `tests/…py::name` it cites exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
_CITE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_cited_test_exists() -> None:
    text = (REPO / "docs" / "security.md").read_text()
    missing: list[str] = []
    cited = 0
    for line in text.splitlines():
        current: Path | None = None
        for match in _CITE.finditer(line):
            file, name, continued = match.groups()
            if file is not None:
                current = REPO / file
                if not current.is_file():
                    missing.append(file)
                    current = None
                    continue
            name = name or continued
            if name is None:
                continue
            cited += 1
            if current is None or name not in _functions(current):
                missing.append(f"{current}::{name}")
    assert cited >= 50, cited
    assert not missing, missing

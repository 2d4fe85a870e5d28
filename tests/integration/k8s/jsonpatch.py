"""A small RFC 6902 applier (add / replace / remove) to check the webhook's patches."""

from __future__ import annotations

import copy
from typing import Any


def _tokens(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def apply(document: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(document)
    for op in ops:
        *parents, last = _tokens(op["path"])
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        kind = op["op"]
        if isinstance(target, list):
            if kind == "add":
                if last == "-":
                    target.append(op["value"])
                else:
                    target.insert(int(last), op["value"])
            elif kind == "replace":
                target[int(last)] = op["value"]
            else:
                del target[int(last)]
        else:
            if kind == "add":
                target[last] = op["value"]
            elif kind == "replace":
                assert last in target, op
                target[last] = op["value"]
            else:
                del target[last]
    return doc

"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def json_values(*, max_text: int, max_items: int) -> st.SearchStrategy[Any]:
    """Any JSON value (integers beyond 64 bits, floats without NaN, nesting up to 20 leaves):
    strings and object keys up to ``max_text`` characters, arrays and objects up to
    ``max_items`` members."""
    return st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=False)
        | st.text(max_size=max_text),
        lambda inner: (
            st.lists(inner, max_size=max_items)
            | st.dictionaries(st.text(max_size=max_text), inner, max_size=max_items)
        ),
        max_leaves=20,
    )

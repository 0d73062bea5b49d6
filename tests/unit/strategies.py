"""Hypothesis strategies for JSON state sections."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from services.domain.twin.merge import merge_patch

keys = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
scalars = st.one_of(
    st.booleans(), st.integers(-1000, 1000), st.text(max_size=5), st.floats(allow_nan=False, allow_infinity=False)
)
patch_values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(scalars, st.none(), st.lists(scalars, min_size=0, max_size=3)),
    lambda children: st.dictionaries(keys, children, max_size=3),
    max_leaves=8,
)
patches: st.SearchStrategy[dict[str, Any]] = st.dictionaries(keys, patch_values, max_size=4)
sections = patches.map(lambda p: merge_patch({}, p))
"""Sections as stored: patches merged into nothing (no nulls; empty objects are values)."""

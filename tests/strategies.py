"""Hypothesis strategies shared by the tests: keys, weights and salts."""

from __future__ import annotations

from hypothesis import strategies as st

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

int_keys = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
str_keys = st.text(max_size=64)
bytes_keys = st.binary(max_size=64)
keys = st.one_of(int_keys, str_keys, bytes_keys)
salts = st.text(min_size=0, max_size=32)
#: A percentage with the allocation's 0.01% resolution.
weights = st.integers(min_value=0, max_value=10_000).map(lambda b: b / 100)

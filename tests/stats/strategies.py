"""Hypothesis strategies shared by the statistics tests."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

__all__ = ["extreme_samples", "samples", "samples_with_nan", "tied_samples"]

# Values on a coarse grid produce ties; a wide range of magnitudes stays well inside float64.
_grid = st.integers(min_value=-50, max_value=50).map(lambda i: i / 4.0)
_wide = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


def samples(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[np.ndarray]:
    """Finite 1-D samples: continuous, tied (grid) or constant."""
    continuous = st.lists(_wide, min_size=min_size, max_size=max_size)
    tied = st.lists(_grid, min_size=min_size, max_size=max_size)
    constant = st.tuples(_grid, st.integers(min_size, max_size)).map(lambda t: [t[0]] * t[1])
    return st.one_of(continuous, tied, constant).map(lambda v: np.asarray(v, dtype=np.float64))


# Magnitudes from the smallest denormal to 1e300, mixed within one sample, with exact zeros.
_extreme = st.one_of(
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, 1.0, 1e300, -1e300]),
)


def extreme_samples(min_size: int = 1, max_size: int = 25) -> st.SearchStrategy[np.ndarray]:
    """Samples mixing denormal, ordinary and huge (1e300) values, with ties at zero."""
    return st.lists(_extreme, min_size=min_size, max_size=max_size).map(
        lambda v: np.asarray(v, dtype=np.float64)
    )


def tied_samples(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[np.ndarray]:
    """Samples drawn from a coarse grid, so that ties are frequent."""
    return st.lists(_grid, min_size=min_size, max_size=max_size).map(
        lambda v: np.asarray(v, dtype=np.float64)
    )


def samples_with_nan(min_size: int = 1, max_size: int = 40) -> st.SearchStrategy[np.ndarray]:
    """Samples with some NaN values mixed in (at least one finite value)."""

    def add_nan(pair: tuple[np.ndarray, list[int]]) -> np.ndarray:
        values, positions = pair
        out = list(values)
        for p in positions:
            out.insert(p % (len(out) + 1), math.nan)
        return np.asarray(out, dtype=np.float64)

    return st.tuples(
        samples(min_size, max_size), st.lists(st.integers(0, 100), min_size=1, max_size=5)
    ).map(add_nan)

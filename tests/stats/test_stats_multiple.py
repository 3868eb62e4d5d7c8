"""Bonferroni and Holm: a published example, properties, and family-wise error by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safeserve._errors import DataError
from safeserve.stats import bonferroni, holm

p_lists = st.lists(st.floats(0.0, 1.0), min_size=0, max_size=20)


def test_holm_worked_example() -> None:
    """Holm's textbook example (p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05): rejects the first
    and the fourth hypotheses; Bonferroni rejects the same two here."""
    assert holm([0.01, 0.04, 0.03, 0.005]).reject == (True, False, False, True)
    assert bonferroni([0.01, 0.04, 0.03, 0.005]).reject == (True, False, False, True)


def test_holm_rejects_more_than_bonferroni_when_it_can() -> None:
    """p = (0.01, 0.03) at alpha 0.05: Holm rejects both, Bonferroni only the first."""
    assert holm([0.01, 0.03]).reject == (True, True)
    assert bonferroni([0.01, 0.03]).reject == (True, False)


@settings(max_examples=200, deadline=None)
@given(p=p_lists, alpha=st.floats(0.001, 0.5))
def test_holm_contains_bonferroni_and_is_monotone(p: list[float], alpha: float) -> None:
    """Every Bonferroni rejection is a Holm rejection; adjusted p-values are >= raw p-values,
    <= 1, and ordered like the raw ones."""
    h, b = holm(p, alpha=alpha), bonferroni(p, alpha=alpha)
    assert all(hr or not br for hr, br in zip(h.reject, b.reject, strict=True))
    arr, adj = np.asarray(p), np.asarray(h.adjusted)
    assert np.all(adj >= arr - 1e-15)
    assert np.all(adj <= 1.0)
    order = np.argsort(arr, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-15)


def test_family_wise_error_under_dependence() -> None:
    """20 correlated true nulls (rho 0.5), 4,000 families: P(any rejection) <= alpha within its
    simulation interval for both methods."""
    rng = np.random.default_rng(0)
    families, m, alpha = 4000, 20, 0.05
    shared = rng.normal(size=(families, 1))
    z = np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=(families, m))
    p = stats.norm.sf(z)
    limit = stats.binom.ppf(0.975, families, alpha) / families
    for method in (holm, bonferroni):
        rate = np.mean([any(method(row, alpha=alpha).reject) for row in p])
        assert rate <= limit


def test_bad_p_values_are_data_errors() -> None:
    """NaN or values outside [0, 1] raise DataError naming them; empty gives empty."""
    with pytest.raises(DataError, match=r"1\.5"):
        holm([0.1, 1.5])
    with pytest.raises(DataError, match="nan"):
        bonferroni([float("nan")])
    assert holm([]).adjusted == ()

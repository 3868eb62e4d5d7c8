"""Oracle tests: every drift statistic against scipy, called directly."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats
from scipy.spatial.distance import jensenshannon

import safeserve.drift as drift
from safeserve._errors import DataError

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
samples = arrays(np.float64, st.integers(2, 60), elements=finite)
# Values on a coarse grid, so that ties within and across samples are common.
tied = arrays(np.float64, st.integers(2, 60), elements=st.integers(-5, 5).map(float))


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    k = draw(st.integers(2, 12))
    a = draw(arrays(np.int64, k, elements=st.integers(0, 500)))
    b = draw(arrays(np.int64, k, elements=st.integers(0, 500)))
    a[draw(st.integers(0, k - 1))] += 1
    b[draw(st.integers(0, k - 1))] += 1
    return a, b


@settings(max_examples=150, deadline=None)
@given(count_pairs())
def test_psi_matches_symmetric_entropy(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """PSI equals entropy(a, e) + entropy(e, a) on proportions floored at 1e-4."""
    e, a = pair
    pe = np.maximum(e / e.sum(), 1e-4)
    pa = np.maximum(a / a.sum(), 1e-4)
    expected = stats.entropy(pa, pe) + stats.entropy(pe, pa)
    assert drift.psi(e, a) == pytest.approx(expected, rel=1e-9, abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 10**6), st.integers(1, 10**6), st.integers(2, 30), st.floats(1e-4, 0.5))
def test_psi_threshold_is_scaled_chi2_quantile(m: int, n: int, bins: int, alpha: float) -> None:
    """The calibrated threshold is (1/M + 1/N) * chi2.ppf(1 - alpha, B - 1)."""
    expected = (1 / m + 1 / n) * stats.chi2.ppf(1 - alpha, bins - 1)
    assert drift.psi_threshold(m, n, bins, alpha=alpha) == pytest.approx(expected, rel=1e-12)
    p = drift.psi_pvalue(expected, m, n, bins)
    assert float(p) == pytest.approx(alpha, rel=1e-6)


@settings(max_examples=150, deadline=None)
@given(st.one_of(samples, tied), st.one_of(samples, tied))
def test_ks_matches_ks_2samp_asymp(a: np.ndarray, b: np.ndarray) -> None:
    """KS statistic and p-value equal ks_2samp(method='asymp'), ties included."""
    d, p = drift.ks_test(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(st.one_of(samples, tied), st.one_of(samples, tied))
def test_wasserstein_matches_scipy(a: np.ndarray, b: np.ndarray) -> None:
    """Normalized W1 equals wasserstein_distance / max(std(ref), 0.001)."""
    expected = stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)
    assert drift.normalized_wasserstein(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(count_pairs())
def test_js_distance_matches_jensenshannon_base2(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """Jensen-Shannon distance equals jensenshannon(p, q, base=2)."""
    p, q = pair
    assert drift.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), rel=1e-9, abs=1e-7)


@settings(max_examples=150, deadline=None)
@given(count_pairs())
def test_chi2_matches_chi2_contingency(pair: tuple[np.ndarray, np.ndarray]) -> None:
    """Chi-square homogeneity equals chi2_contingency without correction (empty columns off)."""
    ref, cur = pair
    table = np.vstack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    stat, p, dof = drift.chi2_homogeneity(ref, cur)
    if table.shape[1] < 2:
        assert (stat, p, dof) == (0.0, 1.0, 0)
        return
    res = stats.chi2_contingency(table, correction=False)
    assert stat == pytest.approx(res.statistic, rel=1e-9, abs=1e-9)
    assert p == pytest.approx(res.pvalue, rel=1e-9, abs=1e-12)
    assert dof == res.dof


@settings(max_examples=150, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1)))
def test_bh_matches_false_discovery_control(ps: np.ndarray) -> None:
    """Benjamini-Hochberg q-values equal false_discovery_control(ps, method='bh')."""
    expected = stats.false_discovery_control(ps, method="bh")
    np.testing.assert_allclose(drift.benjamini_hochberg(ps), expected, rtol=1e-12, atol=0)


def test_bad_inputs_raise_typed_errors() -> None:
    """Empty, negative, mismatched or non-finite inputs raise DataError naming the value."""
    with pytest.raises(DataError, match="expected"):
        drift.psi([], [1])
    with pytest.raises(DataError, match="same bins"):
        drift.psi([1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="non-negative"):
        drift.js_distance([1, -1], [1, 1])
    with pytest.raises(DataError, match="finite"):
        drift.ks_test([1.0, np.nan], [1.0])
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        drift.benjamini_hochberg([0.5, 1.5])

"""Fixed-horizon tests against scipy.stats oracles (and simulation where there is no oracle)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from tests.stats.strategies import extreme_samples, samples, samples_with_nan, tied_samples

from safeserve._errors import ConfigError, DataError
from safeserve.stats import (
    Direction,
    Verdict,
    kayenta_judge,
    mann_whitney_test,
    quantile_difference_ci,
    two_proportion_test,
    welch_test,
)

REL = 1e-9


def close(ours: float, oracle: float, *, scale: float = 1.0) -> bool:
    """Equal to 1e-9 relative; an absolute floor of 1e-12 * scale covers values near 0."""
    if math.isinf(oracle) or math.isinf(ours):
        return ours == oracle
    return math.isclose(ours, oracle, rel_tol=REL, abs_tol=1e-12 * scale)


def quiet(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


ALTERNATIVES = st.sampled_from(["two-sided", "greater", "less"])


# ----------------------------------------------------------------------------- Welch


def _oracle_exponent(x: np.ndarray, y: np.ndarray) -> int:
    """The power of two 2**e that brings the larger sample range to [0.5, 1).

    Welch's t, df and p-value are unchanged when both samples are multiplied by c > 0, and the
    interval is multiplied by c; for a power of two the product is exact. scipy squares the
    deviations and then the variances, which underflow to 0 for a range near 1e-86 (its df
    becomes 0/0) and overflow near 1e150, so it is given the rescaled samples.
    """
    spread = max(float(np.ptp(x)), float(np.ptp(y)))
    return -math.frexp(spread)[1]


def _ldexp(values: np.ndarray | float, e: int) -> np.ndarray:
    """values * 2**e (e may exceed the float range: only the products need to fit)."""
    with np.errstate(over="ignore"):
        return np.ldexp(values, e)


def close_rescaled(ours: float, e: int, oracle: float, *, scale: float) -> bool:
    """close(ours * 2**e, oracle), where ``ours`` is in the data's units and ``oracle`` at the
    rescaled ones. In the data's units a result cannot resolve steps below the smallest
    denormal, 2**-1074 (a mean of 0 and 5e-324 is 0 or 5e-324); that step, rescaled, is
    allowed as well."""
    if math.isinf(ours) or math.isinf(oracle):
        return float(_ldexp(ours, e)) == oracle
    abs_tol = 1e-12 * scale + math.ldexp(1.0, e - 1074)
    return math.isclose(float(_ldexp(ours, e)), oracle, rel_tol=REL, abs_tol=abs_tol)


@settings(max_examples=150, deadline=None)
@given(
    x=st.one_of(samples(min_size=2), extreme_samples(min_size=2)),
    y=st.one_of(samples(min_size=2), extreme_samples(min_size=2)),
    alt=ALTERNATIVES,
    conf=st.floats(0.5, 0.999),
)
def test_welch_matches_scipy(x: np.ndarray, y: np.ndarray, alt: str, conf: float) -> None:
    """Welch t, df, p-value and interval equal ttest_ind(equal_var=False) to 1e-9 relative, at
    any scale from denormal to 1e300 (scipy sees the samples rescaled by a power of two)."""
    assume(np.ptp(x) > 0 or np.ptp(y) > 0)
    e = _oracle_exponent(x, y)
    xs, ys = _ldexp(x, e), _ldexp(y, e)
    # When the means lie ~1e300 spreads apart, rescaled values (or scipy's sums of them)
    # overflow: scipy cannot serve there (test_welch_constant_arm_against_tiny_variation can).
    assume(float(np.abs(np.concatenate([xs, ys])).max()) * (x.size + y.size) < 1e300)
    r = welch_test(x, y, confidence=conf, alternative=alt)
    o = quiet(stats.ttest_ind, xs, ys, equal_var=False, alternative=alt)
    ci = quiet(o.confidence_interval, conf)
    # Rounding in mean +/- q * se is relative to the data's magnitude, not to the result's.
    scale = float(np.abs(np.concatenate([xs, ys])).max())
    assert close(r.statistic, float(o.statistic))
    assert close(r.df, float(o.df))
    assert close(r.p_value, float(o.pvalue))
    assert close_rescaled(r.estimate, e, float(np.mean(xs) - np.mean(ys)), scale=scale)
    assert close_rescaled(r.lower, e, float(ci.low), scale=scale)
    assert close_rescaled(r.upper, e, float(ci.high), scale=scale)
    assert r.nan_removed == 0


def test_welch_tiny_and_huge_scales_match_unit_scale() -> None:
    """The same samples at 2**-1070 (denormal), 1 and 2**990 give the same t, df and p, and the
    estimate and interval scaled by the same power of two (no underflow to 0/0, no overflow)."""
    x = np.array([1.0, 2.5, 0.25, 3.0])
    y = np.array([0.5, 0.75, 1.0])
    unit = welch_test(x, y)
    for e in (-1070, -1000, -300, 300, 990):
        r = welch_test(np.ldexp(x, e), np.ldexp(y, e))
        assert close(r.statistic, unit.statistic)
        assert close(r.df, unit.df)
        assert close(r.p_value, unit.p_value)
        for ours, ref in ((r.estimate, unit.estimate), (r.lower, unit.lower)):
            # Below 2**-1022 a result keeps only the bits above 5e-324: allow 2 such steps.
            assert math.isclose(ours, math.ldexp(ref, e), rel_tol=1e-9, abs_tol=1e-323)


def test_welch_constant_arm_against_tiny_variation() -> None:
    """A constant arm against a denormal-scale spread: t = 1 / 0.5 per unit of spread, df = 1."""
    r = welch_test([0.0, 0.0], [0.0, 2.28255788e-86])
    o = stats.ttest_ind([0.0, 0.0], [0.0, 1.0], equal_var=False)
    assert (r.statistic, r.df, r.p_value) == (float(o.statistic), float(o.df), float(o.pvalue))
    r = welch_test([1.0, 1.0], [0.0, 1e-200])
    assert (r.df, r.p_value) == (1.0, 0.0)
    assert close(r.statistic, 2e200)


@settings(max_examples=60, deadline=None)
@given(x=samples_with_nan(min_size=2), y=samples_with_nan(min_size=2))
def test_welch_removes_and_counts_nan(x: np.ndarray, y: np.ndarray) -> None:
    """NaN values are removed and counted; the rest matches scipy with nan_policy='omit'."""
    cx, cy = x[~np.isnan(x)], y[~np.isnan(y)]
    assume(cx.size >= 2 and cy.size >= 2 and (np.ptp(cx) > 0 or np.ptp(cy) > 0))
    e = _oracle_exponent(cx, cy)
    xs, ys = _ldexp(x, e), _ldexp(y, e)  # NaN stays NaN
    assume(np.isfinite(xs[~np.isnan(xs)]).all() and np.isfinite(ys[~np.isnan(ys)]).all())
    r = welch_test(x, y)
    o = quiet(stats.ttest_ind, xs, ys, equal_var=False, nan_policy="omit")
    assert r.nan_removed == int(np.isnan(x).sum() + np.isnan(y).sum())
    assert (r.n_candidate, r.n_baseline) == (cx.size, cy.size)
    assert close(r.statistic, float(o.statistic))
    assert close(r.p_value, float(o.pvalue))


def test_welch_rejects_single_value() -> None:
    """n = 1 in an arm has no variance: a DataError says how many values there were."""
    with pytest.raises(DataError, match="at least 2 values"):
        welch_test([1.0], [1.0, 2.0, 3.0])


def test_welch_rejects_two_constant_samples() -> None:
    """Two constant samples make t undefined: a DataError, not a NaN."""
    with pytest.raises(DataError, match="constant"):
        welch_test([2.0, 2.0, 2.0], [1.0, 1.0])


def test_welch_empty_and_all_nan_name_the_sample() -> None:
    """An empty sample, or one that is all NaN, is a DataError naming the sample."""
    with pytest.raises(DataError, match="baseline is empty"):
        welch_test([1.0, 2.0], [])
    with pytest.raises(DataError, match=r"candidate is empty after removing 2 NaN"):
        welch_test([math.nan, math.nan], [1.0, 2.0])


def test_welch_rejects_infinity_and_bad_options() -> None:
    """An infinity is a DataError naming it; a bad alternative is a ConfigError naming it."""
    with pytest.raises(DataError, match="inf"):
        welch_test([1.0, math.inf], [1.0, 2.0])
    with pytest.raises(ConfigError, match="'bigger'"):
        welch_test([1.0, 2.0], [1.0, 2.0], alternative="bigger")


# ----------------------------------------------------------------------------- Mann-Whitney


def _not_all_tied(x: np.ndarray, y: np.ndarray) -> bool:
    return np.unique(np.concatenate([x, y])).size > 1


@settings(max_examples=150, deadline=None)
@given(
    x=st.one_of(samples(), extreme_samples()),
    y=st.one_of(samples(), extreme_samples()),
    alt=ALTERNATIVES,
)
def test_mann_whitney_u_and_p_match_scipy(x: np.ndarray, y: np.ndarray, alt: str) -> None:
    """U and the asymptotic, continuity-corrected p-value equal scipy's mannwhitneyu."""
    assume(_not_all_tied(x, y))
    r = mann_whitney_test(x, y, alternative=alt)
    o = quiet(stats.mannwhitneyu, x, y, alternative=alt, method="asymptotic", use_continuity=True)
    assert r.statistic == float(o.statistic)
    assert close(r.p_value, float(o.pvalue))
    assert close(r.cles, float(o.statistic) / (x.size * y.size))


@settings(max_examples=100, deadline=None)
@given(
    x=st.one_of(samples(max_size=25), extreme_samples()),
    y=st.one_of(samples(max_size=25), extreme_samples()),
)
def test_hodges_lehmann_estimate_is_median_of_differences(x: np.ndarray, y: np.ndarray) -> None:
    """The estimate is the median of all pairwise differences candidate - baseline."""
    assume(_not_all_tied(x, y))
    r = mann_whitney_test(x, y)
    assert r.estimate == float(np.median(np.subtract.outer(x, y)))


def _p_at(x: np.ndarray, y: np.ndarray, shift: float, alt: str) -> float:
    o = quiet(stats.mannwhitneyu, x - shift, y, alternative=alt, method="asymptotic")
    return float(o.pvalue)


def _probe(x: np.ndarray, y: np.ndarray, a: float, b: float) -> float | None:
    """A shift strictly between the pairwise differences a < b at which the float sample x - s
    has the ranks and ties of the exact one, or None if the tried shifts have none.

    In exact arithmetic every s in (a, b) gives the same test. In float64, x - s rounds: with
    x = [0, 5e-73] and s = 0.5 both values become -0.5, a tie the exact sample does not have,
    which changes scipy's tie-corrected variance. Ordering against y is kept (rounding is
    monotone and s lies strictly between two differences), so a shift is faithful when it merges
    no two distinct values of x and lands no value of x - s on a value of y.
    """
    with np.errstate(over="ignore"):
        mid = (a + b) / 2.0 if math.isfinite(a + b) else a / 2.0 + b / 2.0
        for s in (mid, float(np.nextafter(a, b)), float(np.nextafter(b, a))):
            if not a < s < b:
                continue
            shifted = x - s
            if (
                np.isfinite(shifted).all()
                and np.unique(shifted).size == np.unique(x).size
                and not np.isin(shifted, y).any()
            ):
                return s
    return None


def _check_interval_inverts_scipy(x: np.ndarray, y: np.ndarray, alt: str, conf: float) -> None:
    r = mann_whitney_test(x, y, confidence=conf, alternative=alt)
    diffs = np.unique(np.subtract.outer(x, y))
    side = (1.0 - conf) / 2.0 if alt == "two-sided" else 1.0 - conf
    tol = 1e-12

    def p_between(i: int, test: str) -> float | None:
        s = _probe(x, y, float(diffs[i]), float(diffs[i + 1]))
        return None if s is None else _p_at(x, y, s, test)

    if not math.isinf(r.lower):
        assert r.lower in diffs
        k = int(np.searchsorted(diffs, r.lower))
        # just below the lower end the "greater" test rejects, just above it accepts
        if k > 0 and (p := p_between(k - 1, "greater")) is not None:
            assert p < side + tol
        if k + 1 < diffs.size and (p := p_between(k, "greater")) is not None:
            assert p >= side - tol
    if not math.isinf(r.upper):
        assert r.upper in diffs
        k = int(np.searchsorted(diffs, r.upper))
        # just above the upper end the "less" test rejects, just below it accepts
        if k + 1 < diffs.size and (p := p_between(k, "less")) is not None:
            assert p <= side + tol
        if k > 0 and (p := p_between(k - 1, "less")) is not None:
            assert p > side - tol
    assert r.lower <= r.upper


@settings(max_examples=150, deadline=None)
@given(
    x=st.one_of(tied_samples(max_size=25), samples(max_size=25), extreme_samples()),
    y=st.one_of(tied_samples(max_size=25), samples(max_size=25), extreme_samples()),
    alt=ALTERNATIVES,
    conf=st.sampled_from([0.8, 0.9, 0.95, 0.98]),
)
def test_hodges_lehmann_interval_inverts_scipy_test(
    x: np.ndarray, y: np.ndarray, alt: str, conf: float
) -> None:
    """Each interval end is a pairwise difference where scipy's one-sided test of
    candidate - shift against baseline, at level (1 - conf) / 2 (or 1 - conf one-sided), turns
    from rejecting to accepting: R's wilcox.test(conf.int=TRUE, exact=FALSE) rule."""
    assume(_not_all_tied(x, y))
    _check_interval_inverts_scipy(x, y, alt, conf)


@pytest.mark.parametrize(
    ("x", "y", "ends"),
    [
        ([0.0, 0.0, 0.0, 1.0, 5.045136865433464e-73], [0.0, 0.0, 0.0], (0.0, 1.0)),
        (
            [0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 0.5, 2.2250738585072014e-308, -1.0, -1.0],
            [0.0, 0.0, -0.25, 0.75],
            (-0.25, 1.25),
        ),
    ],
)
def test_hodges_lehmann_interval_with_values_below_rounding(
    x: list[float], y: list[float], ends: tuple[float, float]
) -> None:
    """Values far below the spacing of the others (5e-73 beside 0 and 1) stay distinct: the
    interval is the exact-arithmetic one, checked at shifts where x - shift rounds nothing
    together. (At shift 0.5, scipy would see 5e-73 - 0.5 == 0 - 0.5, an extra tie.)"""
    xa, ya = np.asarray(x), np.asarray(y)
    _check_interval_inverts_scipy(xa, ya, "two-sided", 0.8)
    r = mann_whitney_test(xa, ya, confidence=0.8)
    assert (r.lower, r.upper) == ends


def test_mann_whitney_large_samples_use_the_same_interval_rule() -> None:
    """Above the exact-enumeration size the interval still inverts scipy's test at both ends."""
    rng = np.random.default_rng(7)
    x = np.round(rng.lognormal(0.1, 0.5, 2500), 3)
    y = np.round(rng.lognormal(0.0, 0.5, 2000), 3)
    r = mann_whitney_test(x, y, confidence=0.95)
    eps = 1e-4  # well under the 1e-3 grid: no pairwise difference lies strictly in between
    assert _p_at(x, y, r.lower + eps, "greater") >= 0.025
    assert _p_at(x, y, r.lower - eps, "greater") < 0.025
    assert _p_at(x, y, r.upper - eps, "less") > 0.025
    assert _p_at(x, y, r.upper + eps, "less") <= 0.025
    pairs = np.subtract.outer(x, y)
    assert r.estimate == pytest.approx(float(np.median(pairs)), abs=1e-9)
    assert np.isclose(pairs, r.lower, atol=1e-9).any()


@settings(max_examples=60, deadline=None)
@given(x=samples_with_nan(), y=samples_with_nan())
def test_mann_whitney_removes_and_counts_nan(x: np.ndarray, y: np.ndarray) -> None:
    """NaN values are removed and counted, and the test equals scipy's with nan_policy='omit'."""
    cx, cy = x[~np.isnan(x)], y[~np.isnan(y)]
    assume(cx.size and cy.size and _not_all_tied(cx, cy))
    r = mann_whitney_test(x, y)
    o = quiet(stats.mannwhitneyu, x, y, method="asymptotic", nan_policy="omit")
    assert r.nan_removed == int(np.isnan(x).sum() + np.isnan(y).sum())
    assert r.statistic == float(o.statistic)
    assert close(r.p_value, float(o.pvalue))


def test_mann_whitney_single_values_are_defined() -> None:
    """n = 1 per arm is defined: U, p as scipy's, interval collapses to the one difference."""
    r = mann_whitney_test([3.0], [1.0])
    o = stats.mannwhitneyu([3.0], [1.0], method="asymptotic")
    assert r.statistic == float(o.statistic)
    assert close(r.p_value, float(o.pvalue))
    assert (r.lower, r.estimate, r.upper) == (2.0, 2.0, 2.0)


def test_mann_whitney_all_tied_is_a_data_error() -> None:
    """All observations equal: no test and no interval, a DataError naming the value."""
    with pytest.raises(DataError, match=r"all observations are tied \(every value is 4.0\)"):
        mann_whitney_test([4.0, 4.0], [4.0, 4.0, 4.0])


def test_mann_whitney_empty_is_a_data_error() -> None:
    """An empty sample is a DataError naming it."""
    with pytest.raises(DataError, match="candidate is empty"):
        mann_whitney_test([], [1.0])


# ----------------------------------------------------------------------------- Kayenta


def test_kayenta_flags_an_increase_only_in_the_harm_direction() -> None:
    """A 30% shift up is High when increases are harm, Pass when only decreases are."""
    rng = np.random.default_rng(3)
    base = rng.normal(100, 5, 200)
    cand = rng.normal(130, 5, 200)
    high = kayenta_judge(cand, base, direction=Direction.HIGHER_IS_WORSE)
    assert (high.classification, high.verdict) == ("High", Verdict.FAIL)
    assert kayenta_judge(cand, base, direction="lower_is_worse").classification == "Pass"
    low = kayenta_judge(base, cand, direction="either")
    assert (low.classification, low.verdict) == ("Low", Verdict.FAIL)


def test_kayenta_interval_is_the_098_mann_whitney_interval() -> None:
    """Kayenta mode uses the two-sided Hodges-Lehmann interval at confidence 0.98."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(1.0, 1, 80), rng.normal(0.6, 1, 70)
    k = kayenta_judge(x, y)
    m = mann_whitney_test(x, y, confidence=0.98)
    assert (k.lower, k.estimate, k.upper, k.p_value) == (m.lower, m.estimate, m.upper, m.p_value)


def test_kayenta_tolerance_gate() -> None:
    """A significant but small shift (interval not clearing 25% of |estimate|) is Pass."""
    rng = np.random.default_rng(5)
    base = rng.normal(100, 10, 400)
    cand = base + 2.0 + rng.normal(0, 10, 400)
    r = kayenta_judge(cand, base, direction="higher_is_worse")
    assert r.lower > 0
    assert r.lower <= 0.25 * abs(r.estimate) or r.classification == "High"
    strict = kayenta_judge(cand, base, direction="higher_is_worse", tolerance=0.99)
    assert strict.classification == "Pass"


def test_kayenta_effect_size_gate() -> None:
    """With allowed_increase = 2.0 a 30% increase is not High (mean ratio below 2)."""
    rng = np.random.default_rng(6)
    base = rng.normal(100, 5, 200)
    r = kayenta_judge(base * 1.3, base, direction="higher_is_worse", allowed_increase=2.0)
    assert r.classification == "Pass"
    assert r.ratio == pytest.approx(1.3)


def test_kayenta_no_data_identical_and_single_value() -> None:
    """Empty -> Nodata/INCONCLUSIVE; identical data or one distinct value -> Pass."""
    assert kayenta_judge([math.nan], [1.0]).classification == "Nodata"
    assert kayenta_judge([2.0, 1.0], [1.0, 2.0]).reason.endswith("identical")
    assert kayenta_judge([0.0, 0.0], [0.0]).classification == "Pass"


def test_kayenta_nan_strategies_and_outliers_are_counted() -> None:
    """NaN are removed or replaced by 0 and counted; IQR outliers are removed and counted."""
    base = [10.0, 11.0, 12.0, 10.5, math.nan] * 20
    cand = [10.0, 11.5, 12.0, 10.5] * 50 + [1000.0]
    removed = kayenta_judge(cand, base, outlier_factor=3.0)
    assert removed.nan_removed == 20
    assert (removed.outliers_removed, removed.n_candidate) == (1, 200)
    kept = kayenta_judge(cand, base)
    assert (kept.outliers_removed, kept.n_candidate) == (0, 201)
    replaced = kayenta_judge(cand, base, nan_strategy="replace")
    assert (replaced.nan_replaced, replaced.nan_removed) == (20, 0)
    assert replaced.n_baseline == 100


def test_kayenta_sparse_errors_pass() -> None:
    """Kayenta's known weakness, kept for compatibility: 3x more rare errors still passes."""
    rng = np.random.default_rng(8)
    base = (rng.random(2000) < 0.002).astype(float)
    cand = (rng.random(2000) < 0.006).astype(float)
    assert kayenta_judge(cand, base, direction="higher_is_worse").classification == "Pass"


def test_kayenta_rejects_bad_options() -> None:
    """Bad nan_strategy or direction are ConfigErrors naming the value."""
    with pytest.raises(ConfigError, match="'zero'"):
        kayenta_judge([1.0], [2.0], nan_strategy="zero")
    with pytest.raises(ConfigError, match="'up'"):
        kayenta_judge([1.0], [2.0], direction="up")


# ----------------------------------------------------------------------------- proportions

counts = st.integers(1, 10_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n)))


@settings(max_examples=200, deadline=None)
@given(c=counts, b=counts)
def test_two_proportions_match_chi2_contingency(c: tuple[int, int], b: tuple[int, int]) -> None:
    """z**2 and the two-sided p equal chi2_contingency(correction=False)."""
    (nc, ec), (nb, eb) = c, b
    pooled = (ec + eb) / (nc + nb)
    assume(0 < pooled < 1)
    r = two_proportion_test(nc, ec, nb, eb)
    o = stats.chi2_contingency([[ec, nc - ec], [eb, nb - eb]], correction=False)
    assert close(r.chi2, float(o.statistic))
    assert close(r.p_value, float(o.pvalue))
    greater = two_proportion_test(nc, ec, nb, eb, alternative="greater")
    half = float(o.pvalue) / 2.0
    expected = half if r.statistic > 0 else 1.0 - half
    assert math.isclose(greater.p_value, expected, rel_tol=1e-9, abs_tol=1e-12)


def test_two_proportions_without_variation_is_a_data_error() -> None:
    """No events in either arm: the statistic is undefined (scipy raises too)."""
    with pytest.raises(DataError, match="no variation"):
        two_proportion_test(100, 0, 200, 0)
    with pytest.raises(ValueError, match="zero element"):
        stats.chi2_contingency([[0, 100], [0, 200]], correction=False)


def test_two_proportions_rejects_bad_counts() -> None:
    """More events than trials, zero trials or fractional counts are DataErrors."""
    with pytest.raises(DataError, match="exceed"):
        two_proportion_test(10, 11, 10, 1)
    with pytest.raises(DataError, match="n_candidate=0"):
        two_proportion_test(0, 0, 10, 1)
    with pytest.raises(DataError, match=r"2\.5"):
        two_proportion_test(10, 2.5, 10, 1)


# ----------------------------------------------------------------------------- quantiles


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(-1e3, 1e3), min_size=400, max_size=600),
    q=st.sampled_from([0.5, 0.9, 0.95, 0.99]),
)
def test_quantile_point_estimate_matches_numpy(x: list[float], q: float) -> None:
    """Each arm's quantile equals np.quantile(method='inverted_cdf')."""
    arr = np.asarray(x)
    r = quantile_difference_ci(arr, arr[::-1], q=q)
    assert r.quantile_candidate == float(np.quantile(arr, q, method="inverted_cdf"))
    assert r.estimate == 0.0


def test_quantile_interval_covers_at_its_level() -> None:
    """Simulated coverage of the 95% p90 difference interval lies within [0.92, 0.98]."""
    rng = np.random.default_rng(11)
    true = 0.0  # both arms from the same lognormal: the difference is 0
    covered = 0
    reps = 400
    for _ in range(reps):
        r = quantile_difference_ci(rng.lognormal(0, 1, 1500), rng.lognormal(0, 1, 1500), q=0.9)
        covered += r.lower <= true <= r.upper
    assert 0.92 <= covered / reps <= 0.98


def test_quantile_too_few_values_is_a_data_error() -> None:
    """At p99 and 95%, 300 values are too few (about 380 needed); 500 are enough."""
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match=r"too few for the 0\.99 quantile"):
        quantile_difference_ci(rng.random(300), rng.random(500), q=0.99)
    assert quantile_difference_ci(rng.random(500), rng.random(500), q=0.99).n_candidate == 500


def test_quantile_counts_nan_and_rejects_bad_q() -> None:
    """NaN are removed and counted; q outside (0, 1) is a ConfigError naming it."""
    x = np.concatenate([np.arange(1000.0), [math.nan] * 3])
    assert quantile_difference_ci(x, np.arange(1000.0), q=0.5).nan_removed == 3
    with pytest.raises(ConfigError, match=r"1\.5"):
        quantile_difference_ci(x, x, q=1.5)

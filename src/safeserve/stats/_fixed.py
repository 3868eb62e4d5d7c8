"""Fixed-horizon tests for reports: Welch, Mann-Whitney with the Hodges-Lehmann interval (and a
Kayenta-compatible judge), two proportions, and a quantile difference.

These are valid at one pre-planned look only. A controller that looks after every batch must use
the confidence sequences instead. NaN values are removed and counted; an empty sample (before or
after removal) is a :class:`~safeserve.DataError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray

from safeserve._errors import ConfigError, DataError
from safeserve.stats._common import (
    Direction,
    Verdict,
    check_alternative,
    check_confidence,
    check_direction,
    clean_sample,
    fmt,
)

from .._lazy import LazyModule

stats = LazyModule("scipy.stats")

__all__ = [
    "KayentaResult",
    "MannWhitneyResult",
    "ProportionTestResult",
    "QuantileDifferenceResult",
    "WelchResult",
    "kayenta_judge",
    "mann_whitney_test",
    "quantile_difference_ci",
    "two_proportion_test",
    "welch_test",
]

_EXACT_PAIRS = 4_000_000


# --------------------------------------------------------------------------- Welch


@attrs.frozen(kw_only=True)
class WelchResult:
    """Welch's unequal-variance t test of candidate minus baseline.

    Attributes:
        statistic: The t statistic.
        df: Welch-Satterthwaite degrees of freedom.
        p_value: p-value for ``alternative``.
        estimate: Difference of means, candidate minus baseline.
        lower: Lower end of the confidence interval (-inf for ``"less"``).
        upper: Upper end (inf for ``"greater"``).
        n_candidate: Candidate values used.
        n_baseline: Baseline values used.
        nan_removed: NaN values removed over both samples.
        alternative: ``"two-sided"``, ``"greater"`` or ``"less"``.
        confidence: Confidence level of the interval.

    >>> from safeserve.stats import welch_test
    >>> r = welch_test([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.5, float("nan")])
    >>> round(r.statistic, 4), round(r.p_value, 4), r.nan_removed
    (2.132, 0.0877, 1)
    """

    statistic: float
    df: float
    p_value: float
    estimate: float
    lower: float
    upper: float
    n_candidate: int
    n_baseline: int
    nan_removed: int
    alternative: str
    confidence: float


def _ldexp(mantissa: float, exponent: int) -> float:
    """``mantissa * 2**exponent``, saturating to a signed infinity instead of raising."""
    try:
        return math.ldexp(mantissa, exponent)
    except OverflowError:
        return math.copysign(math.inf, mantissa)


def _scaled_moments(values: NDArray[np.float64]) -> tuple[float, float, int]:
    """Mean ``m`` and variance ``v`` (ddof=1) of ``values / 2**e`` and the exponent ``e``.

    ``e`` is the binary exponent of the largest magnitude, so the scaled values lie within
    [-1, 1]: their squares neither overflow (values near 1e308) nor underflow to zero (denormal
    values). Scaling by a power of two is exact, so ``m * 2**e`` is ``np.mean(values)``.
    """
    top = float(np.abs(values).max())
    e = math.frexp(top)[1] if top > 0.0 else 0
    scaled = np.ldexp(values, -e)
    return float(np.mean(scaled)), float(np.var(scaled, ddof=1)), e


def welch_test(
    candidate: ArrayLike,
    baseline: ArrayLike,
    *,
    confidence: float = 0.95,
    alternative: str = "two-sided",
) -> WelchResult:
    """Welch's t test and confidence interval for the difference of means.

    Agrees with ``scipy.stats.ttest_ind(candidate, baseline, equal_var=False)`` and its
    ``confidence_interval(confidence)``.

    Args:
        candidate: Candidate values.
        baseline: Baseline values.
        confidence: Confidence level of the interval.
        alternative: ``"two-sided"``, ``"greater"`` (candidate mean is higher) or ``"less"``.

    Returns:
        A :class:`WelchResult`.

    Raises:
        DataError: for an empty sample, fewer than 2 values in a sample, an infinity, or two
            constant samples (the statistic is undefined).
        ConfigError: for bad options.

    >>> from safeserve.stats import welch_test
    >>> r = welch_test([5.1, 4.9, 5.6, 5.8, 6.0], [4.0, 4.4, 4.1, 4.8])
    >>> round(r.estimate, 3), round(r.lower, 3), round(r.upper, 3)
    (1.155, 0.504, 1.806)
    """
    confidence = check_confidence(confidence)
    alternative = check_alternative(alternative)
    x, nan_x = clean_sample(candidate, "candidate")
    y, nan_y = clean_sample(baseline, "baseline")
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2:
        raise DataError(
            f"Welch's test needs at least 2 values per sample, got {nx!r} candidate "
            f"and {ny!r} baseline"
        )
    (mx, vx, ex), (my, vy, ey) = _scaled_moments(x), _scaled_moments(y)
    if vx == 0.0 and vy == 0.0:
        raise DataError("both samples are constant: Welch's t statistic is undefined")
    # The variance of each arm's mean is (v / n) * 4**e. Both are expressed over the common scale
    # 4**k of the larger one, so neither their sum nor their squares under- or overflow (denormal
    # and 1e300 samples alike). t and df are scale free; the interval is formed at scale 2**k and
    # scaled back. Power-of-two scaling is exact, so ordinary samples give bit-identical results.
    k = max((math.frexp(v / n)[1] + 1) // 2 + e for v, n, e in ((vx, nx, ex), (vy, ny, ey)) if v)
    rx = math.ldexp(vx / nx, 2 * (ex - k))
    ry = math.ldexp(vy / ny, 2 * (ey - k))
    se_k = math.sqrt(rx + ry)
    d_k = _ldexp(mx, ex - k) - _ldexp(my, ey - k)
    df = (rx + ry) * (rx + ry) / (rx * rx / (nx - 1) + ry * ry / (ny - 1))
    t = d_k / se_k
    d = _ldexp(mx, ex) - _ldexp(my, ey)

    def end(sign: float, quantile: float) -> float:
        # d +/- quantile * se, formed at scale 2**k unless d itself overflows there (t = inf).
        if math.isfinite(d_k):
            return _ldexp(d_k + sign * quantile * se_k, k)
        return d + sign * _ldexp(quantile * se_k, k)

    tdist = stats.t(df)
    if alternative == "two-sided":
        p = float(2.0 * tdist.sf(abs(t)))
        q = float(tdist.ppf(0.5 + confidence / 2.0))
        lower, upper = end(-1.0, q), end(1.0, q)
    elif alternative == "greater":
        p = float(tdist.sf(t))
        lower, upper = end(-1.0, float(tdist.ppf(confidence))), math.inf
    else:
        p = float(tdist.cdf(t))
        lower, upper = -math.inf, end(1.0, float(tdist.ppf(confidence)))
    return WelchResult(
        statistic=t,
        df=df,
        p_value=min(p, 1.0),
        estimate=d,
        lower=lower,
        upper=upper,
        n_candidate=nx,
        n_baseline=ny,
        nan_removed=nan_x + nan_y,
        alternative=alternative,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- Mann-Whitney


@attrs.frozen(kw_only=True)
class MannWhitneyResult:
    """Mann-Whitney U test with the Hodges-Lehmann shift and its confidence interval.

    Attributes:
        statistic: U of the candidate sample (pairs where the candidate is larger, ties 1/2).
        p_value: Asymptotic p-value with continuity correction, for ``alternative``.
        estimate: Hodges-Lehmann shift, the median of all ``candidate - baseline`` differences.
        lower: Lower end of the interval for the shift (-inf for ``"less"``).
        upper: Upper end (inf for ``"greater"``).
        cles: Common-language effect size ``U / (n_candidate * n_baseline)``.
        n_candidate: Candidate values used.
        n_baseline: Baseline values used.
        nan_removed: NaN values removed over both samples.
        alternative: The alternative.
        confidence: Confidence level of the interval.

    >>> from safeserve.stats import mann_whitney_test
    >>> r = mann_whitney_test([3.0, 4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    >>> r.statistic, r.estimate, r.cles
    (11.5, 2.5, 0.9583333333333334)
    """

    statistic: float
    p_value: float
    estimate: float
    lower: float
    upper: float
    cles: float
    n_candidate: int
    n_baseline: int
    nan_removed: int
    alternative: str
    confidence: float


MannWhitneyResult.__module__ = WelchResult.__module__ = "safeserve.stats"


def _tie_term(values: NDArray[np.float64]) -> float:
    _, counts = np.unique(values, return_counts=True)
    t = counts.astype(np.float64)
    return float((t * t * t - t).sum())


def _sigma(nx: int, ny: int, tie_term: float) -> float:
    n = nx + ny
    var = nx * ny / 12.0 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    return math.sqrt(max(var, 0.0))


def _u_statistic(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float]:
    """U of ``x`` and the tie-corrected standard deviation of U."""
    combined = np.concatenate([x, y])
    ranks = stats.rankdata(combined)
    u = float(ranks[: x.size].sum()) - x.size * (x.size + 1) / 2.0
    return u, _sigma(x.size, y.size, _tie_term(combined))


def _mw_p(u: float, sigma: float, nx: int, ny: int, alternative: str) -> float:
    mu = nx * ny / 2.0
    if sigma == 0.0:
        return 1.0
    if alternative == "two-sided":
        z = (max(u, nx * ny - u) - mu - 0.5) / sigma
        return float(min(1.0, 2.0 * stats.norm.sf(z)))
    if alternative == "greater":
        return float(stats.norm.sf((u - mu - 0.5) / sigma))
    return float(stats.norm.sf((nx * ny - u - mu - 0.5) / sigma))


# The interval and the estimate are defined by the pairwise differences D_ij = x_i - y_j as float64
# computes them. The test of ``x - d`` against ``y`` is never run on a shifted float sample: when
# |d| dwarfs the spacing of the data (0 and 5e-73 shifted by 0.5), ``x - d`` rounds distinct
# values together and invents ties. Counting D_ij > d instead is exact, and the breakpoints where
# the counts change are the D_ij themselves.

_SIGN_BIT = 1 << 63


def _float_key(value: float) -> int:
    """An integer that orders like ``value``; consecutive floats have consecutive keys."""
    bits = int(np.float64(value).view(np.uint64))
    return -(bits - _SIGN_BIT) if bits >= _SIGN_BIT else bits


def _key_float(key: int) -> float:
    """The float of a :func:`_float_key` key."""
    bits = key if key >= 0 else -key + _SIGN_BIT
    return float(np.uint64(bits).view(np.float64))


def _first_float(pred: Callable[[float], bool], lo: float, hi: float) -> float:
    """The smallest float in ``(lo, hi]`` where the monotone ``pred`` holds, given that it fails
    at ``lo`` and holds at ``hi``: a bisection over the floats themselves (at most 64 steps)."""
    a, b = _float_key(lo), _float_key(hi)
    while b - a > 1:
        m = (a + b) // 2
        if pred(_key_float(m)):
            b = m
        else:
            a = m
    return _key_float(b)


def _count_greater(x: NDArray[np.float64], ys: NDArray[np.float64], d: float) -> int:
    """The number of pairs with ``x_i - ys_j > d`` in float64, for sorted ``ys``.

    For each ``x_i`` that count is the first ``j`` with ``x_i - ys_j <= d`` (the difference falls
    as ``ys_j`` grows). ``searchsorted`` of the rounded ``x - d`` finds it but for rounding; each
    guess is checked against the differences themselves and bisected again where it is off.
    """
    ny = ys.size
    with np.errstate(over="ignore", invalid="ignore"):
        idx = np.searchsorted(ys, x - d, side="left")
        ok = (idx == 0) | (x - ys[np.maximum(idx - 1, 0)] > d)
        ok &= (idx == ny) | (x - ys[np.minimum(idx, ny - 1)] <= d)
        if not ok.all():
            xb = x[~ok]
            lo = np.zeros(xb.size, dtype=np.intp)
            hi = np.full(xb.size, ny, dtype=np.intp)
            while (active := lo < hi).any():
                mid = (lo + hi) // 2
                above = xb - ys[np.minimum(mid, ny - 1)] > d
                lo = np.where(active & above, mid + 1, lo)
                hi = np.where(active & ~above, mid, hi)
            idx[~ok] = lo
    return int(idx.sum())


def _midpoint(a: float, b: float) -> float:
    """``(a + b) / 2`` as np.median forms it, without overflowing near the float64 limit."""
    mid = (a + b) / 2.0
    return mid if math.isfinite(mid) else a / 2.0 + b / 2.0


def _sorted_differences(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(over="ignore"):
        return np.sort(np.subtract.outer(x, y), axis=None)


def _pairwise_median(
    x: NDArray[np.float64], y: NDArray[np.float64], pairs: NDArray[np.float64] | None
) -> float:
    """Median of the differences; ``pairs`` is all of them sorted, or None above _EXACT_PAIRS."""
    total = x.size * y.size
    if pairs is not None:
        if total % 2:
            return float(pairs[total // 2])
        return _midpoint(float(pairs[total // 2 - 1]), float(pairs[total // 2]))
    ys = np.sort(y)
    with np.errstate(over="ignore"):
        lo, hi = float(x.min() - ys[-1]), float(x.max() - ys[0])

    def kth(k: int) -> float:
        # the k-th smallest difference: the first d with at least k differences <= d
        def enough(d: float) -> bool:
            return total - _count_greater(x, ys, d) >= k

        return lo if enough(lo) else _first_float(enough, lo, hi)

    if total % 2:
        return kth(total // 2 + 1)
    return _midpoint(kth(total // 2), kth(total // 2 + 1))


def _hl_root(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    zq: float,
    correction: float | None,
    sigma: float,
    pairs: NDArray[np.float64] | None,
) -> float:
    """Root in the shift ``d`` of R's ``wdiff(d, zq)``: the pairwise difference where
    ``(dz - correction) / sigma - zq`` turns from positive to non-positive.

    ``dz = U(x - d) - nx*ny/2`` is taken just above each pairwise difference, where U counts the
    pairs with ``x_i - y_j > d`` (no pair ties there). ``correction`` None means
    ``sign(dz) * 0.5`` (two-sided). Between pairwise differences the only ties are those within
    each sample, so ``sigma`` is the tie-corrected value of the samples. ``pairs`` is all the
    differences sorted, or None above _EXACT_PAIRS (then the root is bisected over the floats).
    """
    nx, ny = x.size, y.size
    half = nx * ny / 2.0

    def g(greater: ArrayLike) -> NDArray[np.float64]:
        dz = np.asarray(greater, dtype=np.float64) - half
        corr = 0.5 * np.sign(dz) if correction is None else correction
        return np.asarray((dz - corr) / sigma - zq, dtype=np.float64)

    if pairs is not None:
        starts = np.flatnonzero(np.concatenate([[True], pairs[1:] != pairs[:-1]]))
        diffs, counts = pairs[starts], np.diff(np.append(starts, pairs.size))
        # g just above each difference; it does not increase with d. The last one (no pair is
        # greater) is the end when the test never turns.
        turned = g(nx * ny - np.cumsum(counts)) <= 0
        return float(diffs[int(np.argmax(turned)) if turned.any() else diffs.size - 1])
    ys = np.sort(y)
    with np.errstate(over="ignore"):
        lo, hi = float(x.min() - ys[-1]), float(x.max() - ys[0])

    def turned_at(d: float) -> bool:
        return bool(g(float(_count_greater(x, ys, d))) <= 0)

    if turned_at(lo):
        return lo
    return _first_float(turned_at, lo, hi) if turned_at(hi) else hi


def _mann_whitney(
    x: NDArray[np.float64],
    y: NDArray[np.float64],
    confidence: float,
    alternative: str,
) -> tuple[float, float, float, float, float]:
    """U, p, HL estimate, lower, upper for cleaned samples."""
    if x.min() == x.max() == y.min() == y.max():
        raise DataError(
            f"all observations are tied (every value is {float(x[0])!r}): "
            "the test and its interval are undefined"
        )
    u, sigma = _u_statistic(x, y)
    p = _mw_p(u, sigma, x.size, y.size, alternative)
    pairs = _sorted_differences(x, y) if x.size * y.size <= _EXACT_PAIRS else None
    est = _pairwise_median(x, y, pairs)
    # Between breakpoints only the ties within each sample remain; their sigma is > 0 here.
    sig_ci = _sigma(x.size, y.size, _tie_term(x) + _tie_term(y))
    a = 1.0 - confidence
    if alternative == "two-sided":
        zq = float(stats.norm.isf(a / 2.0))
        lower = _hl_root(x, y, zq, None, sig_ci, pairs)
        upper = _hl_root(x, y, -zq, None, sig_ci, pairs)
    elif alternative == "greater":
        lower = _hl_root(x, y, float(stats.norm.isf(a)), 0.5, sig_ci, pairs)
        upper = math.inf
    else:
        lower = -math.inf
        upper = _hl_root(x, y, float(stats.norm.ppf(a)), -0.5, sig_ci, pairs)
    return u, p, est, lower, upper


def mann_whitney_test(
    candidate: ArrayLike,
    baseline: ArrayLike,
    *,
    confidence: float = 0.95,
    alternative: str = "two-sided",
) -> MannWhitneyResult:
    """Mann-Whitney U test with the Hodges-Lehmann location shift and its interval.

    The p-value is the asymptotic one with continuity correction and tie correction, as
    ``scipy.stats.mannwhitneyu(candidate, baseline, method="asymptotic")``. The interval is the
    one of R's ``wilcox.test(conf.int=TRUE, exact=FALSE, correct=TRUE)`` (which Kayenta ports):
    each end is the shift ``d`` at which the test of ``candidate - d`` against ``baseline`` turns
    from rejecting to accepting at level ``1 - confidence``. That boundary is always one of the
    pairwise differences, which is returned exactly.

    Args:
        candidate: Candidate values.
        baseline: Baseline values.
        confidence: Confidence level of the interval.
        alternative: ``"two-sided"``, ``"greater"`` (candidate tends to be larger) or ``"less"``.

    Returns:
        A :class:`MannWhitneyResult`.

    Raises:
        DataError: for an empty sample, an infinity, or all observations tied (no interval).
        ConfigError: for bad options.

    >>> from safeserve.stats import mann_whitney_test
    >>> r = mann_whitney_test([1.8, 2.4, 3.1, 2.9, 3.5, 2.2], [1.1, 1.9, 1.4, 2.0, 1.6])
    >>> round(r.p_value, 4), r.estimate, (round(r.lower, 6), round(r.upper, 6))
    (0.0225, 1.05, (0.2, 1.9))
    """
    confidence = check_confidence(confidence)
    alternative = check_alternative(alternative)
    x, nan_x = clean_sample(candidate, "candidate")
    y, nan_y = clean_sample(baseline, "baseline")
    u, p, est, lower, upper = _mann_whitney(x, y, confidence, alternative)
    return MannWhitneyResult(
        statistic=u,
        p_value=p,
        estimate=est,
        lower=lower,
        upper=upper,
        cles=u / (x.size * y.size),
        n_candidate=x.size,
        n_baseline=y.size,
        nan_removed=nan_x + nan_y,
        alternative=alternative,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- Kayenta


@attrs.frozen(kw_only=True)
class KayentaResult:
    """One metric classified the way Kayenta's NetflixACAJudge does.

    Attributes:
        classification: ``"High"``, ``"Low"``, ``"Pass"`` or ``"Nodata"``.
        verdict: FAIL for High or Low, PASS for Pass, INCONCLUSIVE for Nodata.
        estimate: Hodges-Lehmann shift, candidate minus baseline (nan without a test).
        lower: Lower end of the interval at ``confidence`` (nan without a test).
        upper: Upper end (nan without a test).
        p_value: Two-sided Mann-Whitney p-value (1.0 without a test).
        ratio: Effect size, mean(candidate) / mean(baseline) (Kayenta's "meanRatio").
        n_candidate: Candidate values used.
        n_baseline: Baseline values used.
        nan_removed: NaN values removed (0 with ``nan_strategy="replace"``).
        nan_replaced: NaN values replaced by 0.
        outliers_removed: Values removed by the IQR rule.
        reason: A sentence saying why.

    >>> from safeserve.stats import kayenta_judge
    >>> kayenta_judge([], [1.0, 2.0]).classification
    'Nodata'
    """

    classification: str
    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    p_value: float
    ratio: float
    n_candidate: int
    n_baseline: int
    nan_removed: int
    nan_replaced: int
    outliers_removed: int
    reason: str


KayentaResult.__module__ = "safeserve.stats"


def _prepare_kayenta(
    values: ArrayLike, name: str, nan_strategy: str, outlier_factor: float | None
) -> tuple[NDArray[np.float64], int, int, int]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a 1-D sequence of numbers, got {values!r}") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got an array of shape {arr.shape!r}")
    nan = np.isnan(arr)
    n_nan = int(nan.sum())
    removed = replaced = 0
    if nan_strategy == "remove":
        arr, removed = arr[~nan], n_nan
    else:
        arr, replaced = np.where(nan, 0.0, arr), n_nan
    if np.isinf(arr).any():
        raise DataError(f"{name} holds a non-finite value {float(arr[np.isinf(arr)][0])!r}")
    outliers = 0
    if outlier_factor is not None and arr.size:
        p1, q1, q3, p99 = np.percentile(arr, [1.0, 25.0, 75.0, 99.0])
        iqr = q3 - q1
        low = min(p1, q1 - outlier_factor * iqr)
        high = max(p99, q3 + outlier_factor * iqr)
        keep = (arr >= low) & (arr <= high)
        outliers = int((~keep).sum())
        arr = arr[keep]
    return arr, removed, replaced, outliers


def kayenta_judge(
    candidate: ArrayLike,
    baseline: ArrayLike,
    *,
    direction: Direction | str = Direction.EITHER,
    confidence: float = 0.98,
    tolerance: float = 0.25,
    allowed_increase: float = 1.0,
    allowed_decrease: float = 1.0,
    nan_strategy: str = "remove",
    outlier_factor: float | None = None,
) -> KayentaResult:
    """Classify one metric as Kayenta's Mann-Whitney classifier does (fixed horizon).

    High when the Hodges-Lehmann interval's lower end exceeds ``tolerance * |estimate|`` and
    the mean ratio is at least ``allowed_increase``; Low mirrors it (upper end below
    ``-tolerance * |estimate|``, mean ratio at most ``allowed_decrease``); otherwise Pass.
    Identical samples, or a single distinct value over both, are Pass; an empty sample is Nodata.
    Kayenta's known weaknesses come with it: sparse error counts pass (zeros dominate the ranks),
    a variance increase passes, and re-running it at every look inflates false alarms. Do not use
    it as the decision rule of a controller that looks repeatedly.

    Args:
        candidate: Candidate (experiment) values.
        baseline: Baseline (control) values.
        direction: ``HIGHER_IS_WORSE`` (Kayenta "increase"), ``LOWER_IS_WORSE`` ("decrease") or
            ``EITHER``.
        confidence: Interval confidence (Kayenta: 0.98).
        tolerance: Fraction of ``|estimate|`` the interval must clear (Kayenta: 0.25).
        allowed_increase: Mean-ratio effect size needed for High.
        allowed_decrease: Mean-ratio effect size needed for Low.
        nan_strategy: ``"remove"`` (default) or ``"replace"`` (with 0).
        outlier_factor: IQR factor for outlier removal (Kayenta uses 3.0), or None for none.

    Returns:
        A :class:`KayentaResult`.

    Raises:
        ConfigError: for bad options.
        DataError: for infinities or non-numeric input.

    >>> from safeserve.stats import kayenta_judge
    >>> base = [100.0 + i % 7 for i in range(50)]
    >>> r = kayenta_judge([v * 1.3 for v in base], base, direction="higher_is_worse")
    >>> r.classification, r.verdict.value
    ('High', 'fail')
    """
    d = check_direction(direction)
    confidence = check_confidence(confidence)
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if nan_strategy not in ("remove", "replace"):
        raise ConfigError(f"nan_strategy must be 'remove' or 'replace', got {nan_strategy!r}")
    if outlier_factor is not None and not (
        isinstance(outlier_factor, (int, float)) and outlier_factor > 0
    ):
        raise ConfigError(f"outlier_factor must be > 0 or None, got {outlier_factor!r}")
    x, rx, px, ox = _prepare_kayenta(candidate, "candidate", nan_strategy, outlier_factor)
    y, ry, py, oy = _prepare_kayenta(baseline, "baseline", nan_strategy, outlier_factor)
    common: dict[str, Any] = {
        "n_candidate": int(x.size),
        "n_baseline": int(y.size),
        "nan_removed": rx + ry,
        "nan_replaced": px + py,
        "outliers_removed": ox + oy,
    }
    nan = math.nan
    if x.size == 0 or y.size == 0:
        return KayentaResult(
            classification="Nodata",
            verdict=Verdict.INCONCLUSIVE,
            estimate=nan,
            lower=nan,
            upper=nan,
            p_value=1.0,
            ratio=nan,
            reason="no data in the candidate or the baseline",
            **common,
        )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = float(np.float64(np.mean(x)) / np.float64(np.mean(y)))
    if np.array_equal(np.sort(x), np.sort(y)):
        return KayentaResult(
            classification="Pass",
            verdict=Verdict.PASS,
            estimate=0.0,
            lower=nan,
            upper=nan,
            p_value=1.0,
            ratio=1.0,
            reason="the candidate and baseline data are identical",
            **common,
        )
    if np.unique(np.concatenate([x, y])).size == 1:
        return KayentaResult(
            classification="Pass",
            verdict=Verdict.PASS,
            estimate=0.0,
            lower=nan,
            upper=nan,
            p_value=1.0,
            ratio=1.0,
            reason="a single distinct value over both samples",
            **common,
        )
    _, p, est, lower, upper = _mann_whitney(x, y, confidence, "two-sided")
    bound = tolerance * abs(est)
    high = d is not Direction.LOWER_IS_WORSE and lower > bound and ratio >= allowed_increase
    low = d is not Direction.HIGHER_IS_WORSE and upper < -bound and ratio <= allowed_decrease
    if high:
        cls, verdict = "High", Verdict.FAIL
        reason = f"lower end {fmt(lower)} > {fmt(tolerance)}*|{fmt(est)}|, mean ratio {fmt(ratio)}"
    elif low:
        cls, verdict = "Low", Verdict.FAIL
        reason = f"upper end {fmt(upper)} < -{fmt(tolerance)}*|{fmt(est)}|, mean ratio {fmt(ratio)}"
    else:
        cls, verdict = "Pass", Verdict.PASS
        reason = f"interval [{fmt(lower)}, {fmt(upper)}] clears neither bound"
    return KayentaResult(
        classification=cls,
        verdict=verdict,
        estimate=est,
        lower=lower,
        upper=upper,
        p_value=p,
        ratio=ratio,
        reason=reason,
        **common,
    )


# --------------------------------------------------------------------------- two proportions


@attrs.frozen(kw_only=True)
class ProportionTestResult:
    """Two-proportion z test (pooled) with a Wald interval for the difference.

    Attributes:
        statistic: The z statistic (pooled standard error).
        chi2: ``z**2``, Pearson's chi-square of the 2x2 table without continuity correction.
        p_value: p-value for ``alternative``.
        estimate: ``p_candidate - p_baseline``.
        lower: Lower end of the Wald (unpooled) interval (-inf for ``"less"``).
        upper: Upper end (inf for ``"greater"``).
        n_candidate: Candidate trials.
        n_baseline: Baseline trials.
        alternative: The alternative.
        confidence: Confidence level of the interval.

    >>> from safeserve.stats import two_proportion_test
    >>> r = two_proportion_test(1000, 30, 1000, 15)
    >>> round(r.chi2, 4), round(r.p_value, 5)
    (5.1151, 0.02372)
    """

    statistic: float
    chi2: float
    p_value: float
    estimate: float
    lower: float
    upper: float
    n_candidate: int
    n_baseline: int
    alternative: str
    confidence: float


ProportionTestResult.__module__ = "safeserve.stats"


def _count_arg(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise DataError(f"{name} must be a whole number >= 0, got {value!r}")
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise DataError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(value)


def two_proportion_test(
    n_candidate: int,
    events_candidate: int,
    n_baseline: int,
    events_baseline: int,
    *,
    confidence: float = 0.95,
    alternative: str = "two-sided",
) -> ProportionTestResult:
    """Two-proportion z test; its square is the chi-square test of the 2x2 table.

    Agrees with ``scipy.stats.chi2_contingency([[e_c, n_c - e_c], [e_b, n_b - e_b]],
    correction=False)`` for the two-sided case.

    Args:
        n_candidate: Candidate trials.
        events_candidate: Candidate events.
        n_baseline: Baseline trials.
        events_baseline: Baseline events.
        confidence: Confidence level of the interval.
        alternative: ``"two-sided"``, ``"greater"`` (candidate proportion higher) or ``"less"``.

    Returns:
        A :class:`ProportionTestResult`.

    Raises:
        DataError: for an arm without trials, more events than trials, or no variation at all
            (no events, or only events, in both arms).
        ConfigError: for bad options.

    >>> from safeserve.stats import two_proportion_test
    >>> r = two_proportion_test(20000, 400, 20000, 200, alternative="greater")
    >>> round(r.statistic, 3), r.p_value < 1e-15
    (8.227, True)
    """
    confidence = check_confidence(confidence)
    alternative = check_alternative(alternative)
    nc = _count_arg(n_candidate, "n_candidate")
    ec = _count_arg(events_candidate, "events_candidate")
    nb = _count_arg(n_baseline, "n_baseline")
    eb = _count_arg(events_baseline, "events_baseline")
    if nc == 0 or nb == 0:
        raise DataError(f"each arm needs trials, got n_candidate={nc!r}, n_baseline={nb!r}")
    if ec > nc or eb > nb:
        raise DataError(f"events exceed trials: {ec!r}/{nc!r} candidate, {eb!r}/{nb!r} baseline")
    pooled = (ec + eb) / (nc + nb)
    if pooled in (0.0, 1.0):
        raise DataError(
            f"no variation: {ec + eb!r} events in {nc + nb!r} trials over both arms, "
            "the test is undefined"
        )
    pc, pb = ec / nc, eb / nb
    d = pc - pb
    z = d / math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nb))
    se = math.sqrt(pc * (1 - pc) / nc + pb * (1 - pb) / nb)
    if alternative == "two-sided":
        p = float(stats.chi2.sf(z * z, 1))
        q = float(stats.norm.isf((1 - confidence) / 2))
        lower, upper = d - q * se, d + q * se
    elif alternative == "greater":
        p = float(stats.norm.sf(z))
        lower, upper = d - float(stats.norm.isf(1 - confidence)) * se, math.inf
    else:
        p = float(stats.norm.cdf(z))
        lower, upper = -math.inf, d + float(stats.norm.isf(1 - confidence)) * se
    return ProportionTestResult(
        statistic=z,
        chi2=z * z,
        p_value=p,
        estimate=d,
        lower=lower,
        upper=upper,
        n_candidate=nc,
        n_baseline=nb,
        alternative=alternative,
        confidence=confidence,
    )


# --------------------------------------------------------------------------- quantiles


@attrs.frozen(kw_only=True)
class QuantileDifferenceResult:
    """Confidence interval for the difference of a quantile (Deng, Knoblich & Yu, 2018).

    Attributes:
        q: The quantile level.
        quantile_candidate: Candidate sample quantile (inverted-CDF definition).
        quantile_baseline: Baseline sample quantile.
        estimate: Their difference, candidate minus baseline.
        std_error: Standard error of the difference.
        lower: Lower end of the interval.
        upper: Upper end.
        p_value: Two-sided p-value against no difference.
        n_candidate: Candidate values used.
        n_baseline: Baseline values used.
        nan_removed: NaN values removed.
        confidence: Confidence level.

    >>> from safeserve.stats import quantile_difference_ci
    >>> r = quantile_difference_ci(list(range(1, 1001)), list(range(1, 1001)), q=0.5)
    >>> r.estimate, round(r.std_error, 2)
    (0.0, 22.37)
    """

    q: float
    quantile_candidate: float
    quantile_baseline: float
    estimate: float
    std_error: float
    lower: float
    upper: float
    p_value: float
    n_candidate: int
    n_baseline: int
    nan_removed: int
    confidence: float


QuantileDifferenceResult.__module__ = "safeserve.stats"


def _quantile_and_sigma(
    values: NDArray[np.float64], q: float, z: float, name: str
) -> tuple[float, float]:
    n = values.size
    half = z * math.sqrt(n * q * (1.0 - q))
    lo_rank = math.floor(n * q - half)
    hi_rank = math.ceil(n * q + half)
    if lo_rank < 1 or hi_rank > n:
        need = z * z * max(q / (1.0 - q), (1.0 - q) / q)
        raise DataError(
            f"{name} has {n!r} values, too few for the {q!r} quantile interval (need more than "
            f"about {need:.0f})"
        )
    s = np.sort(values)
    point = float(s[max(math.ceil(n * q), 1) - 1])
    sigma = float(s[hi_rank - 1] - s[lo_rank - 1]) / (2.0 * z)
    return point, sigma


def quantile_difference_ci(
    candidate: ArrayLike,
    baseline: ArrayLike,
    *,
    q: float,
    confidence: float = 0.95,
) -> QuantileDifferenceResult:
    """Confidence interval for ``Q_candidate(q) - Q_baseline(q)`` by the outer-CI method.

    For each arm, the order statistics at ranks ``n*q -/+ z*sqrt(n*q*(1-q))`` bracket the
    quantile; half their distance over ``z`` estimates its standard error (Deng, Knoblich & Yu,
    "Applying the Delta Method in Metric Analytics", KDD 2018). The arms' errors add in
    quadrature. The sample quantile is the inverted-CDF one (``np.quantile(...,
    method="inverted_cdf")``).

    Args:
        candidate: Candidate values.
        baseline: Baseline values.
        q: Quantile level in (0, 1), e.g. 0.99.
        confidence: Confidence level.

    Returns:
        A :class:`QuantileDifferenceResult`.

    Raises:
        DataError: for an empty sample, an infinity, or too few values for the quantile
            (about ``z**2 * q / (1 - q)``: 380 at p99 for 95%).
        ConfigError: for bad options.

    >>> import numpy as np
    >>> from safeserve.stats import quantile_difference_ci
    >>> rng = np.random.default_rng(0)
    >>> r = quantile_difference_ci(rng.exponential(1.2, 5000), rng.exponential(1.0, 5000), q=0.9)
    >>> round(r.estimate, 3), r.lower > 0
    (0.507, True)
    """
    confidence = check_confidence(confidence)
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not (0.0 < q < 1.0):
        raise ConfigError(f"q must lie strictly between 0 and 1, got {q!r}")
    q = float(q)
    x, nan_x = clean_sample(candidate, "candidate")
    y, nan_y = clean_sample(baseline, "baseline")
    z = float(stats.norm.isf((1.0 - confidence) / 2.0))
    qx, sx = _quantile_and_sigma(x, q, z, "candidate")
    qy, sy = _quantile_and_sigma(y, q, z, "baseline")
    d = qx - qy
    se = math.hypot(sx, sy)
    p = float(2.0 * stats.norm.sf(abs(d) / se)) if se > 0 else 1.0 if d == 0 else 0.0
    return QuantileDifferenceResult(
        q=q,
        quantile_candidate=qx,
        quantile_baseline=qy,
        estimate=d,
        std_error=se,
        lower=d - z * se,
        upper=d + z * se,
        p_value=p,
        n_candidate=x.size,
        n_baseline=y.size,
        nan_removed=nan_x + nan_y,
        confidence=confidence,
    )

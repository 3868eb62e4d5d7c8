"""Two-sample drift statistics, vectorized over features where the formula allows.

Every function here agrees with a scipy oracle (see ``docs/explanation/drift.md``):

- PSI = ``entropy(p, q) + entropy(q, p)`` on bin proportions floored at ``eps = 1e-4``;
- KS = ``ks_2samp(a, b, method='asymp')`` (statistic exact, p-value by Smirnov's formula);
- chi-square homogeneity = ``chi2_contingency(np.vstack([ref, cur]), correction=False)``;
- Jensen-Shannon distance = ``jensenshannon(p, q, base=2)``;
- Wasserstein = ``wasserstein_distance(a, b) / max(std(ref), 0.001)``;
- Benjamini-Hochberg = ``false_discovery_control(ps, method='bh')``.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._errors import DataError
from .._lazy import LazyModule

_sps = LazyModule("scipy.stats")

__all__ = [
    "PSI_EPS",
    "benjamini_hochberg",
    "chi2_homogeneity",
    "js_distance",
    "ks_test",
    "normalized_wasserstein",
    "psi",
    "psi_pvalue",
    "psi_threshold",
]

PSI_EPS = 1e-4
"""Floor applied to empty-bin proportions before the PSI logarithms."""

WASSERSTEIN_MIN_SCALE = 0.001
"""Smallest reference standard deviation used to normalize the Wasserstein distance."""

Float64Array = NDArray[np.float64]


def _counts(values: ArrayLike, what: str) -> Float64Array:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D array, got shape {arr.shape!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"{what} must be finite and non-negative, got {arr!r}")
    if arr.sum() <= 0:
        raise DataError(f"{what} must not sum to zero, got {arr!r}")
    return arr


def _floored(p: Float64Array, eps: float) -> Float64Array:
    q = np.maximum(p / p.sum(axis=-1, keepdims=True), eps)
    return np.asarray(q / q.sum(axis=-1, keepdims=True), dtype=np.float64)


def _psi_rows(expected: Float64Array, actual: Float64Array, eps: float) -> Float64Array:
    """PSI of each row pair (bins along the last axis); rows must have positive sums."""
    e = _floored(expected, eps)
    a = _floored(actual, eps)
    return np.asarray(np.sum((a - e) * np.log(a / e), axis=-1), dtype=np.float64)


def psi(expected: ArrayLike, actual: ArrayLike, *, eps: float = PSI_EPS) -> float:
    """Population stability index between two binned distributions.

    Both inputs are counts (or proportions) over the same bins. Each is normalized, every
    proportion below ``eps`` is raised to ``eps`` and the vector renormalized, then
    ``PSI = sum((a - e) * ln(a / e))``, which equals ``KL(a||e) + KL(e||a)``.

    Args:
        expected: Reference counts per bin.
        actual: Current counts per bin.
        eps: Floor for empty bins.

    Returns:
        The PSI, ``>= 0``.

    Raises:
        DataError: If the inputs are empty, of different lengths, negative or all zero.

    >>> round(psi([50, 30, 20], [40, 30, 30]), 4)
    0.0629
    """
    e = _counts(expected, "expected")
    a = _counts(actual, "actual")
    if e.shape != a.shape:
        raise DataError(f"expected and actual need the same bins, got {e.size!r} and {a.size!r}")
    return float(_psi_rows(e, a, eps))


def psi_threshold(m: int, n: int, bins: int, *, alpha: float = 0.05) -> float:
    """The PSI above which two samples differ at level ``alpha``.

    With no drift, ``PSI ~ (1/m + 1/n) * chi2(bins - 1)`` approximately, so the calibrated
    threshold is ``(1/m + 1/n) * chi2.ppf(1 - alpha, bins - 1)``.

    Args:
        m: Reference sample size.
        n: Current sample size.
        bins: Number of bins (with a non-zero reference count).
        alpha: False alarm rate of one comparison.

    Returns:
        The threshold.

    Raises:
        DataError: If a size or ``bins`` is below 1, or ``alpha`` is outside ``(0, 1)``.

    >>> round(psi_threshold(1000, 1000, 10), 4)
    0.0338
    """
    if m < 1 or n < 1 or bins < 1:
        raise DataError(f"sizes and bins must be >= 1, got m={m!r} n={n!r} bins={bins!r}")
    if not 0.0 < alpha < 1.0:
        raise DataError(f"alpha must be in (0, 1), got {alpha!r}")
    if bins == 1:
        return math.inf
    return float((1.0 / m + 1.0 / n) * _sps.chi2.ppf(1.0 - alpha, bins - 1))


def psi_pvalue(value: ArrayLike, m: ArrayLike, n: ArrayLike, bins: ArrayLike) -> Float64Array:
    """Approximate p-value of a PSI: ``chi2.sf(psi / (1/m + 1/n), bins - 1)``, vectorized.

    ``psi > psi_threshold(m, n, bins, alpha=a)`` exactly when this p-value is below ``a``.
    A comparison with a single bin has p-value 1.

    Args:
        value: PSI values.
        m: Reference sample sizes.
        n: Current sample sizes.
        bins: Bin counts.

    Returns:
        The p-values as a float array (0-D for scalar inputs).

    >>> float(psi_pvalue(psi_threshold(1000, 1000, 10), 1000, 1000, 10).round(6))
    0.05
    """
    v = np.asarray(value, dtype=np.float64)
    scale = 1.0 / np.asarray(m, dtype=np.float64) + 1.0 / np.asarray(n, dtype=np.float64)
    df = np.asarray(bins, dtype=np.float64) - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(df >= 1.0, _sps.chi2.sf(v / scale, np.maximum(df, 1.0)), 1.0)
    return np.asarray(p, dtype=np.float64)


def _ks_pvalue(d: Float64Array, m: Float64Array | float, n: Float64Array | float) -> Float64Array:
    en = np.round(np.asarray(m, dtype=np.float64) * n / (np.asarray(m) + n))
    if np.any(en < 1):  # one value per side: Smirnov's law is undefined; nothing to test
        return np.ones_like(np.asarray(d, dtype=np.float64))
    p = _sps.kstwo.sf(d, en)
    return np.asarray(np.clip(p, 0.0, 1.0), dtype=np.float64)


def ks_pvalue_limit(d: Float64Array, m: float, n: float) -> Float64Array:
    """KS p-value from Kolmogorov's limit law: ``kstwobign.sf(sqrt(m*n/(m+n)) * D)``.

    Vectorized and about a thousand times cheaper than ``kstwo.sf``; slightly conservative
    (larger) at finite sizes.
    """
    en = m * n / (m + n)
    return np.asarray(np.clip(_sps.kstwobign.sf(np.sqrt(en) * d), 0.0, 1.0), dtype=np.float64)


def numeric_distances(
    a: Float64Array, b: Float64Array, *, presorted: bool = False
) -> tuple[Float64Array, Float64Array]:
    """KS statistic and Wasserstein-1 distance of each row pair, vectorized over rows.

    ``a`` is ``(F, m)`` and ``b`` is ``(F, n)``. One ``argsort`` of the pooled rows gives both:
    the running difference of the two empirical CDFs, evaluated where the pooled value changes
    (so ties are handled exactly), has its largest absolute value at the KS statistic, and its
    integral over the pooled values is W1. With ``presorted`` rows, a stable sort merges the
    two runs in linear time.
    """
    m = a.shape[1]
    n = b.shape[1]
    pooled = np.concatenate([a, b], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable" if presorted else "quicksort")
    values = np.take_along_axis(pooled, order, axis=1)
    seen_a = np.cumsum(order < m, axis=1)[:, :-1]
    ranks = np.arange(1, m + n, dtype=np.float64)
    diff = np.abs(seen_a * (1.0 / m + 1.0 / n) - ranks / n)
    gaps = np.diff(values, axis=1)
    w1 = np.einsum("ij,ij->i", diff, gaps)
    d = np.max(diff, axis=1, where=gaps > 0, initial=0.0)
    return np.asarray(d, dtype=np.float64), np.asarray(w1, dtype=np.float64)


def _sample(values: ArrayLike, what: str) -> Float64Array:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what} must be a non-empty 1-D array, got shape {arr.shape!r}")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what} must be finite, got {arr!r}")
    return arr


def ks_test(a: ArrayLike, b: ArrayLike) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov test (two-sided, asymptotic p-value).

    The statistic ``D = sup |F_a - F_b|`` is exact; the p-value is Smirnov's limit
    ``kstwo.sf(D, round(m * n / (m + n)))``, as ``scipy.stats.ks_2samp(method='asymp')``.
    Ties make that p-value conservative.

    Args:
        a: First sample (finite values).
        b: Second sample (finite values).

    Returns:
        ``(statistic, p_value)``.

    Raises:
        DataError: If a sample is empty or not finite.

    >>> d, p = ks_test([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
    >>> d
    0.5
    """
    x = _sample(a, "a")
    y = _sample(b, "b")
    d, _ = numeric_distances(x[None, :], y[None, :])
    p = _ks_pvalue(d, float(x.size), float(y.size))
    return float(d[0]), float(p[0])


def normalized_wasserstein(a: ArrayLike, b: ArrayLike, *, scale: float | None = None) -> float:
    """Wasserstein-1 distance divided by ``max(scale, 0.001)``.

    Args:
        a: Reference sample (finite values).
        b: Current sample (finite values).
        scale: The normalizer; by default the population standard deviation of ``a``.

    Returns:
        ``W1(a, b) / max(scale, 0.001)``.

    Raises:
        DataError: If a sample is empty or not finite.

    >>> normalized_wasserstein([0.0, 2.0], [1.0, 3.0])
    1.0
    """
    x = _sample(a, "a")
    y = _sample(b, "b")
    _, w1 = numeric_distances(x[None, :], y[None, :])
    s = float(np.std(x)) if scale is None else float(scale)
    return float(w1[0] / max(s, WASSERSTEIN_MIN_SCALE))


def js_rows(p: Float64Array, q: Float64Array) -> Float64Array:
    """Base-2 Jensen-Shannon distance of each row pair (rows normalized first)."""
    p = p / p.sum(axis=-1, keepdims=True)
    q = q / q.sum(axis=-1, keepdims=True)
    mid = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / mid), 0.0)
        kq = np.where(q > 0, q * np.log(q / mid), 0.0)
    js = (kp.sum(axis=-1) + kq.sum(axis=-1)) / 2.0 / math.log(2.0)
    return np.asarray(np.sqrt(np.maximum(js, 0.0)), dtype=np.float64)


def js_distance(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon distance with base 2, in ``[0, 1]``.

    Args:
        p: Counts or proportions per bin.
        q: Counts or proportions over the same bins.

    Returns:
        ``sqrt(JSD(p, q))`` with logarithms in base 2.

    Raises:
        DataError: If the inputs are empty, of different lengths, negative or all zero.

    >>> js_distance([1, 0], [0, 1])
    1.0
    """
    a = _counts(p, "p")
    b = _counts(q, "q")
    if a.shape != b.shape:
        raise DataError(f"p and q need the same bins, got {a.size!r} and {b.size!r}")
    return float(js_rows(a, b))


def chi2_homogeneity(ref: ArrayLike, cur: ArrayLike) -> tuple[float, float, int]:
    """Chi-square test that two count vectors come from one categorical distribution.

    The 2xK table ``[ref, cur]`` is tested without continuity correction; categories empty in
    both rows are dropped first, so ``dof = K' - 1`` over the K' non-empty categories. With a
    single non-empty category the statistic is 0 and the p-value 1.

    Args:
        ref: Reference counts per category.
        cur: Current counts per category.

    Returns:
        ``(statistic, p_value, dof)``.

    Raises:
        DataError: If the inputs are empty, of different lengths, negative or all zero.

    >>> stat, p, dof = chi2_homogeneity([30, 70], [70, 30])
    >>> round(stat, 3), dof
    (32.0, 1)
    """
    r = _counts(ref, "ref")
    c = _counts(cur, "cur")
    if r.shape != c.shape:
        raise DataError(f"ref and cur need the same categories, got {r.size!r} and {c.size!r}")
    stat, p, dof = chi2_rows(r[None, :], c[None, :])
    return float(stat[0]), float(p[0]), int(dof[0])


def chi2_rows(
    ref: Float64Array, cur: Float64Array
) -> tuple[Float64Array, Float64Array, NDArray[np.int64]]:
    """Chi-square homogeneity of each row pair of count matrices (rows with positive sums)."""
    col = ref + cur
    nr = ref.sum(axis=-1, keepdims=True)
    nc = cur.sum(axis=-1, keepdims=True)
    total = nr + nc
    used = col > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        er = nr * col / total
        ec = nc * col / total
        terms = np.where(used, (ref - er) ** 2 / er + (cur - ec) ** 2 / ec, 0.0)
    stat = terms.sum(axis=-1)
    dof = used.sum(axis=-1).astype(np.int64) - 1
    p = np.where(dof >= 1, _sps.chi2.sf(stat, np.maximum(dof, 1)), 1.0)
    stat = np.where(dof >= 1, stat, 0.0)
    return (
        np.asarray(stat, dtype=np.float64),
        np.asarray(p, dtype=np.float64),
        np.maximum(dof, 0),
    )


def benjamini_hochberg(p_values: ArrayLike) -> Float64Array:
    """Benjamini-Hochberg adjusted p-values (q-values).

    Rejecting every hypothesis with ``q <= alpha`` keeps the false discovery rate at or below
    ``alpha`` for independent or positively dependent tests; when every hypothesis is null,
    the chance of any rejection is then at most ``alpha``.

    Args:
        p_values: p-values in ``[0, 1]``.

    Returns:
        The adjusted p-values, in the input order.

    Raises:
        DataError: If a p-value is outside ``[0, 1]`` or not finite.

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise DataError(f"p-values must lie in [0, 1], got {p!r}")
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranks = np.arange(1, p.size + 1, dtype=np.float64)
    scaled = p[order] * (p.size / ranks)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out

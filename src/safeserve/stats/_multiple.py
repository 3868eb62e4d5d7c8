"""Family-wise error control across a policy's checks: Bonferroni and Holm.

Both hold under any dependence between the checks. Fed always-valid p-values (the running minimum
of each check's p-value), they keep the policy-level false-rollback rate at ``alpha`` over every
look: at the first look where any true null would be rejected, the p-values are valid, and the
procedure controls that look.
"""

from __future__ import annotations

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray

from safeserve._errors import DataError
from safeserve.stats._common import check_alpha

__all__ = ["MultipleTestResult", "bonferroni", "holm"]


@attrs.frozen(kw_only=True)
class MultipleTestResult:
    """Adjusted p-values and rejections for a family of checks, in input order.

    Attributes:
        adjusted: Adjusted p-values (reject a check when its adjusted p-value <= alpha).
        reject: Whether each check is rejected at ``alpha``.
        alpha: The family-wise level.
        method: ``"bonferroni"`` or ``"holm"``.

    >>> from safeserve.stats import holm
    >>> holm([0.01, 0.04, 0.03, 0.005]).reject
    (True, False, False, True)
    """

    adjusted: tuple[float, ...]
    reject: tuple[bool, ...]
    alpha: float
    method: str


MultipleTestResult.__module__ = "safeserve.stats"


def _pvalues(p_values: ArrayLike) -> NDArray[np.float64]:
    try:
        p = np.asarray(p_values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"p_values must be a 1-D sequence of numbers, got {p_values!r}") from None
    if p.ndim != 1:
        raise DataError(f"p_values must be 1-D, got shape {p.shape!r}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise DataError(f"p_values must lie in [0, 1], got {p_values!r}")
    return p


def bonferroni(p_values: ArrayLike, *, alpha: float = 0.05) -> MultipleTestResult:
    """Bonferroni: reject where ``m * p <= alpha``.

    Args:
        p_values: One p-value per check.
        alpha: Family-wise level.

    Returns:
        A :class:`MultipleTestResult` (empty input gives an empty result).

    Raises:
        DataError: for p-values outside [0, 1] or NaN.
        ConfigError: for a bad ``alpha``.

    >>> from safeserve.stats import bonferroni
    >>> bonferroni([0.01, 0.04, 0.03, 0.005]).adjusted
    (0.04, 0.16, 0.12, 0.02)
    """
    alpha = check_alpha(alpha)
    p = _pvalues(p_values)
    adj = np.minimum(p * p.size, 1.0)
    return MultipleTestResult(
        adjusted=tuple(float(v) for v in adj),
        reject=tuple(bool(v) for v in adj <= alpha),
        alpha=alpha,
        method="bonferroni",
    )


def holm(p_values: ArrayLike, *, alpha: float = 0.05) -> MultipleTestResult:
    """Holm's step-down procedure (Holm, 1979): uniformly more powerful than Bonferroni.

    Sort the p-values; the i-th smallest (from 0) is compared with ``alpha / (m - i)``, stopping
    at the first that fails. Adjusted p-values are the running maximum of ``(m - i) * p_(i)``.

    Args:
        p_values: One p-value per check.
        alpha: Family-wise level.

    Returns:
        A :class:`MultipleTestResult` (empty input gives an empty result).

    Raises:
        DataError: for p-values outside [0, 1] or NaN.
        ConfigError: for a bad ``alpha``.

    >>> from safeserve.stats import holm
    >>> holm([0.01, 0.04, 0.03, 0.005]).adjusted
    (0.03, 0.06, 0.06, 0.02)
    """
    alpha = check_alpha(alpha)
    p = _pvalues(p_values)
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adj = np.empty(m)
    adj[order] = np.minimum(stepped, 1.0)
    return MultipleTestResult(
        adjusted=tuple(float(v) for v in adj),
        reject=tuple(bool(v) for v in adj <= alpha),
        alpha=alpha,
        method="holm",
    )

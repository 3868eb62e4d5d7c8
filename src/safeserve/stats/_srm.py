"""Sample ratio mismatch: is traffic split the way the allocation says it should be?

Fixed: Pearson's chi-square of the observed counts against the expected split (GrowthBook, Eppo
flag at p < 0.001 once every arm expects at least 8). It is not valid under repeated looks.
Sequential: the Dirichlet-multinomial Bayes factor of Optimizely's SSRM (Lindon & Malek,
"Anytime-valid inference for multinomial count data", 2022), valid at every look.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from safeserve._errors import ConfigError, DataError
from safeserve.stats._common import as_count_array, as_float_array, check_alpha, check_positive, fmt

from .._lazy import LazyModule

stats = LazyModule("scipy.stats")

__all__ = ["SRMResult", "SequentialSRM", "srm_chisquare"]


def _weights(weights: ArrayLike, k: int | None = None) -> NDArray[np.float64]:
    try:
        w = as_float_array(weights, "weights")
    except DataError as e:
        raise ConfigError(str(e)) from None
    if w.ndim != 1 or w.size < 2:
        raise ConfigError(f"weights must list at least 2 arms, got {weights!r}")
    if (w <= 0).any():
        raise ConfigError(
            f"weights must all be > 0 (leave out arms without traffic), got {weights!r}"
        )
    if k is not None and w.size != k:
        raise ConfigError(f"weights {weights!r} list {w.size} arms, expected {k}")
    out: NDArray[np.float64] = w / w.sum()
    return out


@attrs.frozen(kw_only=True)
class SRMResult:
    """A sample-ratio-mismatch check.

    Attributes:
        mismatch: True when the split is off (p_value < alpha and the check may decide).
        p_value: The p-value (always-valid for the sequential test).
        statistic: Chi-square (fixed test) or the log Bayes factor (sequential test).
        counts: Observed counts per arm (cumulative for the sequential test).
        expected: Expected counts per arm under the weights (fixed test), or the weights in force
            (sequential test).
        method: ``"chisquare"`` or ``"sequential"``.
        alpha: The level.
        reason: A sentence saying why.

    >>> from safeserve.stats import srm_chisquare
    >>> r = srm_chisquare([5000, 5400], [0.5, 0.5])
    >>> r.mismatch, round(r.p_value, 5)
    (True, 9e-05)
    """

    mismatch: bool
    p_value: float
    statistic: float
    counts: tuple[int, ...]
    expected: tuple[float, ...]
    method: str
    alpha: float
    reason: str


SRMResult.__module__ = "safeserve.stats"


def srm_chisquare(
    counts: ArrayLike,
    weights: ArrayLike,
    *,
    alpha: float = 0.001,
    min_expected: float = 8.0,
) -> SRMResult:
    """Pearson chi-square test of the observed split against the expected one (fixed horizon).

    Args:
        counts: Observed units per arm.
        weights: Expected traffic weights per arm (any positive scale).
        alpha: Flag a mismatch at ``p < alpha``.
        min_expected: No flag until every arm expects at least this many units.

    Returns:
        An :class:`SRMResult` with ``method="chisquare"``.

    Raises:
        ConfigError: for bad weights or options.
        DataError: for bad counts.

    >>> from safeserve.stats import srm_chisquare
    >>> srm_chisquare([10, 5], [0.5, 0.5]).reason
    'too few units: every arm must expect >= 8, smallest expects 7.5'
    """
    alpha = check_alpha(alpha)
    min_expected = check_positive(min_expected, "min_expected")
    x = as_count_array(counts, "counts")
    if x.ndim != 1:
        raise DataError(f"counts must be 1-D, got {counts!r}")
    w = _weights(weights, x.size)
    n = int(x.sum())
    expected = w * n
    chi2 = float(((x - expected) ** 2 / expected).sum()) if n else 0.0
    p = float(stats.chi2.sf(chi2, x.size - 1)) if n else 1.0
    counts_t = tuple(int(v) for v in x)
    exp_t = tuple(float(v) for v in expected)
    if expected.min() < min_expected:
        return SRMResult(
            mismatch=False,
            p_value=p,
            statistic=chi2,
            counts=counts_t,
            expected=exp_t,
            method="chisquare",
            alpha=alpha,
            reason=(
                f"too few units: every arm must expect >= {fmt(min_expected)}, "
                f"smallest expects {fmt(float(expected.min()))}"
            ),
        )
    mismatch = p < alpha
    return SRMResult(
        mismatch=mismatch,
        p_value=p,
        statistic=chi2,
        counts=counts_t,
        expected=exp_t,
        method="chisquare",
        alpha=alpha,
        reason=f"chi-square {fmt(chi2)}, p {fmt(p)} {'<' if mismatch else '>='} {fmt(alpha)}",
    )


class SequentialSRM:
    """Sequential sample-ratio-mismatch test (Dirichlet-multinomial Bayes factor, SSRM).

    Feed it batches of per-arm counts of any size. For each batch ``x`` of ``n`` units,
    ``log BF += log DirMult(x; n, a) - log Mult(x; n, w)`` and then ``a += x``, where ``a`` starts
    at ``concentration * w``. ``p = min(p, 1/BF)`` is valid at every look. When the allocation
    changes (a new rollout step), pass the new ``weights``: the prior restarts at the new split
    and the evidence gathered so far carries over (a product of test martingales).

    Args:
        weights: Expected traffic weights per arm (any positive scale).
        concentration: Prior concentration (Optimizely uses 10000).
        alpha: Flag a mismatch when the always-valid p-value falls below this.

    Raises:
        ConfigError: for bad options.

    >>> from safeserve.stats import SequentialSRM
    >>> srm = SequentialSRM([0.5, 0.5])
    >>> r = srm.update([520, 480])
    >>> r.mismatch, r.counts
    (False, (520, 480))
    >>> r = srm.update([6000, 5000])
    >>> r.mismatch, r.p_value < 1e-6
    (True, True)
    """

    __module__ = "safeserve.stats"

    def __init__(
        self,
        weights: ArrayLike,
        *,
        concentration: float = 10_000.0,
        alpha: float = 0.001,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.concentration = check_positive(concentration, "concentration")
        self._w = _weights(weights)
        self._a = self.concentration * self._w
        self._counts = np.zeros(self._w.size, dtype=np.int64)
        self._log_bf = 0.0
        self._min_p = 1.0

    @property
    def weights(self) -> tuple[float, ...]:
        """The normalized weights in force."""
        return tuple(float(v) for v in self._w)

    def update(self, counts: ArrayLike, *, weights: ArrayLike | None = None) -> SRMResult:
        """Add one batch of per-arm counts and return the check at this look.

        Args:
            counts: Units per arm in this batch (any size, zeros allowed).
            weights: New expected weights from this batch on, or None to keep them.

        Returns:
            The :class:`SRMResult` after this batch.

        Raises:
            DataError: for bad counts; ConfigError for bad weights (state unchanged).
        """
        x = as_count_array(counts, "counts")
        if x.ndim != 1 or x.size != self._w.size:
            raise DataError(f"counts must list {self._w.size} arms, got {counts!r}")
        if weights is not None:
            w = _weights(weights, self._w.size)
            if not np.array_equal(w, self._w):
                self._w = w
                self._a = self.concentration * w
        n = int(x.sum())
        if n:
            a = self._a
            a_sum = float(a.sum())
            log_dm = (
                math.lgamma(a_sum)
                - math.lgamma(n + a_sum)
                + float((special.gammaln(x + a) - special.gammaln(a)).sum())
            )
            nz = x > 0
            log_mult = float((x[nz] * np.log(self._w[nz])).sum())
            self._log_bf += log_dm - log_mult
            self._a = a + x
            self._counts = self._counts + x
        return self.result()

    def result(self) -> SRMResult:
        """The check at the current look, without adding data."""
        self._min_p = min(self._min_p, math.exp(-min(max(self._log_bf, 0.0), 700.0)))
        mismatch = self._min_p < self.alpha
        return SRMResult(
            mismatch=mismatch,
            p_value=self._min_p,
            statistic=self._log_bf,
            counts=tuple(int(v) for v in self._counts),
            expected=self.weights,
            method="sequential",
            alpha=self.alpha,
            reason=(
                f"always-valid p {fmt(self._min_p)} {'<' if mismatch else '>='} {fmt(self.alpha)} "
                f"(log BF {fmt(self._log_bf)})"
            ),
        )

    def to_state(self) -> dict[str, Any]:
        """The test's state as plain JSON-serializable data (see :meth:`from_state`).

        >>> from safeserve.stats import SequentialSRM
        >>> s = SequentialSRM([1, 3])
        >>> _ = s.update([30, 70])
        >>> SequentialSRM.from_state(s.to_state()).result() == s.result()
        True
        """
        return {
            "weights": [float(v) for v in self._w],
            "concentration": self.concentration,
            "alpha": self.alpha,
            "dirichlet": [float(v) for v in self._a],
            "counts": [int(v) for v in self._counts],
            "log_bf": self._log_bf,
            "min_p": self._min_p,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SequentialSRM:
        """Rebuild a test from :meth:`to_state` output.

        Raises:
            DataError: if the state is malformed.
        """
        try:
            t = cls(state["weights"], concentration=state["concentration"], alpha=state["alpha"])
            a = as_float_array(state["dirichlet"], "dirichlet")
            counts = as_count_array(state["counts"], "counts")
            log_bf = float(state["log_bf"])
            min_p = float(state["min_p"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"malformed SRM state: {e!r}") from None
        if a.shape != t._w.shape or counts.shape != t._w.shape or (a <= 0).any():
            raise DataError(f"malformed SRM state: {state!r}")
        t._a, t._counts, t._log_bf, t._min_p = a, counts, log_bf, min_p
        return t

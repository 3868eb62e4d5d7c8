"""Exact sequential test for rare errors: how error events split between the two arms.

Given that an error happened, under the null hypothesis it is the candidate's with probability
equal to the candidate's traffic share ``pi``. If the candidate's error rate is ``theta`` times the
baseline's, that probability becomes ``theta*pi / (theta*pi + 1 - pi)``. Multiplying these
likelihood ratios over events, each with the share in force when it happened, and mixing over a
fixed prior on ``theta`` gives a nonnegative (super)martingale under the null, so Ville's
inequality bounds the chance that it ever reaches ``1/alpha`` -- at any look, with the traffic
share free to change between steps. No normal approximation is involved.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

from safeserve._errors import ConfigError, DataError
from safeserve.stats._common import Verdict, check_alpha, check_positive, fmt

__all__ = ["RareErrorResult", "RareErrorTest", "beta_binomial_bf"]

_MAX_LOG = 700.0


def _share(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"candidate_share must be a number in (0, 1), got {value!r}")
    out = float(value)
    if not (0.0 < out < 1.0):
        raise DataError(f"candidate_share must lie strictly between 0 and 1, got {value!r}")
    return out


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{name} must be a whole number >= 0, got {value!r}")
    if isinstance(value, (int, np.integer)) or (
        isinstance(value, (float, np.floating)) and math.isfinite(value) and value == int(value)
    ):
        out = int(value)
    else:
        raise DataError(f"{name} must be a whole number >= 0, got {value!r}")
    if out < 0:
        raise DataError(f"{name} must be >= 0, got {value!r}")
    return out


def _logsumexp(a: NDArray[np.float64]) -> float:
    """``log(sum(exp(a)))`` without overflow (scipy's version is slow on tiny arrays)."""
    top = float(a.max())
    if not math.isfinite(top):
        return top
    return top + math.log(float(np.exp(a - top).sum()))


def _bf(log_bf: float) -> float:
    return math.exp(min(log_bf, _MAX_LOG))


@attrs.frozen(kw_only=True)
class RareErrorResult:
    """The rare-error test at one look.

    Attributes:
        verdict: FAIL when the candidate errs more (p_value <= alpha), PASS when its error rate is
            shown to be below ``margin_ratio`` times the baseline's, else INCONCLUSIVE.
        bayes_factor: Evidence that the candidate errs more, at this look (capped at e**700).
        log_bayes_factor: Its natural logarithm.
        p_value: Always-valid p-value (the running minimum of ``1/BF``, capped at 1).
        p_noninferiority: Always-valid p-value against "rate ratio >= margin_ratio" (1.0 when no
            margin is set).
        candidate_errors: Candidate error events so far.
        baseline_errors: Baseline error events so far.
        alpha: The level.
        reason: A sentence saying why this verdict.

    >>> from safeserve.stats import beta_binomial_bf
    >>> r = beta_binomial_bf(12, 18, 0.1)
    >>> r.verdict.value, round(r.log_bayes_factor, 3)
    ('fail', 6.342)
    """

    verdict: Verdict
    bayes_factor: float
    log_bayes_factor: float
    p_value: float
    p_noninferiority: float
    candidate_errors: int
    baseline_errors: int
    alpha: float
    reason: str


RareErrorResult.__module__ = "safeserve.stats"


def beta_binomial_bf(
    candidate_errors: int,
    baseline_errors: int,
    candidate_share: float,
    *,
    concentration: float = 10.0,
    alpha: float = 0.05,
) -> RareErrorResult:
    """Beta-binomial Bayes factor for the split of error events, for a constant traffic share.

    ``BF = [B(a+s, b+f) / B(a, b)] / (pi^s (1-pi)^f)`` with ``a = c*pi``, ``b = c*(1-pi)``: the
    marginal likelihood of the split under a Beta prior centred on the share, over its likelihood
    under the null. FAIL when ``BF >= 1/alpha`` and the candidate's share of errors exceeds its
    traffic share. Valid at every look only while the share stays constant; when it changes, use
    :class:`RareErrorTest`.

    Args:
        candidate_errors: Candidate error events ``s``.
        baseline_errors: Baseline error events ``f``.
        candidate_share: Candidate traffic share ``pi`` in (0, 1).
        concentration: Prior concentration ``c``.
        alpha: The level.

    Returns:
        A :class:`RareErrorResult` (``p_value = min(1, 1/BF)``).

    Raises:
        ConfigError: for a bad ``concentration`` or ``alpha``.
        DataError: for bad counts or share.

    >>> from safeserve.stats import beta_binomial_bf
    >>> r = beta_binomial_bf(3, 27, 0.1)
    >>> r.verdict.value, round(r.bayes_factor, 4)
    ('inconclusive', 0.4704)
    """
    alpha = check_alpha(alpha)
    c = check_positive(concentration, "concentration")
    s = _count(candidate_errors, "candidate_errors")
    f = _count(baseline_errors, "baseline_errors")
    pi = _share(candidate_share)
    a, b = c * pi, c * (1.0 - pi)
    log_bf = float(
        special.betaln(a + s, b + f) - special.betaln(a, b) - s * math.log(pi) - f * math.log1p(-pi)
    )
    p = min(1.0, math.exp(-log_bf)) if log_bf > -_MAX_LOG else 1.0
    harm_side = s + f > 0 and s / (s + f) > pi
    if p <= alpha and harm_side:
        verdict = Verdict.FAIL
        reason = (
            f"BF {fmt(_bf(log_bf))} >= {fmt(1 / alpha)} with {s} of {s + f} errors on the candidate"
        )
    else:
        verdict = Verdict.INCONCLUSIVE
        reason = (
            f"BF {fmt(_bf(log_bf))} < {fmt(1 / alpha)}"
            if not p <= alpha
            else f"candidate's share of errors {fmt(s / (s + f))} is not above its share {fmt(pi)}"
        )
    return RareErrorResult(
        verdict=verdict,
        bayes_factor=_bf(log_bf),
        log_bayes_factor=log_bf,
        p_value=p,
        p_noninferiority=1.0,
        candidate_errors=s,
        baseline_errors=f,
        alpha=alpha,
        reason=reason,
    )


def _default_ratios() -> NDArray[np.float64]:
    return np.geomspace(1.1, 10.0, 25)


class RareErrorTest:
    """Sequential exact test that the candidate's error rate is higher, with changing shares.

    Call :meth:`update` after each batch with that batch's error counts and the candidate's
    traffic share during the batch. Under the null (equal error rates) the mixture likelihood
    ratio over rate ratios ``theta`` in ``null_ratio * ratios`` is a test supermartingale, so the
    running minimum of ``1/BF`` is an always-valid p-value however the share changes.

    With ``margin_ratio`` set, a second mixture over ratios below ``margin_ratio`` tests
    non-inferiority (the candidate's error rate is under ``margin_ratio`` times the baseline's),
    which gives PASS.

    Args:
        alpha: The level of each of the two tests.
        ratios: Alternative rate ratios (> 1) relative to ``null_ratio``, mixed with equal weights;
            the default is 25 log-spaced values from 1.1 to 10.
        null_ratio: FAIL needs evidence that the rate ratio exceeds this (>= 1).
        margin_ratio: PASS needs evidence that the rate ratio is below this (> 1), or None.

    Raises:
        ConfigError: for bad options.

    >>> from safeserve.stats import RareErrorTest
    >>> t = RareErrorTest(alpha=0.01)
    >>> _ = t.update(4, 16, candidate_share=0.05)
    >>> r = t.update(30, 30, candidate_share=0.25)
    >>> r.verdict.value, r.candidate_errors, round(r.p_value, 5)
    ('fail', 34, 5e-05)
    """

    __module__ = "safeserve.stats"

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        ratios: ArrayLike | None = None,
        null_ratio: float = 1.0,
        margin_ratio: float | None = None,
    ) -> None:
        self.alpha = check_alpha(alpha)
        self.null_ratio = check_positive(null_ratio, "null_ratio")
        if self.null_ratio < 1.0:
            raise ConfigError(f"null_ratio must be >= 1, got {null_ratio!r}")
        grid = _default_ratios() if ratios is None else np.asarray(ratios, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all() or (grid <= 1).any():
            raise ConfigError(
                f"ratios must be a non-empty 1-D sequence of numbers > 1, got {ratios!r}"
            )
        self.ratios = grid
        self.margin_ratio = (
            None if margin_ratio is None else check_positive(margin_ratio, "margin_ratio")
        )
        if self.margin_ratio is not None and self.margin_ratio <= 1.0:
            raise ConfigError(f"margin_ratio must be > 1, got {margin_ratio!r}")
        harm = self.null_ratio * grid
        ni = (self.margin_ratio / grid) if self.margin_ratio is not None else np.empty(0)
        nulls = [self.null_ratio] + ([self.margin_ratio] if self.margin_ratio is not None else [])
        self._thetas = np.concatenate([harm, ni, np.asarray(nulls, dtype=np.float64)])
        self._n_harm = harm.size
        self._n_ni = ni.size
        self._loglik = np.zeros(self._thetas.size)
        self._s = 0
        self._f = 0
        self._min_p = 1.0
        self._min_p_ni = 1.0

    def update(
        self, candidate_errors: int, baseline_errors: int, *, candidate_share: float
    ) -> RareErrorResult:
        """Add one batch of error events and return the test at this look.

        Args:
            candidate_errors: Candidate error events in the batch.
            baseline_errors: Baseline error events in the batch.
            candidate_share: The candidate's traffic share in (0, 1) during the batch.

        Returns:
            The :class:`RareErrorResult` after this batch.

        Raises:
            DataError: for bad counts or share (the state is left unchanged).
        """
        s = _count(candidate_errors, "candidate_errors")
        f = _count(baseline_errors, "baseline_errors")
        pi = _share(candidate_share)
        if s + f:
            th = self._thetas
            log_den = np.log(th * pi + (1.0 - pi))
            self._loglik = self._loglik + s * (np.log(th) + math.log(pi) - log_den)
            self._loglik = self._loglik + f * (math.log1p(-pi) - log_den)
            self._s += s
            self._f += f
        return self.result()

    def _log_bfs(self) -> tuple[float, float]:
        ll = self._loglik
        k, m = self._n_harm, self._n_ni
        null_idx = k + m
        log_bf = float(_logsumexp(ll[:k]) - math.log(k) - ll[null_idx])
        log_bf_ni = 0.0
        if m:
            log_bf_ni = float(_logsumexp(ll[k : k + m]) - math.log(m) - ll[null_idx + 1])
        return log_bf, log_bf_ni

    def result(self) -> RareErrorResult:
        """The test at the current look, without adding data.

        Returns:
            The current :class:`RareErrorResult`.
        """
        log_bf, log_bf_ni = self._log_bfs()
        self._min_p = min(self._min_p, math.exp(-min(max(log_bf, 0.0), _MAX_LOG)))
        if self.margin_ratio is not None:
            self._min_p_ni = min(self._min_p_ni, math.exp(-min(max(log_bf_ni, 0.0), _MAX_LOG)))
        s, f, a = self._s, self._f, self.alpha
        if self._min_p <= a:
            verdict = Verdict.FAIL
            reason = (
                f"error-rate ratio above {fmt(self.null_ratio)}: p {fmt(self._min_p)} <= {fmt(a)} "
                f"({s} candidate, {f} baseline errors)"
            )
        elif self._min_p_ni <= a:
            verdict = Verdict.PASS
            reason = (
                f"error-rate ratio below margin {fmt(self.margin_ratio or 0.0)}: "
                f"p {fmt(self._min_p_ni)} <= {fmt(a)} ({s} candidate, {f} baseline errors)"
            )
        else:
            verdict = Verdict.INCONCLUSIVE
            reason = f"p {fmt(self._min_p)} > {fmt(a)} ({s} candidate, {f} baseline errors)"
        return RareErrorResult(
            verdict=verdict,
            bayes_factor=_bf(log_bf),
            log_bayes_factor=log_bf,
            p_value=self._min_p,
            p_noninferiority=self._min_p_ni,
            candidate_errors=s,
            baseline_errors=f,
            alpha=a,
            reason=reason,
        )

    def to_state(self) -> dict[str, Any]:
        """The test's state as plain JSON-serializable data (see :meth:`from_state`).

        >>> from safeserve.stats import RareErrorTest
        >>> t = RareErrorTest(margin_ratio=2.0)
        >>> _ = t.update(1, 3, candidate_share=0.5)
        >>> u = RareErrorTest.from_state(t.to_state())
        >>> u.result() == t.result()
        True
        """
        return {
            "alpha": self.alpha,
            "ratios": [float(x) for x in self.ratios],
            "null_ratio": self.null_ratio,
            "margin_ratio": self.margin_ratio,
            "loglik": [float(x) for x in self._loglik],
            "candidate_errors": self._s,
            "baseline_errors": self._f,
            "min_p": self._min_p,
            "min_p_noninferiority": self._min_p_ni,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RareErrorTest:
        """Rebuild a test from :meth:`to_state` output.

        Raises:
            DataError: if the state is malformed.
        """
        try:
            t = cls(
                alpha=state["alpha"],
                ratios=state["ratios"],
                null_ratio=state["null_ratio"],
                margin_ratio=state["margin_ratio"],
            )
            loglik = np.asarray(state["loglik"], dtype=np.float64)
            s = _count(state["candidate_errors"], "candidate_errors")
            f = _count(state["baseline_errors"], "baseline_errors")
            min_p = float(state["min_p"])
            min_p_ni = float(state["min_p_noninferiority"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"malformed rare-error test state: {e!r}") from None
        if loglik.shape != t._loglik.shape or not np.isfinite(loglik).all():
            raise DataError(f"malformed rare-error test state: loglik {state['loglik']!r}")
        t._loglik, t._s, t._f, t._min_p, t._min_p_ni = loglik, s, f, min_p, min_p_ni
        return t

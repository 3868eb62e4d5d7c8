"""Normal-mixture confidence sequences (mSPRT) for differences of means and of proportions.

A confidence sequence holds its level uniformly over time: the probability that the true effect
ever leaves the interval, over every look that will ever be taken, is at most ``alpha``. The
boundary is the normal-mixture one used by GrowthBook and Eppo (Howard et al., "Time-uniform,
nonparametric, nonasymptotic confidence sequences", 2021; Johari et al., "Peeking at A/B tests",
2017). Inputs are sufficient statistics (count, mean, variance per arm), so the same call serves a
snapshot of running Welford windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import attrs
import numpy as np
from numpy.typing import ArrayLike, NDArray

from safeserve._errors import ConfigError, DataError
from safeserve.stats._common import (
    Direction,
    Verdict,
    as_float_array,
    check_alpha,
    check_direction,
    check_positive,
    fmt,
)

__all__ = [
    "SequenceResult",
    "SequenceResults",
    "always_valid_p",
    "mean_difference_cs",
    "mean_difference_cs_many",
    "proportion_difference_cs",
    "proportion_difference_cs_many",
]

_DEFAULT_TUNING = 5000.0
_DIRECTIONS = (Direction.HIGHER_IS_WORSE, Direction.LOWER_IS_WORSE, Direction.EITHER)
_VERDICTS = (Verdict.INCONCLUSIVE, Verdict.PASS, Verdict.FAIL)
_INCONCLUSIVE, _PASS, _FAIL = 0, 1, 2
# Gate codes: why a metric may not decide yet.
_GATE_OK, _GATE_FEW, _GATE_EVENTS, _GATE_ZERO_BASE = 0, 1, 2, 4

#: Two means closer than this, relative to the larger, count as equal when neither arm has
#: any variance (a constant metric); float summation leaves differences of about 1e-16.
_ROUNDING = 1e-12


def _rho2(alpha: float, tuning: float, *, one_sided: bool) -> float:
    """Mixing variance per unit variance, tuned to make the interval tightest at ``tuning``.

    The tuning needs ``2 * alpha < 1`` for a one-sided sequence: at ``alpha >= 0.45`` it is
    tuned as at 0.45 (any mixing variance keeps the sequence valid; ``alpha`` of 0.5 or more
    gave NaN bounds and p-values).
    """
    a = min(2.0 * alpha, 0.9) if one_sided else alpha
    return float((-2.0 * np.log(a) + np.log(1.0 - 2.0 * np.log(a))) / tuning)


def _halfwidth(
    se: NDArray[np.float64],
    n_total: NDArray[np.float64],
    alpha: float,
    tuning: float,
    *,
    one_sided: bool,
) -> NDArray[np.float64]:
    """Half-width of the sequence at this look for an estimate with standard error ``se``."""
    rho2 = _rho2(alpha, tuning, one_sided=one_sided)
    k = n_total * rho2 + 1.0
    log_term = np.log1p(np.sqrt(k) / (2.0 * alpha)) if one_sided else np.log(np.sqrt(k) / alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        out: NDArray[np.float64] = se * np.sqrt(2.0 * k * log_term / (n_total * rho2))
    return out


def _p_beyond(
    x: NDArray[np.float64],
    se: NDArray[np.float64],
    n_total: NDArray[np.float64],
    alpha: float,
    tuning: float,
    *,
    one_sided: bool,
) -> NDArray[np.float64]:
    """Always-valid p-value for a signed distance ``x`` of the estimate beyond a null value.

    ``x <= 0`` gives 1. The p-value is dual to the sequence: it is <= alpha exactly when the
    sequence at level alpha excludes the null on that side.
    """
    rho2 = _rho2(alpha, tuning, one_sided=one_sided)
    k = n_total * rho2 + 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        e = np.where(se > 0, x * x * n_total * rho2 / (2.0 * se * se * k), np.inf)
        p = np.sqrt(k) / (2.0 * np.expm1(e)) if one_sided else np.sqrt(k) * np.exp(-e)
    p = np.where(x > 0, p, 1.0)
    p = np.where(np.isnan(x) | np.isnan(se), np.nan, p)
    out: NDArray[np.float64] = np.minimum(p, 1.0)
    return out


def always_valid_p(
    estimate: ArrayLike,
    std_error: ArrayLike,
    n_total: ArrayLike,
    *,
    null: float = 0.0,
    alternative: str = "two-sided",
    alpha: float = 0.05,
    tuning: float = _DEFAULT_TUNING,
) -> NDArray[np.float64]:
    """Always-valid p-value of the normal-mixture sequence at one look.

    The p-value stays valid at any stopping time, and so does its running minimum over looks.
    It is <= ``alpha`` exactly when the confidence sequence of level ``alpha`` with the same
    ``tuning`` excludes ``null`` (the mixing variance is tuned with ``alpha``, as GrowthBook does).

    Args:
        estimate: Estimated effect(s).
        std_error: Standard error(s) of the estimate at this look (running estimates).
        n_total: Total sample size(s) over both arms.
        null: The effect under the null hypothesis.
        alternative: ``"two-sided"``, ``"greater"`` (evidence the effect exceeds ``null``) or
            ``"less"``.
        alpha: Level the mixture is tuned for.
        tuning: N*, the total sample size at which the sequence is tightest.

    Returns:
        An array of p-values (0-d for scalar input).

    Raises:
        ConfigError: for a bad ``alternative``, ``alpha`` or ``tuning``.
        DataError: for non-finite or negative inputs.

    >>> from safeserve.stats import always_valid_p
    >>> round(float(always_valid_p(0.1, 0.02, 10_000)), 6)
    3.2e-05
    >>> float(always_valid_p(-0.1, 0.02, 10_000, alternative="greater"))
    1.0
    """
    alpha = check_alpha(alpha)
    tuning = check_positive(tuning, "tuning")
    est = as_float_array(estimate, "estimate")
    se = as_float_array(std_error, "std_error")
    n = as_float_array(n_total, "n_total")
    if (se < 0).any():
        raise DataError(f"std_error must be >= 0, got {std_error!r}")
    if (n <= 0).any():
        raise DataError(f"n_total must be > 0, got {n_total!r}")
    x = est - float(null)
    if alternative == "two-sided":
        return _p_beyond(np.abs(x), se, n, alpha, tuning, one_sided=False)
    if alternative == "greater":
        return _p_beyond(x, se, n, alpha, tuning, one_sided=True)
    if alternative == "less":
        return _p_beyond(-x, se, n, alpha, tuning, one_sided=True)
    raise ConfigError(f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}")


def _reason_text(
    *,
    gate: int,
    n_candidate: int,
    n_baseline: int,
    events: int,
    lower: float,
    upper: float,
    margin: float,
    harm: float,
    direction_code: int,
    verdict_code: int,
    min_samples: int,
    min_events: int,
) -> str:
    """The reason sentence of one check's sequence (shared by the array and scalar paths)."""
    if gate == _GATE_FEW:
        return (
            f"too few samples: {n_candidate} candidate and {n_baseline} baseline, "
            f"need {min_samples} per arm"
        )
    if gate == _GATE_EVENTS:
        return f"too few events: {events} over both arms, need {min_events}"
    if gate == _GATE_ZERO_BASE:
        return "baseline mean is not told apart from 0: the relative effect has no bounded interval"
    lo, hi = fmt(lower), fmt(upper)
    m, h = margin, harm
    direction = _DIRECTIONS[direction_code]
    code = verdict_code
    if code == _FAIL and math.isinf(lower) and math.isinf(upper):
        # A relative effect whose baseline's mean is not told apart from 0 (see _ratio).
        ratios = (
            f"{fmt(1.0 - h)} and {fmt(1.0 + h)} times the baseline's" if h else "the baseline's"
        )
        if direction is Direction.HIGHER_IS_WORSE:
            return f"the candidate's mean is above {ratios} (which is not told apart from 0)"
        if direction is Direction.LOWER_IS_WORSE:
            return f"the candidate's mean is below {ratios} (which is not told apart from 0)"
        return f"the candidate's mean lies beyond {ratios} (which is not told apart from 0)"
    if direction is Direction.HIGHER_IS_WORSE:
        if code == _FAIL:
            return f"lower bound {lo} > {fmt(h)}: the candidate is higher (worse)"
        if code == _PASS:
            return f"upper bound {hi} < margin {fmt(m)}: non-inferior"
        return f"interval [{lo}, {hi}] is neither wholly above {fmt(h)} nor below {fmt(m)}"
    if direction is Direction.LOWER_IS_WORSE:
        if code == _FAIL:
            return f"upper bound {hi} < {fmt(-h)}: the candidate is lower (worse)"
        if code == _PASS:
            return f"lower bound {lo} > margin {fmt(-m)}: non-inferior"
        return f"interval [{lo}, {hi}] is neither wholly below {fmt(-h)} nor above {fmt(-m)}"
    if code == _FAIL:
        return f"interval [{lo}, {hi}] lies wholly outside [{fmt(-h)}, {fmt(h)}]"
    if code == _PASS:
        return f"interval [{lo}, {hi}] lies within the margin [{fmt(-m)}, {fmt(m)}]"
    return f"interval [{lo}, {hi}] is neither within [{fmt(-m)}, {fmt(m)}] nor outside"


@attrs.frozen(kw_only=True)
class SequenceResult:
    """One check's confidence sequence at one look, with its decision.

    For a directional check (``HIGHER_IS_WORSE`` / ``LOWER_IS_WORSE``) ``lower`` and ``upper`` are
    two one-sided bounds, each valid at level ``alpha`` over all looks; for ``EITHER`` they form
    the two-sided sequence of level ``alpha``. Relative effects are fractions
    (``0.05`` = +5%).

    Attributes:
        verdict: FAIL, PASS or INCONCLUSIVE.
        estimate: The effect, candidate minus baseline (or candidate / baseline - 1).
        lower: Lower bound of the sequence at this look.
        upper: Upper bound of the sequence at this look.
        p_value: Always-valid p-value against "no harm beyond ``harm_threshold``".
        p_noninferiority: Always-valid p-value against "harm of at least ``margin``".
        n_candidate: Candidate sample size.
        n_baseline: Baseline sample size.
        direction: Which change is harm.
        relative: Whether the effect is relative.
        margin: Non-inferiority margin (a magnitude in the harm direction).
        harm_threshold: FAIL needs the sequence wholly beyond this magnitude.
        alpha: Level of each bound.
        reason: A sentence saying why this verdict.

    >>> from safeserve.stats import mean_difference_cs
    >>> r = mean_difference_cs(5000, 10.0, 4.0, 5000, 10.0, 4.0, margin=0.5)
    >>> r.verdict.value, round(r.upper, 4)
    ('pass', 0.1121)
    """

    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    p_value: float
    p_noninferiority: float
    n_candidate: int
    n_baseline: int
    direction: Direction
    relative: bool
    margin: float
    harm_threshold: float
    alpha: float
    reason: str


SequenceResult.__module__ = "safeserve.stats"


@attrs.frozen(kw_only=True, eq=False)
class SequenceResults:
    """Confidence sequences for many checks at once (one element per check).

    Index it to get one :class:`SequenceResult`; iterate to get them all. The array attributes
    are read-only views for vectorized use by a judge.

    Attributes:
        verdict_code: 0 = INCONCLUSIVE, 1 = PASS, 2 = FAIL.
        estimate, lower, upper, p_value, p_noninferiority: as in :class:`SequenceResult`.
        n_candidate, n_baseline: sample sizes per check.
        direction_code: index into ``(HIGHER_IS_WORSE, LOWER_IS_WORSE, EITHER)``.
        relative, margin, harm_threshold: per-check options after broadcasting.
        gate: 0 = may decide; 1 = too few samples; 2 = too few events (3 is not used);
            4 = a relative effect with no bounded interval (the baseline's mean is not told
            apart from 0) that does not fail.
        alpha, min_samples, min_events: the shared options.

    >>> from safeserve.stats import mean_difference_cs_many
    >>> rs = mean_difference_cs_many(
    ...     [5000, 50], [12.0, 10.0], [4.0, 4.0], [5000, 50], [10.0, 10.0], [4.0, 4.0])
    >>> [r.verdict.value for r in rs]
    ['fail', 'inconclusive']
    """

    verdict_code: NDArray[np.int8]
    estimate: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    p_value: NDArray[np.float64]
    p_noninferiority: NDArray[np.float64]
    n_candidate: NDArray[np.int64]
    n_baseline: NDArray[np.int64]
    direction_code: NDArray[np.int8]
    relative: NDArray[np.bool_]
    margin: NDArray[np.float64]
    harm_threshold: NDArray[np.float64]
    gate: NDArray[np.int8]
    events: NDArray[np.int64] | None
    alpha: float
    min_samples: int
    min_events: int

    def __len__(self) -> int:
        return int(self.estimate.shape[0])

    def __iter__(self) -> Iterator[SequenceResult]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> SequenceResult:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i!r} out of range for {len(self)} checks")
        return SequenceResult(
            verdict=_VERDICTS[int(self.verdict_code[i])],
            estimate=float(self.estimate[i]),
            lower=float(self.lower[i]),
            upper=float(self.upper[i]),
            p_value=float(self.p_value[i]),
            p_noninferiority=float(self.p_noninferiority[i]),
            n_candidate=int(self.n_candidate[i]),
            n_baseline=int(self.n_baseline[i]),
            direction=_DIRECTIONS[int(self.direction_code[i])],
            relative=bool(self.relative[i]),
            margin=float(self.margin[i]),
            harm_threshold=float(self.harm_threshold[i]),
            alpha=self.alpha,
            reason=self._reason(i),
        )

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        """The verdict of every check, in order."""
        return tuple(_VERDICTS[int(c)] for c in self.verdict_code)

    def _reason(self, i: int) -> str:
        return _reason_text(
            gate=int(self.gate[i]),
            n_candidate=int(self.n_candidate[i]),
            n_baseline=int(self.n_baseline[i]),
            events=0 if self.events is None else int(self.events[i]),
            lower=float(self.lower[i]),
            upper=float(self.upper[i]),
            margin=float(self.margin[i]),
            harm=float(self.harm_threshold[i]),
            direction_code=int(self.direction_code[i]),
            verdict_code=int(self.verdict_code[i]),
            min_samples=self.min_samples,
            min_events=self.min_events,
        )


SequenceResults.__module__ = "safeserve.stats"


def _direction_codes(direction: Any) -> NDArray[np.int8]:
    if isinstance(direction, (str, Direction)):
        return np.array([_DIRECTIONS.index(check_direction(direction))], dtype=np.int8)
    try:
        items = list(direction)
    except TypeError:
        raise ConfigError(
            f"direction must be a Direction or a sequence of them, got {direction!r}"
        ) from None
    codes = _DIRECTION_CODE
    return np.array(
        [codes[d] if d in codes else _DIRECTIONS.index(check_direction(d)) for d in items],
        dtype=np.int8,
    )


# Direction members are str enums, so this one table serves both spellings.
_DIRECTION_CODE = {d: i for i, d in enumerate(_DIRECTIONS)}


class _Ratio(NamedTuple):
    """A relative effect's bounds and the contrasts that decide it (arrays or floats)."""

    lower: Any
    upper: Any
    bounded: Any
    up: Any  # mean_c - (1 + h) mean_b
    se_up: Any
    down: Any  # mean_c - (1 - h) mean_b
    se_down: Any
    pass_up: Any  # mean_c - (1 + s m) mean_b, s the sign of mean_b (+1 for 0)
    se_pass_up: Any
    pass_down: Any  # mean_c - (1 - s m) mean_b
    se_pass_down: Any


def _ratio(mc: Any, mb: Any, ua: Any, ub: Any, c: Any, h: Any, m: Any, s: Any) -> _Ratio:
    """Fieller's bounds of a relative effect and its deciding contrasts.

    ``ua`` and ``ub`` are the arms' squared standard errors (variance / n), ``c`` the
    sequence's half-width per unit of standard error, ``s`` the sign of ``mb`` (+1 for 0). The
    bounds are the effects ``r`` whose ratio ``t = 1 + s r`` the sequence keeps: ``(mc - t
    mb)^2 <= c^2 (ua + t^2 ub)``, a bounded interval when ``mb^2 > c^2 ub`` (the baseline's
    mean is told apart from 0), else none (``bounded`` False: the caller reports ``-inf, inf``).
    Takes numpy arrays or Python floats, and runs the same operations in the same order on
    both (a float division by zero raises, as ``/`` does).
    """
    # In units of the larger mean (ratios, and each contrast against its standard error, do
    # not change): squares of means past 1e154, or below 1e-154, leave float range.
    scalar = type(mc) is float
    sqrt: Any = math.sqrt if scalar else np.sqrt
    larger: Any = max if scalar else np.maximum
    scale = larger(abs(mc), abs(mb))
    scale = (scale or 1.0) if scalar else np.where(scale > 0, scale, 1.0)
    mc, mb, ua, ub = mc / scale, mb / scale, ua / scale / scale, ub / scale / scale
    root = sqrt(larger(c * c * (mb * mb * ua + mc * mc * ub - c * c * ub * ua), 0.0))
    a = mb * mb - c * c * ub
    b = mc * mb
    t1 = (b - root) / a
    t2 = (b + root) / a
    # r = s (t - 1): the order of the ends flips with the sign of the baseline's mean.
    if scalar:
        lower, upper = (t1 - 1.0, t2 - 1.0) if s > 0 else (1.0 - t2, 1.0 - t1)
    else:
        lower = np.where(s > 0, t1 - 1.0, 1.0 - t2)
        upper = np.where(s > 0, t2 - 1.0, 1.0 - t1)
    t_up, t_down, t_pu, t_pd = 1.0 + h, 1.0 - h, 1.0 + s * m, 1.0 - s * m
    return _Ratio(
        lower=lower,
        upper=upper,
        bounded=a > 0.0,
        up=mc - t_up * mb,
        se_up=sqrt(ua + t_up * t_up * ub),
        down=mc - t_down * mb,
        se_down=sqrt(ua + t_down * t_down * ub),
        pass_up=mc - t_pu * mb,
        se_pass_up=sqrt(ua + t_pu * t_pu * ub),
        pass_down=mc - t_pd * mb,
        se_pass_down=sqrt(ua + t_pd * t_pd * ub),
    )


def _sequence_core(
    n_c: ArrayLike,
    mean_c: ArrayLike,
    var_c: ArrayLike,
    n_b: ArrayLike,
    mean_b: ArrayLike,
    var_b: ArrayLike,
    *,
    events: NDArray[np.int64] | None,
    alpha: float,
    direction: Any,
    relative: ArrayLike,
    margin: ArrayLike,
    harm_threshold: ArrayLike,
    tuning: float,
    min_samples: int,
    min_events: int,
    floor: ArrayLike = True,
) -> SequenceResults:
    """The sequences behind every public form (``floor``: raise each arm's variance to the
    pooled one, per element; proportions come floored by their pooled rate instead)."""
    alpha = check_alpha(alpha)
    tuning = check_positive(tuning, "tuning")
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 2:
        raise ConfigError(f"min_samples must be an int >= 2, got {min_samples!r}")
    if isinstance(min_events, bool) or not isinstance(min_events, int) or min_events < 0:
        raise ConfigError(f"min_events must be an int >= 0, got {min_events!r}")
    ncf = as_float_array(n_c, "n_candidate")
    nbf = as_float_array(n_b, "n_baseline")
    mc = as_float_array(mean_c, "mean_candidate")
    mb = as_float_array(mean_b, "mean_baseline")
    vc = as_float_array(var_c, "var_candidate")
    vb = as_float_array(var_b, "var_baseline")
    marg = as_float_array(margin, "margin")
    harm = as_float_array(harm_threshold, "harm_threshold")
    try:
        rel = np.asarray(relative, dtype=np.bool_)
    except (TypeError, ValueError):
        raise ConfigError(
            f"relative must be a bool or a sequence of bools, got {relative!r}"
        ) from None
    dcode = _direction_codes(direction)
    for name, arr in (("n_candidate", ncf), ("n_baseline", nbf)):
        if (arr < 0).any() or (arr != np.floor(arr)).any():
            raise DataError(f"{name} must be whole numbers >= 0, got {arr.tolist()!r}")
    for name, arr in (("var_candidate", vc), ("var_baseline", vb)):
        if (arr < 0).any():
            raise DataError(f"{name} must be >= 0, got {arr.tolist()!r}")
    if (marg < 0).any():
        raise ConfigError(
            f"margin must be >= 0 (a magnitude in the harm direction), got {margin!r}"
        )
    if (harm < 0).any():
        raise ConfigError(f"harm_threshold must be >= 0, got {harm_threshold!r}")
    arrays: list[NDArray[Any]] = [ncf, nbf, mc, mb, vc, vb, marg, harm, rel, dcode]
    if events is not None:
        arrays.append(events)
    try:
        b = np.broadcast_arrays(*[np.atleast_1d(a) for a in arrays])
    except ValueError:
        shapes = [np.shape(a) for a in arrays]
        raise DataError(f"inputs do not broadcast to one shape: {shapes!r}") from None
    if b[0].ndim != 1:
        raise DataError(f"inputs must be scalars or 1-D, got shape {b[0].shape!r}")
    # Views, not copies: nothing below writes into them.
    ncf, nbf, mc, mb, vc, vb, marg, harm = (np.asarray(a, dtype=np.float64) for a in b[:8])
    rel = np.asarray(b[8], dtype=np.bool_)
    dcode = np.asarray(b[9], dtype=np.int8)
    ev = np.asarray(b[10], dtype=np.int64) if events is not None else None

    with np.errstate(all="ignore"):
        n_total = ncf + nbf
        # Each arm's variance is at least the pooled one (see "Variances" in the module's
        # docs): a small arm's own estimate is noisy, and on skewed data it is low exactly
        # when its mean is (a 5% canary then looked precise when it looked worse).
        pooled = np.where(floor, (ncf * vc + nbf * vb) / n_total, 0.0)
        vc = np.maximum(vc, pooled)
        vb = np.maximum(vb, pooled)
        d_abs = mc - mb
        se2_abs = vc / ncf + vb / nbf
        # Relative to the baseline's magnitude: a lower-is-worse metric with negative values
        # (a log-likelihood) must not change the sign of the harm.
        # Its bounds and decisions come from Fieller's contrasts below (see _ratio); the
        # delta method's standard error blew up as the baseline's mean neared 0, so that a
        # candidate failing 40% of requests against a baseline with no failures was never
        # failed by a relative check.
        d_rel = mc / np.abs(mb) - np.sign(mb)
        est = np.where(rel, d_rel, d_abs)
        se = np.sqrt(np.where(rel, np.nan, se2_abs))
        # No variance in either arm: the exact difference decides, but not a float rounding.
        same = (se2_abs == 0) & (np.abs(d_abs) <= _ROUNDING * np.maximum(np.abs(mc), np.abs(mb)))
        est = np.where(same, 0.0, est)

        hw1 = _halfwidth(se, n_total, alpha, tuning, one_sided=True)
        hw2 = _halfwidth(se, n_total, alpha, tuning, one_sided=False)
        two = dcode == 2
        hw = np.where(two, hw2, hw1)
        lower = est - hw
        upper = est + hw

        def p1(x: NDArray[np.float64]) -> NDArray[np.float64]:
            return _p_beyond(x, se, n_total, alpha, tuning, one_sided=True)

        def p2(x: NDArray[np.float64]) -> NDArray[np.float64]:
            return _p_beyond(x, se, n_total, alpha, tuning, one_sided=False)

        higher = dcode == 0
        lower_worse = dcode == 1
        # Only the directions present are computed (each p-value costs a dozen array ops).
        p_harm = np.ones_like(est)
        p_ni = np.ones_like(est)
        one = higher | lower_worse
        if one.any():
            # Distances beyond the null in the harm direction, for both one-sided kinds at once.
            sign = np.where(higher, 1.0, -1.0)
            p_harm = np.where(one, p1(sign * est - harm), p_harm)
            p_ni = np.where(one, p1(marg - sign * est), p_ni)
        if two.any():
            p_harm = np.where(two, np.minimum(p2(est - harm), p2(-harm - est)), p_harm)
            p_ni = np.where(two, np.maximum(p2(marg - est), p2(est + marg)), p_ni)
        fail = np.where(
            higher,
            lower > harm,
            np.where(lower_worse, upper < -harm, (lower > harm) | (upper < -harm)),
        )
        pas = np.where(
            higher,
            upper < marg,
            np.where(lower_worse, lower > -marg, (lower > -marg) & (upper < marg)),
        )
        # Relative effects with no bounded interval (the baseline's mean is not told apart
        # from 0) that do not fail either: inconclusive, with their own reason.
        unbounded = np.zeros(est.shape, dtype=np.bool_)
        if rel.any():
            unit = np.ones_like(est)
            c = np.where(
                two,
                _halfwidth(unit, n_total, alpha, tuning, one_sided=False),
                _halfwidth(unit, n_total, alpha, tuning, one_sided=True),
            )
            sign_b = np.where(mb < 0, -1.0, 1.0)
            r = _ratio(np.where(same, mb, mc), mb, vc / ncf, vb / nbf, c, harm, marg, sign_b)

            def pv(x: NDArray[np.float64], s: NDArray[np.float64]) -> NDArray[np.float64]:
                return np.where(
                    two,
                    _p_beyond(x, s, n_total, alpha, tuning, one_sided=False),
                    _p_beyond(x, s, n_total, alpha, tuning, one_sided=True),
                )

            # FAIL needs the harm shown whatever the sign of the baseline's true mean (both
            # contrasts); with that mean told apart from 0 it is Fieller's bound beyond harm.
            fail_up = (r.up > c * r.se_up) & (r.down > c * r.se_down)
            fail_down = (r.up < -(c * r.se_up)) & (r.down < -(c * r.se_down))
            pass_up = r.bounded & (r.pass_up + c * r.se_pass_up < 0)
            pass_down = r.bounded & (r.pass_down - c * r.se_pass_down > 0)
            p_up = np.maximum(pv(r.up, r.se_up), pv(r.down, r.se_down))
            p_down = np.maximum(pv(-r.up, r.se_up), pv(-r.down, r.se_down))
            ni_up = np.where(r.bounded, pv(-r.pass_up, r.se_pass_up), 1.0)
            ni_down = np.where(r.bounded, pv(r.pass_down, r.se_pass_down), 1.0)
            r_fail = np.where(
                higher, fail_up, np.where(lower_worse, fail_down, fail_up | fail_down)
            )
            r_pass = np.where(
                higher, pass_up, np.where(lower_worse, pass_down, pass_up & pass_down)
            )
            fail = np.where(rel, r_fail, fail)
            pas = np.where(rel, r_pass, pas)
            lower = np.where(rel, np.where(r.bounded, r.lower, -np.inf), lower)
            upper = np.where(rel, np.where(r.bounded, r.upper, np.inf), upper)
            p_harm = np.where(
                rel,
                np.where(higher, p_up, np.where(lower_worse, p_down, np.minimum(p_up, p_down))),
                p_harm,
            )
            p_ni = np.where(
                rel,
                np.where(higher, ni_up, np.where(lower_worse, ni_down, np.maximum(ni_up, ni_down))),
                p_ni,
            )
            unbounded = rel & ~r.bounded & ~r_fail

    gate = np.full(est.shape, _GATE_OK, dtype=np.int8)
    gate = np.where(unbounded, _GATE_ZERO_BASE, gate)
    # No variance in either arm (e.g. a constant metric): the interval collapses to the exact
    # difference, which decides on its own.
    if ev is not None:
        gate = np.where(ev < min_events, _GATE_EVENTS, gate)
    gate = np.where((ncf < min_samples) | (nbf < min_samples), _GATE_FEW, gate).astype(np.int8)
    code = np.where(fail, _FAIL, np.where(pas, _PASS, _INCONCLUSIVE))
    code = np.where(gate == _GATE_OK, code, _INCONCLUSIVE).astype(np.int8)

    def ro(a: NDArray[Any]) -> NDArray[Any]:
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
        return a

    return SequenceResults(
        verdict_code=ro(code),
        estimate=ro(est),
        lower=ro(lower),
        upper=ro(upper),
        p_value=ro(p_harm),
        p_noninferiority=ro(p_ni),
        n_candidate=ro(ncf.astype(np.int64)),
        n_baseline=ro(nbf.astype(np.int64)),
        direction_code=ro(dcode),
        relative=ro(rel),
        margin=ro(marg),
        harm_threshold=ro(harm),
        gate=ro(gate),
        events=None if ev is None else ro(ev),
        alpha=alpha,
        min_samples=min_samples,
        min_events=min_events,
    )


class _ScalarSequence(NamedTuple):
    """One check's sequence from :func:`_sequence_scalar` (the fields a judge reads)."""

    verdict: Verdict
    estimate: float
    lower: float
    upper: float
    p_value: float
    n_candidate: int
    n_baseline: int
    direction: Direction
    margin: float
    reason: str


def _expm1(x: float) -> float:
    try:
        return math.expm1(x)
    except OverflowError:
        return math.inf


def _p_scalar(
    x: float, se: float, n_total: float, k: float, sqrt_k: float, rho2: float, *, two: bool
) -> float:
    """:func:`_p_beyond` for one element, on Python floats."""
    if math.isnan(x) or math.isnan(se):
        return math.nan
    if not x > 0:
        return 1.0
    e = x * x * n_total * rho2 / (2.0 * se * se * k) if se > 0 else math.inf
    if two:
        p = sqrt_k * math.exp(-e)
    else:
        d = 2.0 * _expm1(e)
        p = sqrt_k / d if d else math.inf
    return 1.0 if p > 1.0 else p


def _sequence_scalar(
    n_c: int,
    mean_c: float,
    var_c: float,
    n_b: int,
    mean_b: float,
    var_b: float,
    *,
    events: int,
    direction_code: int,
    relative: bool,
    margin: float,
    harm: float,
    alpha: float,
    rho2_one: float,
    rho2_two: float,
    min_samples: int,
    min_events: int,
    floor: bool = True,
) -> _ScalarSequence | None:
    """One element of :func:`_sequence_core` computed on Python floats.

    For two arms a judge has one number per check, and a handful of numpy calls on tiny arrays
    costs more than the arithmetic itself. This runs the same IEEE operations in the same order
    as the array code, so it returns the same numbers wherever numpy's ``log``, ``log1p``,
    ``exp``, ``expm1`` and ``power`` agree with :mod:`math`'s (both call the C library, unless
    numpy was built with SIMD versions of them, which can differ in the last place). It takes
    inputs that passed :func:`_sequence_core`'s validation (finite; counts whole and >= 0;
    variances, ``margin`` and ``harm`` >= 0; ``rho2_one`` and ``rho2_two`` from :func:`_rho2`)
    and computes only the p-value against harm (a judge does not read the non-inferiority
    one). Keep it in step with :func:`_sequence_core`.

    Returns None where Python would raise and numpy returns ``inf`` or ``nan`` (an empty arm,
    a zero baseline mean for a relative effect, an overflow), and for a relative effect with
    no bounded interval: the caller then runs :func:`_sequence_core` for that element.
    """
    try:
        mean_c, mean_b = float(mean_c), float(mean_b)
        ncf, nbf = float(n_c), float(n_b)
        n_total = ncf + nbf
        if floor:
            pooled = (ncf * var_c + nbf * var_b) / n_total
            var_c = max(var_c, pooled)
            var_b = max(var_b, pooled)
        se2 = var_c / ncf + var_b / nbf
        # As in _sequence_core: no variance, and the means differ by a rounding.
        same = se2 == 0.0 and abs(mean_c - mean_b) <= _ROUNDING * max(abs(mean_c), abs(mean_b))
        two = direction_code == 2
        rho2 = rho2_two if two else rho2_one
        k = n_total * rho2 + 1.0
        sqrt_k = math.sqrt(k)
        log_term = math.log(sqrt_k / alpha) if two else math.log1p(sqrt_k / (2.0 * alpha))
        c = math.sqrt(2.0 * k * log_term / (n_total * rho2))
        if relative:
            return _relative_scalar(
                mean_c,
                mean_b,
                var_c / ncf,
                var_b / nbf,
                same=same,
                c=c,
                n=(n_total, k, sqrt_k, rho2),
                direction_code=direction_code,
                harm=harm,
                margin=margin,
                counts=(int(ncf), int(nbf), events, min_samples, min_events),
            )
        est = 0.0 if same else mean_c - mean_b
        se = math.sqrt(se2)
        hw = se * c
        lower = est - hw
        upper = est + hw
        if two:
            p_a = _p_scalar(est - harm, se, n_total, k, sqrt_k, rho2, two=True)
            p_b = _p_scalar(-harm - est, se, n_total, k, sqrt_k, rho2, two=True)
            p = _nan_or(min, p_a, p_b)
        else:
            sign = 1.0 if direction_code == 0 else -1.0
            p = _p_scalar(sign * est - harm, se, n_total, k, sqrt_k, rho2, two=False)
    except (ZeroDivisionError, OverflowError, ValueError):
        return None
    if direction_code == 0:
        fail, pas = lower > harm, upper < margin
    elif direction_code == 1:
        fail, pas = upper < -harm, lower > -margin
    else:
        fail = lower > harm or upper < -harm
        pas = lower > -margin and upper < margin
    return _scalar_result(
        est,
        lower,
        upper,
        p,
        fail,
        pas,
        direction_code,
        harm,
        margin,
        (int(ncf), int(nbf), events, min_samples, min_events),
    )


def _nan_or(f: Any, a: float, b: float) -> float:
    """``f(a, b)`` (min or max) that gives nan when either is nan, as numpy's does."""
    return math.nan if math.isnan(a) or math.isnan(b) else float(f(a, b))


def _relative_scalar(
    mean_c: float,
    mean_b: float,
    ua: float,
    ub: float,
    *,
    same: bool,
    c: float,
    n: tuple[float, float, float, float],
    direction_code: int,
    harm: float,
    margin: float,
    counts: tuple[int, int, int, int, int],
) -> _ScalarSequence | None:
    """:func:`_sequence_scalar` for a relative effect (the branch under ``rel`` in
    :func:`_sequence_core`); None when its interval is not bounded."""
    r = _ratio(
        mean_b if same else mean_c, mean_b, ua, ub, c, harm, margin, -1.0 if mean_b < 0 else 1.0
    )
    if not r.bounded:
        return None
    est = 0.0 if same else mean_c / abs(mean_b) - (1.0 if mean_b > 0 else -1.0)
    n_total, k, sqrt_k, rho2 = n
    two = direction_code == 2

    def pv(x: float, s: float) -> float:
        return _p_scalar(x, s, n_total, k, sqrt_k, rho2, two=two)

    fail_up = r.up > c * r.se_up and r.down > c * r.se_down
    fail_down = r.up < -(c * r.se_up) and r.down < -(c * r.se_down)
    pass_up = r.pass_up + c * r.se_pass_up < 0
    pass_down = r.pass_down - c * r.se_pass_down > 0
    p_up = _nan_or(max, pv(r.up, r.se_up), pv(r.down, r.se_down))
    p_down = _nan_or(max, pv(-r.up, r.se_up), pv(-r.down, r.se_down))
    if direction_code == 0:
        fail, pas, p = fail_up, pass_up, p_up
    elif direction_code == 1:
        fail, pas, p = fail_down, pass_down, p_down
    else:
        fail, pas, p = fail_up or fail_down, pass_up and pass_down, _nan_or(min, p_up, p_down)
    return _scalar_result(est, r.lower, r.upper, p, fail, pas, direction_code, harm, margin, counts)


def _scalar_result(
    est: float,
    lower: float,
    upper: float,
    p: float,
    fail: bool,
    pas: bool,
    direction_code: int,
    harm: float,
    margin: float,
    counts: tuple[int, int, int, int, int],
) -> _ScalarSequence:
    """The verdict, gates and reason of one scalar sequence."""
    nc, nb, events, min_samples, min_events = counts
    gate = _GATE_OK
    if events < min_events:
        gate = _GATE_EVENTS
    if nc < min_samples or nb < min_samples:
        gate = _GATE_FEW
    code = _INCONCLUSIVE if gate != _GATE_OK else _FAIL if fail else _PASS if pas else _INCONCLUSIVE
    return _ScalarSequence(
        verdict=_VERDICTS[code],
        estimate=est,
        lower=lower,
        upper=upper,
        p_value=p,
        n_candidate=nc,
        n_baseline=nb,
        direction=_DIRECTIONS[direction_code],
        margin=margin,
        reason=_reason_text(
            gate=gate,
            n_candidate=nc,
            n_baseline=nb,
            events=events,
            lower=lower,
            upper=upper,
            margin=margin,
            harm=harm,
            direction_code=direction_code,
            verdict_code=code,
            min_samples=min_samples,
            min_events=min_events,
        ),
    )


def mean_difference_cs_many(
    n_candidate: ArrayLike,
    mean_candidate: ArrayLike,
    var_candidate: ArrayLike,
    n_baseline: ArrayLike,
    mean_baseline: ArrayLike,
    var_baseline: ArrayLike,
    *,
    direction: Direction | str | Sequence[Direction | str] = Direction.HIGHER_IS_WORSE,
    relative: bool | ArrayLike = False,
    margin: ArrayLike = 0.0,
    harm_threshold: ArrayLike = 0.0,
    alpha: float = 0.05,
    tuning: float = _DEFAULT_TUNING,
    min_samples: int = 100,
) -> SequenceResults:
    """Confidence sequences for the difference of means of many metrics at once.

    Every argument broadcasts to one 1-D shape (one element per metric). Variances are the
    per-unit sample variances (``ddof=1``) of running windows, never of future data.

    Decision per metric, for ``HIGHER_IS_WORSE`` (``LOWER_IS_WORSE`` mirrors it): FAIL when the
    lower bound exceeds ``harm_threshold``; PASS when the upper bound is below ``margin``; else
    INCONCLUSIVE. FAIL wins if both hold. For ``EITHER``: FAIL when the two-sided sequence lies
    outside ``[-harm_threshold, harm_threshold]``, PASS when it lies within ``[-margin, margin]``.
    Fewer than ``min_samples`` per arm is always INCONCLUSIVE.

    Args:
        n_candidate: Candidate sample sizes.
        mean_candidate: Candidate means.
        var_candidate: Candidate variances (``ddof=1``).
        n_baseline: Baseline sample sizes.
        mean_baseline: Baseline means.
        var_baseline: Baseline variances (``ddof=1``).
        direction: Which change is harm, one for all or one per metric.
        relative: Test ``mean_c / |mean_b| - sign(mean_b)`` (Fieller's interval) instead of
            ``mean_c - mean_b``.
        margin: Non-inferiority margin, a magnitude >= 0 in the harm direction.
        harm_threshold: FAIL needs the sequence wholly beyond this magnitude (0: any harm).
        alpha: Level of each bound, valid over all looks.
        tuning: N*, the total sample size (both arms) at which the sequence is tightest.
        min_samples: Samples per arm needed before a metric may decide.

    Returns:
        A :class:`SequenceResults`.

    Raises:
        ConfigError: for bad options.
        DataError: for negative, fractional or non-finite sufficient statistics.

    >>> from safeserve.stats import mean_difference_cs_many
    >>> rs = mean_difference_cs_many(
    ...     [4000, 4000], [105.0, 0.5], [400.0, 0.25], [4000, 4000], [100.0, 0.5], [400.0, 0.25],
    ...     direction=["higher_is_worse", "lower_is_worse"], relative=True, margin=0.02)
    >>> rs.verdicts
    (<Verdict.FAIL: 'fail'>, <Verdict.INCONCLUSIVE: 'inconclusive'>)
    """
    return _sequence_core(
        n_candidate,
        mean_candidate,
        var_candidate,
        n_baseline,
        mean_baseline,
        var_baseline,
        events=None,
        alpha=alpha,
        direction=direction,
        relative=relative,
        margin=margin,
        harm_threshold=harm_threshold,
        tuning=tuning,
        min_samples=min_samples,
        min_events=0,
    )


def mean_difference_cs(
    n_candidate: int,
    mean_candidate: float,
    var_candidate: float,
    n_baseline: int,
    mean_baseline: float,
    var_baseline: float,
    *,
    direction: Direction | str = Direction.HIGHER_IS_WORSE,
    relative: bool = False,
    margin: float = 0.0,
    harm_threshold: float = 0.0,
    alpha: float = 0.05,
    tuning: float = _DEFAULT_TUNING,
    min_samples: int = 100,
) -> SequenceResult:
    """Confidence sequence and decision for one difference of means.

    The scalar form of :func:`mean_difference_cs_many`; see it for the decision rule.

    Args:
        n_candidate: Candidate sample size.
        mean_candidate: Candidate mean.
        var_candidate: Candidate variance (``ddof=1``).
        n_baseline: Baseline sample size.
        mean_baseline: Baseline mean.
        var_baseline: Baseline variance (``ddof=1``).
        direction: Which change is harm.
        relative: Test the relative difference (Fieller's interval).
        margin: Non-inferiority margin (>= 0).
        harm_threshold: FAIL needs the sequence wholly beyond this magnitude.
        alpha: Level of each bound.
        tuning: N*, total sample size at which the sequence is tightest.
        min_samples: Samples per arm needed before deciding.

    Returns:
        A :class:`SequenceResult`.

    Raises:
        ConfigError: for bad options.
        DataError: for bad sufficient statistics.

    >>> from safeserve.stats import mean_difference_cs
    >>> r = mean_difference_cs(3000, 0.118, 0.0016, 3000, 0.100, 0.0016, relative=True)
    >>> r.verdict.value, round(r.estimate, 3), round(r.lower, 3)
    ('fail', 0.18, 0.149)
    >>> mean_difference_cs(50, 1.0, 1.0, 50, 0.0, 1.0).reason
    'too few samples: 50 candidate and 50 baseline, need 100 per arm'
    """
    return mean_difference_cs_many(
        n_candidate,
        mean_candidate,
        var_candidate,
        n_baseline,
        mean_baseline,
        var_baseline,
        direction=check_direction(direction),
        relative=bool(relative),
        margin=margin,
        harm_threshold=harm_threshold,
        alpha=alpha,
        tuning=tuning,
        min_samples=min_samples,
    )[0]


def _proportion_moments(n_c: Any, x_c: Any, n_b: Any, x_b: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Each arm's rate and per-unit variance, and the events that open the gate, for two
    proportions (numpy arrays or Python floats; empty arms give ``nan`` or raise, as ``/``).

    An arm's variance is the larger of its own ``p (1 - p)`` and the pooled rate's. With its
    own alone, a small arm (a 5% canary) with few events looked most precise exactly when its
    rate looked lowest (zero events: a variance of zero), and an arm of all errors looked
    exact: at a 1% conversion rate a 5% canary failed A/A runs about a quarter of the time.
    Under no difference the pooled rate estimates both arms' variance with no such tie to one
    arm's own rate; away from it, the arm's own variance takes over where it is the larger.
    The events are the rarer outcome over both arms pooled (a candidate that fails every
    request against a clean baseline has many, not none).

    >>> [round(float(v), 4) for v in _proportion_moments(100.0, 0.0, 1900.0, 38.0)]
    [0.0, 0.0186, 0.02, 0.0196, 38.0]
    """
    pc, pb = x_c / n_c, x_b / n_b
    rate = (x_c + x_b) / (n_c + n_b)
    pooled = rate * (1.0 - rate)
    if type(pc) is float:
        vc, vb = max(pc * (1.0 - pc), pooled), max(pb * (1.0 - pb), pooled)
        events = min(x_c + x_b, n_c - x_c + n_b - x_b)
    else:
        vc = np.maximum(pc * (1.0 - pc), pooled)
        vb = np.maximum(pb * (1.0 - pb), pooled)
        events = np.minimum(x_c + x_b, n_c - x_c + n_b - x_b)
    return pc, vc, pb, vb, events


def proportion_difference_cs_many(
    n_candidate: ArrayLike,
    events_candidate: ArrayLike,
    n_baseline: ArrayLike,
    events_baseline: ArrayLike,
    *,
    direction: Direction | str | Sequence[Direction | str] = Direction.HIGHER_IS_WORSE,
    relative: bool | ArrayLike = False,
    margin: ArrayLike = 0.0,
    harm_threshold: ArrayLike = 0.0,
    alpha: float = 0.05,
    tuning: float = _DEFAULT_TUNING,
    min_samples: int = 100,
    min_events: int = 30,
) -> SequenceResults:
    """Confidence sequences for differences of proportions (error rates, conversion) at once.

    Each arm's per-unit variance is the larger of its own ``p(1 - p)`` and the pooled rate's
    (see :func:`_proportion_moments`). Besides ``min_samples`` per arm, a metric needs
    ``min_events`` events over both arms, counting the rarer outcome of the pooled arms
    (``min(events, n - events)`` over both), before it may decide. The decision rule is that of
    :func:`mean_difference_cs_many`.

    Args:
        n_candidate: Candidate trials.
        events_candidate: Candidate events (errors, conversions).
        n_baseline: Baseline trials.
        events_baseline: Baseline events.
        direction: Which change is harm, one for all or one per metric.
        relative: Test ``p_c / p_b - 1`` (Fieller's interval) instead of ``p_c - p_b``.
        margin: Non-inferiority margin (>= 0).
        harm_threshold: FAIL needs the sequence wholly beyond this magnitude.
        alpha: Level of each bound.
        tuning: N*, total sample size at which the sequence is tightest.
        min_samples: Trials per arm needed before deciding.
        min_events: Events over both arms needed before deciding.

    Returns:
        A :class:`SequenceResults`.

    Raises:
        ConfigError: for bad options.
        DataError: for negative counts or more events than trials.

    >>> from safeserve.stats import proportion_difference_cs_many
    >>> rs = proportion_difference_cs_many([20000, 20000], [400, 210], [20000, 20000], [200, 200])
    >>> [r.verdict.value for r in rs]
    ['fail', 'inconclusive']
    """
    nc = as_float_array(n_candidate, "n_candidate")
    nb = as_float_array(n_baseline, "n_baseline")
    ec = as_float_array(events_candidate, "events_candidate")
    eb = as_float_array(events_baseline, "events_baseline")
    for name, arr in (("events_candidate", ec), ("events_baseline", eb)):
        if (arr < 0).any() or (arr != np.floor(arr)).any():
            raise DataError(f"{name} must be whole numbers >= 0, got {arr.tolist()!r}")
    try:
        bc = np.broadcast_arrays(nc, ec)
        bb = np.broadcast_arrays(nb, eb)
    except ValueError:
        raise DataError("event counts and trial counts do not broadcast together") from None
    if (bc[1] > bc[0]).any():
        raise DataError(f"events_candidate {ec.tolist()!r} exceed n_candidate {nc.tolist()!r}")
    if (bb[1] > bb[0]).any():
        raise DataError(f"events_baseline {eb.tolist()!r} exceed n_baseline {nb.tolist()!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        pc, vc, pb, vb, events = _proportion_moments(nc, ec, nb, eb)
    return _sequence_core(
        nc,
        pc,
        vc,
        nb,
        pb,
        vb,
        events=events.astype(np.int64),
        floor=False,
        alpha=alpha,
        direction=direction,
        relative=relative,
        margin=margin,
        harm_threshold=harm_threshold,
        tuning=tuning,
        min_samples=min_samples,
        min_events=min_events,
    )


def proportion_difference_cs(
    n_candidate: int,
    events_candidate: int,
    n_baseline: int,
    events_baseline: int,
    *,
    direction: Direction | str = Direction.HIGHER_IS_WORSE,
    relative: bool = False,
    margin: float = 0.0,
    harm_threshold: float = 0.0,
    alpha: float = 0.05,
    tuning: float = _DEFAULT_TUNING,
    min_samples: int = 100,
    min_events: int = 30,
) -> SequenceResult:
    """Confidence sequence and decision for one difference of proportions.

    The scalar form of :func:`proportion_difference_cs_many`.

    Args:
        n_candidate: Candidate trials.
        events_candidate: Candidate events.
        n_baseline: Baseline trials.
        events_baseline: Baseline events.
        direction: Which change is harm.
        relative: Test the relative difference (Fieller's interval).
        margin: Non-inferiority margin (>= 0).
        harm_threshold: FAIL needs the sequence wholly beyond this magnitude.
        alpha: Level of each bound.
        tuning: N*, total sample size at which the sequence is tightest.
        min_samples: Trials per arm needed before deciding.
        min_events: Events over both arms needed before deciding.

    Returns:
        A :class:`SequenceResult`.

    Raises:
        ConfigError: for bad options.
        DataError: for bad counts.

    >>> from safeserve.stats import proportion_difference_cs
    >>> r = proportion_difference_cs(20000, 205, 20000, 200, margin=0.005)
    >>> r.verdict.value, r.reason
    ('pass', 'upper bound 0.00322 < margin 0.005: non-inferior')
    """
    return proportion_difference_cs_many(
        n_candidate,
        events_candidate,
        n_baseline,
        events_baseline,
        direction=check_direction(direction),
        relative=bool(relative),
        margin=margin,
        harm_threshold=harm_threshold,
        alpha=alpha,
        tuning=tuning,
        min_samples=min_samples,
        min_events=min_events,
    )[0]

"""Declarative checks: what a policy judges, with the options users know from Argo and Flagger.

Every check is a frozen configuration. The judge turns the metric snapshot into one
:class:`CheckResult` per check; comparative checks (candidate against baseline) use confidence
sequences, so they stay valid while the judge looks after every batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import attrs
import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError, DataError
from ..metrics import VariantMetrics
from ..metrics._summaries import quantile_from_cumulative
from ..stats import Direction, RareErrorResult, RareErrorTest, Verdict
from ..stats._common import check_alpha
from ._bounds import binomial_cs, binomial_cs_side
from ._decision import Action, CheckResult

__all__ = [
    "SRM",
    "Check",
    "ErrorRate",
    "Guardrail",
    "Latency",
    "LatencyQuantile",
    "MetricCheck",
]


def _nonneg(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{attribute.name} must be a number >= 0, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{attribute.name} must be finite, got {value!r}")


def _limit(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """None or a finite real number (a NaN limit is never crossed: the guardrail would hold
    whatever the value)."""
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(value)
    ):
        raise ConfigError(f"{attribute.name} must be a finite number or None, got {value!r}")


def _name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{attribute.name} must be a non-empty str, got {value!r}")


def _count(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be an int >= 1, got {value!r}")


def _size(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{attribute.name} must be an int >= 0 (0: the default), got {value!r}")


def _alpha(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    check_alpha(value, attribute.name)


def _direction(value: Any) -> Direction:
    try:
        return Direction(value)
    except ValueError:
        options = [d.value for d in Direction if d is not Direction.EITHER]
        raise ConfigError(f"direction must be one of {options!r}, got {value!r}") from None


@attrs.frozen(kw_only=True)
class _Context:
    """What a check sees at one evaluation."""

    baseline: VariantMetrics
    candidate: VariantMetrics
    comparative: bool
    share: float
    alpha: float
    tuning: float
    new_errors: tuple[int, int]
    #: Work shared by the checks of one evaluation (e.g. cumulative latency counts).
    memo: dict[str, Any] = attrs.field(factory=dict)

    def cumulative(self, side: str) -> NDArray[np.int64]:
        """Cumulative latency bucket counts of ``"candidate"`` or ``"baseline"``, once."""
        key = f"cum:{side}"
        if key not in self.memo:
            self.memo[key] = np.cumsum(getattr(self, side).latency.counts)
        cum: NDArray[np.int64] = self.memo[key]
        return cum

    def latency_n(self, side: str) -> int:
        """Latency observations of ``"candidate"`` or ``"baseline"``, counted once."""
        key = f"n:{side}"
        if key not in self.memo:
            self.memo[key] = getattr(self, side).latency.n
        n: int = self.memo[key]
        return n


class _CS(NamedTuple):
    """A request for a confidence sequence, run by the judge (a light tuple: one per check
    and evaluation)."""

    kind: Literal["mean", "proportion"]
    n_c: int
    x_c: float
    v_c: float
    n_b: int
    x_b: float
    v_b: float
    direction: Direction
    relative: bool
    margin: float
    harm: float
    min_samples: int
    min_events: int

    @classmethod
    def of_means(cls, c: Any, b: Any, **options: Any) -> _CS:
        """A difference-of-means request from two arms' Moments."""
        return cls(
            kind="mean",
            n_c=c.n,
            x_c=c.mean,
            v_c=_var(c),
            n_b=b.n,
            x_b=b.mean,
            v_b=_var(b),
            min_events=0,
            **options,
        )


class Check:
    """Base of the checks; see :class:`ErrorRate`, :class:`Latency`, :class:`MetricCheck`..."""

    name: str
    critical: bool
    dry_run: bool
    #: Comparative checks compare the candidate with the baseline and share the policy's alpha.
    comparative: bool = True

    def _new_state(self) -> Any:
        return None

    def _sequence(self, ctx: _Context, state: Any) -> _CS | None:
        """The confidence sequence this check needs, or None."""
        return None

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        raise TypeError(f"{type(self).__name__} does not judge")  # pragma: no cover

    def _requests_needed(self) -> int:
        """Requests each arm needs before this check can conclude (at least)."""
        return int(getattr(self, "min_samples", 0) or 0)

    def _samples_in(self, v: VariantMetrics) -> int:
        """This check's samples in an arm's metrics (requests, unless it judges values)."""
        return v.requests

    def _result(self, verdict: Verdict, reason: str, **kw: Any) -> CheckResult:
        kind = kw.pop("kind", getattr(self, "kind", type(self).__name__.lower()))
        return CheckResult(
            name=self.name,
            kind=kind,
            verdict=verdict,
            critical=self.critical,
            dry_run=self.dry_run,
            reason=reason,
            **kw,
        )

    def _from_sequence(
        self, seq: Any, *, scale: Callable[[float], float] | None = None, kind: str | None = None
    ) -> CheckResult:
        # Built directly rather than through _result: it runs for most checks at every look.
        estimate, lower, upper, margin = seq.estimate, seq.lower, seq.upper, seq.margin
        if scale is not None:
            estimate, lower, upper, margin = (
                scale(estimate),
                scale(lower),
                scale(upper),
                scale(margin),
            )
        fail = seq.verdict is Verdict.FAIL
        return CheckResult(
            name=self.name,
            kind=getattr(self, "kind", type(self).__name__.lower()) if kind is None else kind,
            verdict=seq.verdict,
            critical=self.critical,
            dry_run=self.dry_run,
            estimate=estimate,
            lower=lower,
            upper=upper,
            p_value=seq.p_value,
            margin=margin if seq.direction is not Direction.LOWER_IS_WORSE else -margin,
            reason=seq.reason,
            n_candidate=seq.n_candidate,
            n_baseline=seq.n_baseline,
            action=Action.ROLLBACK if fail else Action.CONTINUE,
        )


class _RareState:
    """An error-rate check's sequential rare-error test, and its result at the last look.

    The test changes only by ``update``; between updates its result is the same, so it is
    computed once (``RareErrorTest.result()`` is idempotent: it takes a running minimum).
    """

    __slots__ = ("last", "test")

    def __init__(self) -> None:
        self.test = RareErrorTest(alpha=0.05)
        self.last: RareErrorResult | None = None

    def result(self) -> RareErrorResult:
        if self.last is None:
            self.last = self.test.result()
        return self.last


@attrs.frozen(kw_only=True)
class ErrorRate(Check):
    """The candidate's error rate must not exceed the baseline's by more than ``margin``.

    With at least ``min_events`` errors over both arms, a one-sided confidence sequence on the
    difference of error rates decides. Below that (rare errors), the exact sequential test on
    how error events split between the arms given the traffic share can FAIL the candidate, and
    anytime-valid binomial bounds can PASS it (candidate upper bound minus baseline lower bound
    under ``margin``).

    Args:
        margin: Non-inferiority margin on the absolute error rate (0.005 = half a point).
        harm: FAIL needs the increase to exceed this (0: any increase).
        critical: Count a FAIL toward a rollback (else only report it).
        dry_run: Evaluate and log, never act.
        min_samples: Requests per arm before the check may decide.
        min_events: Errors over both arms before the confidence sequence is used.

    >>> import safeserve as ss
    >>> ss.ErrorRate(margin=0.01).name
    'error_rate'
    """

    name: str = attrs.field(default="error_rate", validator=_name)
    margin: float = attrs.field(default=0.005, validator=_nonneg)
    harm: float = attrs.field(default=0.0, validator=_nonneg)
    critical: bool = True
    dry_run: bool = False
    min_samples: int = attrs.field(default=100, validator=_count)
    min_events: int = attrs.field(default=30, validator=_count)
    kind = "error_rate"

    def _new_state(self) -> _RareState:
        return _RareState()

    def _sequence(self, ctx: _Context, state: Any) -> _CS | None:
        c, b = ctx.candidate, ctx.baseline
        if c.errors + b.errors < self.min_events:
            return None
        return _CS(
            kind="proportion",
            n_c=c.requests,
            x_c=c.errors,
            v_c=0.0,
            n_b=b.requests,
            x_b=b.errors,
            v_b=0.0,
            direction=Direction.HIGHER_IS_WORSE,
            relative=False,
            margin=self.margin,
            harm=self.harm,
            min_samples=self.min_samples,
            min_events=self.min_events,
        )

    def _judge(self, ctx: _Context, state: _RareState, seq: Any) -> CheckResult:
        s, f = ctx.new_errors
        if 0.0 < ctx.share < 1.0 and (s or f):
            state.last = state.test.update(s, f, candidate_share=ctx.share)
        if seq is not None:
            return self._from_sequence(seq)
        c, b = ctx.candidate, ctx.baseline
        if min(c.requests, b.requests) < self.min_samples:
            return self._result(
                Verdict.INCONCLUSIVE,
                f"too few samples: {c.requests} candidate and {b.requests} baseline, "
                f"need {self.min_samples} per arm",
                n_candidate=c.requests,
                n_baseline=b.requests,
            )
        rare = state.result()
        up_c = binomial_cs_side(c.errors, c.requests, ctx.alpha, upper=True)
        lo_b = binomial_cs_side(b.errors, b.requests, ctx.alpha, upper=False)
        est = c.errors / c.requests - b.errors / b.requests
        common = {
            "estimate": est,
            "lower": None,
            "upper": up_c - lo_b,
            # The rare-error test's p-value is against "no increase"; with a harm threshold it
            # is not this check's FAIL hypothesis (Holm would have failed increases below it).
            "p_value": rare.p_value if self.harm == 0.0 else None,
            "margin": self.margin,
            "n_candidate": c.requests,
            "n_baseline": b.requests,
        }
        if rare.p_value <= ctx.alpha and self.harm == 0.0:
            return self._result(
                Verdict.FAIL,
                f"rare errors: {rare.candidate_errors} of "
                f"{rare.candidate_errors + rare.baseline_errors} error events were the "
                f"candidate's, more than its traffic share explains "
                f"(p={rare.p_value:.3g})",
                action=Action.ROLLBACK,
                **common,
            )
        if up_c - lo_b < self.margin:
            return self._result(
                Verdict.PASS,
                f"rare errors: candidate rate at most {up_c:.4%}, baseline at least {lo_b:.4%}: "
                f"within the margin {self.margin:.4%}",
                **common,
            )
        return self._result(
            Verdict.INCONCLUSIVE,
            f"rare errors ({c.errors + b.errors} so far): neither a significant increase nor "
            f"non-inferiority yet",
            **common,
        )


@attrs.frozen(kw_only=True)
class Latency(Check):
    """The candidate's typical latency must not exceed the baseline's by more than ``margin``.

    Compares the mean of log latency (a relative change, robust to the heavy tail) with a
    one-sided confidence sequence. ``margin`` and ``harm`` are relative: 0.10 = 10% slower.

    >>> import safeserve as ss
    >>> ss.Latency(margin=0.2).margin
    0.2
    """

    name: str = attrs.field(default="latency", validator=_name)
    margin: float = attrs.field(default=0.10, validator=_nonneg)
    harm: float = attrs.field(default=0.0, validator=_nonneg)
    critical: bool = True
    dry_run: bool = False
    min_samples: int = attrs.field(default=100, validator=_count)
    kind = "latency"

    def _sequence(self, ctx: _Context, state: Any) -> _CS:
        return _CS.of_means(
            ctx.candidate.log_latency,
            ctx.baseline.log_latency,
            direction=Direction.HIGHER_IS_WORSE,
            relative=False,
            margin=math.log1p(self.margin),
            harm=math.log1p(self.harm),
            min_samples=self.min_samples,
        )

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        return self._from_sequence(seq, scale=math.expm1)


def _var(m: Any) -> float:
    v = float(m.variance) if m.n > 1 else 0.0
    return v if math.isfinite(v) else 0.0


@attrs.frozen(kw_only=True)
class LatencyQuantile(Check):
    """Guard a latency quantile: the candidate's p99 must stay under ``(1 + max_increase)``
    times the baseline's.

    With ``t`` = the baseline's quantile times ``1 + max_increase``, the share of candidate
    requests slower than ``t`` is tracked with anytime-valid binomial bounds: FAIL when it is
    surely above ``1 - q`` (the candidate's quantile is beyond ``t``), PASS when surely below.

    >>> import safeserve as ss
    >>> ss.LatencyQuantile(q=0.99, max_increase=0.25).name
    'latency_p99'
    """

    q: float = attrs.field(default=0.99)
    max_increase: float = attrs.field(default=0.25, validator=_nonneg)
    name: str = attrs.field(validator=_name)
    critical: bool = True
    dry_run: bool = False
    min_samples: int | None = attrs.field(default=None, validator=attrs.validators.optional(_size))
    kind = "latency_quantile"

    @name.default
    def _default_name(self) -> str:
        return f"latency_p{self.q * 100:g}".replace(".", "_")

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.q, float | int) or not 0.5 <= self.q < 1.0:
            raise ConfigError(f"q must be in [0.5, 1), got {self.q!r}")

    def _requests_needed(self) -> int:
        return self.min_samples or math.ceil(10 / (1 - self.q))

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        c, b = ctx.candidate.latency, ctx.baseline.latency
        n_c, n_b = ctx.latency_n("candidate"), ctx.latency_n("baseline")
        need = self._requests_needed()
        if min(n_c, n_b) < need:
            return self._result(
                Verdict.INCONCLUSIVE,
                f"too few samples: {n_c} candidate and {n_b} baseline, need {need} per arm",
                n_candidate=n_c,
                n_baseline=n_b,
            )
        cum_b, cum_c = ctx.cumulative("baseline"), ctx.cumulative("candidate")
        base_q = quantile_from_cumulative(cum_b, self.q, b.value_at)
        limit = base_q * (1.0 + self.max_increase)
        idx = c._index_scalar(limit)  # the bucket ``limit`` would be recorded in
        above = int(cum_c[-1] - cum_c[idx])
        lo, hi = binomial_cs(above, n_c, ctx.alpha)
        tail = 1.0 - self.q
        cand_q = quantile_from_cumulative(cum_c, self.q, c.value_at)
        common = {
            "estimate": cand_q / base_q - 1.0 if base_q > 0 else math.nan,
            "lower": lo,
            "upper": hi,
            "margin": self.max_increase,
            "n_candidate": n_c,
            "n_baseline": n_b,
        }
        what = f"{above / n_c:.2%} of candidate requests slower than {limit:.4g}s"
        if lo > tail:
            return self._result(
                Verdict.FAIL,
                f"{what} (at least {lo:.2%}, more than {tail:.2%}): the candidate's "
                f"p{self.q * 100:g} exceeds the baseline's by more than {self.max_increase:.0%}",
                action=Action.ROLLBACK,
                **common,
            )
        if hi < tail:
            return self._result(Verdict.PASS, f"{what} (at most {hi:.2%} < {tail:.2%})", **common)
        return self._result(Verdict.INCONCLUSIVE, f"{what}: not yet conclusive", **common)


Source = Literal["outcome", "custom", "output"]


@attrs.frozen(kw_only=True)
class MetricCheck(Check):
    """Compare a custom metric, a delayed outcome or the model output between the arms.

    Args:
        metric: The outcome name (``router.record_outcome(..., name, ...)``), the custom metric
            name (``router.record(...)``), or ignored for ``source="output"``.
        source: ``"outcome"``, ``"custom"`` or ``"output"``.
        kind: ``"proportion"`` for 0/1 values (conversion, fraud label) or ``"mean"``.
        direction: ``"lower_is_worse"`` (conversion, recall) or ``"higher_is_worse"``.
        margin: Non-inferiority margin; relative (0.05 = 5%) unless ``relative=False``.
        relative: Judge ``candidate / baseline - 1`` instead of the difference.
        harm: FAIL needs the change to exceed this in the harm direction.

    >>> import safeserve as ss
    >>> ss.MetricCheck(metric="converted", direction="lower_is_worse").name
    'converted'
    """

    metric: str = attrs.field(validator=_name)
    source: Source = "outcome"
    kind: Literal["proportion", "mean"] = "proportion"
    direction: Direction = attrs.field(default=Direction.LOWER_IS_WORSE, converter=_direction)
    margin: float = attrs.field(default=0.05, validator=_nonneg)
    relative: bool = True
    harm: float = attrs.field(default=0.0, validator=_nonneg)
    name: str = attrs.field(validator=_name)
    critical: bool = True
    dry_run: bool = False
    min_samples: int = attrs.field(default=100, validator=_count)
    min_events: int = attrs.field(default=30, validator=_count)

    @name.default
    def _default_name(self) -> str:
        return self.metric

    def __attrs_post_init__(self) -> None:
        if self.source not in ("outcome", "custom", "output"):
            raise ConfigError(
                f"source must be 'outcome', 'custom' or 'output', got {self.source!r}"
            )
        if self.kind not in ("proportion", "mean"):
            raise ConfigError(f"kind must be 'proportion' or 'mean', got {self.kind!r}")
        if self.direction is Direction.EITHER:
            raise ConfigError("direction must say which change is harm, not 'either'")

    def _moments(self, v: VariantMetrics) -> Any:
        if self.source == "output":
            return v.output
        table = v.outcomes if self.source == "outcome" else v.custom
        return table.get(self.metric)

    def _samples_in(self, v: VariantMetrics) -> int:
        m = self._moments(v)
        return 0 if m is None else int(m.n)

    def _sequence(self, ctx: _Context, state: Any) -> _CS | None:
        c, b = self._moments(ctx.candidate), self._moments(ctx.baseline)
        if c is None or b is None:
            return None
        if self.kind == "proportion":
            for arm, m in (("candidate", c), ("baseline", b)):
                if m.n and not 0.0 <= m.mean <= 1.0:
                    raise DataError(
                        f"check {self.name!r} has kind='proportion', which needs 0/1 values, "
                        f"but the {arm}'s {self.metric!r} values average {m.mean!r}; use "
                        "kind='mean' for other values"
                    )
            return _CS(
                kind="proportion",
                n_c=c.n,
                x_c=round(c.mean * c.n) if c.n else 0,
                v_c=0.0,
                n_b=b.n,
                x_b=round(b.mean * b.n) if b.n else 0,
                v_b=0.0,
                direction=self.direction,
                relative=self.relative,
                margin=self.margin,
                harm=self.harm,
                min_samples=self.min_samples,
                min_events=self.min_events,
            )
        return _CS.of_means(
            c,
            b,
            direction=self.direction,
            relative=self.relative,
            margin=self.margin,
            harm=self.harm,
            min_samples=self.min_samples,
        )

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        if seq is None:
            return self._result(
                Verdict.INCONCLUSIVE,
                f"no {self.source} values named {self.metric!r} yet in one of the arms",
                kind=f"{self.source}_{self.kind}",
            )
        return self._from_sequence(seq, kind=f"{self.source}_{self.kind}")


Metric = Literal["error_rate", "latency_p50", "latency_p95", "latency_p99", "latency_mean"]
_QUANTILES = {"latency_p50": 0.5, "latency_p95": 0.95, "latency_p99": 0.99}


@attrs.frozen(kw_only=True)
class Guardrail(Check):
    """An absolute limit that acts at once, like an SLO alarm (no statistics, no baseline).

    Args:
        metric: ``"error_rate"``, ``"latency_p50"``, ``"latency_p95"``, ``"latency_p99"``,
            ``"latency_mean"`` (seconds), or a callable taking the variant's
            :class:`~safeserve.metrics.VariantMetrics` and returning a number.
        above: Breached when the value is above this.
        below: Breached when the value is below this.
        min_requests: Requests in the window before the guardrail may fire.
        variant: ``"candidate"`` (default) or ``"baseline"``.

    >>> import safeserve as ss
    >>> ss.Guardrail(metric="error_rate", above=0.2, min_requests=20).name
    'error_rate_guardrail'
    """

    metric: Metric | Callable[[VariantMetrics], float] = "error_rate"
    above: float | None = attrs.field(default=None, validator=_limit)
    below: float | None = attrs.field(default=None, validator=_limit)
    min_requests: int = attrs.field(default=20, validator=_count)
    variant: Literal["candidate", "baseline"] = "candidate"
    name: str = attrs.field(validator=_name)
    critical: bool = True
    dry_run: bool = False
    comparative = False
    kind = "guardrail"

    @name.default
    def _default_name(self) -> str:
        metric = self.metric if isinstance(self.metric, str) else "custom"
        return f"{metric}_guardrail"

    def __attrs_post_init__(self) -> None:
        if self.above is None and self.below is None:
            raise ConfigError("a Guardrail needs above= or below=")
        if isinstance(self.metric, str) and self.metric not in (
            "error_rate",
            *_QUANTILES,
            "latency_mean",
        ):
            raise ConfigError(f"unknown guardrail metric {self.metric!r}")
        if not isinstance(self.metric, str) and not callable(self.metric):
            raise ConfigError(f"metric must be a name or a callable, got {self.metric!r}")
        if self.variant not in ("candidate", "baseline"):
            raise ConfigError(f"variant must be 'candidate' or 'baseline', got {self.variant!r}")

    def value(self, v: VariantMetrics) -> float:
        """The guarded value for one variant's metrics."""
        m = self.metric
        if callable(m):
            return float(m(v))
        if m == "error_rate":
            return v.error_rate
        if m == "latency_mean":
            return float(v.latency_moments.mean) if v.latency_moments.n else math.nan
        return v.latency.quantile(_QUANTILES[m])

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        v = ctx.candidate if self.variant == "candidate" else ctx.baseline
        if v.requests < self.min_requests:
            return self._result(
                Verdict.INCONCLUSIVE,
                f"{v.requests} requests in the window, the guardrail needs {self.min_requests}",
                n_candidate=v.requests,
            )
        value = self.value(v)
        limit = self.above if self.above is not None else self.below
        common = {"estimate": value, "margin": limit, "n_candidate": v.requests}
        label = self.metric if isinstance(self.metric, str) else "value"
        if self.above is not None and value > self.above:
            return self._result(
                Verdict.FAIL,
                f"{self.variant} {label} {value:.4g} > {self.above:.4g}",
                action=Action.ROLLBACK,
                **common,
            )
        if self.below is not None and value < self.below:
            return self._result(
                Verdict.FAIL,
                f"{self.variant} {label} {value:.4g} < {self.below:.4g}",
                action=Action.ROLLBACK,
                **common,
            )
        if math.isnan(value):
            return self._result(Verdict.INCONCLUSIVE, f"{label} has no value yet", **common)
        return self._result(
            Verdict.PASS, f"{self.variant} {label} {value:.4g} within limits", **common
        )


@attrs.frozen(kw_only=True)
class SRM(Check):
    """Sample ratio mismatch: the arms' request counts must match the configured split.

    A sequential (Dirichlet-multinomial) test over the requests of each evaluation; a mismatch
    means the assignment or the logging is broken, so the rollout pauses for a person to look.

    >>> import safeserve as ss
    >>> ss.SRM().alpha
    0.001
    """

    alpha: float = attrs.field(default=0.001, validator=_alpha)
    name: str = attrs.field(default="srm", validator=_name)
    critical: bool = True
    dry_run: bool = False
    comparative = False
    kind = "srm"

    def _new_state(self) -> dict[str, Any]:
        return {"test": None, "weights": None}

    def _judge(self, ctx: _Context, state: Any, seq: Any) -> CheckResult:
        raise TypeError("SRM is judged by the judge, which knows the request counts")

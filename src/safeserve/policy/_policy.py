"""The policy (checks plus how their verdicts combine) and the judge that applies it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs
import numpy as np
import structlog

from .._errors import ConfigError
from ..metrics import MetricsSnapshot, VariantMetrics
from ..stats import SequentialSRM, Verdict, holm
from ..stats._common import check_alpha, check_positive
from ..stats._sequential import (
    _DIRECTION_CODE,
    _proportion_moments,
    _rho2,
    _sequence_core,
    _sequence_scalar,
)
from ._checks import (
    _CS,
    SRM,
    Check,
    ErrorRate,
    Guardrail,
    Latency,
    LatencyQuantile,
    _Context,
)
from ._decision import Action, CheckResult

__all__ = ["Judge", "Judgement", "Policy", "default_checks"]

_log = structlog.get_logger("safeserve")


def default_checks() -> tuple[Check, ...]:
    """The checks used when a rollout is given no policy.

    An error-rate comparison (margin half a percentage point), a latency comparison (10%),
    a p99 guard (25%), and an error-rate guardrail that acts at once (over 20% on at least 20
    requests). :class:`SRM` is not among them: it counts requests, and returning users make
    request counts follow the realized split of a finite user population rather than the
    nominal weights; add it when requests are independent units or users are many.
    """
    return (
        ErrorRate(),
        Latency(),
        LatencyQuantile(),
        Guardrail(metric="error_rate", above=0.2, min_requests=20),
    )


def _checks(value: Any) -> tuple[Check, ...]:
    if value is None:
        return default_checks()
    if isinstance(value, Check | str) or not isinstance(value, Iterable):
        raise ConfigError(
            f"a policy takes a list of checks, e.g. ss.Policy([ss.ErrorRate()]), got {value!r}"
        )
    checks = tuple(value)
    for c in checks:
        if not isinstance(c, Check):
            raise ConfigError(f"a policy takes checks such as ss.ErrorRate(), got {c!r}")
    names = [c.name for c in checks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"check names must be unique, repeated: {dupes!r}")
    return checks


def _alpha(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, float | int) or not 0 < value < 1:
        raise ConfigError(f"{attribute.name} must be in (0, 1), got {value!r}")


@attrs.frozen
class Policy:
    """What a rollout checks, and how the verdicts combine into an action.

    Semantics (compare Argo Rollouts' ``failureLimit`` and Flagger's ``threshold``):

    - each evaluation judges every check; a critical, non-dry-run comparative check that FAILs
      makes the evaluation *failed*;
    - the rollout rolls back when the failed evaluations exceed ``failure_limit`` (Argo's
      ``failureLimit``, default 0: the first failure rolls back; Flagger's ``threshold`` N is
      ``failure_limit=N-1``); with ``consecutive=True`` a clean evaluation resets the count;
    - a breached guardrail rolls back at once, whatever ``failure_limit`` says;
    - a sample ratio mismatch pauses the rollout;
    - the candidate is promoted to the next step when the step's bake time and samples are met
      and every critical, non-dry-run check PASSes;
    - non-critical checks are reported, never acted on; dry-run checks are evaluated and
      logged, never acted on.

    ``alpha`` bounds the chance that a rollout of a candidate no worse than the baseline is
    rolled back by the statistics: it is split evenly over the comparative steps, and within a
    step over the comparative checks (Bonferroni; ``correction="holm"`` rejects more with the
    same guarantee).

    Args:
        checks: The checks; the defaults of :func:`default_checks` when omitted.
        alpha: The policy-level false-rollback rate.
        failure_limit: Failed evaluations tolerated before a rollback.
        consecutive: Count only consecutive failed evaluations.
        correction: ``"bonferroni"`` or ``"holm"``.
        tuning: N*, the total sample size at which the confidence sequences are tightest.

    >>> import safeserve as ss
    >>> p = ss.Policy([ss.ErrorRate(margin=0.01), ss.Latency(margin=0.2)])
    >>> [c.name for c in p.checks]
    ['error_rate', 'latency']
    """

    checks: tuple[Check, ...] = attrs.field(default=None, converter=_checks)
    alpha: float = attrs.field(default=0.05, validator=_alpha, kw_only=True)
    failure_limit: int = attrs.field(default=0, kw_only=True)
    consecutive: bool = attrs.field(default=False, kw_only=True)
    correction: Literal["bonferroni", "holm"] = attrs.field(default="bonferroni", kw_only=True)
    tuning: float = attrs.field(default=5000.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.failure_limit, bool) or not isinstance(self.failure_limit, int):
            raise ConfigError(f"failure_limit must be an int >= 0, got {self.failure_limit!r}")
        if self.failure_limit < 0:
            raise ConfigError(f"failure_limit must be an int >= 0, got {self.failure_limit!r}")
        if self.correction not in ("bonferroni", "holm"):
            raise ConfigError(f"correction must be 'bonferroni' or 'holm', got {self.correction!r}")
        if not isinstance(self.tuning, int | float) or not self.tuning > 0:
            raise ConfigError(f"tuning must be a positive number, got {self.tuning!r}")


Policy.__module__ = "safeserve"


@attrs.frozen(kw_only=True)
class Judgement:
    """The judge's reading of one evaluation, before the rollout turns it into an action."""

    results: tuple[CheckResult, ...]
    failed: bool
    guardrail_breached: bool
    srm_mismatch: bool
    all_pass: bool


#: The event count given to means, which have no minimum-events gate.
_NO_EVENT_GATE = 2**40


def _scalar_inputs(r: _CS) -> tuple[int, float, float, int, float, float, int] | None:
    """Per-arm count, mean and variance and the event count of one request, as the array
    path computes them; None when the array path would reject them (it then raises).

    An empty arm carries no information: its mean and variance enter as 0, and the
    minimum-samples gate keeps the check inconclusive.
    """
    n_c, n_b = float(r.n_c), float(r.n_b)
    if not (n_c.is_integer() and n_b.is_integer() and n_c >= 0 and n_b >= 0):
        return None
    if r.kind == "proportion":
        x_c, x_b = float(r.x_c), float(r.x_b)
        if not (math.isfinite(x_c) and math.isfinite(x_b)):
            return None
        if n_c > 0 and n_b > 0:
            mean_c, var_c, mean_b, var_b, pooled = _proportion_moments(n_c, x_c, n_b, x_b)
            events = int(pooled)
        else:  # as the array path: the empty arm enters as 0, the other with its own p(1 - p)
            mean_c = x_c / n_c if n_c > 0 else 0.0
            mean_b = x_b / n_b if n_b > 0 else 0.0
            var_c, var_b = mean_c * (1 - mean_c), mean_b * (1 - mean_b)
            events = int(min(x_c + x_b, n_c - x_c + n_b - x_b))
    else:
        mean_c, var_c = (float(r.x_c), float(r.v_c)) if n_c > 0 else (0.0, 0.0)
        mean_b, var_b = (float(r.x_b), float(r.v_b)) if n_b > 0 else (0.0, 0.0)
        events = _NO_EVENT_GATE
    if not (
        math.isfinite(mean_c)
        and math.isfinite(mean_b)
        and math.isfinite(var_c)
        and math.isfinite(var_b)
        and var_c >= 0
        and var_b >= 0
        and math.isfinite(r.margin)
        and math.isfinite(r.harm)
        and r.margin >= 0
        and r.harm >= 0
    ):
        return None
    return int(n_c), mean_c, var_c, int(n_b), mean_b, var_b, events


def _minimums(r: _CS) -> tuple[int, int]:
    """A check's own minimum samples per arm (at least 2) and events (proportions only)."""
    events = int(r.min_events) if r.kind == "proportion" else 0
    return max(2, int(r.min_samples)), max(0, events)


class Judge:
    """Evaluates a policy's checks on metric snapshots; holds the sequential tests' state."""

    def __init__(self, policy: Policy, *, baseline: str, candidate: str, comparative_steps: int):
        self.policy = policy
        self.baseline = baseline
        self.candidate = candidate
        self._steps = max(1, comparative_steps)
        self._states: dict[str, Any] = {}
        # Per-policy constants: (policy, number of checks sharing alpha); the mixing variances
        # of the confidence sequences for the (alpha, tuning) last seen.
        self._plan: tuple[Policy | None, int] = (None, 0)
        self._rho2: tuple[tuple[float, float], float, float] = ((math.nan, math.nan), 0.0, 0.0)
        self._last_totals: tuple[int, int, int, int] | None = None
        self.restart()

    def restart(self) -> None:
        """Forget all sequential state (a retry starts from scratch).

        The lifetime totals last read stay: the next evaluation counts the requests and errors
        since then, not since the router started (a retry fed the new rare-error test the
        failed attempt's errors as if served at the new share, and rolled back at once).
        """
        self._states = {c.name: c._new_state() for c in self.policy.checks}

    def _totals(self, totals: Mapping[str, Mapping[str, int]]) -> tuple[int, int, int, int]:
        """Lifetime requests and errors of the candidate and the baseline."""
        c, b = totals.get(self.candidate, {}), totals.get(self.baseline, {})
        return (
            c.get("requests", 0),
            b.get("requests", 0),
            c.get("requests", 0) - c.get("ok", 0),
            b.get("requests", 0) - b.get("ok", 0),
        )

    def skip(self, totals: Mapping[str, Mapping[str, int]]) -> None:
        """Start the next interval at these lifetime totals (each variant's, as returned by
        :meth:`Recorder.reset <safeserve.metrics.Recorder.reset>`): requests served before a
        change of weights are not judged as if served at the new ones."""
        self._last_totals = self._totals(totals)

    def _new_counts(self, snap: MetricsSnapshot) -> tuple[int, int, int, int]:
        """Requests and errors per arm since the last evaluation, from lifetime totals."""
        now = self._totals({v: snap.variant(v).totals for v in (self.candidate, self.baseline)})
        last = self._last_totals or (0, 0, 0, 0)
        # Never backwards: a snapshot taken before a change of weights (another thread's) is
        # older than the mark that change set (see skip), and must not undo it.
        self._last_totals = tuple(max(a, z) for a, z in zip(now, last, strict=True))  # type: ignore[assignment]
        return tuple(max(0, a - z) for a, z in zip(now, last, strict=True))  # type: ignore[return-value]

    def evaluate(
        self,
        snap: MetricsSnapshot,
        *,
        weights: dict[str, float],
        frozen_baseline: VariantMetrics | None = None,
    ) -> Judgement:
        """Judge every check on ``snap`` given the weights in force during the interval.

        With ``frozen_baseline`` (blue/green after the switch) the candidate is compared with
        the baseline's metrics from before the switch: a non-concurrent comparison.
        """
        policy = self.policy
        w_c, w_b = weights.get(self.candidate, 0.0), weights.get(self.baseline, 0.0)
        comparative = (w_c > 0 and w_b > 0) or (frozen_baseline is not None and w_c > 0)
        share = w_c / (w_c + w_b) if w_c + w_b > 0 else 0.0
        req_c, req_b, err_c, err_b = self._new_counts(snap)
        if self._plan[0] is not policy:
            n_stat = sum(1 for c in policy.checks if c.comparative and not c.dry_run and c.critical)
            self._plan = (policy, n_stat)
        alpha_step = policy.alpha / self._steps
        alpha = alpha_step / max(1, self._plan[1])
        ctx = _Context(
            baseline=frozen_baseline or snap.variant(self.baseline),
            candidate=snap.variant(self.candidate),
            comparative=comparative,
            share=share,
            alpha=alpha,
            tuning=policy.tuning,
            new_errors=(err_c, err_b),
        )
        # A check that cannot be judged (its data is not what it needs, its callable raised)
        # is INCONCLUSIVE with the reason, alone: the other checks, the guardrails among them,
        # and the deadline still act.
        broken: dict[str, str] = {}
        # The confidence sequences of all the checks that need one, computed together.
        requests: dict[str, Any] = {}
        for c in policy.checks:
            try:
                requests[c.name] = c._sequence(ctx, self._states[c.name])
            except Exception as exc:
                broken[c.name] = _why(exc)
        batch = {n: r for n, r in requests.items() if r is not None}
        sequences: dict[str, Any] = {}
        if batch and comparative:
            try:
                sequences = dict(zip(batch, self._run(list(batch.values()), ctx), strict=True))
            except Exception:
                for name, r in batch.items():  # one by one, to find the one that raises
                    try:
                        sequences[name] = self._run([r], ctx)[0]
                    except Exception as exc:
                        broken[name] = _why(exc)
        # Blue/green after the switch: the window from before it never grows, so a check it
        # holds too few samples for could never conclude (and the watch never end); judged
        # not comparable, as at a step where one arm gets no traffic.
        short: dict[str, str] = {}
        if frozen_baseline is not None and comparative:
            for c in policy.checks:
                if c.comparative and not isinstance(c, SRM) and c.name not in broken:
                    try:
                        have, need = c._samples_in(frozen_baseline), c._requests_needed()
                    except Exception as exc:
                        broken[c.name] = _why(exc)
                        continue
                    if have < need:
                        short[c.name] = (
                            f"not comparable: the window from before the switch holds {have} "
                            f"samples, and this check needs {need}"
                        )
        results: list[CheckResult] = []
        for check in policy.checks:
            why = broken.get(check.name)
            if why is None:
                try:
                    if isinstance(check, SRM):
                        result = self._srm(check, req_c, req_b, w_c, w_b)
                    elif check.name in short or (check.comparative and not comparative):
                        result = check._result(
                            Verdict.INCONCLUSIVE,
                            short.get(
                                check.name, "not comparable: one arm gets no traffic at this step"
                            ),
                        )
                    else:
                        result = check._judge(
                            ctx, self._states[check.name], sequences.get(check.name)
                        )
                except Exception as exc:
                    why = _why(exc)
            if why is not None:
                result = check._result(Verdict.INCONCLUSIVE, f"could not be judged: {why}")
                _log.warning("safeserve.check_not_judged", check=check.name, error=why)
            results.append(result)
        if policy.correction == "holm":
            results = self._holm(results, alpha_step)
        # One pass over the acting (non-dry-run) results. A critical FAIL fails the evaluation
        # (a guardrail's breaches instead); an SRM FAIL is a mismatch; every critical non-SRM
        # check (only the guardrails when the arms are not comparable) must PASS to promote.
        failed = breached = mismatch = False
        all_pass = True
        for r in results:
            if r.dry_run:
                continue
            kind = r.kind
            if r.verdict is Verdict.FAIL:
                if kind == "srm":
                    mismatch = True
                elif r.critical:
                    if kind == "guardrail":
                        breached = True
                    else:
                        failed = True
            if (
                r.critical
                and kind != "srm"
                and (comparative or kind == "guardrail")
                and r.name not in short
                and r.verdict is not Verdict.PASS
            ):
                all_pass = False
        return Judgement(
            results=tuple(results),
            failed=failed,
            guardrail_breached=breached,
            srm_mismatch=mismatch,
            all_pass=all_pass,
        )

    def _run(self, reqs: list[_CS], ctx: _Context) -> list[Any]:
        """All confidence sequences of one evaluation.

        Proportions enter as means with per-unit variance ``p(1 - p)``, together with their
        event counts for the minimum-events gate (means carry no such gate). Each check keeps
        its own minimum sample and event counts (at least 2 samples per arm: a variance needs
        two).

        With two arms each check is a handful of numbers, so each is computed on Python floats
        by :func:`~safeserve.stats._sequential._sequence_scalar`, the same operations as the
        array code; inputs the array code would reject, and elements where Python would raise
        where numpy returns ``inf`` or ``nan``, go through the array code itself.
        """
        alpha = check_alpha(ctx.alpha)
        tuning = check_positive(ctx.tuning, "tuning")
        key = (alpha, tuning)
        if self._rho2[0] != key:
            self._rho2 = (
                key,
                _rho2(alpha, tuning, one_sided=True),
                _rho2(alpha, tuning, one_sided=False),
            )
        _, rho2_one, rho2_two = self._rho2
        out: list[Any] = []
        slow: list[int] = []
        for i, r in enumerate(reqs):
            args = _scalar_inputs(r)
            code = _DIRECTION_CODE.get(r.direction)
            min_samples, min_events = _minimums(r)
            if args is None or code is None:
                return self._run_arrays(reqs, ctx)
            n_c, mean_c, var_c, n_b, mean_b, var_b, events = args
            seq = _sequence_scalar(
                n_c,
                mean_c,
                var_c,
                n_b,
                mean_b,
                var_b,
                events=events,
                direction_code=code,
                relative=bool(r.relative),
                margin=float(r.margin),
                harm=float(r.harm),
                alpha=alpha,
                rho2_one=rho2_one,
                rho2_two=rho2_two,
                min_samples=min_samples,
                min_events=min_events,
                floor=r.kind != "proportion",
            )
            if seq is None:
                slow.append(i)
            out.append(seq)
        for i in slow:  # one at a time: each with its own minimums
            out[i] = self._run_arrays([reqs[i]], ctx)[0]
        return out

    def _run_arrays(self, reqs: list[_CS], ctx: _Context) -> list[Any]:
        """The confidence sequences of ``reqs`` in one vectorized call.

        The array code takes one minimum sample and event count for the whole call: the
        batch's smallest (:meth:`_run` calls it one check at a time).
        """
        n_c = np.array([r.n_c for r in reqs], dtype=np.float64)
        n_b = np.array([r.n_b for r in reqs], dtype=np.float64)
        x_c = np.array([r.x_c for r in reqs], dtype=np.float64)
        x_b = np.array([r.x_b for r in reqs], dtype=np.float64)
        prop = np.array([r.kind == "proportion" for r in reqs])
        with np.errstate(divide="ignore", invalid="ignore"):
            # An empty arm carries no information (see _scalar_inputs).
            p_c, pv_c, p_b, pv_b, ev = _proportion_moments(n_c, x_c, n_b, x_b)
            p_c = np.where(n_c > 0, p_c, 0.0)
            p_b = np.where(n_b > 0, p_b, 0.0)
            pv_c = np.where(n_c > 0, pv_c, 0.0)
            pv_b = np.where(n_b > 0, pv_b, 0.0)
        m_c = np.where(n_c > 0, x_c, 0.0)
        m_b = np.where(n_b > 0, x_b, 0.0)
        var_c = np.where(prop, pv_c, np.where(n_c > 0, [r.v_c for r in reqs], 0.0))
        var_b = np.where(prop, pv_b, np.where(n_b > 0, [r.v_b for r in reqs], 0.0))
        events = np.where(prop, np.nan_to_num(ev), float(_NO_EVENT_GATE)).astype(np.int64)
        mins = [_minimums(r) for r in reqs]
        min_samples = min(m[0] for m in mins)
        min_events = min(m[1] for m in mins)
        return list(
            _sequence_core(
                n_c,
                np.where(prop, p_c, m_c),
                np.nan_to_num(var_c),
                n_b,
                np.where(prop, p_b, m_b),
                np.nan_to_num(var_b),
                events=events,
                alpha=ctx.alpha,
                direction=[r.direction for r in reqs],
                relative=np.array([r.relative for r in reqs]),
                margin=np.array([r.margin for r in reqs]),
                harm_threshold=np.array([r.harm for r in reqs]),
                tuning=ctx.tuning,
                min_samples=min_samples,
                min_events=int(min_events),
                floor=~prop,
            )
        )

    def _holm(self, results: list[CheckResult], alpha_step: float) -> list[CheckResult]:
        idx = [
            i
            for i, r in enumerate(results)
            if r.p_value is not None
            and math.isfinite(r.p_value)
            and r.critical
            and not r.dry_run
            and r.kind not in ("guardrail", "srm")
        ]
        if not idx:
            return results
        p_values = [float(results[i].p_value or 1.0) for i in idx]
        rejected = holm(p_values, alpha=alpha_step).reject
        out = list(results)
        for i, rej in zip(idx, rejected, strict=True):
            r = out[i]
            if rej and r.verdict is not Verdict.FAIL:
                out[i] = attrs.evolve(
                    r,
                    verdict=Verdict.FAIL,
                    action=Action.ROLLBACK,
                    reason=f"{r.reason}; rejected by Holm at alpha {alpha_step:.3g}",
                )
        return out

    def _srm(self, check: SRM, n_c: int, n_b: int, w_c: float, w_b: float) -> CheckResult:
        state = self._states[check.name]
        if w_c <= 0 or w_b <= 0:
            return check._result(Verdict.INCONCLUSIVE, "one arm gets no traffic: no split to check")
        weights = (w_c, w_b)
        if state["test"] is None:
            state["test"] = SequentialSRM(weights, alpha=check.alpha)
            state["weights"] = weights
        test: SequentialSRM = state["test"]
        if weights != state["weights"]:
            r = test.update([n_c, n_b], weights=weights)
            state["weights"] = weights
        elif n_c or n_b:
            r = test.update([n_c, n_b])  # the weights in force are these already
        else:
            r = test.result()  # nothing new: what ``update([0, 0])`` returns
        verdict = Verdict.FAIL if r.mismatch else Verdict.PASS
        return check._result(
            verdict,
            r.reason,
            estimate=r.counts[0] / max(1, sum(r.counts)),
            p_value=r.p_value,
            margin=check.alpha,
            n_candidate=r.counts[0],
            n_baseline=r.counts[1],
            action=Action.PAUSE if r.mismatch else Action.CONTINUE,
        )

    def reset_srm(self) -> None:
        """Restart the SRM test (after a person resumed a rollout paused by it)."""
        for c in self.policy.checks:
            if isinstance(c, SRM):
                self._states[c.name] = c._new_state()


def _why(exc: BaseException) -> str:
    """An exception as a check's reason."""
    return f"{type(exc).__name__}: {exc}"

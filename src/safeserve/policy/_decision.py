"""Decisions and the per-check evidence behind them, as plain data."""

from __future__ import annotations

import enum
import math
from typing import Any

import attrs

from ..stats import Verdict

__all__ = ["Action", "CheckResult", "Decision"]


class Action(enum.StrEnum):
    """What a decision does to the rollout.

    >>> import safeserve as ss
    >>> ss.Action.ROLLBACK.value
    'rollback'
    """

    #: Keep going: nothing changes.
    CONTINUE = "continue"
    #: Move to the next step (or, from the last step, make the candidate the stable version).
    PROMOTE = "promote"
    #: Send every request to the baseline; the candidate does not serve again until retry.
    ROLLBACK = "rollback"
    #: Freeze the weights; neither promote nor roll back until resumed.
    PAUSE = "pause"
    #: Leave a pause.
    RESUME = "resume"
    #: Stop the rollout by hand: like a rollback, but said by an operator.
    ABORT = "abort"
    #: Start again from the first step after a rollback or an abort.
    RETRY = "retry"


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    return float(x) if math.isfinite(x) else None


@attrs.frozen(kw_only=True)
class CheckResult:
    """One check's verdict at one evaluation.

    Attributes:
        name: The check's name.
        kind: The kind of check (``error_rate``, ``latency``, ``metric``, ``guardrail``...).
        verdict: FAIL, PASS or INCONCLUSIVE.
        critical: A failing critical check counts toward a rollback; a non-critical one is only
            reported.
        dry_run: Evaluated and logged, never acted on.
        estimate: The measured effect (candidate vs baseline), or the guarded value.
        lower: Lower end of the interval, when there is one.
        upper: Upper end of the interval, when there is one.
        p_value: Always-valid p-value against "no harm", when there is one.
        margin: The non-inferiority margin, or the guardrail's limit.
        reason: A sentence a person can read.
        n_candidate: Candidate observations used.
        n_baseline: Baseline observations used.
        action: What this check asks for on its own (``rollback``, ``pause``, ``continue``).
    """

    name: str
    kind: str
    verdict: Verdict
    critical: bool = True
    dry_run: bool = False
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    p_value: float | None = None
    margin: float | None = None
    reason: str = ""
    n_candidate: int = 0
    n_baseline: int = 0
    action: Action = Action.CONTINUE

    @property
    def acts(self) -> bool:
        """True when this result may change the rollout (not a dry run)."""
        return not self.dry_run

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serializable data (non-finite numbers become None)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "critical": self.critical,
            "dry_run": self.dry_run,
            "estimate": _num(self.estimate),
            "lower": _num(self.lower),
            "upper": _num(self.upper),
            "p_value": _num(self.p_value),
            "margin": _num(self.margin),
            "reason": self.reason,
            "n_candidate": self.n_candidate,
            "n_baseline": self.n_baseline,
            "action": self.action.value,
        }


@attrs.frozen(kw_only=True)
class Decision:
    """A rollout decision: what changed, why, and the evidence of every check.

    Attributes:
        rollout: The rollout's name.
        action: What the decision does.
        reason: Why, in a sentence.
        phase_before: The phase before the decision.
        phase_after: The phase after it.
        step_before: The step index before (None when there are no steps).
        step_after: The step index after.
        weights_before: Percent of traffic per variant before.
        weights_after: Percent of traffic per variant after.
        checks: The evidence, one result per check (empty for manual decisions).
        time: When, on the router's clock.
        version: The rollout state's version after the decision.
        manual: Whether an operator asked for it.

    >>> import safeserve as ss
    >>> router = ss.Router(
    ...     {"v1": abs, "v2": abs}, strategy=ss.Canary("v1", "v2"), clock=lambda: 0.0
    ... )
    >>> d = router.rollback(reason="drill")
    >>> d.action.value, d.weights_after, d.reason
    ('rollback', {'v1': 100.0, 'v2': 0.0}, 'drill')
    """

    rollout: str
    action: Action
    reason: str
    phase_before: str
    phase_after: str
    step_before: int | None
    step_after: int | None
    weights_before: dict[str, float]
    weights_after: dict[str, float]
    checks: tuple[CheckResult, ...] = ()
    time: float = 0.0
    version: int = 0
    manual: bool = False

    def check(self, name: str) -> CheckResult:
        """Return the result of the check called ``name``.

        Raises:
            KeyError: when no check has that name.
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serializable data."""
        return {
            "rollout": self.rollout,
            "action": self.action.value,
            "reason": self.reason,
            "phase_before": self.phase_before,
            "phase_after": self.phase_after,
            "step_before": self.step_before,
            "step_after": self.step_after,
            "weights_before": dict(self.weights_before),
            "weights_after": dict(self.weights_after),
            "checks": [c.to_dict() for c in self.checks],
            "time": self.time,
            "version": self.version,
            "manual": self.manual,
        }


for _cls in (Action, CheckResult, Decision):
    _cls.__module__ = "safeserve"
del _cls

"""Canary and fixed-split strategies."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
import numpy as np

from .._allocation import percent_buckets
from .._errors import ConfigError

__all__ = ["Canary", "FixedSplit", "Strategy"]


class Strategy(Protocol):
    """What the router needs from a strategy: the variants and the weights to start from."""

    @property
    def baseline(self) -> str: ...

    @property
    def candidates(self) -> tuple[str, ...]: ...

    def initial_weights(self) -> dict[str, float]: ...


def _check_name(role: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{role} must be a non-empty str naming a model, got {value!r}")


def _check_percent(role: str, value: object, *, zero_ok: bool) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{role} must be a number in [0, 100], got {value!r}")
    v = float(value)
    low_ok = v >= 0.0 if zero_ok else v > 0.0
    if not (math.isfinite(v) and low_ok and v <= 100.0):
        bounds = "[0, 100]" if zero_ok else "(0, 100]"
        raise ConfigError(f"{role} must be a number in {bounds}, got {value!r}")
    if v > 0.0 and percent_buckets(v) == 0:
        # It would round to no bucket: the model would get no traffic at all.
        least = "0 or at least 0.005" if zero_ok else "at least 0.005"
        raise ConfigError(
            f"{role} must be {least}: it rounds to no bucket (one is 0.01%), got {value!r}"
        )
    return v


def _weights(value: Any) -> dict[str, float]:
    try:
        return dict(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"weights must be a mapping of candidate names to percents, got {value!r}"
        ) from None


def _validate_steps(
    instance: Canary, attribute: attrs.Attribute[tuple[float, ...]], steps: tuple[float, ...]
) -> None:
    if not steps:
        raise ConfigError("steps must not be empty")
    values = [_check_percent("each step", s, zero_ok=False) for s in steps]
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(f"steps must be strictly increasing, got {steps!r}")
    if values[-1] != 100.0:
        raise ConfigError(f"steps must end at 100 (the full rollout), got {steps!r}")


def _positive(role: str, value: object, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{role} must be a number, got {value!r}")
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        raise ConfigError(
            f"{role} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )


def _count(role: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{role} must be an int >= {minimum}, got {value!r}")


def _check_phase(
    *,
    min_duration: float,
    deadline: float | None,
    on_deadline: str,
    evaluate_every: int,
    evaluate_interval: float,
    automatic: bool = True,
) -> None:
    """The options every timed phase shares: bake time, deadline and evaluation cadence
    (``automatic``: the phase acts on its deadline by itself)."""
    _positive("min_duration", min_duration, allow_zero=True)
    if on_deadline not in ("rollback", "pause"):
        raise ConfigError(f"on_deadline must be 'rollback' or 'pause', got {on_deadline!r}")
    if deadline is not None:
        _positive("deadline", deadline)
        if automatic and on_deadline == "rollback" and deadline <= min_duration:
            # Every step would run into its deadline before it could be promoted, and roll a
            # good candidate back.
            raise ConfigError(
                f"deadline ({deadline!r}) must be longer than min_duration ({min_duration!r}) "
                "when on_deadline='rollback'; pass deadline=None for no deadline"
            )
    _count("evaluate_every", evaluate_every, 1)
    _positive("evaluate_interval", evaluate_interval)


@attrs.frozen
class Canary:
    """Send a growing share of users to a candidate, by a deterministic hash of their key.

    The candidate starts at the first step. After every ``evaluate_every`` requests or
    ``evaluate_interval`` seconds the policy judges it: while every critical check passes and
    the step has baked (``min_duration`` seconds and ``min_samples`` requests per arm) it moves
    to the next step; at 100% it becomes the new stable version. The moment a check fails, it
    goes back to 0% in one step and stays there until :meth:`Router.retry`. Users keep their
    variant while the weight grows: the 5% cohort is inside the 25% cohort.

    Args:
        baseline: The stable model's name in the router's models.
        candidate: The new model's name.
        steps: Traffic percentages, strictly increasing, ending at 100.
        weight: Pin the candidate at this percentage instead (manual mode: the policy judges
            on :meth:`Router.evaluate` but never acts; use the router's controls).
        auto: Whether the rollout acts on the verdicts by itself (default: True unless
            ``weight`` is given).
        min_duration: Seconds each step bakes before it may be promoted.
        min_samples: Requests per arm each step needs before it may be promoted.
        deadline: Seconds after which a step without a verdict takes ``on_deadline``
            (None: no deadline).
        on_deadline: ``"rollback"`` (default) or ``"pause"`` (after ``resume()`` the
            deadline counts afresh).
        evaluate_every: Requests between two automatic evaluations (rows of batches count
            one each).
        evaluate_interval: Seconds between two automatic evaluations (checked as requests
            arrive).
        drift_confirmations: With a drift monitor on the router, consecutive drifted
            evaluations that pause the rollout, counted apart for a drift of the baseline's
            rows (the traffic) and of the candidate's, each only once that arm's window holds
            rows the previous confirmation did not judge (one evaluation alone flags drift
            with probability about ``alpha`` even when nothing changed, and evaluations of
            overlapping windows agree by construction).
        drift_resume_after: Seconds of clear evaluations after which a rollout paused by drift
            resumes by itself (None: only :meth:`Router.resume`).

    >>> import safeserve as ss
    >>> ss.Canary(baseline="v1", candidate="v2").initial_weights()
    {'v2': 5.0}
    >>> ss.Canary(baseline="v1", candidate="v2", weight=0).initial_weights()
    {'v2': 0.0}
    """

    baseline: str
    candidate: str
    steps: tuple[float, ...] = attrs.field(
        default=(5.0, 25.0, 50.0, 100.0), converter=tuple, validator=_validate_steps
    )
    weight: float | None = attrs.field(default=None, kw_only=True)
    auto: bool | None = attrs.field(default=None, kw_only=True)
    min_duration: float = attrs.field(default=60.0, kw_only=True)
    min_samples: int = attrs.field(default=500, kw_only=True)
    deadline: float | None = attrs.field(default=3600.0, kw_only=True)
    on_deadline: str = attrs.field(default="rollback", kw_only=True)
    evaluate_every: int = attrs.field(default=10_000, kw_only=True)
    evaluate_interval: float = attrs.field(default=10.0, kw_only=True)
    drift_confirmations: int = attrs.field(default=2, kw_only=True)
    drift_resume_after: float | None = attrs.field(default=600.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_name("baseline", self.baseline)
        _check_name("candidate", self.candidate)
        if self.candidate == self.baseline:
            raise ConfigError(
                f"candidate {self.candidate!r} must differ from baseline {self.baseline!r}"
            )
        if self.weight is not None:
            _check_percent("weight", self.weight, zero_ok=True)
        if self.auto is not None and not isinstance(self.auto, bool):
            raise ConfigError(f"auto must be True, False or None, got {self.auto!r}")
        _count("min_samples", self.min_samples, 0)
        _check_phase(
            min_duration=self.min_duration,
            deadline=self.deadline,
            on_deadline=self.on_deadline,
            evaluate_every=self.evaluate_every,
            evaluate_interval=self.evaluate_interval,
            automatic=self.automatic,
        )
        _count("drift_confirmations", self.drift_confirmations, 1)
        if self.drift_resume_after is not None:
            _positive("drift_resume_after", self.drift_resume_after, allow_zero=True)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidate, as a one-element tuple."""
        return (self.candidate,)

    @property
    def automatic(self) -> bool:
        """Whether the rollout acts on its verdicts by itself."""
        return self.weight is None if self.auto is None else self.auto

    def initial_weights(self) -> dict[str, float]:
        """The weights the router starts with."""
        start = self.steps[0] if self.weight is None else self.weight
        return {self.candidate: float(start)}


Canary.__module__ = "safeserve"


@attrs.frozen
class FixedSplit:
    """A fixed split between a baseline and any number of candidates (weights in percent).

    Each candidate has its own lane of buckets, so changing one candidate's weight never moves
    the users of another. Weights change only through :meth:`Router.set_weights`.

    >>> import safeserve as ss
    >>> ss.FixedSplit(baseline="a", weights={"b": 10, "c": 10}).candidates
    ('b', 'c')
    """

    baseline: str
    weights: Mapping[str, float] = attrs.field(converter=_weights)

    def __attrs_post_init__(self) -> None:
        _check_name("baseline", self.baseline)
        if not self.weights:
            raise ConfigError("FixedSplit needs at least one candidate in weights")
        for name, w in self.weights.items():
            _check_name("candidate", name)
            if name == self.baseline:
                raise ConfigError(f"baseline {name!r} must not appear in weights")
            _check_percent(f"weight of {name!r}", w, zero_ok=True)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidates, in lane order."""
        return tuple(self.weights)

    def initial_weights(self) -> dict[str, float]:
        """The weights the router starts with."""
        return {n: float(w) for n, w in self.weights.items()}


FixedSplit.__module__ = "safeserve"

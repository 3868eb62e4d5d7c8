"""Canary and fixed-split strategies."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Protocol

import attrs

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
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{role} must be a number in [0, 100], got {value!r}")
    v = float(value)
    low_ok = v >= 0.0 if zero_ok else v > 0.0
    if not (math.isfinite(v) and low_ok and v <= 100.0):
        bounds = "[0, 100]" if zero_ok else "(0, 100]"
        raise ConfigError(f"{role} must be a number in {bounds}, got {value!r}")
    return v


def _validate_steps(
    instance: Canary, attribute: attrs.Attribute[tuple[float, ...]], steps: tuple[float, ...]
) -> None:
    if not steps:
        raise ConfigError("steps must not be empty")
    values = [_check_percent("each step", s, zero_ok=False) for s in steps]
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(f"steps must be strictly increasing, got {steps!r}")


@attrs.frozen
class Canary:
    """Send a growing share of users to a candidate, by a deterministic hash of their key.

    The candidate starts at ``weight`` percent (by default the first step). Each user keeps
    their variant while the weight grows: the 5% cohort is inside the 25% cohort.

    Args:
        baseline: The stable model's name in the router's models.
        candidate: The new model's name.
        steps: Traffic percentages the rollout moves through.
        weight: The starting percentage, if not the first step.

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

    def __attrs_post_init__(self) -> None:
        _check_name("baseline", self.baseline)
        _check_name("candidate", self.candidate)
        if self.candidate == self.baseline:
            raise ConfigError(
                f"candidate {self.candidate!r} must differ from baseline {self.baseline!r}"
            )
        if self.weight is not None:
            _check_percent("weight", self.weight, zero_ok=True)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidate, as a one-element tuple."""
        return (self.candidate,)

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
    weights: Mapping[str, float] = attrs.field(converter=dict)

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

"""Shared pieces for the rollout tests: a fake clock and models with controllable faults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import safeserve as ss


class Clock:
    """A settable clock: the models advance it by their latency."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Model:
    """A model with a base latency, an error rate and a conversion rate, all adjustable."""

    def __init__(
        self,
        clock: Clock,
        *,
        seed: int,
        latency: float = 0.010,
        error_rate: float = 0.01,
        conversion: float = 0.10,
    ) -> None:
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.latency = latency
        self.error_rate = error_rate
        self.conversion = conversion
        self.calls = 0

    def __call__(self, x: Any) -> float:
        self.calls += 1
        self.clock.t += self.latency * float(self.rng.lognormal(0.0, 0.25))
        if self.rng.random() < self.error_rate:
            raise RuntimeError("model failure")
        return self.conversion


def drive(
    router: ss.Router,
    clock: Clock,
    *,
    requests: int,
    gap: float = 0.05,
    stop: Callable[[ss.Router], bool] | None = None,
    outcome_delay: float | None = None,
    seed: int = 0,
) -> int:
    """Send ``requests`` keyed requests (users repeat), one every ``gap`` simulated seconds.

    Baseline exceptions propagate to the caller as they would in a service; the driver
    swallows them like a web framework returning a 500. With ``outcome_delay``, each answer
    (a conversion probability) becomes a 0/1 "converted" outcome recorded that many simulated
    seconds later. Returns the number of requests sent.
    """
    rng = np.random.default_rng(seed)
    pending: list[tuple[float, int, float]] = []
    users = rng.integers(0, 50_000, size=requests)
    for i in range(requests):
        clock.t += gap
        try:
            r = router.route(None, key=int(users[i]))
        except RuntimeError:
            r = None
        if outcome_delay is not None:
            if r is not None:
                pending.append(
                    (clock.t + outcome_delay, r.request_id, float(rng.random() < r.value))
                )
            while pending and pending[0][0] <= clock.t:
                _, rid, value = pending.pop(0)
                router.record_outcome(rid, "converted", value)
        if stop is not None and i % 100 == 0 and stop(router):
            return i + 1
    return requests


def ended(router: ss.Router) -> bool:
    """True once the rollout has promoted or rolled back."""
    return router.status().phase in (ss.Phase.PROMOTED, ss.Phase.ROLLED_BACK)


@pytest.fixture
def clock() -> Clock:
    return Clock()

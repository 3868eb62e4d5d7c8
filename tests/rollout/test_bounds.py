"""Anytime-valid binomial bounds: scipy oracle at the edges, and coverage over every look."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safeserve.policy._bounds import binomial_cs


def log_bf(x: int, n: int, p: float) -> float:
    """The uniform-mixture Bayes factor against p, written with scipy's distributions."""
    return float(stats.betabinom.logpmf(x, n, 1, 1) - stats.binom.logpmf(x, n, p))


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=10**6),
    frac=st.floats(min_value=0.0, max_value=1.0),
    alpha=st.sampled_from([0.05, 0.01, 0.001]),
)
def test_edges_are_where_the_bayes_factor_reaches_one_over_alpha(
    n: int, frac: float, alpha: float
) -> None:
    """At each interior edge the mixture Bayes factor (scipy's betabinom over binom) is 1/alpha."""
    x = round(frac * n)
    lo, hi = binomial_cs(x, n, alpha)
    assert 0.0 <= lo <= x / n <= hi <= 1.0
    target = math.log(1 / alpha)
    for edge, outward in ((lo, 0.0), (hi, 1.0)):
        if not 0.0 < edge < 1.0 or log_bf(x, n, edge) < -700:
            continue
        if log_bf(x, n, edge) == pytest.approx(target, abs=1e-6):
            continue
        # Where the Bayes factor is steeper than float resolution (p within ~1e-11 of 0 or
        # 1), the edge must still be within a few floats of the boundary: 8 ulps outward
        # is outside.
        beyond = edge
        for _ in range(8):
            beyond = float(np.nextafter(beyond, outward))
        assert log_bf(x, n, edge) <= target + 1e-6
        assert log_bf(x, n, beyond) >= target - 1e-3


def test_coverage_holds_at_every_look() -> None:
    """In 300 streams of 5,000 Bernoulli(0.02) draws, checked after every 50, the bound
    excludes the true p at some look in at most alpha of the streams (plus simulation slack)."""
    rng = np.random.default_rng(4)
    p, alpha, misses = 0.02, 0.05, 0
    for _ in range(300):
        xs = np.cumsum(rng.random(5000) < p)
        for n in range(50, 5001, 50):
            lo, hi = binomial_cs(int(xs[n - 1]), n, alpha)
            if not lo <= p <= hi:
                misses += 1
                break
    assert misses / 300 <= alpha + 2.6 * math.sqrt(alpha * (1 - alpha) / 300)


def test_degenerate_inputs() -> None:
    """No data gives [0, 1]; all or no events pin one end."""
    assert binomial_cs(0, 0, 0.05) == (0.0, 1.0)
    assert binomial_cs(0, 100, 0.05)[0] == 0.0
    assert binomial_cs(100, 100, 0.05)[1] == 1.0

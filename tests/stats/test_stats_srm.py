"""Sample ratio mismatch: chi-square against scipy, the sequential test's batch term against
scipy's Dirichlet-multinomial, and A/A simulations with a look after every batch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safeserve._errors import ConfigError, DataError
from safeserve.stats import SequentialSRM, srm_chisquare


def sim_limit(alpha: float, runs: int) -> float:
    """Upper end of the 95% binomial simulation interval around a true rate alpha."""
    return float(stats.binom.ppf(0.975, runs, alpha)) / runs


@settings(max_examples=150, deadline=None)
@given(
    counts=st.lists(st.integers(0, 10_000), min_size=2, max_size=5),
    raw=st.lists(st.floats(0.05, 20), min_size=5, max_size=5),
)
def test_chisquare_matches_scipy(counts: list[int], raw: list[float]) -> None:
    """Statistic and p-value equal scipy.stats.chisquare(counts, w / w.sum() * N)."""
    x = np.asarray(counts)
    w = np.asarray(raw[: x.size])
    if x.sum() == 0:
        return
    r = srm_chisquare(x, w)
    o = stats.chisquare(x, w / w.sum() * x.sum())
    assert math.isclose(r.statistic, float(o.statistic), rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(r.p_value, float(o.pvalue), rel_tol=1e-9, abs_tol=1e-12)
    expected = w / w.sum() * x.sum()
    assert r.mismatch == (expected.min() >= 8 and float(o.pvalue) < 0.001)


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(st.lists(st.integers(0, 500), min_size=3, max_size=3), min_size=1, max_size=4),
    raw=st.lists(st.floats(0.1, 10), min_size=3, max_size=3),
    c=st.floats(1, 20_000),
)
def test_sequential_batch_terms_match_scipy(
    batches: list[list[int]], raw: list[float], c: float
) -> None:
    """log BF accumulates dirichlet_multinomial.logpmf(x, a, n) - multinomial.logpmf(x, n, w)
    per batch, with a += x after each batch."""
    w = np.asarray(raw) / sum(raw)
    srm = SequentialSRM(raw, concentration=c)
    a = c * w
    expected = 0.0
    for x in batches:
        n = sum(x)
        r = srm.update(x)
        if n:
            expected += float(
                stats.dirichlet_multinomial.logpmf(x, a, n) - stats.multinomial.logpmf(x, n, w)
            )
            a = a + np.asarray(x)
        assert math.isclose(r.statistic, expected, rel_tol=1e-9, abs_tol=1e-8)
    assert r.counts == tuple(int(v) for v in np.sum(batches, axis=0))


def test_aa_sequential_stays_below_alpha_where_repeated_chisquare_does_not() -> None:
    """A/A, 400 runs, 40 batches of 500 units on a 20/80 split: the sequential test's false
    alarm rate at alpha 0.05 stays within the simulation interval; repeating the chi-square test
    at the same looks exceeds it."""
    rng = np.random.default_rng(12)
    runs, looks, alpha = 400, 40, 0.05
    ours = naive = 0
    for _ in range(runs):
        srm = SequentialSRM([0.2, 0.8], alpha=alpha)
        total = np.zeros(2, dtype=np.int64)
        flagged_seq = flagged_chi = False
        for _ in range(looks):
            x = rng.multinomial(500, [0.2, 0.8])
            total += x
            flagged_seq |= srm.update(x).mismatch
            flagged_chi |= srm_chisquare(total, [0.2, 0.8], alpha=alpha).mismatch
        ours += flagged_seq
        naive += flagged_chi
    limit = sim_limit(alpha, runs)
    assert ours / runs <= limit
    assert naive / runs > limit


@pytest.mark.slow
def test_aa_sequential_full() -> None:
    """A/A, 2,000 runs, 100 batches of random size at alpha 0.01: within the simulation interval."""
    rng = np.random.default_rng(13)
    runs, alpha = 2000, 0.01
    flagged = 0
    for _ in range(runs):
        srm = SequentialSRM([1, 1, 2], alpha=alpha)
        hit = False
        for _ in range(100):
            hit |= srm.update(
                rng.multinomial(int(rng.integers(1, 400)), [0.25, 0.25, 0.5])
            ).mismatch
        flagged += hit
    assert flagged / runs <= sim_limit(alpha, runs)


def test_sequential_detects_a_broken_split() -> None:
    """A 52/48 split sold as 50/50 is flagged within 100,000 units."""
    rng = np.random.default_rng(14)
    srm = SequentialSRM([0.5, 0.5])
    for _ in range(100):
        r = srm.update(rng.multinomial(1000, [0.52, 0.48]))
    assert r.mismatch
    assert r.p_value < 0.001


def test_new_weights_restart_the_prior_and_keep_the_evidence() -> None:
    """After a step change the expected split is the new one and past evidence is kept."""
    srm = SequentialSRM([0.05, 0.95])
    before = srm.update([50, 950])
    after = srm.update([250, 750], weights=[0.25, 0.75])
    assert after.expected == (0.25, 0.75)
    assert not after.mismatch
    assert after.counts == (300, 1700)
    assert after.p_value <= before.p_value


def test_bad_counts_and_weights_are_typed_errors_and_leave_state() -> None:
    """Wrong arm count, negative counts are DataErrors; zero weights are ConfigErrors."""
    srm = SequentialSRM([1, 1])
    first = srm.update([10, 12])
    with pytest.raises(DataError, match="2 arms"):
        srm.update([1, 2, 3])
    with pytest.raises(DataError, match="-1"):
        srm.update([-1, 2])
    with pytest.raises(ConfigError, match="> 0"):
        srm.update([1, 2], weights=[0, 1])
    assert srm.result() == first
    with pytest.raises(ConfigError, match="at least 2 arms"):
        SequentialSRM([1.0])


def test_chisquare_waits_for_expected_counts() -> None:
    """No flag until every arm expects >= 8, however lopsided the counts."""
    r = srm_chisquare([14, 0], [1, 1])
    assert not r.mismatch
    assert "expect >= 8" in r.reason


def test_state_round_trips_through_json() -> None:
    """to_state -> JSON -> from_state continues identically."""
    srm = SequentialSRM([1, 2])
    srm.update([40, 70])
    copy = SequentialSRM.from_state(json.loads(json.dumps(srm.to_state())))
    assert copy.update([5, 9]) == srm.update([5, 9])

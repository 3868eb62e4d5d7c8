"""Rare-error tests: the Beta-binomial Bayes factor against scipy, and the sequential
likelihood-ratio mixture under changing traffic shares, by simulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safeserve._errors import ConfigError, DataError
from safeserve.stats import RareErrorTest, Verdict, beta_binomial_bf


def sim_limit(alpha: float, runs: int) -> float:
    """Upper end of the 95% binomial simulation interval around a true rate alpha."""
    return float(stats.binom.ppf(0.975, runs, alpha)) / runs


@settings(max_examples=200, deadline=None)
@given(
    s=st.integers(0, 2000),
    f=st.integers(0, 2000),
    pi=st.floats(0.01, 0.99),
    c=st.floats(0.5, 200),
)
def test_beta_binomial_bf_matches_scipy(s: int, f: int, pi: float, c: float) -> None:
    """log BF = betabinom.logpmf(s, s+f, c*pi, c*(1-pi)) - binom.logpmf(s, s+f, pi)."""
    r = beta_binomial_bf(s, f, pi, concentration=c)
    oracle = stats.betabinom.logpmf(s, s + f, c * pi, c * (1 - pi)) - stats.binom.logpmf(
        s, s + f, pi
    )
    assert math.isclose(r.log_bayes_factor, float(oracle), rel_tol=1e-9, abs_tol=1e-9)
    assert r.p_value == pytest.approx(min(1.0, math.exp(-r.log_bayes_factor)))


def test_beta_binomial_fails_only_on_the_harm_side() -> None:
    """A large BF from too few candidate errors is not a FAIL (the candidate errs less)."""
    more = beta_binomial_bf(40, 60, 0.1, alpha=0.01)
    less = beta_binomial_bf(0, 200, 0.1, alpha=0.01)
    assert more.verdict is Verdict.FAIL
    assert less.p_value <= 0.01
    assert less.verdict is Verdict.INCONCLUSIVE


def _run_aa(
    rng: np.random.Generator, rate_c: float, rate_b: float, shares: list[float], batch: int
) -> tuple[RareErrorTest, list[tuple[int, int, float]]]:
    t = RareErrorTest(alpha=0.05)
    history = []
    for share in shares:
        n_c = rng.binomial(batch, share)
        s = rng.binomial(n_c, rate_c)
        f = rng.binomial(batch - n_c, rate_b)
        history.append((int(s), int(f), share))
        t.update(s, f, candidate_share=share)
    return t, history


SHARES = [0.05] * 10 + [0.25] * 10 + [0.5] * 10


def test_aa_with_changing_share_stays_below_alpha() -> None:
    """A/A, 400 runs, share 5% -> 25% -> 50% with a look after every batch: the sequential
    test's false FAIL rate stays within the simulation interval of alpha = 0.05, while a
    Beta-binomial test that keeps the first step's share (invalid once it changes) exceeds it."""
    rng = np.random.default_rng(99)
    runs = 400
    ours = naive = 0
    for _ in range(runs):
        t, history = _run_aa(rng, 0.005, 0.005, SHARES, batch=4000)
        ours += t.result().verdict is Verdict.FAIL
        s = f = 0
        flagged = False
        for bs, bf, _ in history:
            s, f = s + bs, f + bf
            flagged |= beta_binomial_bf(s, f, SHARES[0]).verdict is Verdict.FAIL
        naive += flagged
    limit = sim_limit(0.05, runs)
    assert ours / runs <= limit
    assert naive / runs > limit


@pytest.mark.slow
def test_aa_with_changing_share_full() -> None:
    """A/A, 2,000 runs at alpha 0.01 with changing shares: false FAIL rate within the
    simulation interval of alpha."""
    rng = np.random.default_rng(3)
    runs = 2000
    fails = 0
    for _ in range(runs):
        t = RareErrorTest(alpha=0.01)
        for share in SHARES:
            n_c = rng.binomial(4000, share)
            t.update(
                rng.binomial(n_c, 0.002), rng.binomial(4000 - n_c, 0.002), candidate_share=share
            )
        fails += t.result().verdict is Verdict.FAIL
    assert fails / runs <= sim_limit(0.01, runs)


def test_tripled_error_rate_is_detected() -> None:
    """A 3x error rate at a 10% share is caught in >= 90% of 200 runs within 30 batches."""
    rng = np.random.default_rng(1)
    runs = 200
    caught = sum(
        _run_aa(rng, 0.003, 0.001, [0.1] * 30, batch=10_000)[0].result().verdict is Verdict.FAIL
        for _ in range(runs)
    )
    assert caught / runs >= 0.9


def test_margin_gives_pass_and_keeps_false_pass_rate() -> None:
    """With margin_ratio 2, equal rates PASS in >= 90% of runs; a candidate at exactly 2x the
    baseline rate PASSes in at most the simulation interval of alpha."""
    rng = np.random.default_rng(2)
    runs = 300
    good = bad = 0
    for _ in range(runs):
        for rate_c, counter in ((0.01, "good"), (0.02, "bad")):
            t = RareErrorTest(alpha=0.05, margin_ratio=2.0)
            for _ in range(20):
                n_c = rng.binomial(5000, 0.5)
                t.update(
                    rng.binomial(n_c, rate_c), rng.binomial(5000 - n_c, 0.01), candidate_share=0.5
                )
            passed = t.result().verdict is Verdict.PASS
            if counter == "good":
                good += passed
            else:
                bad += passed
    assert good / runs >= 0.9
    assert bad / runs <= sim_limit(0.05, runs)


def test_bad_update_leaves_state_unchanged() -> None:
    """A bad share or count raises DataError naming it and the state stays as it was."""
    t = RareErrorTest()
    before = t.update(3, 10, candidate_share=0.2)
    with pytest.raises(DataError, match=r"1\.5"):
        t.update(1, 1, candidate_share=1.5)
    with pytest.raises(DataError, match="-1"):
        t.update(-1, 1, candidate_share=0.2)
    with pytest.raises(DataError, match=r"2\.5"):
        t.update(2.5, 1, candidate_share=0.2)
    assert t.result() == before


def test_state_round_trips_through_json() -> None:
    """to_state -> JSON -> from_state gives the same result and the same future."""
    t = RareErrorTest(margin_ratio=1.5)
    t.update(4, 30, candidate_share=0.1)
    u = RareErrorTest.from_state(json.loads(json.dumps(t.to_state())))
    assert u.result() == t.result()
    assert u.update(5, 5, candidate_share=0.3) == t.update(5, 5, candidate_share=0.3)
    with pytest.raises(DataError, match="malformed"):
        RareErrorTest.from_state({"alpha": 0.05})


def test_bad_options_are_config_errors() -> None:
    """Ratios <= 1, a margin <= 1 or a null ratio < 1 are ConfigErrors naming the value."""
    with pytest.raises(ConfigError, match=r"\[0.5\]"):
        RareErrorTest(ratios=[0.5])
    with pytest.raises(ConfigError, match=r"0\.9"):
        RareErrorTest(margin_ratio=0.9)
    with pytest.raises(ConfigError, match=r"0\.5"):
        RareErrorTest(null_ratio=0.5)

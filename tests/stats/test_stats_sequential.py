"""Normal-mixture confidence sequences: decisions, p-values, input checks and A/A simulations."""

from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from safeserve._errors import ConfigError, DataError
from safeserve.stats import (
    Direction,
    SequenceResult,
    Verdict,
    always_valid_p,
    mean_difference_cs,
    mean_difference_cs_many,
    proportion_difference_cs,
    proportion_difference_cs_many,
)

BATCH = 100


def cumulative_moments(
    rng: np.random.Generator, runs: int, looks: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n, running mean and running variance (ddof=1) after each batch, for lognormal data."""
    sums = np.empty((runs, looks))
    squares = np.empty((runs, looks))
    for k in range(looks):
        x = scale * rng.lognormal(0.0, 1.0, size=(runs, BATCH))
        sums[:, k] = x.sum(axis=1)
        squares[:, k] = (x * x).sum(axis=1)
    n = np.arange(1, looks + 1) * BATCH * np.ones((runs, 1))
    s, s2 = np.cumsum(sums, axis=1), np.cumsum(squares, axis=1)
    mean = s / n
    var = (s2 - s * mean) / (n - 1)
    return n, mean, var


def sim_limit(alpha: float, runs: int) -> float:
    """Upper end of the 95% binomial simulation interval around a true rate alpha."""
    return float(stats.binom.ppf(0.975, runs, alpha)) / runs


def aa_fail_rate(runs: int, looks: int, alpha: float, seed: int, **options: object) -> float:
    rng = np.random.default_rng(seed)
    n, mc, vc = cumulative_moments(rng, runs, looks)
    _, mb, vb = cumulative_moments(rng, runs, looks)
    res = mean_difference_cs_many(
        n.ravel(), mc.ravel(), vc.ravel(), n.ravel(), mb.ravel(), vb.ravel(), alpha=alpha, **options
    )
    fails = (res.verdict_code == 2).reshape(runs, looks)
    return float(fails.any(axis=1).mean())


def test_aa_after_every_batch_stays_below_alpha_where_a_z_test_does_not() -> None:
    """A/A, 300 runs, a look after every 100 per arm up to 6,000: the sequence's false-FAIL
    rate stays within the simulation interval of alpha, while a one-sided z test at the same
    looks (a fixed boundary) exceeds it, so this test would catch a wrong boundary."""
    runs, looks, alpha = 300, 60, 0.05
    rng = np.random.default_rng(20240601)
    n, mc, vc = cumulative_moments(rng, runs, looks)
    _, mb, vb = cumulative_moments(rng, runs, looks)
    res = mean_difference_cs_many(
        n.ravel(), mc.ravel(), vc.ravel(), n.ravel(), mb.ravel(), vb.ravel(), alpha=alpha
    )
    ours = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    z = (mc - mb) / np.sqrt(vc / n + vb / n)
    naive = float((z > stats.norm.isf(alpha)).any(axis=1).mean())
    limit = sim_limit(alpha, runs)
    assert ours <= limit
    assert naive > limit


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize(
    ("direction", "relative"),
    [("higher_is_worse", False), ("lower_is_worse", True), ("either", False), ("either", True)],
)
def test_aa_means_full(alpha: float, direction: str, relative: bool) -> None:
    """A/A, 1,000 runs, a look after every 100 per arm up to 20,000: false FAIL rate <= alpha
    within its 95% simulation interval, for each direction, absolute and relative."""
    rate = aa_fail_rate(1000, 200, alpha, seed=7, direction=direction, relative=relative)
    assert rate <= sim_limit(alpha, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("relative", [False, True])
def test_aa_proportions_full(alpha: float, relative: bool) -> None:
    """A/A on a 1% error rate, 1,000 runs, looks every 100 per arm up to 20,000: false FAIL
    rate <= alpha within its simulation interval."""
    runs, looks = 1000, 200
    rng = np.random.default_rng(11)
    ec = np.cumsum(rng.binomial(BATCH, 0.01, size=(runs, looks)), axis=1)
    eb = np.cumsum(rng.binomial(BATCH, 0.01, size=(runs, looks)), axis=1)
    n = np.arange(1, looks + 1) * BATCH * np.ones((runs, 1))
    res = proportion_difference_cs_many(
        n.ravel(), ec.ravel(), n.ravel(), eb.ravel(), alpha=alpha, relative=relative
    )
    rate = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert rate <= sim_limit(alpha, runs)


def split_moments(
    rng: np.random.Generator, draw: object, runs: int, looks: int, share: float, batch: int
) -> tuple[np.ndarray, ...]:
    """Per look: n, running mean and running variance (ddof=1) of both arms, where each batch
    of ``batch`` requests sends ``share`` of them to the candidate; ``draw(size)`` samples."""
    out = []
    for k in (round(batch * share), batch - round(batch * share)):
        x = draw((runs, looks, k))  # type: ignore[operator]
        s, s2 = np.cumsum(x.sum(axis=2), axis=1), np.cumsum((x * x).sum(axis=2), axis=1)
        n = np.arange(1, looks + 1) * k * np.ones((runs, 1))
        mean = s / n
        out += [n, mean, (s2 - s * mean) / (n - 1)]
    return tuple(out)


@pytest.mark.parametrize("relative", [False, True])
def test_aa_rare_conversions_in_a_5_percent_canary_stay_below_alpha(relative: bool) -> None:
    """A/A, 1% conversion (lower is worse), 5% of traffic to the candidate, a look after every
    400 requests up to 40,000: false FAILs stay within the simulation interval of alpha. With
    each arm's own p(1 - p) the small arm looked exact when it had no conversions, and about
    a quarter of runs failed."""
    runs, looks, alpha = 400, 100, 0.05
    rng = np.random.default_rng(5)
    nc, mc, _, nb, mb, _ = split_moments(
        rng, lambda size: rng.random(size) < 0.01, runs, looks, 0.05, 400
    )
    res = proportion_difference_cs_many(
        nc.ravel(),
        np.rint(mc * nc).ravel(),
        nb.ravel(),
        np.rint(mb * nb).ravel(),
        alpha=alpha,
        direction="lower_is_worse",
        relative=relative,
    )
    rate = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert rate <= sim_limit(alpha, runs)


def test_aa_skewed_means_in_a_5_percent_canary_stay_below_alpha() -> None:
    """A/A on Pareto-tailed values (index 1.5, lower is worse), 5% of traffic to the candidate,
    a look after every 400 requests: false FAILs stay within the simulation interval of alpha
    (a small arm's own variance is low exactly when its mean is: a quarter of runs failed)."""
    runs, looks, alpha = 400, 100, 0.05
    rng = np.random.default_rng(6)
    nc, mc, vc, nb, mb, vb = split_moments(
        rng, lambda size: rng.pareto(1.5, size) + 1.0, runs, looks, 0.05, 400
    )
    res = mean_difference_cs_many(
        nc.ravel(),
        mc.ravel(),
        vc.ravel(),
        nb.ravel(),
        mb.ravel(),
        vb.ravel(),
        alpha=alpha,
        direction="lower_is_worse",
    )
    rate = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert rate <= sim_limit(alpha, runs)


def test_a_candidate_that_fails_every_request_fails() -> None:
    """All of the candidate's trials are events against none of the baseline's: the pooled
    rarer outcome opens the gate (each arm's own rarer outcome was 0: INCONCLUSIVE for ever)."""
    r = proportion_difference_cs(1000, 1000, 19_000, 0)
    assert r.verdict is Verdict.FAIL
    assert r.lower > 0.9


def test_relative_change_keeps_the_harm_direction_on_a_negative_baseline() -> None:
    """A lower-is-worse metric with negative values (a log-likelihood): -1.2 against -1.0 is
    20% worse, and fails; dividing by the signed baseline turned it into +20% and a pass."""
    r = mean_difference_cs(
        5000, -1.2, 0.04, 5000, -1.0, 0.04, direction="lower_is_worse", relative=True
    )
    assert r.estimate == pytest.approx(-0.2)
    assert r.verdict is Verdict.FAIL
    better = mean_difference_cs(
        5000, -0.8, 0.04, 5000, -1.0, 0.04, direction="lower_is_worse", relative=True, margin=0.05
    )
    assert better.estimate == pytest.approx(0.2)
    assert better.verdict is Verdict.PASS


def test_error_rate_doubling_is_detected_by_20k_per_arm() -> None:
    """Error rate 1% -> 2% with looks every 100 per arm: FAIL by 20,000 per arm in >= 95% of
    200 simulated runs."""
    runs, looks = 200, 200
    rng = np.random.default_rng(5)
    ec = np.cumsum(rng.binomial(BATCH, 0.02, size=(runs, looks)), axis=1)
    eb = np.cumsum(rng.binomial(BATCH, 0.01, size=(runs, looks)), axis=1)
    n = np.arange(1, looks + 1) * BATCH * np.ones((runs, 1))
    res = proportion_difference_cs_many(n.ravel(), ec.ravel(), n.ravel(), eb.ravel())
    detected = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert detected >= 0.95


def test_width_cost_matches_published_factors() -> None:
    """Two-sided at alpha 0.05, the sequence is 1.55x a fixed 95% interval at N = N* and 3.4x
    at N = 100 (figures published with the GrowthBook boundary)."""
    se = 1.0
    for n_total, factor in ((5000, 1.55), (100, 3.4)):
        half = n_total // 2
        # unit variance per arm: SE^2 = 2/half; rescale so SE = 1
        var = half / 2.0 * se * se
        r = mean_difference_cs(
            half, 0.0, var, half, 0.0, var, direction="either", min_samples=2, tuning=5000
        )
        fixed = stats.norm.isf(0.025) * se
        assert (r.upper - r.lower) / 2 / fixed == pytest.approx(factor, abs=0.05)


@settings(max_examples=100, deadline=None)
@given(
    d=st.floats(-5, 5),
    se=st.floats(0.01, 3),
    n=st.integers(10, 10**6),
    tuning=st.floats(100, 1e5),
)
def test_always_valid_p_is_the_inverse_of_the_mixture_likelihood_ratio(
    d: float, se: float, n: int, tuning: float
) -> None:
    """Two-sided p = min(1, 1/Lambda_n) with Johari et al.'s mSPRT form
    Lambda = sqrt(V/(V + n tau^2)) exp(n^2 tau^2 d^2 / (2 V (V + n tau^2))), tau^2 = rho^2 V."""
    alpha = 0.05
    v = se * se * n  # per-unit variance whose mean over n units has standard error se
    rho2 = (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha))) / tuning
    tau2 = rho2 * v
    log_lam = 0.5 * math.log(v / (v + n * tau2)) + n * n * tau2 * d * d / (2 * v * (v + n * tau2))
    expected = min(1.0, math.exp(-log_lam))
    got = float(always_valid_p(d, se, n, alpha=alpha, tuning=tuning))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(100, 50_000),
    mc=st.floats(-10, 10),
    mb=st.floats(-10, 10),
    vc=st.floats(0.01, 50),
    vb=st.floats(0.01, 50),
    direction=st.sampled_from(list(Direction)),
    alpha=st.sampled_from([0.01, 0.05, 0.1]),
)
def test_p_value_is_dual_to_the_fail_decision(
    n: int, mc: float, mb: float, vc: float, vb: float, direction: Direction, alpha: float
) -> None:
    """p_value <= alpha exactly when the verdict is FAIL (given enough samples)."""
    r = mean_difference_cs(n, mc, vc, n, mb, vb, direction=direction, alpha=alpha)
    if abs(r.p_value - alpha) > 1e-9:
        assert (r.p_value <= alpha) == (r.verdict is Verdict.FAIL)


@pytest.mark.parametrize("alpha", [0.45, 0.5, 0.6, 0.9])
def test_a_one_sided_sequence_at_a_large_alpha_stays_finite(alpha: float) -> None:
    """One-sided sequences at alpha of 0.5 or more (whose tuning formula needs 2 alpha < 1)
    give finite bounds and p-values, still dual to FAIL (they were NaN)."""
    p = float(always_valid_p(0.1, 0.02, 10_000, alternative="greater", alpha=alpha))
    assert 0.0 < p <= 1.0
    for mc in (10.0, 10.2, 10.5):
        r = mean_difference_cs(
            5000, mc, 4.0, 5000, 10.0, 4.0, direction=Direction.HIGHER_IS_WORSE, alpha=alpha
        )
        assert math.isfinite(r.lower)
        assert math.isfinite(r.upper)
        assert math.isfinite(r.p_value)
        assert (r.p_value <= alpha) == (r.verdict is Verdict.FAIL)


@settings(max_examples=50, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 5000),
            st.floats(0.5, 10),
            st.floats(0, 5),
            st.integers(0, 5000),
            st.floats(0.5, 10),
            st.floats(0, 5),
            st.sampled_from(list(Direction)),
            st.booleans(),
            st.floats(0, 0.5),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_vectorized_form_equals_scalar_calls(data: list[tuple]) -> None:  # type: ignore[type-arg]
    """Each element of mean_difference_cs_many equals the scalar call on that metric."""
    cols = list(zip(*data, strict=True))
    many = mean_difference_cs_many(
        *cols[:6], direction=list(cols[6]), relative=list(cols[7]), margin=list(cols[8])
    )
    for i, row in enumerate(data):
        one = mean_difference_cs(*row[:6], direction=row[6], relative=row[7], margin=row[8])
        got = many[i]
        assert got.verdict == one.verdict
        assert got.reason == one.reason
        for field in ("estimate", "lower", "upper", "p_value", "p_noninferiority"):
            a, b = getattr(got, field), getattr(one, field)
            assert (math.isnan(a) and math.isnan(b)) or a == b


def test_non_inferior_candidate_passes_and_worse_one_fails() -> None:
    """Equal means with a 2% relative margin PASS; a 10% worse conversion FAILs."""
    same = mean_difference_cs(20000, 100.0, 900.0, 20000, 100.0, 900.0, relative=True, margin=0.02)
    assert same.verdict is Verdict.PASS
    assert same.upper < 0.02
    worse = proportion_difference_cs(
        40000, 1800, 40000, 2000, direction=Direction.LOWER_IS_WORSE, relative=True
    )
    assert worse.verdict is Verdict.FAIL
    assert worse.upper < 0
    assert "lower (worse)" in worse.reason


def test_either_direction_fails_on_a_change_both_ways() -> None:
    """With EITHER, a clear increase and a clear decrease both FAIL."""
    up = mean_difference_cs(5000, 11.0, 4.0, 5000, 10.0, 4.0, direction="either")
    down = mean_difference_cs(5000, 9.0, 4.0, 5000, 10.0, 4.0, direction="either")
    assert up.verdict is Verdict.FAIL
    assert down.verdict is Verdict.FAIL


def test_harm_threshold_moves_the_fail_boundary() -> None:
    """A significant +1 increase FAILs at harm_threshold 0 but not at harm_threshold 2."""
    kwargs = {"n_candidate": 5000, "n_baseline": 5000, "var_candidate": 4.0, "var_baseline": 4.0}
    strict = mean_difference_cs(mean_candidate=11.0, mean_baseline=10.0, **kwargs)
    lenient = mean_difference_cs(
        mean_candidate=11.0, mean_baseline=10.0, harm_threshold=2.0, **kwargs
    )
    assert strict.verdict is Verdict.FAIL
    assert lenient.verdict is Verdict.INCONCLUSIVE


def test_minimum_samples_and_events_gate_the_decision() -> None:
    """Below 100 per arm, or 30 events for proportions, the verdict is INCONCLUSIVE."""
    few = mean_difference_cs(99, 50.0, 1.0, 500, 0.0, 1.0)
    assert few.verdict is Verdict.INCONCLUSIVE
    assert few.reason == "too few samples: 99 candidate and 500 baseline, need 100 per arm"
    rare = proportion_difference_cs(100_000, 20, 100_000, 0)
    assert rare.verdict is Verdict.INCONCLUSIVE
    assert rare.reason == "too few events: 20 over both arms, need 30"
    assert proportion_difference_cs(100_000, 20, 100_000, 0, min_events=10).verdict is Verdict.FAIL


@pytest.mark.parametrize("baseline_events", [0, 1, 5])
def test_a_relative_check_fails_a_candidate_against_a_baseline_with_few_or_no_events(
    baseline_events: int,
) -> None:
    """40% errors against 0, 1 or 5 in 10,000: the relative effect has no bounded interval
    (the baseline's rate is not told apart from 0), yet the candidate's rate is shown above
    any multiple near 1 of it, so the check FAILs (the delta method's standard error grew
    without bound as the baseline's rate neared 0: INCONCLUSIVE for ever)."""
    r = proportion_difference_cs(10_000, 4_000, 10_000, baseline_events, relative=True)
    assert r.verdict is Verdict.FAIL
    assert (r.lower, r.upper) == (-math.inf, math.inf)
    assert r.p_value <= 0.05
    assert r.reason.startswith("the candidate's mean is above the baseline's")


def test_a_relative_effect_against_a_zero_baseline_without_evidence_is_inconclusive() -> None:
    """A candidate's mean not told apart from a baseline's mean of 0 decides nothing."""
    r = mean_difference_cs(1000, 0.01, 1.0, 1000, 0.0, 1.0, relative=True)
    assert r.verdict is Verdict.INCONCLUSIVE
    assert (r.lower, r.upper) == (-math.inf, math.inf)
    assert "not told apart from 0" in r.reason
    both_zero = mean_difference_cs(1000, 0.0, 0.0, 1000, 0.0, 0.0, relative=True, margin=0.1)
    assert both_zero.verdict is Verdict.INCONCLUSIVE


def test_a_mean_that_fails_relative_to_a_negative_baseline_near_0_fails_either_way() -> None:
    """Higher is worse, baseline mean -0.001 (not told apart from 0), candidate 1.0: whatever
    the baseline's true sign, the candidate is far above it in the relative sense, so FAIL;
    lower is worse it is far from lower, so not FAIL."""
    up = mean_difference_cs(2000, 1.0, 1.0, 2000, -0.001, 1.0, relative=True)
    assert up.verdict is Verdict.FAIL
    down = mean_difference_cs(
        2000, 1.0, 1.0, 2000, -0.001, 1.0, relative=True, direction="lower_is_worse"
    )
    assert down.verdict is Verdict.INCONCLUSIVE


def rare_split_runs(
    pc: float, pb: float, runs: int, looks: int, seed: int, share: float = 0.5
) -> tuple[np.ndarray, ...]:
    """Cumulative (n_c, x_c, n_b, x_b) after each batch of 200 requests, ``share`` of them to
    the candidate, for conversion rates ``pc`` and ``pb``."""
    rng = np.random.default_rng(seed)
    kc = round(2 * BATCH * share)
    kb = 2 * BATCH - kc
    xc = np.cumsum(rng.binomial(kc, pc, size=(runs, looks)), axis=1)
    xb = np.cumsum(rng.binomial(kb, pb, size=(runs, looks)), axis=1)
    steps = np.arange(1, looks + 1) * np.ones((runs, 1))
    return (steps * kc).ravel(), xc.ravel(), (steps * kb).ravel(), xb.ravel()


@pytest.mark.parametrize("direction", ["lower_is_worse", "higher_is_worse"])
def test_aa_relative_rare_proportions_on_an_even_split_stay_below_alpha(direction: str) -> None:
    """A/A at a 1% rate, 50/50, 2,000 runs with a look every 200 requests up to 40,000: the
    relative check's false FAILs stay within the simulation interval of alpha in both
    directions (the delta method failed 6.8% of runs lower-is-worse and 0.05% higher-is-worse,
    its interval skewed by the ratio's curvature)."""
    runs, looks, alpha = 2000, 200, 0.05
    res = proportion_difference_cs_many(
        *rare_split_runs(0.01, 0.01, runs, looks, seed=3),
        alpha=alpha,
        direction=direction,
        relative=True,
    )
    rate = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert rate <= sim_limit(alpha, runs)


def test_relative_harm_at_its_threshold_on_a_rare_rate_stays_below_alpha() -> None:
    """The candidate's rate exactly 1.5 times a 0.2% baseline's, harm_threshold 0.5 (the edge
    of the null): false FAILs within the simulation interval of alpha."""
    runs, looks, alpha = 2000, 200, 0.05
    res = proportion_difference_cs_many(
        *rare_split_runs(0.003, 0.002, runs, looks, seed=4),
        alpha=alpha,
        relative=True,
        harm_threshold=0.5,
    )
    rate = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert rate <= sim_limit(alpha, runs)


def test_a_doubled_rare_rate_fails_a_relative_check() -> None:
    """Power: a 0.2% rate doubled fails by 40,000 requests in more than 60% of 1,000 runs
    (simulated: 78%; the delta method never failed it)."""
    runs, looks = 1000, 200
    res = proportion_difference_cs_many(
        *rare_split_runs(0.004, 0.002, runs, looks, seed=5), relative=True
    )
    power = float((res.verdict_code == 2).reshape(runs, looks).any(axis=1).mean())
    assert power > 0.6


def test_relative_interval_covers_the_true_ratio_when_the_baseline_mean_is_small() -> None:
    """Normal data, baseline mean 0.2 and candidate 0.26 (sd 1, a relative effect of 0.3),
    1,000 runs with a look every 100 per arm: the two-sided relative sequence ever misses 0.3
    in at most alpha of runs (within the simulation interval)."""
    runs, looks, alpha = 1000, 100, 0.05
    rng = np.random.default_rng(9)

    def moments(mu: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(mu, 1.0, size=(runs, looks, BATCH))
        s, s2 = np.cumsum(x.sum(axis=2), axis=1), np.cumsum((x * x).sum(axis=2), axis=1)
        n = np.arange(1, looks + 1) * BATCH * np.ones((runs, 1))
        mean = s / n
        return n.ravel(), mean.ravel(), ((s2 - s * mean) / (n - 1)).ravel()

    res = mean_difference_cs_many(
        *moments(0.26), *moments(0.2), alpha=alpha, relative=True, direction="either"
    )
    lower, upper = res.lower.reshape(runs, looks), res.upper.reshape(runs, looks)
    missed = float(((lower > 0.3) | (upper < 0.3)).any(axis=1).mean())
    assert missed <= sim_limit(alpha, runs)


def test_result_serializes_to_json() -> None:
    """A SequenceResult is plain data: attrs.asdict -> json round trip keeps every field."""
    r = proportion_difference_cs(20000, 400, 20000, 200)
    payload = json.loads(json.dumps(attrs.asdict(r)))
    assert payload["verdict"] == "fail"
    assert payload["direction"] == "higher_is_worse"
    rebuilt = SequenceResult(
        **{
            **payload,
            "verdict": Verdict(payload["verdict"]),
            "direction": Direction(payload["direction"]),
        }
    )
    assert rebuilt == r


def test_results_arrays_are_read_only() -> None:
    """The arrays of a SequenceResults cannot be changed in place."""
    rs = mean_difference_cs_many(
        [200, 300], [1.0, 2.0], [1.0, 1.0], [200, 300], [1.0, 2.0], [1.0, 1.0]
    )
    with pytest.raises(ValueError, match="read-only"):
        rs.lower[0] = 0.0
    assert len(rs) == 2
    with pytest.raises(IndexError, match="index 2"):
        rs[2]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"var_candidate": -1.0}, DataError, "var_candidate must be >= 0"),
        ({"mean_candidate": math.nan}, DataError, "mean_candidate holds a non-finite value nan"),
        ({"n_candidate": 10.5}, DataError, "whole numbers"),
        ({"alpha": 1.5}, ConfigError, "1.5"),
        ({"direction": "sideways"}, ConfigError, "'sideways'"),
        ({"margin": -0.1}, ConfigError, "-0.1"),
        ({"tuning": 0}, ConfigError, "tuning"),
        ({"min_samples": 1}, ConfigError, "min_samples"),
    ],
)
def test_bad_input_is_a_typed_error_naming_the_value(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    """Each bad argument raises the typed error with the value in the message."""
    args: dict[str, object] = {
        "n_candidate": 1000,
        "mean_candidate": 1.0,
        "var_candidate": 1.0,
        "n_baseline": 1000,
        "mean_baseline": 1.0,
        "var_baseline": 1.0,
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        mean_difference_cs(**args)  # type: ignore[arg-type]


def test_shapes_that_do_not_broadcast_are_a_data_error() -> None:
    """Arrays of different lengths raise a DataError listing the shapes."""
    with pytest.raises(DataError, match="broadcast"):
        mean_difference_cs_many([100, 200], [1.0, 1.0, 1.0], 1.0, 100, 1.0, 1.0)


def test_more_events_than_trials_is_a_data_error() -> None:
    """events > n is a DataError naming both."""
    with pytest.raises(DataError, match="exceed"):
        proportion_difference_cs(100, 101, 100, 1)


def test_always_valid_p_one_sided_and_errors() -> None:
    """One-sided p is 1 on the wrong side; bad alternative and negative SE are typed errors."""
    assert float(always_valid_p(-1.0, 0.1, 1000, alternative="greater")) == 1.0
    assert float(always_valid_p(-1.0, 0.1, 1000, alternative="less")) < 1e-6
    with pytest.raises(ConfigError, match="'up'"):
        always_valid_p(1.0, 0.1, 1000, alternative="up")
    with pytest.raises(DataError, match="std_error"):
        always_valid_p(1.0, -0.1, 1000)


@pytest.mark.parametrize("scale", [1e-140, 1.0, 1e160])
def test_a_relative_check_reads_the_same_at_any_scale(scale: float) -> None:
    """Means 10% apart (a spread of 1e-10 of the mean) judged relative to each other give
    the same verdict and bounds at any scale of the metric, in the array code and in the
    scalar one (squares of means past 1e154 or below 1e-154 leave float range: the bounds were
    NaN, or the interval unbounded)."""

    def judge(s: float) -> tuple[SequenceResult, SequenceResult]:
        var = (1e-10 * s) ** 2
        one = mean_difference_cs(4000, 1.1 * s, var, 4000, s, var, relative=True)
        many = mean_difference_cs_many(
            [4000, 4000],
            [1.1 * s, 1.0],
            [var, 0.04],
            [4000, 4000],
            [s, 1.0],
            [var, 0.04],
            relative=True,
        )
        return one, many[0]

    ref, _ = judge(1.0)
    for r in judge(scale):
        assert r.verdict is ref.verdict is Verdict.FAIL
        assert r.lower == pytest.approx(ref.lower, rel=1e-9)
        assert r.upper == pytest.approx(ref.upper, rel=1e-9)

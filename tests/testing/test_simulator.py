"""TrafficSimulator: Poisson arrivals, Zipf repeat visits, delayed outcomes, exposure, bounds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest
from scipy import stats

import safeserve as ss
from safeserve.testing import FakeClock, SimulationTick, TrafficSimulator


def score(x: Any) -> float:
    return float(x[0] > 0)


def score_batch(X: Any) -> Any:
    return (X[:, 0] > 0).astype(float)


def fixed_router(clock: FakeClock, weight: float = 30.0, **kw: Any) -> ss.Router:
    """A router whose split never moves (no rollout engine acts on a FixedSplit)."""
    return ss.Router(
        {"v1": score, "v2": score},
        strategy=ss.FixedSplit(baseline="v1", weights={"v2": weight}),
        clock=clock,
        **kw,
    )


def canary_router(clock: FakeClock, *, batch: bool = False, **kw: Any) -> ss.Router:
    model = score_batch if batch else score
    return ss.Router(
        {"v1": model, "v2": model},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=40),
        clock=clock,
        **kw,
    )


class KeyLog:
    """An override hook that records every key and forces nothing."""

    def __init__(self) -> None:
        self.keys: list[int] = []

    def __call__(self, key: Any, x: Any) -> None:
        self.keys.append(key)


# -- arrivals -----------------------------------------------------------------------------


def test_arrival_gaps_are_exponential_at_the_rate() -> None:
    """Gaps between arrivals follow an exponential of mean 1/rate (KS test against scipy)."""
    clock = FakeClock()
    seen: list[float] = []

    def model(x: Any) -> float:
        seen.append(clock())
        return 0.0

    router = ss.Router({"v1": model}, clock=clock)
    TrafficSimulator(router, clock=clock, rate=40.0, seed=3).run(5000)
    gaps = np.diff([0.0, *seen])
    assert stats.kstest(gaps, "expon", args=(0, 1 / 40.0)).pvalue > 1e-4


def test_requests_in_a_fixed_time_are_poisson() -> None:
    """run(seconds=T) sends a Poisson(rate * T) count, and ends exactly at start + T."""
    clock = FakeClock(start=50.0)
    sim = TrafficSimulator(fixed_router(clock), clock=clock, rate=25.0, seed=8)
    result = sim.run(seconds=400.0)
    lo, hi = stats.poisson.interval(0.9999, 25.0 * 400.0)
    assert lo <= result.requests <= hi
    assert (result.start, result.end, clock()) == (50.0, 450.0, 450.0)
    assert result.stop_reason == "seconds"


def test_duration_of_n_requests_is_gamma() -> None:
    """The time taken by n requests lies in the Gamma(n, 1/rate) interval."""
    clock = FakeClock()
    result = TrafficSimulator(fixed_router(clock), clock=clock, rate=200.0, seed=1).run(8000)
    lo, hi = stats.gamma.interval(0.9999, a=8000, scale=1 / 200.0)
    assert lo <= result.seconds <= hi
    assert result.rate == pytest.approx(8000 / result.seconds)


# -- repeat visits ------------------------------------------------------------------------


def visits(exponent: float, repeat: str, n: int, users: int, seed: int) -> tuple[Any, Any]:
    clock = FakeClock()
    log = KeyLog()
    router = fixed_router(clock, override=log)
    sim = TrafficSimulator(
        router, clock=clock, users=users, repeat_visits=repeat, exponent=exponent, seed=seed
    )
    result = sim.run(n)
    return np.bincount(np.asarray(log.keys), minlength=users), result


def test_zipf_visit_counts_follow_scipy_zipfian() -> None:
    """Visits per user rank match scipy.stats.zipfian (chi-square, top ranks + the rest)."""
    n, users, s = 20_000, 2000, 1.0
    counts, _ = visits(s, "zipf", n, users, seed=4)
    pmf = stats.zipfian(s, users).pmf(np.arange(1, users + 1))
    top = 40
    observed = np.append(counts[:top], counts[top:].sum())
    expected = n * np.append(pmf[:top], pmf[top:].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-4


def test_distinct_users_match_the_zipf_expectation() -> None:
    """Distinct users among n requests match E = sum(1 - (1 - p_k) ** n) within 5 sd.

    The probabilities come from scipy.stats.zipfian; the spread comes from numpy draws.
    """
    n, users, s = 6000, 5000, 0.8
    counts, result = visits(s, "zipf", n, users, seed=6)
    p = stats.zipfian(s, users).pmf(np.arange(1, users + 1))
    expected = float(np.sum(1.0 - (1.0 - p) ** n))
    rng = np.random.default_rng(0)
    draws = [np.unique(rng.choice(users, size=n, p=p)).size for _ in range(200)]
    sd = float(np.std(draws))
    assert abs(np.mean(draws) - expected) < sd  # the oracle agrees with the simulation
    assert result.users == int((counts > 0).sum()) < n
    assert abs(result.users - expected) < 5 * sd


def test_uniform_visits_spread_evenly() -> None:
    """With repeat_visits='uniform' every user is equally likely (chi-square)."""
    n, users = 10_000, 50
    counts, result = visits(1.0, "uniform", n, users, seed=2)
    assert stats.chisquare(counts).pvalue > 1e-4
    assert result.users == users


# -- outcomes -----------------------------------------------------------------------------


def test_outcomes_arrive_after_their_delay() -> None:
    """Each outcome reaches record_outcome at or after serve time + delay, and soon after."""
    clock = FakeClock()
    router = canary_router(clock)
    served: dict[float, float] = {}
    delivered: list[tuple[float, float]] = []
    record = router.record_outcome

    def spy(request_id: int, name: str, value: float) -> Any:
        delivered.append((value, clock()))
        return record(request_id, name, value)

    router.record_outcome = spy  # type: ignore[method-assign]

    def outcome(x: Any, y: Any, variant: str, rng: np.random.Generator) -> float:
        tag = float(len(served))
        served[tag] = clock()
        return tag

    sim = TrafficSimulator(
        router, clock=clock, rate=100.0, outcome=outcome, outcome_delay=lambda rng: 5.0
    )
    result = sim.run(3000)
    assert result.outcomes_sent == 3000
    assert result.outcomes_delivered + result.outcomes_pending == 3000
    lags = np.array([t - served[tag] for tag, t in delivered])
    assert lags.min() >= 5.0 - 1e-9
    # Delivered before the first request that arrives after the due time.
    assert lags.max() < 5.0 + 0.2
    assert [tag for tag, _ in delivered] == sorted(tag for tag, _ in delivered)


def test_exponential_delays_have_the_given_mean() -> None:
    """A float outcome_delay is the mean of exponential delays (KS test)."""
    clock = FakeClock()
    router = canary_router(clock)
    served: list[float] = []
    record = router.record_outcome
    lags: list[float] = []

    def spy(request_id: int, name: str, value: float) -> Any:
        lags.append(clock() - served[int(value)])
        return record(request_id, name, value)

    router.record_outcome = spy  # type: ignore[method-assign]

    def outcome(x: Any, y: Any, variant: str, rng: np.random.Generator) -> float:
        served.append(clock())
        return float(len(served) - 1)

    sim = TrafficSimulator(router, clock=clock, rate=500.0, outcome=outcome, outcome_delay=2.0)
    sim.run(4000)
    sim.drain()
    assert len(lags) == 4000
    assert stats.kstest(lags, "expon", args=(0, 2.0)).pvalue > 1e-4


def bernoulli_by_variant() -> tuple[Callable[..., float], dict[str, list[float]]]:
    sent: dict[str, list[float]] = {"v1": [], "v2": []}

    def outcome(x: Any, y: Any, variant: str, rng: np.random.Generator) -> float:
        value = float(rng.random() < (0.1 if variant == "v1" else 0.3))
        sent[variant].append(value)
        return value

    def batch(X: Any, Y: Any, variants: Any, rng: np.random.Generator) -> Any:
        p = np.where(variants == "v1", 0.1, 0.3)
        values = (rng.random(len(X)) < p).astype(float)
        for v, value in zip(variants.tolist(), values.tolist(), strict=True):
            sent[v].append(value)
        return values

    outcome.batch = batch  # type: ignore[attr-defined]
    return outcome, sent


@pytest.mark.parametrize("batch", [None, 64])
def test_outcomes_join_the_variant_that_served(batch: int | None) -> None:
    """The router's outcome windows hold exactly what the simulator sent for each variant."""
    clock = FakeClock()
    router = canary_router(clock, batch=batch is not None)
    outcome, sent = bernoulli_by_variant()
    sim = TrafficSimulator(
        router, clock=clock, rate=100.0, outcome=outcome, outcome_delay=3.0, batch=batch
    )
    result = sim.run(6000)
    drained = sim.drain()
    assert result.outcomes_delivered + drained == result.outcomes_sent == 6000
    assert result.outcome_results == {"ACCEPTED": result.outcomes_delivered}
    m = router.status().metrics
    for v in ("v1", "v2"):
        got = m.variant(v).outcomes["converted"]
        assert got.n == len(sent[v]) == result.per_variant[v]
        assert got.mean == pytest.approx(np.mean(sent[v]), abs=1e-12)
    assert m.variant("v2").outcomes["converted"].mean > m.variant("v1").outcomes["converted"].mean


def test_result_tallies_match_the_router() -> None:
    """Per-variant requests and accepted outcomes in the result equal the router's counts."""
    clock = FakeClock()
    router = canary_router(clock)
    sim = TrafficSimulator(
        router,
        clock=clock,
        rate=100.0,
        outcome=lambda x, y, v, rng: y,
        outcome_delay=1.0,
        outcome_name="label",
    )
    result = sim.run(3000)
    m = router.status().metrics
    for v in ("v1", "v2"):
        assert result.per_variant[v] == m.variant(v).requests
        assert result.outcome_counts[v] == m.variant(v).outcomes["label"].n
        assert result.outcome_sums[v] == pytest.approx(
            m.variant(v).outcomes["label"].n * m.variant(v).outcomes["label"].mean
        )


# -- exposure -----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [None, 128])
def test_exposure_counts_the_distinct_users_of_each_variant(batch: int | None) -> None:
    """exposed[v] and exposed_users(v) are exactly the users the router sends to v."""
    clock = FakeClock()
    router = ss.Router(
        {"v1": score_batch if batch else score, "v2": score_batch if batch else score},
        strategy=ss.FixedSplit(baseline="v1", weights={"v2": 30}),
        clock=clock,
    )
    sim = TrafficSimulator(router, clock=clock, users=3000, batch=batch, seed=5)
    result = sim.run(5000)
    oracle = fixed_router(FakeClock())
    seen = set()
    for v in ("v1", "v2"):
        users = sim.exposed_users(v)
        seen |= set(users.tolist())
        assert {oracle.route(np.zeros(1), key=u).variant for u in users.tolist()} == {v}
        assert result.exposed[v] == users.size
    assert result.users == len(seen) == result.exposed["v1"] + result.exposed["v2"]


def test_exposure_accumulates_over_runs_but_results_are_per_run() -> None:
    """exposed_users() covers every run; each result counts its own run only."""
    clock = FakeClock()
    sim = TrafficSimulator(fixed_router(clock), clock=clock, users=20_000, exponent=0.0, seed=1)
    first = sim.run(500)
    second = sim.run(500)
    assert first.exposed["v2"] + second.exposed["v2"] >= sim.exposed_users("v2").size
    assert sim.exposed_users("v2").size > max(first.exposed["v2"], second.exposed["v2"])
    assert sim.requests == 1000


# -- determinism and modes ----------------------------------------------------------------


def run_once(seed: int, batch: int | None = None) -> tuple[Any, Any]:
    clock = FakeClock()
    router = canary_router(clock, batch=batch is not None)
    outcome, _ = bernoulli_by_variant()
    sim = TrafficSimulator(
        router, clock=clock, rate=80.0, outcome=outcome, seed=seed, batch=batch, users=500
    )
    result = sim.run(4000, tick_every=500)
    return result, router.status().metrics.to_dict()


def test_same_seed_same_run() -> None:
    """Two simulations with the same seed give identical results and router metrics."""
    a, ma = run_once(7)
    b, mb = run_once(7)
    assert attrs.evolve(a, ticks=()) == attrs.evolve(b, ticks=())
    assert [(t.time, t.requests, t.weights) for t in a.ticks] == [
        (t.time, t.requests, t.weights) for t in b.ticks
    ]
    assert ma == mb


def test_another_seed_another_run() -> None:
    """A different seed gives different traffic."""
    a, _ = run_once(7)
    b, _ = run_once(8)
    assert (a.seconds, a.users) != (b.seconds, b.users)


def test_batch_mode_sends_the_same_traffic() -> None:
    """Batch mode serves the same users, so the same variant split and exposure."""
    clock_a, clock_b = FakeClock(), FakeClock()
    one = TrafficSimulator(fixed_router(clock_a), clock=clock_a, seed=3).run(3000)
    router_b = ss.Router(
        {"v1": score_batch, "v2": score_batch},
        strategy=ss.FixedSplit(baseline="v1", weights={"v2": 30.0}),
        clock=clock_b,
    )
    many = TrafficSimulator(router_b, clock=clock_b, seed=3, batch=100).run(3000)
    assert (one.per_variant, one.exposed, one.users) == (many.per_variant, many.exposed, many.users)
    assert one.end == many.end


def test_two_runs_continue_the_same_traffic() -> None:
    """run(1000) twice serves the same requests as run(2000) once."""
    clock_a, clock_b = FakeClock(), FakeClock()
    sim_a = TrafficSimulator(fixed_router(clock_a), clock=clock_a, seed=9)
    sim_a.run(1000)
    sim_a.run(1000)
    sim_b = TrafficSimulator(fixed_router(clock_b), clock=clock_b, seed=9)
    sim_b.run(2000)
    for v in ("v1", "v2"):
        assert np.array_equal(sim_a.exposed_users(v), sim_b.exposed_users(v))
    assert clock_a() == clock_b()


# -- bounds, ticks and hooks --------------------------------------------------------------


def test_until_stops_at_a_tick() -> None:
    """until(router) is checked at every tick; the run stops at the first true one."""
    clock = FakeClock()
    ticks: list[SimulationTick] = []
    sim = TrafficSimulator(canary_router(clock), clock=clock)
    result = sim.run(100_000, until=lambda router: len(ticks) >= 3, on_tick=ticks.append)
    assert result.stop_reason == "until"
    assert result.requests == 3000
    assert [t.requests for t in ticks] == [1000, 2000, 3000]
    assert all(t.weights == {"v1": 60.0, "v2": 40.0} for t in ticks)


def test_a_run_needs_a_bound() -> None:
    """run() without requests= or seconds= raises ConfigError (it would never end)."""
    clock = FakeClock()
    sim = TrafficSimulator(canary_router(clock), clock=clock)
    with pytest.raises(ss.ConfigError, match="bound"):
        sim.run(until=lambda router: False)
    with pytest.raises(ss.ConfigError, match="requests"):
        sim.run(0)


def test_tick_list_is_thinned_evenly() -> None:
    """Beyond max_ticks the kept snapshots are halved, evenly spaced; hooks see every tick."""
    clock = FakeClock()
    calls: list[int] = []
    sim = TrafficSimulator(canary_router(clock), clock=clock, max_ticks=8)
    result = sim.run(5000, tick_every=100, on_tick=lambda t: calls.append(t.requests))
    assert len(calls) == 50
    assert len(result.ticks) <= 8
    steps = {b.requests - a.requests for a, b in zip(result.ticks, result.ticks[1:], strict=False)}
    assert steps == {100 * result.tick_stride}


def test_evaluate_runs_at_every_tick_when_the_router_has_it() -> None:
    """router.evaluate() is called once per tick and its decision lands in the tick."""
    clock = FakeClock()
    router = canary_router(clock)
    decisions: list[Any] = []
    evaluate = router.evaluate

    def counting() -> Any:
        decisions.append(evaluate())
        return decisions[-1]

    router.evaluate = counting  # type: ignore[method-assign]
    result = TrafficSimulator(router, clock=clock).run(3000)
    assert len(decisions) == 3
    assert [t.decision for t in result.ticks] == decisions


def test_a_router_without_a_rollout_is_not_evaluated() -> None:
    """With a fixed split, evaluate() has nothing to judge; ticks carry no decision."""
    clock = FakeClock()
    result = TrafficSimulator(fixed_router(clock), clock=clock).run(2000)
    assert [t.decision for t in result.ticks] == [None, None]


def test_router_exceptions_are_counted_and_skipped() -> None:
    """A request whose exception comes out of the router counts in raised; the run goes on."""
    clock = FakeClock()

    def broken(x: Any) -> float:
        raise RuntimeError("down")

    router = ss.Router({"v1": broken}, clock=clock)
    result = TrafficSimulator(router, clock=clock).run(500)
    assert (result.requests, result.raised, result.users) == (500, 500, result.users)
    assert result.per_variant == {"v1": 0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"clock": lambda: 0.0}, "FakeClock"),
        ({"users": 0}, "users"),
        ({"rate": 0.0}, "rate"),
        ({"rate": float("inf")}, "rate"),
        ({"repeat_visits": "pareto"}, "repeat_visits"),
        ({"exponent": -1.0}, "exponent"),
        ({"features": 0}, "features"),
        ({"outcome": 3}, "outcome"),
        ({"outcome_delay": -1.0}, "outcome_delay"),
        ({"outcome_name": ""}, "outcome_name"),
        ({"batch": 0}, "batch"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    """Invalid simulator options raise ConfigError naming the bad one."""
    clock = FakeClock()
    options: dict[str, Any] = {"clock": clock, **kwargs}
    with pytest.raises(ss.ConfigError, match=match):
        TrafficSimulator(canary_router(clock), **options)


def test_bad_generated_values_raise_data_error() -> None:
    """features() of the wrong length and a non-numeric outcome raise DataError."""
    clock = FakeClock()
    sim = TrafficSimulator(
        canary_router(clock), clock=clock, features=lambda rng, n: np.zeros((n - 1, 2))
    )
    with pytest.raises(ss.DataError, match="rows"):
        sim.run(10)
    sim = TrafficSimulator(canary_router(clock), clock=clock, outcome=lambda x, y, v, rng: "yes")
    with pytest.raises(ss.DataError, match="'yes'"):
        sim.run(10)


def test_custom_features_reach_the_models() -> None:
    """features(rng, n) rows are what the models receive."""
    clock = FakeClock()
    got: list[Any] = []
    router = ss.Router({"v1": lambda x: got.append(x)}, clock=clock)
    feats = lambda rng, n: np.column_stack([np.arange(n), rng.random(n)])  # noqa: E731
    TrafficSimulator(router, clock=clock, features=feats).run(5)
    assert [row[0] for row in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all(row.shape == (2,) for row in got)

"""Fault injectors: each does what it says, at the seeded rate, only within its time window."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest
from scipy import stats

import safeserve as ss
import safeserve.testing._faults as faults_module
from safeserve.testing import (
    FakeClock,
    Fault,
    InjectedError,
    add_latency,
    corrupt_outputs,
    drop_accuracy,
    hang,
    inject_errors,
)


def identity(x: Any) -> Any:
    return x


def batch_sum(X: Any) -> Any:
    return np.asarray(X, dtype=float).sum(axis=1)


def binomial_ok(k: int, n: int, p: float, level: float = 0.9999) -> bool:
    """True when k is within scipy's central binomial interval."""
    lo, hi = stats.binom.interval(level, n, p)
    return bool(lo <= k <= hi)


def count_errors(model: Any, n: int) -> int:
    errors = 0
    for i in range(n):
        try:
            model(i)
        except InjectedError:
            errors += 1
    return errors


def canary(clock: FakeClock, candidate: Any, **kw: Any) -> ss.Router:
    return ss.Router(
        {"v1": lambda x: 0.5, "v2": candidate},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
        clock=clock,
        **kw,
    )


# -- inject_errors ----------------------------------------------------------------------


def test_errors_fail_a_binomial_share_of_calls() -> None:
    """inject_errors raises on a share of calls within the binomial interval of its rate."""
    model = inject_errors(identity, 0.1, seed=5)
    errors = count_errors(model, 20_000)
    assert errors == model.faults
    assert model.calls == model.active_calls == 20_000
    assert binomial_ok(errors, 20_000, 0.1)


def test_errors_skip_the_model_on_a_failed_call() -> None:
    """A failed call never reaches the wrapped model."""
    seen: list[int] = []
    model = inject_errors(seen.append, 0.5, seed=2)
    errors = count_errors(model, 1000)
    assert len(seen) == 1000 - errors


def test_errors_are_reproducible_by_seed() -> None:
    """The same seed fails the same calls; another seed fails others."""

    def pattern(seed: int) -> list[bool]:
        model = inject_errors(identity, 0.3, seed=seed)
        out = []
        for i in range(300):
            try:
                model(i)
                out.append(False)
            except InjectedError:
                out.append(True)
        return out

    assert pattern(1) == pattern(1)
    assert pattern(1) != pattern(2)


def test_errors_honour_start_and_until() -> None:
    """The fault is off before start, on in [start, until), and off again from until."""
    clock = FakeClock()
    model = inject_errors(identity, 1.0, start=10.0, until=20.0, clock=clock)
    assert count_errors(model, 50) == 0
    clock.set(10.0)
    assert count_errors(model, 50) == 50
    clock.set(19.999)
    assert count_errors(model, 1) == 1
    clock.set(20.0)
    assert count_errors(model, 50) == 0
    assert (model.calls, model.active_calls, model.faults) == (151, 51, 51)


def test_deactivate_and_activate_switch_the_fault() -> None:
    """A fault built inactive waits for activate(); deactivate() switches it off again."""
    model = inject_errors(identity, 1.0, active=False)
    assert count_errors(model, 10) == 0
    model.activate()
    assert count_errors(model, 10) == 10
    model.deactivate()
    assert count_errors(model, 10) == 0
    assert model.is_on() is False


def test_batch_errors_fail_a_call_when_any_row_is_hit() -> None:
    """In batch mode a call raises with probability 1 - (1 - rate) ** rows; rows all count."""
    model = inject_errors(batch_sum, 0.05, batch=True, seed=11)
    failed = 0
    for _ in range(4000):
        try:
            model(np.ones((10, 2)))
        except InjectedError:
            failed += 1
    assert binomial_ok(failed, 4000, 1 - 0.95**10)
    assert model.faults == 10 * failed
    assert model.calls == 40_000


def test_router_counts_injected_errors_and_falls_back() -> None:
    """Behind a router, each injected error is one error and one fallback of the candidate."""
    clock = FakeClock()
    flaky = inject_errors(lambda x: 0.5, 0.2, seed=3)
    router = canary(clock, flaky)
    answers = [router.predict(i, key=i) for i in range(4000)]
    v1, v2 = router.status().metrics.variant("v1"), router.status().metrics.variant("v2")
    assert set(answers) == {0.5}
    assert v2.requests == flaky.calls
    assert v2.errors == v2.fallbacks == flaky.faults > 0
    assert v1.errors == 0
    assert binomial_ok(flaky.faults, flaky.calls, 0.2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rate": -0.1}, "rate"),
        ({"rate": 1.5}, "rate"),
        ({"rate": math.nan}, "rate"),
        ({"rate": True}, "rate"),
        ({"rate": 0.1, "start": 5.0}, "clock"),
        ({"rate": 0.1, "until": 5.0}, "clock"),
        ({"rate": 0.1, "start": 5.0, "until": 5.0, "clock": FakeClock()}, "until"),
        ({"rate": 0.1, "start": math.nan, "clock": FakeClock()}, "start"),
        ({"rate": 0.1, "seed": 1.5}, "seed"),
        ({"rate": 0.1, "clock": 3}, "clock"),
    ],
)
def test_bad_options_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    """Invalid options raise ConfigError naming the bad one."""
    with pytest.raises(ss.ConfigError, match=match):
        inject_errors(identity, **kwargs)


def test_a_model_must_be_callable() -> None:
    """Wrapping something that is not callable raises ConfigError."""
    with pytest.raises(ss.ConfigError, match="callable"):
        inject_errors(42, 0.1)  # type: ignore[arg-type]


def test_repr_is_readable() -> None:
    """The repr names the injector, its settings and its counters."""
    clock = FakeClock()
    model = inject_errors(identity, 0.25, start=5.0, clock=clock)
    model(1)
    text = repr(model)
    assert text.startswith("<inject_errors rate=0.25 start=5 active calls=1 faults=0")
    assert isinstance(model, Fault)


# -- add_latency --------------------------------------------------------------------------


def test_latency_is_visible_in_router_metrics_under_a_fake_clock() -> None:
    """Extra seconds advance the FakeClock inside the call, so the router records them."""
    clock = FakeClock()
    slow = add_latency(lambda x: 0.5, 0.05, clock=clock)
    router = canary(clock, slow)
    for i in range(2000):
        router.predict(i, key=i)
    m = router.status().metrics
    v1, v2 = m.variant("v1"), m.variant("v2")
    assert v1.latency_moments.mean == 0.0
    assert v2.latency_moments.mean == pytest.approx(0.05, rel=1e-9)
    assert v2.latency_quantiles()["p50"] == pytest.approx(0.05, rel=0.01)
    assert clock() == pytest.approx(0.05 * slow.faults)


def test_latency_rate_slows_a_binomial_share() -> None:
    """With rate < 1 a binomial share of calls is slowed, and only those move the clock."""
    clock = FakeClock()
    slow = add_latency(identity, 0.5, rate=0.3, clock=clock, seed=4)
    for i in range(5000):
        slow(i)
    assert binomial_ok(slow.faults, 5000, 0.3)
    assert clock() == pytest.approx(0.5 * slow.faults)


def test_latency_draws_from_a_distribution() -> None:
    """seconds(rng) is drawn per slowed call; the extras follow that distribution (KS test)."""
    clock = FakeClock()
    slow = add_latency(identity, lambda rng: float(rng.exponential(0.2)), clock=clock, seed=9)
    extras = []
    for i in range(3000):
        t0 = clock()
        slow(i)
        extras.append(clock() - t0)
    assert stats.kstest(extras, "expon", args=(0, 0.2)).pvalue > 1e-4


def test_latency_factor_multiplies_the_model_duration() -> None:
    """factor multiplies the wrapped call's own duration; injectors compose."""
    clock = FakeClock()
    inner = add_latency(identity, 0.1, clock=clock)
    outer = add_latency(inner, factor=3.0, clock=clock)
    outer(1)
    assert clock() == pytest.approx(0.3)


def test_batch_latency_adds_seconds_per_row_hit() -> None:
    """In batch mode the router attributes seconds * rate to each row on average."""
    clock = FakeClock()
    slow = add_latency(batch_sum, 0.01, rate=1.0, clock=clock, batch=True)
    router = ss.Router(
        {"v1": batch_sum, "v2": slow},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
        clock=clock,
    )
    for b in range(20):
        router.predict_batch(np.ones((100, 2)), keys=np.arange(b * 100, b * 100 + 100))
    m = router.status().metrics
    assert m.variant("v2").latency_moments.mean == pytest.approx(0.01, rel=1e-6)
    assert m.variant("v1").latency_moments.mean == 0.0


def test_latency_sleeps_for_real_without_a_simulated_clock(monkeypatch: Any) -> None:
    """Without a clock that can advance, the extra time is a real time.sleep."""
    slept: list[float] = []
    monkeypatch.setattr(faults_module.time, "sleep", slept.append)
    slow = add_latency(identity, 0.25)
    assert slow(3) == 3
    assert slept == [0.25]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "seconds= or factor="),
        ({"seconds": -1.0}, "seconds"),
        ({"seconds": math.inf}, "seconds"),
        ({"factor": 0.5}, "factor"),
    ],
)
def test_bad_latency_options_raise(kwargs: dict[str, Any], match: str) -> None:
    """Missing or invalid latency settings raise ConfigError."""
    with pytest.raises(ss.ConfigError, match=match):
        add_latency(identity, **kwargs)


# -- corrupt_outputs -----------------------------------------------------------------------


def test_corrupted_outputs_count_as_errors_and_the_baseline_answers() -> None:
    """With an is_finite validator, each NaN output is an invalid error and a fallback."""
    clock = FakeClock()
    broken = corrupt_outputs(lambda x: 0.7, 0.1, seed=8)
    router = canary(clock, broken, validators={"v2": ss.is_finite})
    answers = [router.predict(i, key=i) for i in range(6000)]
    v2 = router.status().metrics.variant("v2")
    assert all(math.isfinite(a) for a in answers)
    assert answers.count(0.5) == 6000 - broken.calls + broken.faults
    assert v2.errors_by_status["invalid"] == v2.fallbacks == broken.faults
    assert binomial_ok(broken.faults, broken.calls, 0.1)


def test_corrupted_batch_rows_are_replaced_one_by_one() -> None:
    """In batch mode only the rows hit are replaced; the router falls back for those rows."""
    clock = FakeClock()
    broken = corrupt_outputs(batch_sum, 0.2, batch=True, seed=1)
    router = ss.Router(
        {"v1": lambda X: np.zeros(len(X)), "v2": broken},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=100),
        clock=clock,
        validators={"v2": ss.is_finite},
    )
    ys = router.predict_batch(np.ones((5000, 2)), keys=np.arange(5000))
    assert int((ys == 0.0).sum()) == broken.faults
    assert int((ys == 2.0).sum()) == 5000 - broken.faults
    assert router.status().metrics.variant("v2").errors == broken.faults
    assert binomial_ok(broken.faults, 5000, 0.2)


def test_corruption_keeps_the_output_shape() -> None:
    """An array output is filled with the value in its own shape; other values pass."""
    vec = corrupt_outputs(lambda x: np.array([1, 2, 3]), 1.0)
    out = vec(None)
    assert out.shape == (3,)
    assert np.isnan(out).all()
    listed = corrupt_outputs(lambda X: [1.0, 2.0], 1.0, value=None, batch=True)
    assert listed([0, 1]) == [None, None]


# -- drop_accuracy -------------------------------------------------------------------------


def test_dropped_accuracy_flips_a_binomial_share_of_labels() -> None:
    """A perfect classifier wrapped at rate 0.2 is right on about 80% of requests."""
    worse = drop_accuracy(lambda x: x % 2, 0.2, seed=6)
    right = sum(worse(i) == i % 2 for i in range(10_000))
    assert 10_000 - right == worse.faults
    assert binomial_ok(worse.faults, 10_000, 0.2)


def test_wrong_labels_are_drawn_uniformly_among_the_others() -> None:
    """With three labels, a hit output becomes each of the two others about equally often."""
    worse = drop_accuracy(lambda x: "a", 1.0, labels=("a", "b", "c"), seed=2)
    outs = [worse(None) for _ in range(3000)]
    counts = [outs.count("b"), outs.count("c")]
    assert sum(counts) == 3000
    assert stats.chisquare(counts).pvalue > 1e-4


@pytest.mark.parametrize(
    ("output", "kwargs", "wrong"),
    [
        (True, {}, False),
        (0.9, {}, pytest.approx(0.1)),
        (0.9, {"shift": -0.5}, pytest.approx(0.4)),
        (1, {}, 0),
        ("fraud", {"labels": ("legit", "fraud")}, "legit"),
    ],
)
def test_wrong_answers_keep_their_type(output: Any, kwargs: dict[str, Any], wrong: Any) -> None:
    """Bools flip, scores become 1 - s (or s + shift), 0/1 ints and named labels swap."""
    assert drop_accuracy(lambda x: output, 1.0, **kwargs)(None) == wrong


def test_batch_accuracy_drop_is_per_row() -> None:
    """In batch mode only the rows hit change: scores, 0/1 labels and probability rows."""
    scores = drop_accuracy(lambda X: np.full(len(X), 0.8), 0.3, batch=True, seed=3)
    out = scores(np.zeros((4000, 1)))
    assert set(np.round(out, 9).tolist()) == {0.8, 0.2}
    assert int((out < 0.5).sum()) == scores.faults
    labels = drop_accuracy(lambda X: np.ones(len(X), dtype=int), 1.0, batch=True)
    assert labels(np.zeros((3, 1))).tolist() == [0, 0, 0]
    probs = drop_accuracy(lambda X: np.tile([0.9, 0.1], (len(X), 1)), 1.0, batch=True)
    assert probs(np.zeros((2, 1))).tolist() == [[0.1, 0.9], [0.1, 0.9]]
    named = drop_accuracy(lambda X: ["x"] * len(X), 1.0, labels=("x", "y"), batch=True)
    assert named([1, 2]) == ["y", "y"]


def test_accuracy_drop_reaches_delayed_outcomes_only() -> None:
    """Behind a router, wrong answers raise no error; only the joined labels reveal them."""
    clock = FakeClock()
    worse = drop_accuracy(lambda x: x % 2, 0.3, seed=4)
    router = ss.Router(
        {"v1": lambda x: x % 2, "v2": worse},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
        clock=clock,
    )
    for i in range(2000):
        r = router.route(i, key=i)
        router.record_outcome(r.request_id, "correct", float(r.value == i % 2))
    m = router.status().metrics
    v1, v2 = m.variant("v1"), m.variant("v2")
    assert v1.errors == v2.errors == 0
    assert v1.outcomes["correct"].mean == 1.0
    assert v2.outcomes["correct"].n == worse.calls
    assert v2.outcomes["correct"].mean == pytest.approx(1 - worse.faults / worse.calls)


def test_accuracy_drop_rejects_what_it_cannot_make_wrong() -> None:
    """A label outside labels, a non-0/1 int and too few labels raise typed errors."""
    with pytest.raises(ss.DataError, match="'maybe'"):
        drop_accuracy(lambda x: "maybe", 1.0, labels=("yes", "no"))(None)
    with pytest.raises(ss.DataError, match="7"):
        drop_accuracy(lambda x: 7, 1.0)(None)
    with pytest.raises(ss.ConfigError, match="labels"):
        drop_accuracy(identity, 0.1, labels=("only",))


# -- hang ----------------------------------------------------------------------------------


def test_hang_jumps_the_fake_clock_and_shows_as_latency() -> None:
    """Under a FakeClock a hang advances time by its seconds; the router records it."""
    clock = FakeClock()
    stuck = hang(lambda x: 0.5, 30.0, start=100.0, clock=clock)
    router = canary(clock, stuck)
    for i in range(200):
        router.predict(i, key=i)
    assert clock() == 0.0
    clock.set(100.0)
    hits = 0
    for i in range(200):
        router.predict(i, key=i)
        hits += router.route(i, key=i).variant == "v2"
    assert stuck.faults == 2 * hits
    assert clock() == pytest.approx(100.0 + 30.0 * stuck.faults)
    v2 = router.status().metrics.variant("v2")
    assert v2.latency_quantiles()["p99"] == pytest.approx(30.0, rel=0.01)


def test_hang_with_a_real_clock_blocks_until_released() -> None:
    """With a real clock a hung call blocks; deactivate() wakes it without waiting it out."""
    stuck = hang(identity, 600.0)
    done: list[Any] = []
    worker = threading.Thread(target=lambda: done.append(stuck(42)))
    worker.start()
    while stuck.faults == 0:
        worker.join(0.001)
    assert done == []
    stuck.deactivate()
    worker.join(60.0)
    assert not worker.is_alive()
    assert done == [42]

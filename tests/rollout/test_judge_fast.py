"""The judge's per-check paths agree with the array code and with the sequential tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safeserve as ss
from safeserve.metrics import MetricsSnapshot
from safeserve.policy import CheckResult, Judge, Judgement
from safeserve.policy._bounds import binomial_cs, binomial_cs_side
from safeserve.stats import Direction, RareErrorTest, SequentialSRM, Verdict
from safeserve.stats._sequential import _rho2, _sequence_core, _sequence_scalar

from .conftest import Clock, Model

_DIRECTIONS = (Direction.HIGHER_IS_WORSE, Direction.LOWER_IS_WORSE, Direction.EITHER)


def same_number(a: float | None, b: float | None) -> bool:
    """Equal, both NaN, or within a few units in the last place (platform libm differences)."""
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


_counts = st.one_of(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([0, 1, 2, 99, 100, 101, 10**9]),
)
_means = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, 1.0, -3.0, 1e-300, 1e300]),
)
_vars = st.one_of(
    st.floats(min_value=0.0, max_value=1e6, allow_nan=False),
    st.sampled_from([0.0, 5e-324, 1e300]),
)


@settings(max_examples=400, deadline=None)
@given(
    n_c=_counts,
    n_b=_counts,
    mean_c=_means,
    mean_b=_means,
    var_c=_vars,
    var_b=_vars,
    direction=st.integers(min_value=0, max_value=2),
    relative=st.booleans(),
    margin=st.sampled_from([0.0, 0.005, 0.05, 1.0]),
    harm=st.sampled_from([0.0, 0.001, 0.1]),
    events=st.sampled_from([0, 5, 30, 2**40]),
    alpha=st.sampled_from([0.05, 1e-3, 1e-6, 0.4]),
    tuning=st.sampled_from([5000.0, 10.0, 1e7]),
    min_samples=st.sampled_from([2, 100]),
    min_events=st.sampled_from([0, 30]),
)
def test_scalar_sequence_matches_the_array_core(
    n_c: int,
    n_b: int,
    mean_c: float,
    mean_b: float,
    var_c: float,
    var_b: float,
    direction: int,
    relative: bool,
    margin: float,
    harm: float,
    events: int,
    alpha: float,
    tuning: float,
    min_samples: int,
    min_events: int,
) -> None:
    """One check on Python floats gives the vectorized sequence's verdict, numbers and reason."""
    got = _sequence_scalar(
        n_c,
        mean_c,
        var_c,
        n_b,
        mean_b,
        var_b,
        events=events,
        direction_code=direction,
        relative=relative,
        margin=margin,
        harm=harm,
        alpha=alpha,
        rho2_one=_rho2(alpha, tuning, one_sided=True),
        rho2_two=_rho2(alpha, tuning, one_sided=False),
        min_samples=min_samples,
        min_events=min_events,
    )
    want = _sequence_core(
        n_c,
        mean_c,
        var_c,
        n_b,
        mean_b,
        var_b,
        events=np.array([events], dtype=np.int64),
        alpha=alpha,
        direction=[_DIRECTIONS[direction]],
        relative=relative,
        margin=margin,
        harm_threshold=harm,
        tuning=tuning,
        min_samples=min_samples,
        min_events=min_events,
    )[0]
    if got is None:
        # Left to the array code, only where Python raises and numpy gives inf or nan (an
        # empty arm, a relative effect whose baseline mean's square leaves float range, a
        # standard error whose square underflows: an interval of no width), and for a
        # relative effect with no bounded interval.
        assert (
            min(n_c, n_b) == 0
            or (relative and not 1e-70 < abs(mean_b) < 1e70)
            or (relative and (want.lower, want.upper) == (-math.inf, math.inf))
            or not want.upper - want.lower >= 1e-140
        )
        return
    assert got.verdict is want.verdict
    assert got.reason == want.reason
    assert (got.n_candidate, got.n_baseline) == (want.n_candidate, want.n_baseline)
    assert got.direction is want.direction
    for field in ("estimate", "lower", "upper", "p_value", "margin"):
        assert same_number(getattr(got, field), getattr(want, field)), field


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=10**7),
    frac=st.floats(min_value=0.0, max_value=1.0),
    alpha=st.sampled_from([0.05, 0.01, 1e-3, 1e-5]),
)
def test_one_end_of_the_binomial_sequence_is_that_end_of_both(
    n: int, frac: float, alpha: float
) -> None:
    """The error-rate check's one-sided bounds are exactly the ends of the two-sided call."""
    x = round(frac * n)
    lower, upper = binomial_cs(x, n, alpha)
    assert binomial_cs_side(x, n, alpha, upper=False) == lower
    assert binomial_cs_side(x, n, alpha, upper=True) == upper


def _snapshots(seed: int, *, requests: int, every: int) -> list[MetricsSnapshot]:
    """Snapshots of a 70/30 split under a fake clock, with custom metrics and outcomes.

    The candidate errs and converts differently; custom metric ``zero`` is 0 in the baseline
    (its relative effect is undefined) and ``mine`` is recorded by the candidate alone.
    """
    clock = Clock()
    v1 = Model(clock, seed=seed, error_rate=0.01, latency=0.010)
    v2 = Model(clock, seed=seed + 1, error_rate=0.03, latency=0.012, conversion=0.08)
    router = ss.Router(
        {"v1": v1, "v2": v2}, strategy=ss.FixedSplit("v1", {"v2": 30.0}), clock=clock
    )
    rng = np.random.default_rng(seed)
    out = []
    for i in range(requests):
        clock.t += 0.05
        try:
            r = router.route(None, key=int(rng.integers(0, 5_000)))
        except RuntimeError:
            r = None
        if r is not None:
            router.record_outcome(r.request_id, "converted", float(rng.random() < r.value))
            if i % 2 == 0:
                router.record(r.variant, "load", float(rng.normal(1.0, 0.2)))
                router.record(r.variant, "zero", 0.0 if r.variant == "v1" else 1.0)
                if r.variant == "v2":
                    router.record("v2", "mine", 1.0)
        if i % every == every - 1:
            out.append(router.recorder.snapshot())
    return out


def _policy() -> ss.Policy:
    return ss.Policy(
        [
            ss.ErrorRate(min_events=10),
            ss.Latency(),
            ss.LatencyQuantile(q=0.9, max_increase=0.1),
            ss.Guardrail(metric="error_rate", above=0.2),
            ss.SRM(),
            ss.MetricCheck(metric="converted", kind="proportion", min_samples=50),
            ss.MetricCheck(metric="load", source="custom", kind="mean", relative=False),
            ss.MetricCheck(metric="zero", source="custom", kind="mean", dry_run=True),
            ss.MetricCheck(metric="mine", source="custom", kind="mean"),
        ]
    )


def _same_results(a: tuple[CheckResult, ...], b: tuple[CheckResult, ...]) -> None:
    assert [r.name for r in a] == [r.name for r in b]
    for x, y in zip(a, b, strict=True):
        for field in ("kind", "verdict", "critical", "dry_run", "reason", "action"):
            assert getattr(x, field) == getattr(y, field), (x.name, field)
        assert (x.n_candidate, x.n_baseline) == (y.n_candidate, y.n_baseline), x.name
        for field in ("estimate", "lower", "upper", "p_value", "margin"):
            assert same_number(getattr(x, field), getattr(y, field)), (x.name, field)


def _flags(j: Judgement) -> tuple[bool, bool, bool, bool]:
    return j.failed, j.guardrail_breached, j.srm_mismatch, j.all_pass


def test_judge_gives_the_judgement_of_the_vectorized_path() -> None:
    """Per-check sequences (with the array code as fallback) give the vectorized judgement."""
    fast = Judge(_policy(), baseline="v1", candidate="v2", comparative_steps=2)
    vectorized = Judge(_policy(), baseline="v1", candidate="v2", comparative_steps=2)
    # The array code, one check per call: each check keeps its own minimums.
    vectorized._run = lambda reqs, ctx: [  # type: ignore[method-assign]
        vectorized._run_arrays([r], ctx)[0] for r in reqs
    ]
    weights = {"v1": 70.0, "v2": 30.0}
    seen = set()
    for snap in _snapshots(3, requests=6_000, every=500):
        a = fast.evaluate(snap, weights=weights)
        b = vectorized.evaluate(snap, weights=weights)
        _same_results(a.results, b.results)
        assert _flags(a) == _flags(b)
        seen |= {(r.name, r.verdict.value, r.reason.split(":")[0]) for r in a.results}
    # Decisions were compared, not only "too few samples"; "zero" went to the array code.
    assert any(name == "error_rate" and verdict == "fail" for name, verdict, _ in seen)
    assert any(name == "latency" and verdict != "inconclusive" for name, verdict, _ in seen)
    assert ("zero", "inconclusive", "baseline mean is not told apart from 0") in seen


def test_srm_check_follows_the_sequential_test_fed_every_batch() -> None:
    """The SRM check equals a SequentialSRM given every batch with the weights in force,
    including repeated looks at one snapshot and changes of weights."""
    judge = Judge(
        ss.Policy([ss.SRM(alpha=0.01)]), baseline="v1", candidate="v2", comparative_steps=1
    )
    snaps = _snapshots(5, requests=4_000, every=400)
    plan = [(s, w) for s in snaps for w in (30.0, 30.0)]  # every snapshot looked at twice
    plan = [(s, 50.0 if i in (6, 7, 12) else w) for i, (s, w) in enumerate(plan)]
    oracle: SequentialSRM | None = None
    last = (0, 0)
    for snap, w_c in plan:
        weights = {"v1": 100.0 - w_c, "v2": w_c}
        got = judge.evaluate(snap, weights=weights).results[0]
        now = (
            snap.variant("v2").totals.get("requests", 0),
            snap.variant("v1").totals.get("requests", 0),
        )
        batch = [now[0] - last[0], now[1] - last[1]]
        last = now
        pair = (w_c, 100.0 - w_c)
        if oracle is None:
            oracle = SequentialSRM(pair, alpha=0.01)
        want = oracle.update(batch, weights=pair)
        assert got.p_value == want.p_value
        assert (got.n_candidate, got.n_baseline) == want.counts
        assert got.reason == want.reason


def test_rare_error_path_follows_the_rare_error_test_fed_every_batch() -> None:
    """While errors are rare, the error-rate check reports the p-value of a RareErrorTest fed
    every batch of new errors, including repeated looks at one snapshot."""
    check = ss.ErrorRate(min_events=10_000, min_samples=20)
    judge = Judge(ss.Policy([check]), baseline="v1", candidate="v2", comparative_steps=1)
    oracle = RareErrorTest(alpha=0.05)
    last = (0, 0)
    seen: list[Any] = []
    for snap in _snapshots(7, requests=4_000, every=250):
        for _ in range(2):
            got = judge.evaluate(snap, weights={"v1": 70.0, "v2": 30.0}).results[0]
            c, b = snap.variant("v2").totals, snap.variant("v1").totals
            now = (c["requests"] - c.get("ok", 0), b["requests"] - b.get("ok", 0))
            new = (now[0] - last[0], now[1] - last[1])
            last = now
            if new[0] or new[1]:
                oracle.update(*new, candidate_share=0.3)
            if got.reason.startswith("rare errors"):
                assert got.p_value == oracle.result().p_value
                seen.append(got.verdict)
    assert seen


def test_each_check_keeps_its_own_minimum_samples() -> None:
    """A check asking for 500 samples per arm stays inconclusive while one asking for 100
    decides on the same data (the minimums are not pooled across the policy)."""
    policy = ss.Policy(
        [
            ss.MetricCheck(
                metric="load", source="custom", kind="mean", direction="higher_is_worse"
            ),
            ss.MetricCheck(
                metric="load",
                source="custom",
                kind="mean",
                direction="higher_is_worse",
                min_samples=500,
                name="load_500",
            ),
        ]
    )
    judge = Judge(policy, baseline="v1", candidate="v2", comparative_steps=2)
    clock = Clock()
    router = ss.Router(
        {"v1": lambda x: x, "v2": lambda x: x},
        strategy=ss.FixedSplit("v1", {"v2": 50.0}),
        clock=clock,
    )
    rng = np.random.default_rng(5)
    for _ in range(300):
        router.record("v1", "load", float(rng.normal(1.0, 0.1)))
        router.record("v2", "load", float(rng.normal(2.0, 0.1)))  # twice the load
    j = judge.evaluate(router.recorder.snapshot(), weights={"v1": 50.0, "v2": 50.0})
    by_name = {r.name: r for r in j.results}
    assert by_name["load"].verdict is Verdict.FAIL
    assert by_name["load_500"].verdict is Verdict.INCONCLUSIVE
    assert "need 500 per arm" in by_name["load_500"].reason


def test_an_empty_arm_enters_the_sequences_as_no_information() -> None:
    """A proportion with events in the baseline and no requests in the candidate (the
    error-rate check's request just after a blue/green switch) is inconclusive on both paths;
    neither raises."""
    from types import SimpleNamespace

    from safeserve.policy._checks import _CS

    judge = Judge(ss.Policy([ss.ErrorRate()]), baseline="v1", candidate="v2", comparative_steps=1)
    ctx: Any = SimpleNamespace(alpha=0.05, tuning=10_000.0)
    common: dict[str, Any] = {
        "direction": Direction.HIGHER_IS_WORSE,
        "relative": False,
        "margin": 0.005,
        "harm": 0.0,
        "min_samples": 100,
        "min_events": 30,
    }
    reqs = [
        _CS(kind="proportion", n_c=0, x_c=0, v_c=0.0, n_b=5_000, x_b=60, v_b=0.0, **common),
        _CS(kind="mean", n_c=0, x_c=math.nan, v_c=math.nan, n_b=5_000, x_b=1.0, v_b=0.1, **common),
    ]
    for seqs in (judge._run(reqs, ctx), judge._run_arrays(reqs, ctx)):
        for seq in seqs:
            assert seq.verdict is Verdict.INCONCLUSIVE
            assert "too few samples" in seq.reason


def _constant_arms(mean_c: float, mean_b: float, *, relative: bool) -> Any:
    """The array code on two arms of 1,000 equal values each (no variance)."""
    return _sequence_core(
        1_000,
        mean_c,
        0.0,
        1_000,
        mean_b,
        0.0,
        events=np.array([2**40], dtype=np.int64),
        alpha=0.05,
        direction=[Direction.HIGHER_IS_WORSE],
        relative=relative,
        margin=0.0,
        harm_threshold=0.0,
        tuning=5000.0,
        min_samples=100,
        min_events=0,
    )


def test_constant_arms_differing_by_a_rounding_do_not_decide_a_regression() -> None:
    """With no variance in either arm the exact difference decides, but a difference of one
    float rounding (two sums of the same constants in another order) is no difference."""
    a = 0.1 + 0.2  # 0.30000000000000004
    b = 0.3
    rho = (_rho2(0.05, 5000.0, one_sided=True), _rho2(0.05, 5000.0, one_sided=False))
    for mean_c, mean_b in ((a, b), (b, a), (1e-3 * a, 1e-3 * b)):
        for relative in (False, True):
            scalar = _sequence_scalar(
                1_000,
                mean_c,
                0.0,
                1_000,
                mean_b,
                0.0,
                events=2**40,
                direction_code=0,
                relative=relative,
                margin=0.0,
                harm=0.0,
                alpha=0.05,
                rho2_one=rho[0],
                rho2_two=rho[1],
                min_samples=100,
                min_events=0,
            )
            arrays = _constant_arms(mean_c, mean_b, relative=relative)
            assert scalar is not None
            assert scalar.verdict is not Verdict.FAIL
            assert arrays.verdict_code[0] != 2  # not FAIL
            assert scalar.estimate == arrays.estimate[0] == 0.0
    # A real difference of constants still decides at once.
    worse = _constant_arms(0.31, 0.3, relative=False)
    assert worse.verdict_code[0] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holm_does_not_fail_an_error_increase_below_the_harm_threshold(seed: int) -> None:
    """ErrorRate(harm=0.01) with Holm's correction: errors rising from 0% to 0.4% are below the
    harm threshold and must not fail. The rare-error test's p-value is against "no increase",
    not this check's hypothesis, so it takes no part in Holm (it failed every such run)."""
    rng = np.random.default_rng(seed)

    def candidate(x: Any) -> float:
        if rng.random() < 0.004:
            raise RuntimeError("rare")
        return 0.0

    clock = Clock()
    router = ss.Router(
        {"v1": lambda x: 0.0, "v2": candidate},
        strategy=ss.Canary(
            "v1",
            "v2",
            steps=(50, 100),
            min_duration=1e9,
            min_samples=100,
            evaluate_every=10**9,
            evaluate_interval=1e12,
            deadline=None,
        ),
        policy=ss.Policy([ss.ErrorRate(harm=0.01, margin=0.02)], correction="holm"),
        clock=clock,
        name=f"holm-{seed}",
    )
    for look in range(20):
        for i in range(500):
            router.route(0.0, key=f"u{look}-{i}")
        clock.t += 1.0
        d = router.evaluate()
        assert d.action is not ss.Action.ROLLBACK, d.reason


def test_a_proportion_with_an_empty_arm_leaves_the_other_checks_minimums_alone() -> None:
    """A mean check needing 1,000 per arm at 300 per arm stays inconclusive next to a
    proportion check whose candidate arm is empty (that arm sent the whole evaluation down the
    array path, with the smallest minimum of all checks: it decided)."""
    from safeserve.policy._checks import _CS

    judge = Judge(
        ss.Policy([ss.Latency(min_samples=1000)]), baseline="a", candidate="b", comparative_steps=1
    )
    ctx = type("Ctx", (), {"alpha": 0.05, "tuning": 5000.0})()
    mean = _CS(
        kind="mean", n_c=300, x_c=1.0, v_c=0.01, n_b=300, x_b=0.0, v_b=0.01,
        direction=Direction.HIGHER_IS_WORSE, relative=False, margin=0.1, harm=0.0,
        min_samples=1000, min_events=0,
    )  # fmt: skip
    empty = _CS(
        kind="proportion", n_c=0, x_c=0, v_c=0.0, n_b=500, x_b=50, v_b=0.0,
        direction=Direction.LOWER_IS_WORSE, relative=True, margin=0.05, harm=0.0,
        min_samples=100, min_events=30,
    )  # fmt: skip
    assert judge._run([mean], ctx)[0].verdict is Verdict.INCONCLUSIVE
    together = judge._run([mean, empty], ctx)
    assert [s.verdict for s in together] == [Verdict.INCONCLUSIVE, Verdict.INCONCLUSIVE]


def test_an_older_snapshot_does_not_undo_a_change_of_weights() -> None:
    """A snapshot taken before another thread changed the weights (and restarted the judge's
    count there) is judged after it: the count must not move back, or the next evaluation
    judges the requests served at the old weights at the new ones."""
    snaps = _snapshots(3, requests=3000, every=1000)
    judge = Judge(ss.Policy([ss.ErrorRate()]), baseline="v1", candidate="v2", comparative_steps=1)
    judge.evaluate(snaps[0], weights={"v1": 50.0, "v2": 50.0})
    judge.skip({v: snaps[1].variant(v).totals for v in ("v1", "v2")})  # weights changed here
    judge.evaluate(snaps[0], weights={"v1": 95.0, "v2": 5.0})  # the older snapshot, late
    c0, c1 = snaps[1].variant("v2").totals, snaps[2].variant("v2").totals
    new = judge._new_counts(snaps[2])
    assert new[0] == c1["requests"] - c0["requests"]

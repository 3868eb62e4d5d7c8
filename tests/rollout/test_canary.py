"""Canary rollouts end to end under a fake clock: promotion, rollbacks, dry runs."""

from __future__ import annotations

import structlog
from structlog.testing import capture_logs

import safeserve as ss

from .conftest import Clock, Model, drive, ended

FAST = {"min_duration": 120.0, "min_samples": 400, "deadline": 20_000.0, "evaluate_every": 250}


def canary(
    clock: Clock, v1: Model, v2: Model, policy: ss.Policy | None = None, **kw: object
) -> ss.Router:
    options = {**FAST, **kw}
    return ss.Router(
        {"v1": v1, "v2": v2},
        strategy=ss.Canary("v1", "v2", **options),  # type: ignore[arg-type]
        policy=policy,
        clock=clock,
        name="checkout",
    )


LENIENT = ss.Policy(
    [
        ss.ErrorRate(margin=0.02),
        ss.Latency(margin=0.25),
        ss.Guardrail(metric="error_rate", above=0.2, min_requests=20),
        ss.SRM(),
    ]
)


def actions(router: ss.Router) -> list[tuple[str, int | None, int | None]]:
    return [
        (d.action.value, d.step_before, d.step_after)
        for d in router.status().decisions
        if d.action is not ss.Action.CONTINUE
    ]


def test_good_candidate_promotes_through_every_step(clock: Clock) -> None:
    """A candidate like the baseline moves 5 -> 25 -> 50 -> 100% and becomes stable."""
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2), LENIENT)
    drive(router, clock, requests=200_000, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.PROMOTED
    assert st.stable == "v2"
    assert st.weights == {"v1": 0.0, "v2": 100.0}
    assert actions(router) == [
        ("promote", 0, 1),
        ("promote", 1, 2),
        ("promote", 2, 3),
        ("promote", 3, 3),
    ]
    assert router.predict(None, key="anyone") == 0.10


def test_three_times_the_errors_rolls_back_at_the_first_step(clock: Clock) -> None:
    """3x the baseline's error rate rolls back from 5%, and the candidate never serves again."""
    v2 = Model(clock, seed=2, error_rate=0.03)
    router = canary(clock, Model(clock, seed=1), v2, LENIENT)
    drive(router, clock, requests=200_000, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    assert actions(router) == [("rollback", 0, None)]
    rollback = st.decisions[-1]
    assert "error_rate" in rollback.reason
    assert rollback.check("error_rate").verdict is ss.stats.Verdict.FAIL
    calls = v2.calls
    drive(router, clock, requests=5_000, seed=9)
    assert v2.calls == calls
    assert router.status().weights["v2"] == 0.0


def test_latency_regression_rolls_back(clock: Clock) -> None:
    """A candidate 60% slower rolls back on the latency check."""
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, latency=0.016), LENIENT)
    drive(router, clock, requests=200_000, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    assert st.decisions[-1].check("latency").verdict is ss.stats.Verdict.FAIL


def test_regression_that_appears_only_at_fifty_percent(clock: Clock) -> None:
    """A candidate that breaks under load (at 50%) passes 5% and 25%, then rolls back from 50%."""
    v2 = Model(clock, seed=2)
    router = canary(clock, Model(clock, seed=1), v2, LENIENT)

    def load_sensitive(x: object) -> float:
        v2.error_rate = 0.06 if router.weights["v2"] >= 50 else 0.01
        return v2(x)

    router = canary(clock, Model(clock, seed=1), load_sensitive, LENIENT)  # type: ignore[arg-type]
    drive(router, clock, requests=300_000, stop=ended)
    assert router.status().phase is ss.Phase.ROLLED_BACK
    assert actions(router) == [("promote", 0, 1), ("promote", 1, 2), ("rollback", 2, None)]


def test_delayed_outcome_regression_rolls_back_once_outcomes_arrive(clock: Clock) -> None:
    """Conversion down 20% (seen only through delayed outcomes) rolls the candidate back."""
    policy = ss.Policy(
        [
            ss.ErrorRate(margin=0.02),
            ss.MetricCheck(
                metric="converted", kind="proportion", direction="lower_is_worse", margin=0.05
            ),
        ]
    )
    v1 = Model(clock, seed=1, conversion=0.30)
    v2 = Model(clock, seed=2, conversion=0.24)
    router = canary(clock, v1, v2, policy, min_duration=600.0)
    drive(router, clock, requests=300_000, outcome_delay=300.0, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    last = st.decisions[-1]
    assert "converted" in last.reason
    check = last.check("converted")
    assert check.verdict is ss.stats.Verdict.FAIL
    assert check.estimate is not None
    assert check.estimate < 0
    assert st.metrics.variant("v2").outcome_results.get("accepted", 0) > 0


def test_dry_run_checks_never_act(clock: Clock) -> None:
    """A failing dry-run check is evaluated and logged but never rolls back."""
    policy = ss.Policy([ss.ErrorRate(dry_run=True), ss.Latency(margin=0.25)])
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, error_rate=0.05), policy)
    drive(router, clock, requests=30_000)
    st = router.status()
    assert st.phase is not ss.Phase.ROLLED_BACK
    verdicts = [d.check("error_rate") for d in st.decisions if d.checks]
    assert any(v.verdict is ss.stats.Verdict.FAIL and v.dry_run for v in verdicts)


def test_non_critical_check_is_reported_not_acted_on(clock: Clock) -> None:
    """A non-critical failing check does not roll back."""
    policy = ss.Policy([ss.ErrorRate(critical=False), ss.Latency(margin=0.25)])
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, error_rate=0.05), policy)
    drive(router, clock, requests=30_000)
    assert router.status().phase is not ss.Phase.ROLLED_BACK


def test_guardrail_acts_at_once(clock: Clock) -> None:
    """A candidate failing 40% of requests is rolled back by the guardrail on the first look."""
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, error_rate=0.4), None)
    drive(router, clock, requests=2_000, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    assert st.decisions[-1].reason.startswith("guardrail breached")
    assert st.decisions[-1].check("error_rate_guardrail").verdict is ss.stats.Verdict.FAIL


def test_failure_limit_and_consecutive_semantics(clock: Clock) -> None:
    """With failure_limit=2 two failed evaluations are tolerated; the third rolls back."""
    policy = ss.Policy([ss.ErrorRate(margin=0.02)], failure_limit=2)
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, error_rate=0.05), policy)
    drive(router, clock, requests=200_000, stop=ended)
    decisions = router.status().decisions
    failed = [
        d for d in decisions if d.checks and d.check("error_rate").verdict is ss.stats.Verdict.FAIL
    ]
    assert len(failed) == 3
    assert failed[-1].action is ss.Action.ROLLBACK
    assert all(d.action is ss.Action.CONTINUE for d in failed[:-1])


def test_deadline_takes_the_configured_action(clock: Clock) -> None:
    """A step that never reaches a verdict pauses (or rolls back) at its deadline."""
    strict = ss.Policy([ss.ErrorRate(margin=0.0001)])
    router = canary(
        clock,
        Model(clock, seed=1),
        Model(clock, seed=2),
        strict,
        deadline=600.0,
        on_deadline="pause",
    )
    drive(router, clock, requests=40_000, stop=lambda r: r.status().phase is ss.Phase.PAUSED)
    st = router.status()
    assert st.phase is ss.Phase.PAUSED
    assert "deadline" in st.decisions[-1].reason
    router2 = canary(clock, Model(clock, seed=1), Model(clock, seed=2), strict, deadline=600.0)
    drive(router2, clock, requests=40_000, stop=ended)
    assert router2.status().phase is ss.Phase.ROLLED_BACK


def test_sample_ratio_mismatch_pauses(clock: Clock) -> None:
    """When the observed split drifts from the weights (broken logging), the rollout pauses."""
    policy = ss.Policy([ss.ErrorRate(margin=0.02), ss.SRM()])
    v2 = Model(clock, seed=2)
    router = canary(clock, Model(clock, seed=1), v2, policy, min_duration=1e9, deadline=None)
    # Simulate lost candidate records: drop half of v2's records before they reach the windows.
    append = router._append

    def lossy(record: tuple[object, ...]) -> None:
        if record[1] >> 4 == 1 and record[0] % 2 == 0:  # type: ignore[operator]
            return
        append(record)

    router._append = lossy  # type: ignore[method-assign]
    drive(router, clock, requests=60_000, stop=lambda r: r.status().phase is ss.Phase.PAUSED)
    st = router.status()
    assert st.phase is ss.Phase.PAUSED
    assert "sample ratio mismatch" in st.decisions[-1].reason


def test_decisions_are_structlog_events_without_user_keys(clock: Clock) -> None:
    """Every decision is a safeserve.decision event with the evidence; no key appears."""
    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2, error_rate=0.04), LENIENT)
    with capture_logs() as logs:
        drive(router, clock, requests=100_000, stop=ended)
    events = [e for e in logs if e["event"] == "safeserve.decision"]
    assert events
    rollback = [e for e in events if e["action"] == "rollback"]
    assert len(rollback) == 1
    event = rollback[0]
    assert {"rollout", "phase", "step", "action", "reason", "checks"} <= set(event)
    assert event["rollout"] == "checkout"
    assert any(c["name"] == "error_rate" and c["verdict"] == "fail" for c in event["checks"])
    text = repr(events)
    assert "key" not in {k for e in events for k in e}
    assert "user" not in text


def test_history_is_bounded(clock: Clock) -> None:
    """The decision history keeps the most recent decisions only."""
    router = canary(
        clock, Model(clock, seed=1), Model(clock, seed=2), LENIENT, min_duration=1e9, deadline=None
    )
    for _ in range(300):
        router.evaluate()
    assert len(router.status().decisions) == 200


def test_evaluation_runs_by_itself_every_n_requests(clock: Clock) -> None:
    """Without explicit evaluate() calls, decisions appear as requests flow."""
    router = canary(
        clock,
        Model(clock, seed=1),
        Model(clock, seed=2),
        LENIENT,
        evaluate_every=256,
        evaluate_interval=1e9,
    )
    drive(router, clock, requests=2_600)
    n = len(router.status().decisions)
    assert 8 <= n <= 11


def test_evaluation_runs_by_itself_every_interval(clock: Clock) -> None:
    """With few requests, evaluations still come every evaluate_interval seconds."""
    router = canary(
        clock,
        Model(clock, seed=1),
        Model(clock, seed=2),
        LENIENT,
        evaluate_every=10**9,
        evaluate_interval=30.0,
    )
    drive(router, clock, requests=1_000, gap=1.0)  # about 1,010 simulated seconds
    n = len(router.status().decisions)
    assert 30 <= n <= 35


def test_manual_canary_is_not_evaluated_on_the_request_path(clock: Clock) -> None:
    """A pinned canary (weight=...) is judged only on router.evaluate()."""
    router = ss.Router(
        {"v1": Model(clock, seed=1), "v2": Model(clock, seed=2)},
        strategy=ss.Canary("v1", "v2", weight=20, evaluate_every=100, evaluate_interval=1.0),
        clock=clock,
    )
    drive(router, clock, requests=2_000)
    assert router.status().decisions == ()
    router.evaluate()
    assert len(router.status().decisions) == 1


def test_state_is_plain_data(clock: Clock) -> None:
    """Decisions and rollout state serialize to JSON."""
    import json

    router = canary(clock, Model(clock, seed=1), Model(clock, seed=2), LENIENT)
    drive(router, clock, requests=3_000)
    d = router.evaluate()
    json.dumps(d.to_dict())
    assert structlog is not None


def test_a_relative_outcome_check_rolls_back_a_candidate_against_a_clean_baseline(
    clock: Clock,
) -> None:
    """A fraud-like label the stable model never produces and the candidate produces on 20%
    of requests rolls the candidate back through a relative (the default) MetricCheck: the
    relative effect has no bounded interval, but the candidate's rate is shown above the
    baseline's (the delta method's interval was unbounded, and the check INCONCLUSIVE, for
    ever)."""
    policy = ss.Policy(
        [ss.MetricCheck(metric="converted", kind="proportion", direction="higher_is_worse")]
    )
    v1 = Model(clock, seed=1, conversion=0.0)
    v2 = Model(clock, seed=2, conversion=0.2)
    router = canary(clock, v1, v2, policy, min_duration=600.0)
    drive(router, clock, requests=100_000, outcome_delay=60.0, stop=ended)
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    check = st.decisions[-1].check("converted")
    assert check.verdict is ss.stats.Verdict.FAIL
    assert "not told apart from 0" in check.reason

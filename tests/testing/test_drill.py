"""Rollback drills: each injected fault is caught within a bound; reports are exact and readable."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

import safeserve as ss
from safeserve.testing import (
    Drill,
    DrillConfig,
    DrillFault,
    DrillReport,
    FakeClock,
    Scenario,
    Traffic,
    run_drill,
    synthetic_models,
    synthetic_outcome,
)

ACCURACY_POLICY = ss.Policy(
    [
        ss.ErrorRate(),
        ss.Latency(),
        ss.MetricCheck(metric="correct", kind="proportion", margin=0.05),
        ss.Guardrail(metric="error_rate", above=0.2, min_requests=20),
    ]
)


def drill(fault: DrillFault | None, *, seed: int = 0, **kw: Any) -> DrillReport:
    """A drill on the synthetic models with a 0.5% background error rate in both arms."""
    options: dict[str, Any] = {"base_error_rate": 0.005, "traffic": Traffic(seed=seed)}
    options.update(kw)
    return run_drill(Scenario(fault=fault, **options))


# -- each fault is caught ---------------------------------------------------------------------


def test_error_fault_is_rolled_back_within_bounds() -> None:
    """3% extra errors from t=120 s roll back on the error-rate check, within 30k requests."""
    report = drill(DrillFault(kind="errors", rate=0.03, start=120.0, seed=1))
    report.assert_rolled_back(within_requests=30_000, within_seconds=300, max_exposed_users=1000)
    assert report.failing_checks == ("error_rate",)
    assert report.fault_started_at is not None
    assert report.fault_started_at >= 120.0
    assert report.final_weights["candidate"] == 0.0


def test_severe_error_fault_trips_the_guardrail_at_once() -> None:
    """30% errors breach the absolute guardrail before the statistics have to decide."""
    report = drill(DrillFault(kind="errors", rate=0.3), base_error_rate=0.0)
    report.assert_rolled_back(within_requests=3000, max_exposed_users=200)
    assert "error_rate_guardrail" in report.failing_checks
    assert report.rollback_reason is not None
    assert report.rollback_reason.startswith("guardrail breached")


def test_latency_fault_from_the_second_step_is_rolled_back() -> None:
    """A candidate 30% slower from step 1 (25%) on passes step 0, then rolls back from 25%."""
    report = drill(DrillFault(kind="latency", factor=1.3, at_step=1))
    report.assert_rolled_back(within_requests=5000, within_seconds=120)
    assert report.failing_checks == ("latency",)
    actions = [(d["action"], d["weights_before"]["candidate"]) for d in report.transitions]
    assert actions == [("promote", 5.0), ("rollback", 25.0)]
    promoted_at = report.transitions[0]["time"]
    assert report.fault_started_at is not None
    assert promoted_at <= report.fault_started_at < promoted_at + 1.0


def test_accuracy_drop_is_caught_through_delayed_labels() -> None:
    """Wrong-but-valid answers raise no error; the delayed labels roll the candidate back."""
    report = drill(
        DrillFault(kind="accuracy", rate=0.3, start=120.0),
        policy=ACCURACY_POLICY,
        traffic=Traffic(outcome=synthetic_outcome, outcome_delay=30.0),
    )
    report.assert_rolled_back(within_requests=30_000, within_seconds=400)
    assert report.failing_checks == ("correct",)
    rollback = report.transitions[-1]
    errors = next(c for c in rollback["checks"] if c["name"] == "error_rate")
    assert errors["verdict"] != "fail"


def test_corrupted_outputs_count_as_errors_with_a_validator() -> None:
    """NaN outputs fail ss.is_finite, count as the candidate's errors, and roll it back."""
    report = drill(
        DrillFault(kind="corrupt", rate=0.03, start=120.0, seed=2),
        validators={"candidate": ss.is_finite},
    )
    report.assert_rolled_back(within_requests=30_000, within_seconds=300)
    assert "error_rate" in report.failing_checks
    assert report.faults > 0


def test_corrupted_outputs_go_unseen_without_a_validator() -> None:
    """Without a validator NaN is an answer like any other: the drill shows the gap."""
    report = drill(DrillFault(kind="corrupt", rate=0.03, start=120.0, seed=2), max_requests=30_000)
    assert not report.rolled_back
    with pytest.raises(AssertionError, match="did not roll back"):
        report.assert_rolled_back()


def test_drill_in_batch_mode_catches_corruption() -> None:
    """Batch traffic (route_batch) with a batch-mode fault is caught the same way."""
    report = run_drill(
        Scenario(
            fault=DrillFault(kind="corrupt", rate=0.2),
            validators={"candidate": ss.is_finite},
            traffic=Traffic(batch=50),
            base_latency=None,
        )
    )
    report.assert_rolled_back(within_requests=5000)


def test_no_fault_is_not_rolled_back() -> None:
    """Identical models with a shared background error rate: no rollback, and a promotion."""
    report = drill(None)
    report.assert_not_rolled_back()
    report.assert_promoted()
    assert report.stop_reason == "promoted"
    assert [d["action"] for d in report.transitions] == ["promote"] * 4


# -- the report's figures ---------------------------------------------------------------------


def test_latency_fault_hits_every_candidate_request_the_drill_counts() -> None:
    """With rate 1 the injector's own hit count equals the requests the drill attributes."""
    report = drill(DrillFault(kind="latency", seconds=0.005, start=60.0))
    assert report.rolled_back
    assert report.faults == report.faulty_requests > 0
    assert 0 < report.exposed_users <= report.faulty_requests


def test_exposed_users_match_the_simulators_exposure() -> None:
    """With the fault on from the first request, exposure is exactly the simulator's own count
    of distinct users routed to the candidate (an independent tally)."""
    scenario = Scenario(
        fault=DrillFault(kind="errors", rate=0.3),
        strategy=ss.Canary("baseline", "candidate", weight=30),  # manual: never rolls back
        max_seconds=200.0,
        max_requests=None,
    )
    d = Drill(scenario)
    report = d.run()
    assert (report.phase, report.stop_reason) == ("progressing", "max_seconds")
    assert report.exposed_users == len(d.simulator.exposed_users("candidate")) > 0
    assert report.faulty_requests == d.router.status().metrics.variant("candidate").requests


def test_late_fault_exposes_only_users_seen_after_it() -> None:
    """A fault from t=100 s exposes fewer users than the candidate served in the whole run,
    and at least those it served for the first time after the fault."""
    scenario = Scenario(
        fault=DrillFault(kind="errors", rate=0.3, start=100.0),
        strategy=ss.Canary("baseline", "candidate", weight=30),
        max_seconds=200.0,
        max_requests=None,
        tick_every=100,
    )
    d = Drill(scenario)
    before: dict[str, Any] = {}

    def snapshot(tick: Any) -> None:
        if tick.time < 100.0:
            before["users"] = len(d.simulator.exposed_users("candidate"))

    report = d.run(on_tick=snapshot)
    everyone = len(d.simulator.exposed_users("candidate"))
    assert everyone - before["users"] <= report.exposed_users < everyone


def test_requests_to_rollback_stop_at_the_rollback() -> None:
    """Counted from the fault to the rollback, then the drill stops at its next look."""
    report = drill(DrillFault(kind="errors", rate=0.3), base_error_rate=0.0)
    assert report.requests_to_rollback is not None
    assert report.seconds_to_rollback is not None
    assert report.fault_started_at is not None
    assert report.rolled_back_at == pytest.approx(
        report.fault_started_at + report.seconds_to_rollback
    )
    # The fault was on from the first request; one look is 1000 requests.
    assert 0 <= report.requests - report.requests_to_rollback < 1000


def test_traffic_rate_matches_the_simulated_clock() -> None:
    """Requests over simulated seconds agree with the Poisson rate (scipy interval as oracle)."""
    report = drill(None, max_requests=None, max_seconds=300.0, base_error_rate=0.0)
    lo, hi = stats.poisson.interval(0.999, 100.0 * 300.0)
    assert report.seconds == pytest.approx(300.0, abs=1.0)
    assert lo <= report.requests <= hi


def test_report_is_json_and_deterministic() -> None:
    """to_json round-trips to to_dict, and the same scenario gives the same report twice."""
    scenario = Scenario(fault=DrillFault(kind="errors", rate=0.3), max_requests=5000)
    a, b = run_drill(scenario), run_drill(scenario)
    assert json.loads(a.to_json()) == a.to_dict()
    assert a.to_dict() == b.to_dict()
    assert a.decisions
    assert {"action", "reason", "checks", "time"} <= set(a.decisions[0])


def test_rollback_before_the_fault_is_not_a_caught_fault() -> None:
    """A candidate broken from the start rolls back before a late fault: assert_rolled_back
    says it was a false rollback of the drill, not a caught fault."""
    broken = synthetic_models()
    broken["candidate"] = lambda x: float("nan")
    report = run_drill(
        Scenario(
            models=broken,
            validators={"candidate": ss.is_finite},
            fault=DrillFault(kind="latency", seconds=0.01, start=10_000.0),
            max_requests=5000,
        )
    )
    assert report.rolled_back
    assert report.rolled_back_before_fault
    assert report.requests_to_rollback is None
    with pytest.raises(AssertionError, match="before the fault started"):
        report.assert_rolled_back()


def test_assertion_messages_name_the_missed_bound() -> None:
    """Each helper raises AssertionError naming what went wrong, with the drill's summary."""
    report = drill(DrillFault(kind="errors", rate=0.03, start=120.0, seed=1))
    with pytest.raises(AssertionError, match=r"more than the bound 10\b") as info:
        report.assert_rolled_back(within_requests=10)
    assert "failing checks: error_rate" in str(info.value)
    with pytest.raises(AssertionError, match=r"more than the bound 1\.0"):
        report.assert_rolled_back(within_seconds=1.0)
    with pytest.raises(AssertionError, match="users met the faulty candidate"):
        report.assert_rolled_back(max_exposed_users=1)
    with pytest.raises(AssertionError, match="was not promoted"):
        report.assert_promoted()
    with pytest.raises(AssertionError, match="rolled back"):
        report.assert_not_rolled_back()


def test_fault_that_never_starts_is_reported() -> None:
    """A fault waiting for a step the canary never reaches leaves fault_started false."""
    report = drill(DrillFault(kind="errors", rate=0.5, at_step=3), max_requests=3000)
    assert not report.fault_started
    assert report.faults == 0
    with pytest.raises(AssertionError, match="never started"):
        report.assert_rolled_back()


def test_models_factory_gets_the_drill_clock() -> None:
    """A factory builds models on the drill's FakeClock (here, to add its own latency)."""
    seen: list[FakeClock] = []

    def models(clock: FakeClock) -> dict[str, Any]:
        seen.append(clock)
        return synthetic_models()

    d = Drill(Scenario(models=models, max_requests=2000))
    d.run()
    assert seen == [d.clock]
    assert d.clock() > 0.0


# -- bad configurations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DrillFault(kind="boom"), "fault kind must be one of"),  # type: ignore[arg-type]
        (lambda: DrillFault(kind="errors", rate=1.5), "rate must be a number in"),
        (lambda: DrillFault(kind="hang"), "needs seconds="),
        (lambda: DrillFault(kind="errors", seconds=1.0), "applies to 'latency' or 'hang'"),
        (lambda: DrillFault(kind="errors", at_step=-1), "at_step must be an int"),
        (lambda: Scenario(max_requests=None), "max_requests= or max_seconds="),
        (lambda: Scenario(base_error_rate=1.0), "base_error_rate must be in"),
        (lambda: Scenario(models={"only": abs}), "needs two models"),
        (lambda: Scenario(strategy=ss.FixedSplit("a", {"b": 5})), "must be a safeserve.Canary"),
        (lambda: Traffic(rate=-1.0), "rate must be a positive"),
    ],
)
def test_bad_options_raise_config_errors(build: Any, message: str) -> None:
    """Every bad option is a ConfigError naming the value."""
    with pytest.raises(ss.ConfigError, match=message):
        build()


def test_a_drill_runs_once() -> None:
    """Running the same Drill twice is an error: its router has moved on."""
    d = Drill(Scenario(max_requests=1000))
    d.run()
    with pytest.raises(ss.ConfigError, match="already run"):
        d.run()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"faults": {}}, "unknown section or key 'faults'"),
        ({"fault": {"kind": "errors", "rat": 0.1}}, "unknown key fault.rat"),
        ({"fault": {"rate": 0.1}}, "fault.kind is required"),
        ({"fault": {"kind": "errors", "rate": "high"}}, r"\[fault\] rate must be a number"),
        ({"canary": {"steps": [50, 25]}}, r"\[canary\] steps must be strictly increasing"),
        ({"policy": {"checks": [{"check": "vibes"}]}}, r"policy.checks\[0\].check must be"),
        (
            {"policy": {"checks": [{"check": "latency", "margn": 0.1}]}},
            r"unknown key policy.checks\[0\].margn",
        ),
        ({"traffic": {"users": 0}}, r"\[traffic\] users must be a positive int"),
        ({"models": {"candidate": "no_such_module:f"}}, "cannot be imported"),
        ({"expect": {"rollback": "yes"}}, "expect.rollback must be true or false"),
        ({"expect": {"within_requests": 0}}, "expect.within_requests must be an int"),
        ({"limits": {"max_requests": -5}}, "max_requests must be an int"),
    ],
)
def test_config_errors_name_the_bad_key(config: dict[str, Any], message: str) -> None:
    """A bad drill configuration names the key or value that is wrong."""
    with pytest.raises(ss.ConfigError, match=message):
        DrillConfig.from_dict(config)


def test_config_builds_the_scenario_it_describes() -> None:
    """Sections map onto the Canary, the Policy checks, the fault, the traffic and bounds."""
    config = DrillConfig.from_dict(
        {
            "name": "ranker",
            "canary": {"steps": [10, 100], "min_duration": 30.0},
            "policy": {"alpha": 0.01, "checks": [{"check": "latency", "margin": 0.2}]},
            "fault": {"kind": "corrupt", "rate": 0.1, "value": "nan", "start": 5.0},
            "traffic": {"rate": 50.0, "outcome": "synthetic"},
            "validators": {"candidate": "is_finite"},
            "limits": {"max_seconds": 600.0, "max_requests": 10_000},
            "expect": {"within_seconds": 100.0},
        }
    )
    s = config.scenario
    assert s.name == "ranker"
    assert s.strategy is not None
    assert s.strategy.steps == (10.0, 100.0)
    assert s.policy is not None
    assert s.policy.alpha == 0.01
    assert [type(c).__name__ for c in s.policy.checks] == ["Latency"]
    assert s.fault is not None
    assert np.isnan(s.fault.value)
    assert s.traffic.outcome is synthetic_outcome
    assert s.validators == {"candidate": ss.is_finite}
    assert (s.max_seconds, s.max_requests) == (600.0, 10_000)
    assert config.expect_rollback
    assert config.within_seconds == 100.0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["errors", "accuracy", "corrupt", "none"])
def test_drills_over_many_seeds(kind: str) -> None:
    """Over 20 seeds each fault is caught every time, and a fault-free drill rarely rolls back.

    The policy's alpha (0.05) bounds the false-rollback rate of an identical candidate: more
    than 4 false rollbacks in 20 would happen with probability below 0.02 at that rate
    (binomial tail, computed with scipy).
    """
    assert stats.binom.sf(4, 20, 0.05) < 0.02
    rolled = 0
    for seed in range(20):
        fault = None
        kw: dict[str, Any] = {}
        if kind == "errors":
            fault = DrillFault(kind="errors", rate=0.03, start=120.0, seed=seed)
        elif kind == "corrupt":
            fault = DrillFault(kind="corrupt", rate=0.03, start=120.0, seed=seed)
            kw["validators"] = {"candidate": ss.is_finite}
        elif kind == "accuracy":
            fault = DrillFault(kind="accuracy", rate=0.3, start=120.0, seed=seed)
            kw["policy"] = ACCURACY_POLICY
            kw["traffic"] = Traffic(seed=seed, outcome=synthetic_outcome, outcome_delay=30.0)
        report = drill(fault, seed=seed, **kw)
        if fault is not None:
            report.assert_rolled_back(within_requests=60_000)
        rolled += report.rolled_back
    if kind == "none":
        assert rolled <= 4

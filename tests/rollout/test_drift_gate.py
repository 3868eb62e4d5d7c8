"""The drift gate: input drift pauses a rollout, names the features, and clears by itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import safeserve as ss
from safeserve._hashing import buckets_of
from safeserve.drift import DriftMonitor, ReferenceProfile

from .conftest import Clock

FEATURES = 5


def setup(
    clock: Clock, candidate: Callable[[Any], Any] | None = None, **canary: object
) -> tuple[ss.Router, DriftMonitor]:
    rng = np.random.default_rng(0)
    profile = ReferenceProfile.from_data(rng.normal(size=(20_000, FEATURES)))
    monitor = DriftMonitor(profile, sample_rate=1.0, window=2_000, min_samples=500, seed=1)
    options: dict[str, object] = {
        "min_duration": 1e9,  # never promote: these tests are about pausing
        "deadline": None,
        "min_samples": 100,
        # Evaluated by the tests' own router.evaluate() after each batch only (batches also
        # count towards automatic evaluations, which would add looks between a route_batch and
        # the predict_batch of the same rows).
        "evaluate_every": 10**9,
        "evaluate_interval": 1e12,
        "drift_resume_after": 300.0,
    }
    options.update(canary)
    options.setdefault("weight", 50)
    router = ss.Router(
        {"v1": lambda X: np.zeros(len(X)), "v2": candidate or (lambda X: np.zeros(len(X)))},
        strategy=ss.Canary("v1", "v2", auto=True, **options),  # type: ignore[arg-type]
        policy=ss.Policy([ss.Guardrail(metric="error_rate", above=0.5)]),
        clock=clock,
        drift=monitor,
    )
    return router, monitor


def on_candidate(router: ss.Router, keys: Any) -> Any:
    """Which of these keys the router sends to the candidate, found without serving them
    (serving would feed the rows to the drift monitor, once more than the test means to)."""
    snap = router._snapshot
    return snap.allocation.array.take(buckets_of(keys, seed=snap.seed)) == snap.names.index("v2")


def feed(
    router: ss.Router,
    clock: Clock,
    rng: np.random.Generator,
    *,
    batches: int,
    shift: float = 0.0,
    candidate_only: bool = False,
) -> None:
    for _ in range(batches):
        clock.t += 10.0
        X = rng.normal(size=(500, FEATURES))
        keys = rng.integers(0, 2**40, size=500)
        if shift:
            if candidate_only:
                X[on_candidate(router, keys), 3] += shift
            else:
                X[:, 3] += shift
        router.predict_batch(X, keys=keys)
        router.evaluate()


def test_shared_drift_pauses_as_traffic_changed_then_resumes(clock: Clock) -> None:
    """A 1-sigma shift of x3 in everyone's traffic pauses the rollout, blaming the traffic,
    and the rollout resumes by itself once the shift has been gone for the configured time."""
    router, _ = setup(clock)
    rng = np.random.default_rng(1)
    feed(router, clock, rng, batches=6)
    assert router.status().phase is ss.Phase.PROGRESSING
    feed(router, clock, rng, batches=16, shift=1.0)  # two confirmations a window (8 batches) apart
    st = router.status()
    assert st.phase is ss.Phase.PAUSED
    pause = [d for d in st.decisions if d.action is ss.Action.PAUSE][-1]
    assert "x3" in pause.reason
    assert "traffic changed" in pause.reason
    assert pause.check("drift").verdict is ss.stats.Verdict.FAIL
    assert pause.weights_after == pause.weights_before
    feed(router, clock, rng, batches=50)
    st = router.status()
    assert st.phase is ss.Phase.PROGRESSING
    resume = [d for d in st.decisions if d.action is ss.Action.RESUME][-1]
    assert not resume.manual
    assert "drift cleared" in resume.reason


def test_candidate_only_drift_is_named_as_such(clock: Clock) -> None:
    """When only the candidate's rows shift, the decision says so."""
    router, _ = setup(clock)
    rng = np.random.default_rng(2)
    # Flagged once each arm has 500 rows (2 batches), confirmed a window of 2,000 new
    # candidate rows later (8 batches of about 250): paused after 11 or 12 batches.
    feed(router, clock, rng, batches=16, shift=1.5, candidate_only=True)
    st = router.status()
    assert st.phase is ss.Phase.PAUSED
    pause = [d for d in st.decisions if d.action is ss.Action.PAUSE][-1]
    assert "x3" in pause.reason
    assert "candidate's traffic" in pause.reason


def test_no_drift_no_pause(clock: Clock) -> None:
    """Stationary inputs never pause the rollout in this run."""
    router, _ = setup(clock)
    feed(router, clock, np.random.default_rng(3), batches=30)
    assert router.status().phase is ss.Phase.PROGRESSING


def test_manual_resume_after_drift(clock: Clock) -> None:
    """A rollout paused by drift can be resumed by hand (no automatic resume configured)."""
    router, _ = setup(clock, drift_resume_after=None)
    rng = np.random.default_rng(4)
    feed(router, clock, rng, batches=16, shift=1.0)
    assert router.status().phase is ss.Phase.PAUSED
    feed(router, clock, rng, batches=20)
    assert router.status().phase is ss.Phase.PAUSED
    router.resume()
    assert router.status().phase is ss.Phase.PROGRESSING


def test_a_guardrail_breach_while_paused_by_drift_rolls_back(clock: Clock) -> None:
    """Paused by drift, the comparisons are not acted on, but a guardrail still is: a
    candidate that starts failing every request is rolled back (the pause held it at its
    weight for as long as the drift lasted, breach or not)."""
    broken = {"on": False}

    def candidate(X: Any) -> Any:
        if broken["on"]:
            raise RuntimeError("broken")
        return np.zeros(len(X))

    router, _ = setup(clock, candidate, drift_resume_after=None)
    rng = np.random.default_rng(4)
    feed(router, clock, rng, batches=16, shift=1.0)
    assert router.status().phase is ss.Phase.PAUSED
    feed(router, clock, rng, batches=2, shift=1.0)
    assert router.status().phase is ss.Phase.PAUSED  # a paused rollout stays while all holds
    broken["on"] = True
    feed(router, clock, rng, batches=25, shift=1.0)  # the window's error rate passes 50%
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    rollback = [d for d in st.decisions if d.action is ss.Action.ROLLBACK][-1]
    assert "guardrail breached" in rollback.reason
    assert rollback.phase_before == "paused"


def test_drift_confirmations_are_a_window_of_new_rows_apart(clock: Clock) -> None:
    """A drift flagged at every evaluation: the second confirmation waits until an arm's
    window (2,000 rows; 250 per arm per batch here) holds only rows the first one did not
    judge. Consecutive evaluations of overlapping windows paused at the next one, and a
    third of drift-free runs paused on such correlated flags."""
    router, monitor = setup(clock)
    rng = np.random.default_rng(5)
    first: int | None = None
    for batch in range(30):
        feed(router, clock, rng, batches=1, shift=5.0)
        d = router.status().decisions[-1]
        flagged = any(c.name == "drift" and c.verdict.value == "fail" for c in d.checks)
        if first is None and flagged:
            first = batch
        if router.status().phase is ss.Phase.PAUSED:
            break
    assert first is not None
    assert router.status().phase is ss.Phase.PAUSED
    assert batch - first >= monitor.window_rows // 250


def test_a_candidate_drift_is_confirmed_on_new_candidate_rows(clock: Clock) -> None:
    """Drift only in the candidate's traffic of a 5% canary: the second confirmation waits
    for a window of new candidate rows. New baseline rows (19 times as many per batch) used to
    count, so the same candidate window was confirmed twice (about 1 drift-free run in 100
    paused at 5%)."""
    router, monitor = setup(clock, weight=5)
    rng = np.random.default_rng(6)
    first: tuple[int, int] | None = None
    for _ in range(400):
        feed(router, clock, rng, batches=1, shift=1.5, candidate_only=True)
        d = router.status().decisions[-1]
        flagged = any(c.name == "drift" and c.verdict.value == "fail" for c in d.checks)
        if first is None and flagged:
            first = monitor.rows_added()
        if router.status().phase is ss.Phase.PAUSED:
            break
    assert first is not None
    assert router.status().phase is ss.Phase.PAUSED
    pause = [x for x in router.status().decisions if x.action is ss.Action.PAUSE][-1]
    assert "candidate's traffic" in pause.reason
    assert monitor.rows_added()[1] - first[1] >= monitor.window_rows


def test_flagged_drift_holds_promotion_until_it_is_confirmed(clock: Clock) -> None:
    """Drift flagged at every evaluation, on a canary that would promote at each one (no
    bake time once 600 requests per arm are in, a guardrail that holds; the monitor judges
    from 500 per arm): the weight stays until the confirmation pauses it (while the
    confirmation waited for a window of new rows, it promoted to 100%)."""
    router, _ = setup(clock, min_duration=0.0, min_samples=600)
    rng = np.random.default_rng(6)
    start = router.weights["v2"]
    for _ in range(30):
        feed(router, clock, rng, batches=1, shift=5.0)
        assert router.weights["v2"] == start
        if router.status().phase is ss.Phase.PAUSED:
            break
    assert router.status().phase is ss.Phase.PAUSED
    # Stationary traffic, for comparison: the same canary promotes.
    other, _ = setup(Clock(), min_duration=0.0, min_samples=600)
    feed(other, clock, np.random.default_rng(7), batches=4)
    assert other.weights["v2"] > start


def test_a_retry_counts_drift_confirmations_afresh(clock: Clock) -> None:
    """Paused by drift, rolled back, retried: the first drifted evaluation after the retry
    is one confirmation, not the third (it paused at once on the old streak)."""
    router, _ = setup(clock, drift_resume_after=None)
    rng = np.random.default_rng(8)
    feed(router, clock, rng, batches=16, shift=1.0)
    assert router.status().phase is ss.Phase.PAUSED
    router.rollback()
    router.retry()
    feed(router, clock, rng, batches=1, shift=1.0)
    assert router.status().phase is ss.Phase.PROGRESSING


def test_single_requests_are_observed_too(clock: Clock) -> None:
    """route() records sampled inputs for the monitor."""
    router, monitor = setup(clock)
    for i in range(400):
        router.route(np.zeros(FEATURES), key=i)
    monitor.flush()
    assert monitor.window_size("baseline") + monitor.window_size("candidate") == 400


def test_drift_needs_a_rollout() -> None:
    """A drift monitor without a canary is a configuration error."""
    profile = ReferenceProfile.from_data(np.random.default_rng(0).normal(size=(100, 2)))
    with pytest.raises(ss.ConfigError, match="drift monitor"):
        ss.Router({"a": abs}, drift=DriftMonitor(profile, window=100, min_samples=50))

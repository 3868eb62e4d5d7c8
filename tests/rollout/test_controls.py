"""Manual rollout controls, invalid transitions, and rollback under concurrent traffic."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any

import numpy as np
import pytest

import safeserve as ss

from .conftest import Clock


def make(clock: Clock, **kw: object) -> ss.Router:
    options: dict[str, object] = {"min_duration": 60.0, "min_samples": 100}
    options.update(kw)
    return ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 2},
        strategy=ss.Canary("v1", "v2", **options),  # type: ignore[arg-type]
        clock=clock,
        name="controls",
        overrides={"qa": "v2"},
    )


def test_promote_walks_the_steps_then_finishes(clock: Clock) -> None:
    """promote() moves one step at a time; from 100% it makes the candidate stable."""
    router = make(clock)
    assert router.status().step == 0
    assert router.weights["v2"] == 5.0
    for expected in (25.0, 50.0, 100.0):
        d = router.promote()
        assert d.action is ss.Action.PROMOTE
        assert d.manual
        assert router.weights["v2"] == expected
    d = router.promote()
    st = router.status()
    assert st.phase is ss.Phase.PROMOTED
    assert st.stable == "v2"
    with pytest.raises(ss.TransitionError, match="promoted"):
        router.promote()


def test_promote_full_skips_the_remaining_steps(clock: Clock) -> None:
    """promote(full=True) goes straight to 100% and done."""
    router = make(clock)
    d = router.promote(full=True)
    assert d.phase_after == "promoted"
    assert router.weights == {"v1": 0.0, "v2": 100.0}


def test_rollback_goes_to_zero_in_one_swap_and_blocks_overrides(clock: Clock) -> None:
    """rollback() sends everyone to the baseline at once, forced keys included."""
    router = make(clock)
    router.promote()
    version = router.version
    assert router.route(0, key="qa").variant == "v2"
    d = router.rollback(reason="bad smell")
    assert router.version == version + 1
    assert d.reason == "bad smell"
    assert d.weights_after == {"v1": 100.0, "v2": 0.0}
    assert {router.route(0, key=k).variant for k in ["qa", *range(500)]} == {"v1"}
    with pytest.raises(ss.TransitionError, match="rolled_back"):
        router.promote()
    with pytest.raises(ss.TransitionError):
        router.pause()


def test_retry_starts_again_from_the_first_step(clock: Clock) -> None:
    """retry() after a rollback goes back to the first step with fresh statistics."""
    router = make(clock)
    router.rollback()
    d = router.retry()
    assert d.action is ss.Action.RETRY
    assert router.status().phase is ss.Phase.PROGRESSING
    assert router.weights["v2"] == 5.0
    assert router.route(0, key="qa").variant == "v2"
    with pytest.raises(ss.TransitionError, match="retry"):
        router.retry()


def test_pause_and_resume(clock: Clock) -> None:
    """pause() freezes the rollout; evaluations judge but do not act; resume() continues."""
    router = make(clock, min_duration=0.0, min_samples=0)
    router.pause(reason="investigating")
    assert router.status().phase is ss.Phase.PAUSED
    d = router.evaluate()
    assert d.action is ss.Action.CONTINUE
    assert router.weights["v2"] == 5.0
    with pytest.raises(ss.TransitionError, match="paused"):
        router.pause()
    router.resume()
    assert router.status().phase is ss.Phase.PROGRESSING
    with pytest.raises(ss.TransitionError):
        router.resume()


def test_abort_is_terminal_until_retry(clock: Clock) -> None:
    """abort() sends everyone to the baseline; only retry() leaves it."""
    router = make(clock)
    d = router.abort(reason="operator says no")
    assert d.action is ss.Action.ABORT
    assert router.status().phase is ss.Phase.ABORTED
    assert router.weights["v2"] == 0.0
    for control in (router.promote, router.pause, router.resume, router.abort):
        with pytest.raises(ss.TransitionError, match="aborted"):
            control()
    router.retry()
    assert router.status().phase is ss.Phase.PROGRESSING


def test_rollback_after_promotion_undoes_it(clock: Clock) -> None:
    """A promoted candidate can still be rolled back (Argo's undo)."""
    router = make(clock)
    router.promote(full=True)
    router.rollback(reason="regret")
    st = router.status()
    assert st.stable == "v1"
    assert st.weights["v2"] == 0.0


def test_manual_mode_never_acts(clock: Clock) -> None:
    """A canary pinned with weight= judges on evaluate() but never moves by itself."""
    router = ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 2},
        strategy=ss.Canary("v1", "v2", weight=30, min_duration=0.0, min_samples=0),
        clock=clock,
    )
    for i in range(5000):
        router.predict(0, key=i)
    d = router.evaluate()
    assert d.action is ss.Action.CONTINUE
    assert "manual mode" in d.reason
    assert router.weights["v2"] == 30.0
    router.promote()
    assert router.weights["v2"] == 50.0


def test_controls_without_a_rollout_raise() -> None:
    """A router without a canary has nothing to promote or roll back."""
    router = ss.Router({"v1": abs})
    for control in (router.evaluate, router.promote, router.rollback, router.retry):
        with pytest.raises(ss.TransitionError, match="no rollout"):
            control()


def test_no_request_served_by_the_candidate_once_rollback_returns(clock: Clock) -> None:
    """8 threads route while another thread rolls back: every request that starts after
    rollback() returned is served by the baseline."""
    router = make(clock)
    router.promote()
    router.promote()  # 50%
    done = threading.Event()
    rolled = threading.Event()
    start = threading.Barrier(9)
    late_candidate = []
    served = [0] * 8

    def work(t: int) -> None:
        start.wait()
        i = 0
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline and i < 2_000_000:
            after = rolled.is_set()  # read before the request starts
            r = router.route(0, key=t * 10_000_000 + i)
            if after and r.variant == "v2":
                late_candidate.append(r)
            served[t] += 1
            i += 1

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    start.wait()
    time.sleep(0.05)
    router.rollback(reason="drill")
    rolled.set()
    time.sleep(0.05)
    done.set()
    for th in threads:
        th.join(timeout=60)
    assert not any(th.is_alive() for th in threads)
    assert not late_candidate
    assert sum(served) > 1000


def test_never_two_evaluations_at_once(clock: Clock) -> None:
    """Automatic evaluations from 8 threads never overlap."""
    router = make(clock, evaluate_every=64)
    rollout = router._rollout
    assert rollout is not None
    inside = []
    overlap = []
    calls = []
    original = rollout.evaluate

    def watched(snap: object, **kw: Any) -> object:
        calls.append(1)
        inside.append(1)
        if len(inside) > 1:
            overlap.append(len(inside))
        time.sleep(0.001)
        try:
            return original(snap, **kw)  # type: ignore[arg-type]
        finally:
            inside.pop()

    rollout.evaluate = watched  # type: ignore[method-assign]

    def work(t: int) -> None:
        for i in range(20_000):
            router.route(0, key=t * 100_000 + i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not overlap
    assert len(calls) > 10


def test_canary_config_errors() -> None:
    """Canary options are validated with errors naming the bad value."""
    for kwargs, match in [
        ({"steps": (5, 50)}, "end at 100"),
        ({"min_duration": -1}, "min_duration"),
        ({"min_samples": 1.5}, "min_samples"),
        ({"deadline": 0}, "deadline"),
        ({"on_deadline": "explode"}, "explode"),
        ({"evaluate_every": 0}, "evaluate_every"),
        ({"auto": "yes"}, "auto"),
    ]:
        with pytest.raises(ss.ConfigError, match=match):
            ss.Canary("a", "b", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limits", "shown"),
    [({"above": float("nan")}, "nan"), ({"above": "0.2"}, "'0.2'"), ({"below": True}, "True")],
)
def test_guardrail_limits_must_be_finite_numbers(limits: dict[str, Any], shown: str) -> None:
    """A NaN limit is never crossed (the guardrail held at a 100% error rate) and a str one
    raised at every evaluation: both are refused when the guardrail is made."""
    with pytest.raises(ss.ConfigError, match=f"must be a finite number or None, got {shown}"):
        ss.Guardrail(metric="error_rate", **limits)
    assert ss.Guardrail(metric="error_rate", above=np.float64(0.2)).above == 0.2


def test_policy_config_errors() -> None:
    """Policies and checks reject bad options."""
    with pytest.raises(ss.ConfigError, match="alpha"):
        ss.Policy(alpha=1.5)
    with pytest.raises(ss.ConfigError, match="failure_limit"):
        ss.Policy(failure_limit=-1)
    with pytest.raises(ss.ConfigError, match="unique"):
        ss.Policy([ss.ErrorRate(), ss.ErrorRate()])
    with pytest.raises(ss.ConfigError, match="checks such as"):
        ss.Policy(["error_rate"])  # type: ignore[list-item]
    with pytest.raises(ss.ConfigError, match="margin"):
        ss.ErrorRate(margin=-0.1)
    with pytest.raises(ss.ConfigError, match="above= or below="):
        ss.Guardrail(metric="error_rate")
    with pytest.raises(ss.ConfigError, match="either"):
        ss.MetricCheck(metric="m", direction="either")
    with pytest.raises(ss.ConfigError, match="policy needs"):
        ss.Router({"a": abs, "b": abs}, strategy=ss.FixedSplit("a", {"b": 5}), policy=ss.Policy())
    assert np is not None


def status_midway(
    router: ss.Router, change: Any, inside: threading.Event, release: threading.Event
) -> ss.Status:
    """Run ``change`` on a thread until it stops midway (it sets ``inside``, then waits for
    ``release``); take a status() on another thread meanwhile; release; return that status."""
    mover = threading.Thread(target=change)
    mover.start()
    assert inside.wait(10.0)
    seen: list[ss.Status] = []
    reader = threading.Thread(target=lambda: seen.append(router.status()))
    reader.start()
    reader.join(timeout=1.0)  # a status that does not wait returns meanwhile (torn)
    release.set()
    mover.join(10.0)
    reader.join(10.0)
    (st,) = seen
    return st


def test_status_never_shows_half_of_a_transition(clock: Clock) -> None:
    """A status() taken while a rollback is between its phase change and its routing-table
    swap waits for the transition: phase, weights and decisions describe one instant."""
    router = make(clock)
    rollout = router._rollout
    assert rollout is not None
    inside, release = threading.Event(), threading.Event()
    apply = rollout._apply

    def slow_apply(weights: dict[str, float]) -> None:
        inside.set()
        release.wait(10.0)  # bounded: the test releases it
        apply(weights)

    rollout._apply = slow_apply
    st = status_midway(router, router.rollback, inside, release)
    assert st.phase is ss.Phase.ROLLED_BACK
    assert st.weights["v2"] == 0.0
    assert st.decisions[-1].action is ss.Action.ROLLBACK


def test_status_counts_evaluations_that_failed_on_request_threads(clock: Clock) -> None:
    """An automatic evaluation that raises never fails the request that ran it; status()
    counts it, so that a rollout nobody is judging shows."""
    router = make(clock, evaluate_every=10)
    rollout = router._rollout
    assert rollout is not None

    def broken(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("the judge broke")

    rollout.evaluate = broken  # type: ignore[method-assign]
    for i in range(100):
        clock.t += 0.01
        assert router.predict(0, key=i) in (1, 2)
    assert router.status().evaluation_errors >= 5


def test_status_never_shows_half_of_a_set_weights(clock: Clock) -> None:
    """set_weights swaps the routing table, then tells the rollout: a status() taken in
    between waits, so that weights, step and decisions agree."""
    router = make(clock)
    rollout = router._rollout
    assert rollout is not None
    inside, release = threading.Event(), threading.Event()
    set_weight = rollout.set_weight

    def slow_set_weight(weight: float) -> Any:
        inside.set()
        release.wait(10.0)  # bounded: the test releases it
        return set_weight(weight)

    rollout.set_weight = slow_set_weight  # type: ignore[method-assign]
    st = status_midway(router, lambda: router.set_weights({"v2": 50.0}), inside, release)
    assert (st.weights["v2"], st.step) == (50.0, 2)
    assert st.decisions[-1].weights_after["v2"] == 50.0


def test_status_inside_a_change_on_the_same_thread_reads_at_once(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """User code that runs inside a change on the changing thread (a log processor that
    attaches status() to each decision) reads at once, never waiting for its own change."""
    import safeserve._router as router_module

    router = make(clock)
    rollout = router._rollout
    assert rollout is not None
    seen: list[ss.Phase] = []
    record = rollout._record

    def record_and_look(decision: Any) -> None:
        record(decision)
        seen.append(router.status().phase)

    waits: list[float] = []
    monkeypatch.setattr(rollout, "_record", record_and_look)
    monkeypatch.setattr(router_module.time, "sleep", lambda s: waits.append(s))
    router.pause()
    assert seen == [ss.Phase.PAUSED]
    assert waits == []  # read under the lock its own thread holds, not spun for


class Flaky:
    """Raises on every ``every``-th call while ``on``."""

    def __init__(self, every: int) -> None:
        self.every, self.on, self.calls = every, True, 0

    def __call__(self, x: Any) -> int:
        self.calls += 1
        if self.on and self.calls % self.every == 0:
            raise RuntimeError("flaky")
        return 1


def error_rate_router(clock: Clock, v1: Any, v2: Any) -> ss.Router:
    return ss.Router(
        {"v1": v1, "v2": v2},
        strategy=ss.Canary(
            "v1",
            "v2",
            min_duration=0.0,
            min_samples=100,
            evaluate_every=10**9,
            evaluate_interval=1e12,
            deadline=None,
        ),
        policy=ss.Policy([ss.ErrorRate()]),
        clock=clock,
        name="error-counts",
    )


def serve(router: ss.Router, clock: Clock, start: int, n: int) -> int:
    for i in range(start, start + n):
        # The baseline's own failures reach the caller (and are counted).
        with contextlib.suppress(RuntimeError):
            router.route(0, key=f"u{i}")
    clock.t += 1.0
    return start + n


def test_retry_does_not_judge_the_failed_attempts_errors(clock: Clock) -> None:
    """A candidate rolled back for its errors, fixed, then retried: the evaluations after the
    retry count only what was served since, and it is not rolled back (the first one used to
    replay the failed attempt's errors as if served at the new 5% and roll back at once)."""
    candidate = Flaky(10)
    router = error_rate_router(clock, lambda x: 1, candidate)
    user = 0
    for _ in range(50):
        user = serve(router, clock, user, 2000)
        router.evaluate()
        if router.status().phase is ss.Phase.ROLLED_BACK:
            break
    assert router.status().phase is ss.Phase.ROLLED_BACK
    candidate.on = False
    router.retry()
    for _ in range(10):
        user = serve(router, clock, user, 2000)
        d = router.evaluate()
        assert d.action is not ss.Action.ROLLBACK, d.reason
    assert router.status().phase is ss.Phase.PROGRESSING


def test_errors_served_before_a_weight_change_are_not_judged_at_the_new_weights(
    clock: Clock,
) -> None:
    """Both versions err alike at 50%; the weight is lowered to 5% by hand before the next
    evaluation, which must not read those errors as the candidate's at a 5% share (half of the
    errors from a 5% share is a clear excess: it rolled back)."""
    v1, v2 = Flaky(50), Flaky(50)
    router = error_rate_router(clock, v1, v2)
    router.set_weights({"v1": 50.0, "v2": 50.0})
    user = serve(router, clock, 0, 4000)
    assert router.recorder.snapshot().variant("v2").errors >= 30
    router.set_weights({"v1": 95.0, "v2": 5.0})
    v1.on = v2.on = False
    user = serve(router, clock, user, 4000)  # enough for the minimum samples per arm
    d = router.evaluate()
    assert d.action is not ss.Action.ROLLBACK, d.reason
    assert router.status().phase is ss.Phase.PROGRESSING


def test_set_weights_is_refused_outside_canary_steps(clock: Clock) -> None:
    """After rollback() or abort(), in a shadow phase and in a blue/green rollout, weights set
    by hand would send users to a version the status says nobody sees (it was accepted: v2
    served half of the users after a rollback): refused, and the weights stay."""
    router = make(clock)
    router.rollback()
    with pytest.raises(ss.TransitionError, match="rolled_back"):
        router.set_weights({"v1": 50.0, "v2": 50.0})
    assert router.weights == {"v1": 100.0, "v2": 0.0}
    router.retry()
    router.abort()
    with pytest.raises(ss.TransitionError, match="aborted"):
        router.set_weights({"v1": 50.0, "v2": 50.0})
    shadow = ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 1},
        strategy=ss.Pipeline([ss.Shadow("v1", "v2"), ss.Canary("v1", "v2")]),
        clock=clock,
        name="shadowed",
    )
    with pytest.raises(ss.TransitionError, match="shadow"):
        shadow.set_weights({"v2": 5.0})
    shadow.pause()
    with pytest.raises(ss.TransitionError, match="shadow phase"):
        shadow.set_weights({"v2": 5.0})
    assert shadow.weights["v2"] == 0.0
    shadow.close()
    bluegreen = ss.Router(
        {"blue": lambda x: 1, "green": lambda x: 1},
        strategy=ss.BlueGreen("blue", "green"),
        clock=clock,
        name="bg",
    )
    with pytest.raises(ss.TransitionError, match="pending"):
        bluegreen.set_weights({"green": 50.0})
    bluegreen.promote()
    with pytest.raises(ss.TransitionError, match="blue/green"):
        bluegreen.set_weights({"green": 50.0})
    assert bluegreen.weights["green"] == 100.0


@pytest.mark.parametrize(
    ("make_it", "match"),
    [
        (lambda: ss.Policy(ss.ErrorRate()), "a policy takes a list of checks"),  # type: ignore[arg-type]
        (lambda: ss.Router({"v1": abs}, strategy="canary"), "strategy must be a strategy"),  # type: ignore[arg-type]
        (lambda: ss.FixedSplit("v1", None), "weights must be a mapping"),  # type: ignore[arg-type]
        (lambda: ss.Pipeline(ss.Shadow("v1", "v2")), "a Pipeline takes a list of phases"),  # type: ignore[arg-type]
    ],
)
def test_misused_constructors_raise_config_errors(make_it: Any, match: str) -> None:
    """A check where a list of them goes, a str strategy, no weights, a phase where a list of
    them goes: a ConfigError naming the value (a TypeError or AttributeError before)."""
    with pytest.raises(ss.ConfigError, match=match):
        make_it()


def test_numpy_steps_of_any_number_type_are_accepted() -> None:
    """Steps given as a numpy array of ints work as floats do (np.int64(5) was "not a number
    in [0, 100]")."""
    canary = ss.Canary("v1", "v2", steps=np.array([5, 50, 100]))
    assert [float(s) for s in canary.steps] == [5.0, 50.0, 100.0]


def test_an_unhashable_key_routes_by_its_bytes_when_overrides_are_set() -> None:
    """A bytearray key routes as its bytes do, with or without overrides (with overrides it
    raised TypeError: unhashable)."""
    plain = ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 2}, strategy=ss.Canary("v1", "v2", weight=50)
    )
    forced = ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 2},
        strategy=ss.Canary("v1", "v2", weight=50),
        overrides={"qa": "v2"},
    )
    for i in range(50):
        key = bytearray(f"user-{i}".encode())
        assert forced.route(0, key=key).variant == plain.route(0, key=key).variant
        assert forced.route(0, key=key).variant == forced.route(0, key=bytes(key)).variant
    for i in range(50):  # a writable memoryview cannot be hashed either (ValueError)
        view = memoryview(bytearray(f"user-{i}".encode()))
        assert forced.route(0, key=view).variant == plain.route(0, key=view).variant
        assert forced.route(0, key=view).variant == forced.route(0, key=bytes(view)).variant


def test_a_key_of_the_same_bytes_as_an_override_key_is_forced_whatever_its_type() -> None:
    """By the hash contract a bytearray or a memoryview is the same key as its bytes: an
    override of b"qa" forces them all, one by one and in a batch (the bytearray and the
    writable memoryview were not forced, as they cannot be hashed)."""
    router = ss.Router(
        {
            "v1": lambda x: np.ones(len(np.atleast_1d(x))),
            "v2": lambda x: np.ones(len(np.atleast_1d(x))),
        },
        strategy=ss.Canary("v1", "v2", weight=0),
        overrides={b"qa": "v2"},
    )
    keys = [b"qa", memoryview(b"qa"), bytearray(b"qa"), memoryview(bytearray(b"qa"))]
    assert [router.route(0, key=k).variant for k in keys] == ["v2"] * 4
    batch = router.route_batch(np.zeros(4), keys=keys)
    assert list(batch.variants) == ["v2"] * 4


@pytest.mark.parametrize("overrides", [None, {"qa": "v2"}])
def test_a_str_key_that_is_not_utf8_raises_invalid_key_error(overrides: Any) -> None:
    """A str with a lone surrogate has no UTF-8 bytes to hash: InvalidKeyError, naming it,
    before any model runs, on every path (it raised UnicodeEncodeError)."""

    class Name(str):
        pass

    calls: list[object] = []
    router = ss.Router(
        {"v1": calls.append, "v2": calls.append},
        strategy=ss.Canary("v1", "v2", weight=50),
        overrides=overrides,
    )
    for bad in ("user-\ud800", Name("user-\udfff")):
        with pytest.raises(ss.InvalidKeyError, match="lone surrogate"):
            router.route(0, key=bad)
        with pytest.raises(ss.InvalidKeyError, match="lone surrogate"):
            router.predict_batch(np.zeros(2), keys=["fine", bad])
        with pytest.raises(ss.InvalidKeyError, match="lone surrogate"):
            ss.bucket_of(bad, salt="s")
    assert calls == []


def test_a_proportion_check_on_values_that_are_not_0_or_1_names_the_cause(clock: Clock) -> None:
    """MetricCheck(kind="proportion") fed revenue-like values: the check cannot be judged,
    and its reason names the check, the arm and the mean, and says to use kind="mean" (it
    said only that a variance was negative)."""
    router = ss.Router(
        {"v1": lambda x: 1, "v2": lambda x: 2},
        strategy=ss.Canary("v1", "v2", weight=50, evaluate_every=10**9),
        policy=ss.Policy([ss.MetricCheck(metric="revenue", min_samples=10)]),
        clock=clock,
    )
    for i in range(400):
        r = router.route(0, key=f"u{i}")
        router.record_outcome(r.request_id, "revenue", 5.0)
    (check,) = router.evaluate().checks
    assert check.verdict is ss.stats.Verdict.INCONCLUSIVE
    assert re.search(
        r"could not be judged: DataError: .*kind='proportion'.*'revenue' values average 5.0",
        check.reason,
    )


def test_a_check_that_cannot_be_judged_leaves_the_guardrails_and_the_deadline_to_act(
    clock: Clock,
) -> None:
    """One outcome of 2.0 on a proportion check made every later evaluation raise, so that a
    breached guardrail never rolled back and the deadline never came; now the check alone is
    INCONCLUSIVE and the rest acts."""

    def broken(x: object) -> float:
        raise RuntimeError("candidate broken")

    for candidate, want in ((broken, "guardrail breached"), (lambda x: 1.0, "deadline")):
        router = ss.Router(
            {"v1": lambda x: 1.0, "v2": candidate},
            strategy=ss.Canary("v1", "v2", min_duration=0, evaluate_every=100, deadline=600),
            policy=ss.Policy(
                [
                    ss.MetricCheck(metric="converted"),
                    ss.Guardrail(metric="error_rate", above=0.2, min_requests=20),
                ]
            ),
            clock=clock,
        )
        seen: set[str] = set()
        for i in range(1_000):
            r = router.route(1, key=f"u{i}")
            if r.variant not in seen:
                seen.add(r.variant)
                router.record_outcome(r.request_id, "converted", 2.0 if r.variant == "v1" else 0.0)
        for i in range(2_000):
            clock.t += 1.0
            router.predict(1, key=f"k{i}")
        status = router.status()
        assert status.phase is ss.Phase.ROLLED_BACK
        assert status.evaluation_errors == 0
        (end,) = [d for d in status.decisions if d.action is ss.Action.ROLLBACK]
        assert want in end.reason
        converted = next(c for c in end.checks if c.name == "converted")
        assert converted.reason.startswith("could not be judged: DataError")


@pytest.mark.parametrize("how", ["deadline", "hand"])
def test_a_breached_guardrail_rolls_back_a_paused_rollout(clock: Clock, how: str) -> None:
    """A pause (at a deadline with on_deadline="pause", or by hand) holds the weights, but a
    guardrail is an absolute limit: a candidate that breaks while paused is rolled back (a
    pause other than by drift used to leave it serving its share)."""
    broken = [False]

    def candidate(x: object) -> float:
        if broken[0]:
            raise RuntimeError("candidate broken")
        return 1.0

    router = ss.Router(
        {"v1": lambda x: 1.0, "v2": candidate},
        strategy=ss.Canary(
            "v1",
            "v2",
            min_duration=0,
            min_samples=10**9,
            evaluate_every=500,
            deadline=60,
            on_deadline="pause",
        ),
        policy=ss.Policy([ss.Guardrail(metric="error_rate", above=0.2, min_requests=20)]),
        clock=clock,
    )
    if how == "hand":
        router.pause()
    for i in range(20_000):
        if router.status().phase is ss.Phase.PAUSED:
            break
        clock.t += 0.01
        router.predict(1, key=i)
    assert router.status().phase is ss.Phase.PAUSED
    router.evaluate()
    assert router.status().phase is ss.Phase.PAUSED  # nothing breached yet: still paused
    broken[0] = True
    for i in range(10_000):
        clock.t += 0.01
        router.predict(1, key=f"k{i}")
    status = router.status()
    assert status.phase is ss.Phase.ROLLED_BACK
    assert status.weights == {"v1": 100.0, "v2": 0.0}
    (end,) = [d for d in status.decisions if d.action is ss.Action.ROLLBACK]
    assert end.reason.startswith("guardrail breached")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ss.SRM(alpha=2.0), "alpha must lie strictly between 0 and 1, got 2.0"),
        (lambda: ss.SRM(alpha="0.001"), "alpha must be a number in \\(0, 1\\), got '0.001'"),
        (lambda: ss.LatencyQuantile(min_samples=-1), "min_samples must be an int >= 0 .*, got -1"),
        (
            lambda: ss.Canary("v1", "v2", steps=(0.004, 100)),
            "each step must be at least 0.005: it rounds to no bucket .*, got 0.004",
        ),
        (
            lambda: ss.Canary("v1", "v2", weight=0.001),
            "weight must be 0 or at least 0.005: it rounds to no bucket .*, got 0.001",
        ),
        (
            lambda: ss.Router(
                {"v1": lambda x: 0, "v2": lambda x: 1}, strategy=ss.Canary("v1", "v2", weight=5)
            ).set_weights({"v2": 0.004}),
            "weight of 'v2' rounds to no bucket",
        ),
        (
            lambda: ss.Canary("v1", "v2", min_duration=7200),
            "deadline \\(3600.0\\) must be longer than min_duration \\(7200\\)",
        ),
        (
            lambda: ss.Shadow("v1", "v2", min_duration=600, deadline=300),
            "deadline \\(300\\) must be longer than min_duration \\(600\\)",
        ),
        (
            lambda: ss.Router(
                {"v1": lambda x: 0, "v2": lambda x: 1},
                strategy=ss.Canary("v1", "v2"),
                recorder=ss.metrics.Recorder(("v2", "v1"), clock=time.monotonic),
            ),
            "recorder's variants \\('v2', 'v1'\\) must be the router's",
        ),
    ],
)
def test_settings_that_could_never_work_are_refused(make: Any, message: str) -> None:
    """Each was accepted and then misbehaved: an SRM alpha that made every evaluation raise,
    a negative minimum that divided by zero, a step that rounds to no bucket (the candidate got
    no traffic while the rollout said it progressed), a bake time past the deadline (a good
    candidate rolled back at the deadline), a recorder whose variants swap the arms."""
    with pytest.raises(ss.ConfigError, match=message):
        make()


def test_settings_near_those_refused_that_work_are_accepted() -> None:
    """A deadline before min_duration that pauses (a check-in by a person, not a rollback of a
    good candidate) or that a pinned canary never acts on; LatencyQuantile's min_samples=0
    (its default); a share that rounds to one bucket."""
    paused = ss.Canary("v1", "v2", min_duration=7200, deadline=600, on_deadline="pause")
    assert (paused.min_duration, paused.deadline) == (7200, 600)
    pinned = ss.Canary("v1", "v2", weight=10, min_duration=7200)
    assert (pinned.weight, pinned.automatic, pinned.deadline) == (10, False, 3600.0)
    assert ss.LatencyQuantile(min_samples=0)._requests_needed() == 1000
    router = ss.Router(
        {"v1": lambda x: 0, "v2": lambda x: 1},
        strategy=ss.Canary("v1", "v2", steps=(0.007, 100)),
    )
    assert router.weights["v2"] == 0.01


def test_the_decision_that_ended_a_rollout_stays_in_its_history(clock: Clock) -> None:
    """After the end, each look found nothing to judge and recorded that again, until the
    rollback fell out of the bounded history (200 decisions)."""
    router = ss.Router(
        {"v1": lambda x: 1.0, "v2": lambda x: 2.0},
        strategy=ss.Canary("v1", "v2", evaluate_every=10),
        clock=clock,
    )
    router.rollback(reason="incident")
    for i in range(5_000):
        router.predict(1, key=i)
    for _ in range(300):
        router.evaluate()
    decisions = router.status().decisions
    assert [d.action for d in decisions] == [ss.Action.ROLLBACK, ss.Action.CONTINUE]
    assert decisions[0].reason == "incident"


def twins_judged_by_hand(clock: Clock, policy: ss.Policy, *, min_samples: int) -> ss.Router:
    """A canary of two identical models, evaluated only when the test says so."""
    return ss.Router(
        {"v1": lambda x: 1.0, "v2": lambda x: 1.0},
        strategy=ss.Canary(
            "v1",
            "v2",
            min_duration=0,
            min_samples=min_samples,
            evaluate_every=10**9,
            evaluate_interval=1e12,
        ),
        policy=policy,
        clock=clock,
    )


def test_an_evaluation_judges_the_step_it_acts_on(clock: Clock) -> None:
    """router.evaluate() took its snapshot before the rollout's lock: a promotion by another
    thread in between had the 5% step's window judged as the 25% step's, and the evaluation
    moved on to 50% with not one request served at 25%."""
    router = twins_judged_by_hand(
        clock, ss.Policy([ss.Guardrail(metric="error_rate", above=0.2)]), min_samples=100
    )
    for i in range(10_000):
        router.predict(1, key=i)
        clock.t += 0.001
    recorder = router.recorder
    snapshot = recorder.snapshot
    other: list[threading.Thread] = []

    def snapshot_then_another_thread_promotes() -> Any:
        snap = snapshot()
        if not other:
            other.append(threading.Thread(target=router.promote))
            other[0].start()
            other[0].join(timeout=0.5)  # it waits for the lock now: no change in between
        return snap

    recorder.snapshot = snapshot_then_another_thread_promotes  # type: ignore[method-assign]
    try:
        decision = router.evaluate()
    finally:
        recorder.snapshot = snapshot  # type: ignore[method-assign]
        for t in other:
            t.join(timeout=30)
    assert decision.weights_before["v2"] == 5.0
    assert decision.weights_after["v2"] == 25.0
    assert router.weights["v2"] == 50.0  # then the other thread's promotion


def test_outcomes_of_a_failed_attempt_are_not_judged_in_the_retry(clock: Clock) -> None:
    """Outcomes joined the window current when they arrived: after a rollback (an unrelated
    incident) and retry(), the first attempt's late conversions filled the new attempt's
    window, and its first look rolled it back before it had served anyone. Now they are
    LATE (late:previous_window); within an attempt, an outcome of the previous step's request
    still joins the current step's window."""
    router = twins_judged_by_hand(
        clock,
        ss.Policy([ss.MetricCheck(metric="converted", min_samples=100, min_events=30)]),
        min_samples=0,
    )
    served = [router.route(1, key=f"u{i}") for i in range(20_000)]
    router.promote()  # 5% -> 25%: the same attempt
    early = next(r for r in served if r.variant == "v2")
    assert router.record_outcome(early.request_id, "converted", 1.0) is (
        ss.metrics.OutcomeResult.ACCEPTED
    )
    assert router.status().metrics.variant("v2").outcomes["converted"].n == 1
    router.rollback(reason="downstream outage")
    router.retry()
    results = [
        router.record_outcome(r.request_id, "converted", 0.0 if r.variant == "v2" else 1.0)
        for r in served
        if r is not early
    ]
    assert set(results) == {ss.metrics.OutcomeResult.LATE}
    status = router.status()
    assert status.metrics.outcome_reasons["late:previous_window"] == len(results)
    for v in ("v1", "v2"):
        assert "converted" not in status.metrics.variant(v).outcomes
    assert router.evaluate().phase_after == "progressing"


def test_an_outcome_of_a_request_still_running_at_the_rollback_is_not_judged_in_the_retry() -> None:
    """The request was still being served when the attempt ended: recorded after the reset,
    its outcome joined the retry's window. Bounded: the call is released after 10 s at most."""
    entered, release = threading.Event(), threading.Event()

    def candidate(x: object) -> float:
        if x == "slow":
            entered.set()
            release.wait(10)
        return 2.0

    router = ss.Router(
        {"v1": lambda x: 1.0, "v2": candidate},
        strategy=ss.Canary("v1", "v2", weight=50, evaluate_every=10**9, evaluate_interval=1e12),
    )
    key = next(f"k{i}" for i in range(1_000) if router.route(0, key=f"k{i}").variant == "v2")
    box: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", router.route("slow", key=key)))
    worker.start()
    try:
        assert entered.wait(10)
        router.rollback(reason="incident")
        router.retry()
    finally:
        release.set()
        worker.join(10)
    routed = box["r"]
    assert routed.variant == "v2"
    assert router.record_outcome(routed.request_id, "converted", 1.0) is (
        ss.metrics.OutcomeResult.LATE
    )
    assert "converted" not in router.status().metrics.variant("v2").outcomes
    router.close()

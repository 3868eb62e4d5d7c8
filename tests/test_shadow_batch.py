"""Batches through the shadow mirror: one shadow call per batch, one outcome per row."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeserve._shadow import ShadowMirror, ShadowPair
from safeserve.stats import Verdict
from tests.shadow_support import WAIT, ManualClock, check_identities, wait_until


def test_each_row_is_compared_with_the_primary_on_the_same_row(cleanup: list[Any]) -> None:
    """One shadow call for the batch, called off the caller's thread; every row is a pair."""
    calls: list[tuple[int, int]] = []

    def shadow(X: Any) -> Any:
        calls.append((threading.get_ident(), len(X)))
        return np.where(X < 70, "cat", "dog")

    m = ShadowMirror(shadow, name="batch")
    cleanup.append(m)
    assert m.submit_batch(np.arange(100), ["cat"] * 100, 0.001) == 100
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert calls
    assert all(t != threading.get_ident() for t, _ in calls)
    assert [n for _, n in calls] == [100]
    assert (r.submitted, r.mirrored, r.compared, r.disagreements) == (100, 100, 100, 30)
    assert r.label_verdict is Verdict.FAIL
    assert r.latency_pairs == 1  # rows timed together are one latency measurement


def test_numeric_rows_give_the_paired_differences(cleanup: list[Any]) -> None:
    """Differences per row, as numpy computes them, and vectors by their L1 distance."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    primary = X.sum(axis=1)
    m = ShadowMirror(lambda X: X.sum(axis=1) * 1.1, name="numeric", margin=10.0)
    v = ShadowMirror(lambda X: X * 2.0, name="vector")
    cleanup.extend([m, v])
    for lo in range(0, 300, 100):
        m.submit_batch(X[lo : lo + 100], primary[lo : lo + 100], 0.001)
        v.submit_batch(X[lo : lo + 100], X[lo : lo + 100], 0.001)
    assert m.wait_idle(WAIT)
    assert v.wait_idle(WAIT)
    r, rv = m.report(), v.report()
    d = X.sum(axis=1) * 1.1 - primary
    assert r.compared == 300
    assert r.latency_pairs == 3
    assert r.difference_mean == pytest.approx(d.mean(), rel=1e-9)
    assert r.difference_variance == pytest.approx(d.var(ddof=1), rel=1e-9)
    assert rv.output_kind == "vector"
    assert rv.difference_mean == pytest.approx(np.abs(X).sum(axis=1).mean(), rel=1e-9)


BEHAVIOURS = st.sampled_from(["same", "other", "nan", "mismatch"])


@settings(max_examples=25, deadline=None)
@given(st.lists(BEHAVIOURS, min_size=1, max_size=60), st.integers(1, 20))
def test_row_counts_match_the_behaviour_of_each_row(behaviours: list[str], size: int) -> None:
    """Any rows, in batches of any size: each count equals its tally over the rows."""
    value = {"same": 1.0, "other": 3.0, "nan": math.nan, "mismatch": "x"}

    def shadow(X: Any) -> list[Any]:
        return [value[behaviours[i]] for i in X]

    m = ShadowMirror(shadow, workers=2, name="prop")
    try:
        n = len(behaviours)
        for lo in range(0, n, size):
            rows = list(range(lo, min(n, lo + size)))
            assert m.submit_batch(rows, [1.0] * len(rows), 0.0) == len(rows)
        assert m.wait_idle(WAIT)
        r = m.report()
    finally:
        m.close(timeout=5.0)
    tally = {b: behaviours.count(b) for b in ("same", "other", "nan", "mismatch")}
    assert r.submitted == r.mirrored == len(behaviours)
    assert r.compared == tally["same"] + tally["other"]
    assert r.error_reasons == {
        "exception": 0,
        "non_finite": tally["nan"],
        "too_large": 0,
        "mismatch": tally["mismatch"],
    }
    check_identities(r)


def test_a_failed_batch_call_is_an_error_on_every_row(cleanup: list[Any]) -> None:
    """An exception, or a wrong number of outputs, fails each of the call's rows; the sink
    gets one pair per row with its request id."""
    pairs: list[ShadowPair] = []

    def shadow(X: Any) -> Any:
        if X[0] == 0:
            raise RuntimeError("boom")
        return list(X)[:-1] if X[0] == 10 else list(X)

    m = ShadowMirror(shadow, sink=pairs.append, workers=1, name="fail")
    cleanup.append(m)
    m.submit_batch([0, 1, 2], [0, 1, 2], 0.001, np.array([100, 101, 102]))
    m.submit_batch([10, 11, 12, 13], [10, 11, 12, 13], 0.001, np.array([200, 201, 202, 203]))
    m.submit_batch([20, 21], [20, 99], 0.001, [300, 301])
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert r.error_reasons == {"exception": 3, "non_finite": 0, "too_large": 0, "mismatch": 4}
    assert (r.compared, r.disagreements) == (2, 1)
    by_id = {p.request_id: p for p in pairs}
    assert sorted(by_id) == [100, 101, 102, 200, 201, 202, 203, 300, 301]
    assert all(type(i) is int for i in by_id)
    assert by_id[101].error == "exception: RuntimeError: boom"
    assert by_id[101].input == 1
    assert by_id[101].shadow_output is None
    assert by_id[203].error is not None
    assert by_id[203].error.startswith("mismatch: the shadow returned 3 outputs for a batch of 4")
    assert (by_id[301].error, by_id[301].primary_output, by_id[301].shadow_output) == (None, 99, 21)


def test_the_sink_gets_python_scalars_from_numpy_rows(cleanup: list[Any]) -> None:
    """Rows of numpy outputs reach the sink as Python values (JSON-ready), as ids do."""
    pairs: list[ShadowPair] = []
    m = ShadowMirror(lambda X: np.asarray(X) * 2.0, sink=pairs.append, name="plain")
    cleanup.append(m)
    m.submit_batch(np.arange(3), np.arange(3) * 2.0, 0.001, np.arange(3))
    assert m.wait_idle(WAIT)
    got = sorted((p.request_id, p.primary_output, p.shadow_output) for p in pairs)
    assert got == [(0, 0.0, 0.0), (1, 2.0, 2.0), (2, 4.0, 4.0)]
    assert all(type(v) is float for p in pairs for v in (p.primary_output, p.shadow_output))


def test_rows_beyond_the_queue_are_dropped_and_counted(cleanup: list[Any]) -> None:
    """Rows take places in the queue: the first rows that fit are queued, the rest dropped."""
    gate = threading.Event()
    cleanup.append(gate)
    m = ShadowMirror(lambda X: gate.wait(WAIT) and list(X), workers=1, queue_size=10, timeout=1e9)
    cleanup.append(m)
    assert m.submit_batch([0], [0], 0.0) == 1
    wait_until(lambda: m.report().running == 1, "the worker to pick up the first row")
    assert m.submit_batch(list(range(6)), list(range(6)), 0.0) == 6
    assert m.submit_batch(list(range(25)), list(range(25)), 0.0) == 4
    assert m.submit_batch([1], [1], 0.0) == 0
    r = m.report()
    assert (r.queued, r.dropped, r.running, r.mirrored, r.submitted) == (10, 22, 1, 11, 33)
    check_identities(r)
    gate.set()
    assert m.wait_idle(WAIT)
    r = m.report()
    assert (r.completed, r.compared, r.queued) == (11, 11, 0)
    check_identities(r)


def test_a_hung_batch_counts_a_timeout_per_row(cleanup: list[Any]) -> None:
    """A batch call may take ``timeout`` per row; past that, each of its rows is a timeout,
    then late on return."""
    gate = threading.Event()
    cleanup.append(gate)
    clock = ManualClock()
    m = ShadowMirror(
        lambda X: gate.wait(WAIT) and list(X), clock=clock, workers=1, timeout=1.0, name="hung"
    )
    cleanup.append(m)
    m.submit_batch(list(range(7)), list(range(7)), 0.0)
    wait_until(lambda: m.report().running == 7, "the batch to start")
    clock.advance(1.5)  # past the timeout of one request, not of 7 rows
    r = m.report()
    assert (r.timeouts, r.running, r.stuck) == (0, 7, 0)
    clock.advance(6.0)
    r = m.report()
    assert (r.timeouts, r.running, r.stuck) == (7, 0, 1)
    check_identities(r)
    gate.set()
    wait_until(lambda: m.report().stuck == 0, "the stuck call to return")
    r = m.report()
    assert (r.timeouts, r.late, r.compared) == (7, 7, 0)
    check_identities(r)


def test_rows_without_one_output_each_raise_and_count_nothing(cleanup: list[Any]) -> None:
    m = ShadowMirror(lambda X: X, name="lengths")
    cleanup.append(m)
    with pytest.raises(ValueError, match="got 3 rows, 2 outputs"):
        m.submit_batch([1, 2, 3], [1, 2], 0.0)
    with pytest.raises(ValueError, match="and 1 request ids"):
        m.submit_batch([1, 2, 3], [1, 2, 3], 0.0, [7])
    assert m.submit_batch([], [], 0.0) == 0
    assert m.report().submitted == 0


def test_a_closed_mirror_refuses_rows_and_counts_them(cleanup: list[Any]) -> None:
    m = ShadowMirror(lambda X: X, name="closed")
    cleanup.append(m)
    assert m.close()
    assert m.submit_batch([1, 2, 3], [1, 2, 3], 0.0) == 0
    r = m.report()
    assert (r.submitted, r.refused) == (3, 3)
    check_identities(r)


def test_a_failed_batch_call_is_one_observation_of_the_error_check(cleanup: list[Any]) -> None:
    """The rows of one call fail together, so the error check counts the call once (the share
    of its rows that failed): 1 failed call of 50 weighs as 1 failed request of 50, however
    many rows the call had; before, its 200 rows were 200 independent failures (a FAIL)."""

    def batched(X: Any) -> Any:
        if X[0] == 0:
            raise RuntimeError("one bad call")
        return list(X)

    def single(x: int) -> int:
        if x == 0:
            raise RuntimeError("one bad call")
        return x

    b = ShadowMirror(batched, name="calls", workers=1, queue_size=20_000)
    s = ShadowMirror(single, name="requests", workers=1)
    cleanup.extend([b, s])
    for call in range(50):
        rows = list(range(call * 200, (call + 1) * 200))
        b.submit_batch(rows, rows, 0.001)
        s.submit(call * 200, call * 200, 0.001)
    assert b.wait_idle(WAIT)
    assert s.wait_idle(WAIT)
    rb, rs = b.report(), s.report()
    check_identities(rb)
    assert (rb.errors, rb.completed, rb.error_rate) == (200, 9_800, 0.02)  # rows, as served
    assert rb.p_error == rs.p_error
    assert rb.error_verdict is rs.error_verdict is Verdict.INCONCLUSIVE


def test_row_errors_in_returned_calls_weigh_by_their_share(cleanup: list[Any]) -> None:
    """A call that returned, with some rows in error, is one observation: their share."""
    b = ShadowMirror(
        lambda X: [math.nan if x % 4 == 0 else float(x) for x in X], name="share", queue_size=2_000
    )
    cleanup.append(b)
    for call in range(200):
        rows = list(range(call * 8, (call + 1) * 8))
        b.submit_batch(rows, [float(x) for x in rows], 0.001)
    assert b.wait_idle(WAIT)
    r = b.report()
    assert r.error_reasons["non_finite"] == 400
    assert r.error_rate == 0.25
    assert r.error_verdict is Verdict.FAIL  # a quarter of every call, far above 1%


@pytest.mark.slow
def test_batch_calls_failing_below_the_limit_rarely_fail_the_error_check() -> None:
    """A/A-style simulation: batch calls of 100 rows fail whole at 0.5%, half of
    max_error_rate; the error check (alpha 0.05) fails in at most 5% of 100 runs (plus
    binomial slack: at most 11). Counting rows as independent failed 16 runs of 40."""
    fails = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        bad = set(np.flatnonzero(rng.random(400) < 0.005).tolist())

        def shadow(X: Any, bad: set[int] = bad) -> Any:
            if X[0] // 100 in bad:
                raise RuntimeError("whole call failed")
            return list(X)

        m = ShadowMirror(shadow, workers=1, queue_size=100_000, name=f"aa{seed}")
        try:
            for call in range(400):
                rows = list(range(call * 100, (call + 1) * 100))
                m.submit_batch(rows, rows, 0.001)
                if call % 20 == 19:
                    assert m.wait_idle(WAIT)
                    m.report()  # a look of the sequential check
            assert m.wait_idle(WAIT)
            fails += m.report().error_verdict is Verdict.FAIL
        finally:
            m.close(timeout=5.0)
    assert fails <= 11, fails


class Columns:
    """Outputs with one entry per row by len, but keyed by column name (like a data frame)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, key: Any) -> Any:
        raise KeyError(key)


def test_outputs_without_rows_are_mismatches_and_the_worker_goes_on(cleanup: list[Any]) -> None:
    """A shadow whose output has the right length but no rows (indexing raises): every row is
    a mismatch, the worker survives, and the next batch is compared; a sink still gets one
    pair per row even when the inputs cannot be indexed either."""
    pairs: list[ShadowPair] = []
    m = ShadowMirror(
        lambda X: Columns(len(X)) if len(X) == 3 else [0] * len(X),
        workers=1,
        sink=pairs.append,
        name="columns",
    )
    cleanup.append(m)
    assert m.submit_batch(Columns(3), [0, 0, 0], 0.001) == 3
    assert m.wait_idle(WAIT)
    r = m.report()
    assert (r.error_reasons["mismatch"], r.state) == (3, "running")
    assert m.submit_batch([1, 2], [0, 0], 0.001) == 2
    assert m.wait_idle(WAIT)
    r = m.report()
    assert (r.compared, r.errors, r.stuck, r.timeouts) == (2, 3, 0, 0)
    check_identities(r)
    assert len(pairs) == 5
    assert pairs[0].input is None
    assert pairs[0].error is not None
    assert "KeyError" in pairs[0].error


def test_rows_are_judged_outside_the_lock_that_submit_takes(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judging thousands of rows must not hold the lock the request path waits on."""
    m = ShadowMirror(lambda X: list(X), workers=1, queue_size=3_000, name="lock")
    cleanup.append(m)
    held: list[bool] = []
    judge = m._judge_rows

    def spy(*args: Any) -> Any:
        held.append(m._lock.locked())
        return judge(*args)

    monkeypatch.setattr(m, "_judge_rows", spy)
    for _ in range(3):
        m.submit_batch(list(range(1_000)), list(range(1_000)), 0.001)
    assert m.wait_idle(WAIT)
    assert m.report().compared == 3_000
    assert held == [False, False, False]


def test_failing_batches_are_not_hidden_by_good_single_requests(cleanup: list[Any]) -> None:
    """Single requests and batch calls are judged as two streams: a shadow whose batch
    interface always fails fails the check, however many single requests succeed (a mean
    over all calls, 40 failed of 4,040, would pass it)."""

    def shadow(x: Any) -> Any:
        if isinstance(x, list):
            raise RuntimeError("the batch interface is broken")
        return x

    m = ShadowMirror(shadow, workers=1, queue_size=10_000, max_error_rate=0.05, name="mixed")
    cleanup.append(m)
    for r in range(40):
        for i in range(100):
            m.submit(i, i, 0.001)
        m.submit_batch(list(range(100)), list(range(100)), 0.001)
        if r % 10 == 9:
            assert m.wait_idle(WAIT)
            m.report()
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.errors, r.completed) == (4_000, 4_000)
    assert r.error_verdict is Verdict.FAIL
    assert "4000 single, 40 batch calls" in r.reason


def test_single_requests_alone_pass_and_fail_as_before_batches(cleanup: list[Any]) -> None:
    """With single requests only, the check passes once enough succeed and fails on a
    failing shadow; the batch stream, empty, neither blocks a pass nor fails."""
    good = ShadowMirror(lambda x: x, workers=1, queue_size=10_000, name="good")
    bad = ShadowMirror(
        lambda x: 1 / 0 if x % 5 == 0 else x, workers=1, queue_size=10_000, name="bad"
    )
    cleanup.extend([good, bad])
    for i in range(2_000):
        good.submit(i, i, 0.001)
        bad.submit(i, i, 0.001)
    assert good.wait_idle(WAIT)
    assert bad.wait_idle(WAIT)
    assert good.report().error_verdict is Verdict.PASS
    assert bad.report().error_verdict is Verdict.FAIL


def test_many_small_good_calls_do_not_hide_large_failing_ones(cleanup: list[Any]) -> None:
    """Within the batch stream each call is one observation, so 700 good 1-row calls and 70
    failing 200-row calls average to a 9% call failure share, under a 20% limit, while 95%
    of the rows failed: the check must not PASS while the rate over rows is above the limit."""

    def shadow(X: Any) -> Any:
        if len(X) > 1:
            raise MemoryError("large batches fail")
        return list(X)

    m = ShadowMirror(shadow, workers=1, queue_size=100_000, max_error_rate=0.2, name="sizes")
    cleanup.append(m)
    for _ in range(70):
        for i in range(10):
            m.submit_batch([i], [i], 0.001)
        m.submit_batch(list(range(200)), list(range(200)), 0.001)
    assert m.wait_idle(WAIT)
    r = m.report()
    assert r.error_rate is not None
    assert r.error_rate > 0.9
    assert r.error_verdict is not Verdict.PASS
    assert r.verdict is not Verdict.PASS

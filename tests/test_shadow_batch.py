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
    assert r.error_reasons == {"exception": 3, "non_finite": 0, "mismatch": 4}
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
    """A batch call past the timeout: each of its rows is a timeout, then late on return."""
    gate = threading.Event()
    cleanup.append(gate)
    clock = ManualClock()
    m = ShadowMirror(
        lambda X: gate.wait(WAIT) and list(X), clock=clock, workers=1, timeout=1.0, name="hung"
    )
    cleanup.append(m)
    m.submit_batch(list(range(7)), list(range(7)), 0.0)
    wait_until(lambda: m.report().running == 7, "the batch to start")
    clock.advance(1.5)
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

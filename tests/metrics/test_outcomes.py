"""Delayed outcomes joined to the serving variant: every call counted under one result."""

from __future__ import annotations

import math

import numpy as np
import pytest

from safeserve.metrics import OutcomeResult, Recorder, record_code
from safeserve.metrics._outcomes import _OutcomeRing

R = OutcomeResult


class Clock:
    """A settable clock."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw) -> tuple[Recorder, Clock]:
    clock = Clock()
    return Recorder(["v1", "v2"], clock=clock, **kw), clock


def serve(rec: Recorder, n: int, start: int = 0, override_every: int = 0) -> None:
    for i in range(start, start + n):
        ov = bool(override_every) and i % override_every == 0
        rec.append((i, i % 2, 0.01, 0, False, None, ov))


def test_conversions_join_the_serving_variant_as_a_proportion():
    """0/1 outcomes land in the serving variant's window; the mean is the proportion."""
    rec, _ = make()
    serve(rec, 2_000)
    rng = np.random.default_rng(0)
    y = (rng.random(2_000) < np.where(np.arange(2_000) % 2, 0.3, 0.1)).astype(float)
    assert all(rec.record_outcome(i, "converted", y[i]) is R.ACCEPTED for i in range(2_000))
    snap = rec.snapshot()
    for v, name in enumerate(("v1", "v2")):
        m = snap.variant(name).outcomes["converted"]
        assert m.n == 1_000
        assert m.mean == pytest.approx(y[v::2].mean(), rel=1e-12)
        assert m.variance == pytest.approx(y[v::2].var(ddof=1), rel=1e-9)


def test_real_valued_outcomes_like_revenue():
    """Real values (revenue) give numpy's mean and variance per variant."""
    rec, _ = make()
    serve(rec, 500)
    revenue = np.random.default_rng(1).gamma(2.0, 30.0, 500)
    for i, x in enumerate(revenue.tolist()):
        rec.record_outcome(i, "revenue", x)
    m = rec.snapshot().variant("v2").outcomes["revenue"]
    assert m.mean == pytest.approx(revenue[1::2].mean(), rel=1e-12)
    assert m.variance == pytest.approx(revenue[1::2].var(ddof=1), rel=1e-9)


def test_duplicate_outcome_is_counted_once():
    """The same id and name twice: accepted once, then DUPLICATE; other names are separate."""
    rec, _ = make()
    serve(rec, 3)
    assert rec.record_outcome(1, "converted", 1) is R.ACCEPTED
    assert rec.record_outcome(1, "converted", 1) is R.DUPLICATE
    assert rec.record_outcome(1, "revenue", 9.5) is R.ACCEPTED
    snap = rec.snapshot()
    assert snap.variant("v2").outcomes["converted"].n == 1
    assert snap.outcome_results == {"accepted": 2, "duplicate": 1}


def test_outcome_after_the_ttl_is_late():
    """An outcome older than outcome_ttl is LATE (late:expired) and not joined."""
    rec, clock = make(outcome_ttl=60.0)
    serve(rec, 2)
    rec.flush()
    clock.t = 61.0
    assert rec.record_outcome(0, "converted", 1) is R.LATE
    snap = rec.snapshot()
    assert snap.outcome_reasons == {"late:expired": 1}
    assert snap.variant("v1").outcome_results == {"late": 1}
    assert snap.variant("v1").outcomes == {}


def test_a_batch_given_its_request_time_is_judged_from_it():
    """A batch's rows given a request_time are judged from it, however late they are
    flushed; rows and records without one, from the flush."""
    rec, clock = make(outcome_ttl=60.0)
    rec.append_batch([0, 1], [0, 1], 0.01, 0, False, None, False, request_time=0.0)
    rec.append_batch([2, 3], [0, 1], 0.01, 0, False, None, False, request_time=100.0)
    rec.append_batch([4], [0], 0.01, 0, False, None, False)
    rec.append((5, record_code(1), 0.01, 0.5))
    clock.t = 120.0
    # The outcome's own flush runs now: ids 0 and 1 are 120 s old, 2 and 3 only 20 s.
    assert [rec.record_outcome(i, "y", 1.0) for i in range(6)] == [
        R.LATE,
        R.LATE,
        R.ACCEPTED,
        R.ACCEPTED,
        R.ACCEPTED,
        R.ACCEPTED,
    ]


@pytest.mark.parametrize("flush_within", [10.0, math.inf])
def test_the_flush_promise_bounds_when_buffered_requests_were_made(flush_within: float):
    """With ``flush_within`` (the router's promise to flush at least that often), requests
    still buffered when an outcome arrives count as made at most that long after the last
    flush: 120 s later they are LATE against a 60 s time to live. Without the promise they
    count from the flush (the outcome's own), as before."""
    rec, clock = make(outcome_ttl=60.0)
    rec.flush_within = flush_within
    clock.t = 5.0
    rec.flush()  # the last flush: 5 s
    clock.t = 8.0
    for i in range(4):
        rec.append((i, record_code(i % 2), 0.01, 0.5))
    clock.t = 128.0
    want = R.LATE if flush_within == 10.0 else R.ACCEPTED
    assert [rec.record_outcome(i, "y", 1.0) for i in range(4)] == [want] * 4
    # Stamped no later than the flush itself: 60 s after a flush at 130 s, accepted.
    clock.t = 130.0
    rec.append((4, record_code(0), 0.01, 0.5))
    rec.flush()
    clock.t = 189.0
    assert rec.record_outcome(4, "y", 1.0) is R.ACCEPTED


def test_outcome_whose_slot_was_reused_is_late():
    """Once the ring has moved past an id (capacity reached), its outcome is LATE (evicted)."""
    rec, _ = make(outcome_capacity=100)
    serve(rec, 250)
    assert rec.record_outcome(10, "converted", 1) is R.LATE
    assert rec.record_outcome(249, "converted", 1) is R.ACCEPTED
    assert rec.snapshot().outcome_reasons == {"late:evicted": 1}


def test_unknown_ids_are_counted_by_reason():
    """Negative, wrongly typed and never-recorded ids are UNKNOWN with a reason."""
    rec, _ = make()
    serve(rec, 5)
    results = [rec.record_outcome(i, "converted", 1) for i in (-1, "3", 3.0, True, 10**6)]
    assert results == [R.UNKNOWN] * 5
    assert rec.snapshot().outcome_reasons == {
        "unknown:bad_type": 3,
        "unknown:negative": 1,
        "unknown:not_recorded": 1,
    }


def test_unflushed_id_is_found_by_flushing_first():
    """An id still in the append buffer is flushed, then joined."""
    rec, _ = make()
    serve(rec, 10)
    assert rec.pending() == 10
    assert rec.record_outcome(9, "converted", 1) is R.ACCEPTED
    assert rec.pending() == 0


def test_out_of_order_appends_are_still_joined():
    """Ids appended out of order by racing threads are found after a flush."""
    rec, _ = make()
    rec.append((6, 0, 0.01, 0, False, None, False))
    rec.flush()
    rec.append((5, 1, 0.01, 0, False, None, False))
    assert rec.record_outcome(5, "converted", 1) is R.ACCEPTED
    assert rec.snapshot().variant("v2").outcomes["converted"].n == 1


def test_override_requests_are_kept_out():
    """An outcome of a request forced by an override is counted OVERRIDE, not joined."""
    rec, _ = make()
    serve(rec, 10, override_every=4)
    assert rec.record_outcome(4, "converted", 1) is R.OVERRIDE
    assert rec.record_outcome(5, "converted", 1) is R.ACCEPTED
    v1 = rec.snapshot().variant("v1")
    assert v1.outcome_results == {"override": 1}
    assert v1.outcomes == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, "1", None, [1]])
def test_bad_values_are_rejected_and_a_retry_is_accepted(bad: object):
    """NaN, inf and non-numeric values are INVALID_VALUE and do not mark the id as seen."""
    rec, _ = make()
    serve(rec, 2)
    assert rec.record_outcome(0, "converted", bad) is R.INVALID_VALUE  # type: ignore[arg-type]
    assert rec.record_outcome(0, "converted", 1.0) is R.ACCEPTED
    assert rec.snapshot().variant("v1").outcomes["converted"].n == 1


def test_bad_and_too_many_names_are_rejected():
    """A non-str name, or one past max_names distinct names, is INVALID_NAME."""
    rec, _ = make(max_names=1)
    serve(rec, 3)
    assert rec.record_outcome(0, 7, 1.0) is R.INVALID_NAME  # type: ignore[arg-type]
    assert rec.record_outcome(0, "a", 1.0) is R.ACCEPTED
    assert rec.record_outcome(1, "b", 1.0) is R.INVALID_NAME
    assert rec.snapshot().outcome_reasons == {
        "invalid_name:bad_type": 1,
        "invalid_name:too_many_names": 1,
    }


def test_every_call_is_counted_exactly_once():
    """The result counters add up to the number of record_outcome calls."""
    rec, clock = make(outcome_ttl=5.0, outcome_capacity=50)
    rng = np.random.default_rng(5)
    calls = 0
    for step in range(20):
        serve(rec, 20, start=20 * step, override_every=7)
        clock.t += 1.0
        for _ in range(30):
            rid = int(rng.integers(-5, 20 * (step + 1) + 5))
            val = float(rng.choice([0.0, 1.0, math.nan]))
            rec.record_outcome(rid, str(rng.choice(["a", "b"])), val)
            calls += 1
    snap = rec.snapshot()
    assert sum(snap.outcome_results.values()) == calls
    joined = sum(m.n for v in snap.variants for m in v.outcomes.values())
    assert joined == snap.outcome_results["accepted"]


def test_the_outcome_map_takes_its_memory_at_construction_not_during_flushes() -> None:
    """Memory fixed whatever the traffic: the map's pages are written when it is made, so a
    flush (on a request's path) never stalls on a page's first touch. Counted as minor page
    faults over a whole first turn of the map (1M fresh ids in the router's 4,096-id flushes),
    duplicate markers of one outcome name included."""
    resource = pytest.importorskip("resource", reason="page-fault counts need getrusage")
    ring = _OutcomeRing(1_000_000, 2)
    ring.seen_for("converted")
    n = 4096
    variant = np.arange(n, dtype=np.int64) % 2
    override = np.zeros(n, dtype=np.bool_)
    ids = np.arange(1, n + 1, dtype=np.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(1_000_000 // n + 1):
        ring.store(ids, variant, override, 1.0)
        ids += n
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    # Lazily mapped arrays take a fault per 4 KiB page at its first write: 1,400 for the
    # whole map and 248 for the duplicate markers alone when this was written; 4 with the
    # memory taken up front.
    assert faults < 100, faults


def test_the_newer_of_two_requests_in_one_flush_owns_their_shared_slot():
    """Two requests 8 ids apart share a slot of an 8-slot ring; when the newer finished first
    (threads end in any order) the older overwrote it in the same flush, so the newer
    request's outcome was "never recorded" and the evicted one's was accepted."""
    rec = Recorder(["v1", "v2"], clock=lambda: 0.0, outcome_capacity=8)
    rec.append((13, record_code(1), 0.01, 1.0))
    rec.append((5, record_code(0), 0.01, 1.0))
    rec.append((7, record_code(0), 0.01, 1.0))
    rec.flush()
    assert rec.record_outcome(13, "c", 1.0) is OutcomeResult.ACCEPTED
    assert rec.record_outcome(5, "c", 1.0) is OutcomeResult.LATE
    assert rec.record_outcome(7, "c", 1.0) is OutcomeResult.ACCEPTED

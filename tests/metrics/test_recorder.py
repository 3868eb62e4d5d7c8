"""The recorder: hot-path appends, vectorized flush, built-in metrics, bad input, snapshot."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from structlog.testing import capture_logs

from safeserve._errors import ConfigError, DataError
from safeserve.metrics import (
    CountWindow,
    MetricsSnapshot,
    OutcomeResult,
    Recorder,
    Status,
    TimeWindow,
    record_code,
)


class Clock:
    """A settable clock."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(variants=("v1", "v2"), **kw) -> tuple[Recorder, Clock]:
    clock = Clock()
    return Recorder(list(variants), clock=clock, **kw), clock


def test_append_is_a_bound_list_append():
    """The hot path is a plain list.append (nothing else runs per request)."""
    rec, _ = make()
    assert type(rec.append).__name__ == "builtin_function_or_method"
    assert rec.append.__name__ == "append"
    assert isinstance(rec.append.__self__, list)  # type: ignore[attr-defined]


def test_counts_by_status_and_fallbacks():
    """requests, ok, errors (by status) and fallbacks are counted per variant."""
    rec, _ = make()
    rows = [
        (0, 0, 0.01, Status.OK, False, 1.0, False),
        (1, 1, 0.02, Status.ERROR, True, None, False),
        (2, 1, 0.03, Status.INVALID, False, None, False),
        (3, 1, 0.50, Status.TIMEOUT, True, None, False),
        (4, 1, 0.04, Status.OK, False, 2.0, False),
    ]
    for r in rows:
        rec.append(r)
    assert rec.flush() == 5
    v2 = rec.snapshot().variant("v2")
    assert (v2.requests, v2.ok, v2.errors, v2.fallbacks) == (4, 1, 3, 2)
    assert v2.errors_by_status == {"error": 1, "invalid": 1, "timeout": 1}
    assert v2.error_rate == 0.75


def test_latency_moments_log_moments_and_quantiles_match_numpy():
    """Latency mean/var, log-latency mean/var and p50..p99.9 agree with numpy."""
    rec, _ = make(("v1",))
    rng = np.random.default_rng(4)
    lat = rng.lognormal(-4.0, 0.8, 50_000)
    for i, x in enumerate(lat.tolist()):
        rec.append((i, 0, x, 0, False, None, False))
    v = rec.snapshot().variant("v1")
    assert v.latency_moments.n == lat.size
    assert v.latency_moments.mean == pytest.approx(lat.mean(), rel=1e-12)
    assert v.latency_moments.variance == pytest.approx(lat.var(ddof=1), rel=1e-9)
    assert v.log_latency.mean == pytest.approx(np.log(lat).mean(), rel=1e-12)
    assert v.log_latency.variance == pytest.approx(np.log(lat).var(ddof=1), rel=1e-9)
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999)):
        exact = np.quantile(lat, q, method="lower")
        assert abs(v.latency_quantiles()[name] / exact - 1) <= 0.01 + 1e-12


def test_zero_latency_is_valid_and_floored_in_log_space():
    """A zero latency (a fake clock that did not move) counts; its log uses min_latency."""
    rec, _ = make(("v1",))
    rec.append((0, 0, 0.0, 0, False, None, False))
    v = rec.snapshot().variant("v1")
    assert v.latency.underflow == 1
    assert v.log_latency.mean == pytest.approx(math.log(1e-6))
    assert v.rejected == {}


def test_overrides_are_counted_apart_and_kept_out_of_windows():
    """Override requests add to totals['overrides'] only; the window never sees them."""
    rec, _ = make()
    rec.append((0, 1, 0.9, 1, False, None, True))
    rec.append((1, 1, 0.1, 0, False, 1.0, False))
    v2 = rec.snapshot().variant("v2")
    assert (v2.requests, v2.errors, v2.latency_moments.n, v2.overrides) == (1, 0, 1, 1)
    assert v2.totals["requests"] == 1


def test_numeric_outputs_moments_and_signed_quantiles():
    """Float outputs (either sign) get moments and quantiles within 1% of numpy."""
    rec, _ = make(("v1",))
    y = np.random.default_rng(8).normal(0.0, 3.0, 20_000)
    for i, v in enumerate(y.tolist()):
        rec.append((i, 0, 0.01, 0, False, v, False))
    v = rec.snapshot().variant("v1")
    assert v.output.mean == pytest.approx(y.mean(), rel=1e-9, abs=1e-12)
    assert v.output.variance == pytest.approx(y.var(ddof=1), rel=1e-9)
    for q in (0.05, 0.5, 0.95):
        exact = np.quantile(y, q, method="lower")
        assert abs(v.output_histogram.quantile(q) - exact) <= 0.01 * abs(exact) + 1e-12
    assert v.output_kinds["numeric"] == y.size


def test_label_outputs_are_counted_per_class():
    """str, int and bool outputs are class labels counted per class."""
    rec, _ = make(("v1",))
    outs = ["cat", "dog", "cat", 3, np.int64(3), True]
    for i, o in enumerate(outs):
        rec.append((i, 0, 0.01, 0, False, o, False))
    v = rec.snapshot().variant("v1")
    assert v.labels.to_dict() == {"cat": 2, "dog": 1, "3": 2, "True": 1}
    assert v.output_kinds["label"] == 6


def test_mixed_vector_and_none_outputs():
    """Mixed outputs are sorted one by one: size-1 arrays as scalars, bigger ones as vectors,
    None as none, an unsupported type rejected with its reason."""
    rec, _ = make(("v1",))
    outs = [1.5, "a", np.array([2.5]), np.array([0.1, 0.9]), None, {"x": 1}, float("nan")]
    for i, o in enumerate(outs):
        rec.append((i, 0, 0.01, 0, False, o, False))
    v = rec.snapshot().variant("v1")
    assert v.output_kinds == {"numeric": 2, "label": 1, "vector": 1, "none": 1}
    assert v.output.mean == 2.0
    assert v.rejected == {"output:bad_type": 1, "output:non_finite": 1}


def test_numeric_output_mode_reads_ints_as_numbers():
    """outputs='numeric' summarizes int outputs as numbers and rejects strings."""
    rec, _ = make(("v1",), outputs="numeric")
    for i, o in enumerate([1, 2, 3.0, "x"]):
        rec.append((i, 0, 0.01, 0, False, o, False))
    v = rec.snapshot().variant("v1")
    assert (v.output.n, v.output.mean) == (3, 2.0)
    assert v.rejected == {"output:not_numeric": 1}


def test_bad_latency_is_rejected_with_reason_and_the_request_still_counts():
    """NaN, inf, negative and non-numeric latencies are counted by reason; they never reach
    the latency window, but the request itself is counted."""
    rec, _ = make(("v1",))
    for i, lat in enumerate([math.nan, math.inf, -0.5, "slow", 0.25]):
        rec.append((i, 0, lat, 0, False, None, False))
    v = rec.snapshot().variant("v1")
    assert v.requests == 5
    assert (v.latency_moments.n, v.latency_moments.mean, v.latency.n) == (1, 0.25, 1)
    assert v.rejected == {
        "latency:bad_type": 1,
        "latency:inf": 1,
        "latency:nan": 1,
        "latency:negative": 1,
    }


def test_bad_records_are_counted_not_ingested():
    """Malformed records, unknown variant indexes and unknown statuses are counted."""
    rec, _ = make(("v1",))
    rec.append((0, 0, 0.1, 0, False, None, False))
    rec.append("garbage")
    rec.append((1, 7, 0.1, 0, False, None, False))
    rec.append((2, 0, 0.1, 9, False, None, False))
    assert rec.flush() == 4
    snap = rec.snapshot()
    assert snap.rejected == {"record:bad_variant": 1, "record:malformed": 1}
    assert snap.variant("v1").rejected == {"record:bad_status": 1}
    assert snap.variant("v1").requests == 1


@pytest.mark.parametrize("outputs", ["auto", "numeric"])
def test_values_too_large_to_square_are_rejected_not_summarized(outputs: str):
    """Outputs, latencies, custom values and outcomes beyond +-1e100 (and ints past float64)
    are counted with a reason; the windows' moments stay finite and the flush never raises
    (an overflow warning would fail this test: warnings are errors here)."""
    rec, _ = make(("v1",), outputs=outputs)
    ok = record_code(0)
    rows = [(0, ok, 0.1, 1.0), (1, ok, 0.1, 1e200), (2, ok, 0.1, -1e300), (3, ok, 1e200, 2.0)]
    rows += [(4, ok, 0.2, 3.0)]
    for r in rows:
        rec.append(r)
    rec.append((5, ok, 0.1, 10**400))  # an int: a label in "auto", a number in "numeric"
    rec.append_batch(-1, 0, 0.1, 0, False, np.array([1.0, 1e200, 2.0]), False)
    assert rec.flush() == 9
    assert rec.record_custom(0, "c", 1e200) is False
    assert rec.record_custom(0, "c", 10**400) is False
    assert rec.record_outcome(0, "y", -1e200).name == "INVALID_VALUE"
    assert rec.record_outcome(0, "y", 10**400).name == "INVALID_VALUE"
    v = rec.snapshot().variant("v1")
    assert v.rejected["output:too_large"] == 3  # 1e200 and -1e300 in records, 1e200 in a batch
    assert v.rejected["latency:too_large"] == 1
    assert v.rejected["custom:too_large"] == 1
    assert v.rejected["custom:non_finite"] == 1
    if outputs == "numeric":
        assert v.rejected["output:non_finite"] == 1  # the int past float64's range
    assert v.requests == 9
    assert math.isfinite(v.output.variance)
    assert math.isfinite(v.latency_moments.variance)
    assert v.output.n == 5
    assert v.output.mean == pytest.approx(np.mean([1.0, 2.0, 3.0, 1.0, 2.0]))


def test_an_int_latency_past_float64_is_rejected_and_the_flush_goes_on():
    """An int latency too large for a float is counted as infinite, through both buffers;
    the flush neither raises nor loses the rest of what it drained."""
    rec, _ = make(("v1",))
    rec.append((2, record_code(0), 10**400, 0.5))
    rec._extend((3, record_code(0), 10**400, 0.5))
    rec._extend((4, record_code(0), 0.01, 0.5))
    rec.record_custom(0, "c", 1.0)
    assert rec.flush() == 3
    v = rec.snapshot().variant("v1")
    assert v.requests == 3
    assert v.rejected == {"latency:inf": 2}
    assert v.latency_moments.n == 1
    assert v.custom["c"].n == 1


def test_a_block_that_fails_to_ingest_is_counted_and_the_rest_goes_on(
    monkeypatch: pytest.MonkeyPatch,
):
    """If ingesting a block raised (a bug), its records are counted as record:flush_error,
    and the other blocks, the batches and the custom values still go in."""
    rec, _ = make(("v1",))
    real = rec._ingest_block
    calls = []

    def failing_once(cols: object, now: float) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        real(cols, now)  # type: ignore[arg-type]

    monkeypatch.setattr(rec, "_ingest_block", failing_once)
    for i in range(5):
        rec._extend((i, record_code(0), 0.01, 1.0))
    for i in range(5, 8):
        rec.append((i, record_code(0), 0.01, 1.0))
    rec.record_custom(0, "c", 2.0)
    with capture_logs() as logs:
        assert rec.flush() == 8
    assert [e["event"] for e in logs] == ["safeserve.flush_error"]
    assert logs[0]["records"] == 5
    snap = rec.snapshot()
    assert snap.rejected == {"record:flush_error": 5}
    assert snap.variant("v1").requests == 3
    assert snap.variant("v1").custom["c"].n == 1


def test_array_outputs_skip_the_marshal_path_without_writing_them(
    monkeypatch: pytest.MonkeyPatch,
):
    """Records whose outputs are arrays (an embedding) are not written out by marshal, which
    would copy every array's buffer, only to be declined."""
    dumped = []
    real = recorder_module.marshal.dumps

    def spy(obj: object, version: int) -> bytes:
        dumped.append(1)
        return real(obj, version)

    monkeypatch.setattr(recorder_module.marshal, "dumps", spy)
    rows = [(i, record_code(0), 0.01, np.ones(64)) for i in range(10)]
    assert recorder_module._columns_marshal(rows) is None
    assert recorder_module._columns_marshal([f for r in rows for f in r], flat=True) is None
    assert dumped == []
    rec, _ = make(("v1",))
    for r in rows:
        rec._extend(r)
    assert rec.flush() == 10
    assert dumped == []
    assert rec.snapshot().variant("v1").output_kinds["vector"] == 10


def test_custom_metrics_and_their_rejections():
    """record_custom feeds a per-variant Moments window; bad values are counted by reason."""
    rec, _ = make(max_names=2)
    vals = [0.2, 0.4, 0.9]
    assert all(rec.record_custom(1, "confidence", v) for v in vals)
    assert not rec.record_custom(1, "confidence", math.nan)
    assert not rec.record_custom(1, "confidence", "high")
    assert not rec.record_custom(5, "confidence", 1.0)
    assert rec.record_custom(0, "cost", 1.0)
    assert not rec.record_custom(0, "third", 1.0)
    snap = rec.snapshot()
    m = snap.variant("v2").custom["confidence"]
    assert (m.n, m.mean) == (3, pytest.approx(np.mean(vals)))
    assert m.variance == pytest.approx(np.var(vals, ddof=1))
    assert snap.variant("v2").rejected == {"custom:bad_type": 1, "custom:non_finite": 1}
    assert snap.variant("v1").rejected == {"custom:too_many_names": 1}
    assert snap.rejected == {"custom:bad_variant": 1}


def test_append_batch_equals_the_same_rows_appended_one_by_one():
    """A batch item and the same rows as tuples give identical windows."""
    rng = np.random.default_rng(9)
    n = 1_000
    ids = np.arange(n, dtype=np.int64)
    vi = rng.integers(0, 2, n)
    lat = rng.lognormal(-4, 1, n)
    status = rng.choice([0, 0, 0, 1, 2], n).astype(np.int8)
    fb = status != 0
    out = np.where(status == 0, rng.normal(size=n), np.nan)
    ov = rng.random(n) < 0.05
    a, _ = make()
    a.append_batch(ids, vi, lat, status, fb, out, ov)
    b, _ = make()
    for row in zip(
        ids.tolist(),
        vi.tolist(),
        lat.tolist(),
        status.tolist(),
        fb.tolist(),
        [o if s == 0 else None for o, s in zip(out.tolist(), status.tolist(), strict=True)],
        ov.tolist(),
        strict=True,
    ):
        b.append(row)
    sa, sb = a.snapshot(), b.snapshot()
    for name in ("v1", "v2"):
        va, vb = sa.variant(name), sb.variant(name)
        assert (va.requests, va.errors, va.fallbacks, va.overrides) == (
            vb.requests,
            vb.errors,
            vb.fallbacks,
            vb.overrides,
        )
        assert va.latency == vb.latency
        assert va.latency_moments.mean == pytest.approx(vb.latency_moments.mean, rel=1e-12)
        assert va.output.n == vb.output.n
        assert va.output_histogram == vb.output_histogram


def test_append_batch_with_list_outputs_and_none():
    """Batch outputs may be a list (labels) or None; lengths must match."""
    rec, _ = make(("v1",))
    z = np.zeros(3, np.int64)
    rec.append_batch(np.arange(3), z, [0.1] * 3, z, [False] * 3, ["a", "b", "a"], [False] * 3)
    rec.append_batch(np.arange(3, 5), z[:2], [0.1] * 2, z[:2], [False] * 2, None, [False] * 2)
    with pytest.raises(DataError, match="length"):
        rec.append_batch(np.arange(2), z, [0.1] * 3, z, [False] * 3, None, [False] * 3)
    v = rec.snapshot().variant("v1")
    assert v.labels.to_dict() == {"a": 2, "b": 1}
    assert v.output_kinds["none"] == 2
    assert v.requests == 5


@pytest.mark.parametrize("hot_path", ["append", "_extend"])
def test_records_appended_during_a_flush_wait_for_the_next_one(
    monkeypatch: pytest.MonkeyPatch, hot_path: str
):
    """The flush reads each buffer in place, block by block (a backlog of three blocks
    here), and deletes only what it read: records another thread appends meanwhile stay for
    the next flush, and every record is counted once, ids included."""
    rec, _ = make()
    app = getattr(rec, hot_path)
    n = 40_000  # more than two blocks
    for i in range(n):
        app((i, record_code(i % 2), 0.001, 0.5))
    ingest_block = Recorder._ingest_block
    late = iter(range(n, n + 3_000))

    def with_appends(self: Recorder, cols: object, now: float) -> None:
        for _ in range(1_000):  # as other threads would, between two blocks
            i = next(late)
            app((i, record_code(i % 2), 0.001, 0.5))
        ingest_block(self, cols, now)

    monkeypatch.setattr(Recorder, "_ingest_block", with_appends)
    assert rec.flush() == n
    monkeypatch.setattr(Recorder, "_ingest_block", ingest_block)
    assert rec.pending() == 3_000
    assert rec.flush() == 3_000
    snap = rec.snapshot()
    assert snap.records == n + 3_000
    assert [snap.variant(v).requests for v in ("v1", "v2")] == [(n + 3_000) // 2] * 2
    results = [rec.record_outcome(i, "y", 1.0) for i in (0, n - 1, n, n + 2_999)]
    assert results == [OutcomeResult.ACCEPTED] * 4


@pytest.mark.parametrize("hot_path", ["append", "_extend"])
def test_a_flush_started_inside_a_flush_on_its_thread_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, hot_path: str
):
    """A snapshot (which flushes) taken on the flushing thread itself, as a signal handler
    would, in the middle of a three-block flush: it sees what was taken in so far, the inner
    flush returns 0, and the outer one counts every record once, later appends included."""
    rec, _ = make()
    app = getattr(rec, hot_path)
    n = 40_000
    for i in range(n):
        app((i, record_code(i % 2), 0.001, 0.5))
    ingest_block = Recorder._ingest_block
    inner: list[tuple[int, int]] = []

    def with_a_nested_flush(self: Recorder, cols: object, now: float) -> None:
        ingest_block(self, cols, now)
        if not inner:
            snap = rec.snapshot()
            inner.append((rec.flush(), sum(snap.variant(v).requests for v in ("v1", "v2"))))
            for i in range(n, n + 5_000):  # appended after the nested snapshot
                app((i, record_code(i % 2), 0.001, 0.5))

    monkeypatch.setattr(Recorder, "_ingest_block", with_a_nested_flush)
    assert rec.flush() == n
    monkeypatch.setattr(Recorder, "_ingest_block", ingest_block)
    ((nested, seen),) = inner
    assert nested == 0
    assert 0 < seen < n
    assert rec.pending() == 5_000
    assert rec.flush() == 5_000
    snap = rec.snapshot()
    assert snap.records == n + 5_000
    assert [snap.variant(v).requests for v in ("v1", "v2")] == [(n + 5_000) // 2] * 2


@pytest.mark.parametrize("hot_path", ["append", "_extend"])
def test_eight_threads_appending_while_flushing_lose_nothing(hot_path: str):
    """8 threads append (as tuples, or as the router does, into the flat buffer) while
    another thread flushes: exact totals, nothing lost or doubled."""
    rec, _ = make(("a", "b", "c"))
    per_thread, threads = 20_000, 8
    done = threading.Event()

    def worker(t: int) -> None:
        app = getattr(rec, hot_path)
        for i in range(per_thread):
            rid = t * per_thread + i  # each thread its own ids: together 0 .. total - 1
            code = record_code(rid % 3, Status.OK if i % 10 else Status.ERROR)
            app((rid, code, 0.001 * (1 + t), 0.5))
            if not i % 2_000:
                time.sleep(0)  # let the flusher in while the appends go on

    flushed = []

    def flusher() -> None:
        while not done.is_set():
            flushed.append(rec.flush())
        flushed.append(rec.flush())

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    f = threading.Thread(target=flusher)
    f.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    f.join()
    total = per_thread * threads
    assert sum(flushed) == total
    assert any(flushed[:-1]), "no flush ran while the threads appended"
    snap = rec.snapshot()
    assert snap.records == total
    reqs = [snap.variant(n).requests for n in ("a", "b", "c")]
    assert reqs == [len(range(v, total, 3)) for v in range(3)]
    assert sum(snap.variant(n).errors for n in ("a", "b", "c")) == total // 10
    lat_sum = sum(
        snap.variant(n).latency_moments.mean * snap.variant(n).latency_moments.n
        for n in ("a", "b", "c")
    )
    # Latency counts answered requests only: 9 in 10 of each thread's records.
    ok_per_thread = per_thread - per_thread // 10
    assert sum(snap.variant(n).latency_moments.n for n in ("a", "b", "c")) == ok_per_thread * 8
    assert lat_sum == pytest.approx(ok_per_thread * 0.001 * sum(range(1, 9)), rel=1e-9)
    assert all(rec.record_outcome(i, "y", 1.0).name == "ACCEPTED" for i in range(total))


def test_time_window_expires_but_lifetime_totals_stay():
    """Records leave the window with their slice; lifetime totals keep them."""
    rec, clock = make(("v1",), window=TimeWindow(length=60.0, slices=6))
    rec.append((0, 0, 0.1, 0, False, None, False))
    rec.flush()
    clock.t = 61.0
    v = rec.snapshot().variant("v1")
    assert (v.requests, v.latency.n, v.totals["requests"]) == (0, 0, 1)


def test_count_window_keeps_each_variants_last_requests():
    """A CountWindow keeps, per variant, the last (K-1)*N/K + (n mod N/K) requests."""
    rec, _ = make(window=CountWindow(size=100, slices=4))
    lat = np.random.default_rng(1).lognormal(-3, 1, 1_234)
    vi = np.arange(lat.size) % 2
    for chunk in np.array_split(np.arange(lat.size), 7):
        for i in chunk.tolist():
            rec.append((i, int(vi[i]), float(lat[i]), 0, False, None, False))
        rec.flush()
    snap = rec.snapshot()
    for v, name in enumerate(("v1", "v2")):
        mine = lat[vi == v]
        keep = 3 * 25 + mine.size % 25
        m = snap.variant(name).latency_moments
        assert m.n == keep
        assert m.mean == pytest.approx(mine[-keep:].mean(), rel=1e-12)
        assert m.variance == pytest.approx(mine[-keep:].var(ddof=1), rel=1e-9)


def test_reset_clears_windows_only():
    """reset empties the windows; lifetime counters stay."""
    rec, _ = make(("v1",))
    rec.append((0, 0, 0.1, 0, False, None, False))
    rec.reset()
    v = rec.snapshot().variant("v1")
    assert (v.requests, v.totals["requests"]) == (0, 1)


def test_snapshot_is_json_serializable_plain_data():
    """to_dict() round-trips through json (no NaN, no numpy types)."""
    rec, _ = make()
    rec.append((0, 0, 0.1, 0, False, 1.5, False))
    rec.append((1, 1, 0.1, 0, False, "cat", False))
    rec.record_custom(0, "c", 2.0)
    rec.record_outcome(0, "converted", 1)
    snap = rec.snapshot()
    assert isinstance(snap, MetricsSnapshot)
    text = json.dumps(snap.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["variants"][0]["latency"]["n"] == 1
    assert back["variants"][0]["outcomes"]["converted"]["mean"] == 1.0
    assert back["variants"][1]["output"]["labels"] == {"cat": 1}
    with pytest.raises(ConfigError, match="'nope'"):
        snap.variant("nope")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"variants": []},
        {"variants": ["a", "a"]},
        {"variants": ["a"], "clock": None},
        {"variants": ["a"], "window": 300},
        {"variants": ["a"], "outcome_ttl": 0},
        {"variants": ["a"], "outcome_capacity": 0},
        {"variants": ["a"], "outputs": "json"},
        {"variants": ["a"], "max_names": 0},
    ],
)
def test_bad_recorder_config_is_rejected(kwargs):
    """Bad variants, clock, window or options raise ConfigError."""
    kwargs.setdefault("clock", Clock())
    with pytest.raises(ConfigError):
        Recorder(kwargs.pop("variants"), **kwargs)


# -- fast paths agree with the general ones --------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from safeserve.metrics import _recorder as recorder_module  # noqa: E402

_odd_values = st.sampled_from(
    [
        np.float64(0.5),
        np.int64(1),
        Status.OK,
        7,
        -3,
        2**40,
        2**70,
        "x",
        True,
        1,
        0,
        [0.1],
        None,
        math.nan,
        math.inf,
        -math.inf,
        -0.0,
        -1.0,
    ]
)


def _router_layout(rec: object) -> bool:
    """Whether a record has the router's layout: int id, int32 code, float latency/output."""
    return (
        type(rec) is tuple
        and len(rec) == 4
        and type(rec[0]) is int
        and type(rec[1]) is int
        and 0 <= rec[1] < 2**31
        and type(rec[2]) is float
        and type(rec[3]) is float
    )


@st.composite
def record_lists(draw: st.DrawFn) -> list[object]:
    """Request records: mostly the router's 4-tuples, sometimes the readable 7-tuples, any
    odd field or a malformed record."""
    n = draw(st.integers(1, 60))
    first = draw(st.sampled_from([0, 5, 2**31 - 30, 2**40, 2**45 - 30, 2**62]))
    common = draw(st.booleans())
    rows: list[object] = []
    for i in range(n):
        rid: object = first + i if draw(st.booleans()) or common else draw(st.integers(-2, 2**33))
        v = draw(st.integers(0, 1))
        status = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
        fb, ov = draw(st.booleans()), draw(st.booleans())
        lat = draw(st.floats(0.0, 10.0) | st.sampled_from([0.0, 1e-9, 5e3]))
        out = draw(st.floats(-1e6, 1e6, allow_nan=False))
        row: list[object]
        if common or draw(st.integers(0, 5)):
            row = [rid, record_code(v, status, fb, ov), lat, out]
        else:
            row = [rid, v, lat, status, fb, None if draw(st.booleans()) else out, ov]
        if not common and draw(st.integers(0, 4)) == 0:
            row[draw(st.integers(0, len(row) - 1))] = draw(_odd_values)
        record: object = tuple(row)
        if not common and draw(st.integers(0, 30)) == 0:
            record = row  # a list, not a tuple: malformed
        rows.append(record)
    return rows


def _same_float(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    return type(a) is type(b) and a == b


def _same_columns(fast: object, rows: list[object]) -> None:
    ref = recorder_module._columns_slow(list(rows))
    for name in ("rid", "var", "st", "fb", "ov"):
        assert np.array_equal(getattr(fast, name), getattr(ref, name)), name
    assert fast.lat.tobytes() == ref.lat.tobytes()  # type: ignore[attr-defined]
    got = fast.outputs_list()  # type: ignore[attr-defined]
    assert isinstance(ref.out, list)
    assert len(got) == len(ref.out)
    assert all(_same_float(a, b) for a, b in zip(got, ref.out, strict=True))


@settings(max_examples=200, deadline=None)
@given(rows=record_lists(), flat=st.booleans())
def test_marshal_conversion_equals_the_record_by_record_conversion(rows: list[object], flat: bool):
    """The marshal path reads every field exactly as the record-by-record path does, or
    declines; it never declines a chunk of the router's layout whose ids are all int32, or
    all in [2**31, 2**45). The same for the router's flat buffer (fields four by four)."""
    if flat:
        rows = [r for r in rows if type(r) is tuple and len(r) == 4]
        fast = recorder_module._columns_marshal([f for r in rows for f in r], flat=True)  # type: ignore[attr-defined]
    else:
        fast = recorder_module._columns_marshal(list(rows))
    if rows and all(_router_layout(r) for r in rows):  # (an empty chunk has no records)
        ids = [r[0] for r in rows]  # type: ignore[index]
        if all(-(2**31) <= i < 2**31 for i in ids) or all(2**31 <= i < 2**45 for i in ids):
            assert fast is not None
    if fast is not None:
        _same_columns(fast, rows)


@settings(max_examples=200, deadline=None)
@given(rows=record_lists())
def test_itemgetter_conversion_equals_the_record_by_record_conversion(rows: list[object]):
    """The itemgetter path reads every field as the record-by-record path does, or declines."""
    try:
        fast = recorder_module._columns_fast(list(rows))
    except (TypeError, ValueError, OverflowError, IndexError):
        return
    if fast is not None:
        _same_columns(fast, rows)


def _window_dicts(rec: Recorder) -> list[dict[str, object]]:
    return [v.to_dict() for v in rec.snapshot().variants]


@settings(max_examples=60, deadline=None)
@given(rows=record_lists(), path=st.sampled_from(["fast", "slow"]))
def test_flush_with_and_without_the_marshal_path_is_identical(rows: list[object], path: str):
    """Windows, totals, rejections and outcome joins are the same whichever path converts."""
    a, _ = make()
    b, _ = make()
    for r in rows:
        a.append(r)
        b.append(r)
    a.flush()
    originals = recorder_module._columns_marshal, recorder_module._columns_fast
    recorder_module._columns_marshal = lambda chunk: None  # type: ignore[assignment]
    if path == "slow":
        recorder_module._columns_fast = lambda chunk: None  # type: ignore[assignment]
    try:
        b.flush()
    finally:
        recorder_module._columns_marshal, recorder_module._columns_fast = originals
    assert _window_dicts(a) == _window_dicts(b)
    assert a.snapshot().rejected == b.snapshot().rejected
    for r in rows[:10]:
        rid = r[0] if isinstance(r, tuple) else -5  # type: ignore[index]
        if isinstance(rid, int) and not isinstance(rid, bool):
            assert a.record_outcome(rid, "y", 1.0) == b.record_outcome(rid, "y", 1.0)


@settings(max_examples=60, deadline=None)
@given(rows=record_lists())
def test_the_readable_form_equals_the_coded_form(rows: list[object]):
    """A 7-tuple and the 4-tuple with its record_code count the same in every window."""
    coded, readable = make()[0], make()[0]
    for r in rows:
        if _router_layout(r):
            rid, code, lat, out = r  # type: ignore[misc]
            v, status, fb, ov = code >> 4, (code >> 2) & 3, bool(code & 2), bool(code & 1)
            coded.append(r)
            readable.append((rid, v, lat, status, fb, out, ov))
    coded.flush()
    readable.flush()
    assert _window_dicts(coded) == _window_dicts(readable)
    assert coded.snapshot().rejected == readable.snapshot().rejected


@settings(max_examples=60, deadline=None)
@given(rows=record_lists())
def test_the_flat_buffer_equals_the_tuple_buffer(rows: list[object]):
    """4-tuples through the router's flat buffer and through append count the same in every
    window, whatever their fields (odd ones take the general path)."""
    tuples, flat = make()[0], make()[0]
    for r in rows:
        if type(r) is tuple and len(r) == 4:
            tuples.append(r)
            flat._extend(r)  # type: ignore[arg-type]
    assert flat.pending() == tuples.pending()
    assert flat.flush() == tuples.flush()
    assert _window_dicts(flat) == _window_dicts(tuples)
    assert flat.snapshot().rejected == tuples.snapshot().rejected
    assert flat.snapshot().records == tuples.snapshot().records


def test_record_code_packs_and_rejects():
    """record_code packs the documented bits and names a bad variant or status."""
    assert record_code(0) == 0
    assert record_code(3, Status.TIMEOUT, True, True) == 3 << 4 | 3 << 2 | 2 | 1
    for bad in (-1, True, 1.0, "0"):
        with pytest.raises(DataError, match="variant_index"):
            record_code(bad)  # type: ignore[arg-type]
    for bad_status in (4, -1, True, "OK"):
        with pytest.raises(DataError, match="status"):
            record_code(0, bad_status)  # type: ignore[arg-type]


def test_a_big_flush_in_blocks_equals_small_flushes():
    """More records than one conversion block give the counts and buckets of many small
    flushes, and numpy's latency and output moments."""
    n = 2 * recorder_module._BLOCK + 777
    rng = np.random.default_rng(17)
    lat = rng.lognormal(-4.0, 1.0, n)
    out = rng.normal(size=n)
    vi = rng.integers(0, 2, n)
    st_ = np.where(rng.random(n) < 0.02, 1, 0)
    # The router's form: a failed call's output is 0.0 (never read).
    rows = [
        (i, record_code(int(vi[i]), int(st_[i]), bool(st_[i])), float(lat[i]), float(out[i]))
        for i in range(n)
    ]
    big, _ = make()
    small, _ = make()
    for r in rows:
        big.append(r)
    assert big.flush() == n
    for start in range(0, n, 1000):
        for r in rows[start : start + 1000]:
            small.append(r)
        small.flush()
    for name, v in (("v1", 0), ("v2", 1)):
        x, y = big.snapshot().variant(name), small.snapshot().variant(name)
        assert (x.requests, x.errors, x.ok) == (y.requests, y.errors, y.ok)
        assert x.latency == y.latency
        assert x.output_histogram == y.output_histogram
        ok = (vi == v) & (st_ == 0)
        assert x.latency_moments.mean == pytest.approx(lat[ok].mean(), rel=1e-12)
        assert x.latency_moments.variance == pytest.approx(lat[ok].var(ddof=1), rel=1e-9)
        assert x.log_latency.mean == pytest.approx(np.log(lat[ok]).mean(), rel=1e-12)
        assert x.output.mean == pytest.approx(out[ok].mean(), rel=1e-9, abs=1e-12)
        assert x.output.variance == pytest.approx(out[ok].var(ddof=1), rel=1e-9)


@pytest.mark.parametrize("outputs", ["auto", "numeric", "label", "ignore"])
@pytest.mark.parametrize(
    "case", ["floats", "column", "non_finite", "ints", "bad_latency", "fallback", "empty"]
)
def test_a_uniform_batch_slice_equals_the_same_rows_as_columns(case: str, outputs: str):
    """A slice given as scalars (kept as a summary until the flush) records what the same
    rows given column by column record: counts, latency, outputs, rejections."""
    rng = np.random.default_rng(3)
    n = 0 if case == "empty" else 5_000
    y: np.ndarray = rng.normal(size=n)
    lat, fb = 0.002, False
    if case == "column":
        y = y.reshape(-1, 1)
    elif case == "non_finite":
        y[::97] = np.nan
        y[1::101] = np.inf
    elif case == "ints":
        y = rng.integers(0, 4, n)
    elif case == "bad_latency":
        lat = math.nan
    elif case == "fallback":
        fb = True
    a, _ = make(outputs=outputs)
    b, _ = make(outputs=outputs)
    a.append_batch(-1, 1, lat, Status.OK, fb, y, False)
    b.append_batch(
        np.full(n, -1), 1, lat, np.zeros(n, np.int8), np.full(n, fb), y, np.zeros(n, bool)
    )
    assert a.flush() == b.flush() == n
    sa, sb = a.snapshot(), b.snapshot()
    for name in ("v1", "v2"):
        va, vb = sa.variant(name), sb.variant(name)
        assert (va.requests, va.ok, va.fallbacks, va.rejected) == (
            vb.requests,
            vb.ok,
            vb.fallbacks,
            vb.rejected,
        )
        assert va.latency == vb.latency
        assert va.output_histogram == vb.output_histogram
        assert va.output_kinds == vb.output_kinds
        assert va.labels == vb.labels
        assert (va.latency_moments.n, va.output.n) == (vb.latency_moments.n, vb.output.n)
        assert va.output.mean == pytest.approx(vb.output.mean, rel=1e-12, abs=1e-15)
        assert va.output.m2 == pytest.approx(vb.output.m2, rel=1e-9)


def test_append_batch_broadcasts_single_values():
    """A scalar or one-element column applies to every row; other lengths must agree."""
    rec, _ = make()
    rec.append_batch(np.arange(4), [1], 0.01, 0, False, np.ones(4), [False])
    assert rec.snapshot().variant("v2").requests == 4
    with pytest.raises(DataError, match="length"):
        rec.append_batch(np.arange(4), 1, 0.01, np.zeros(3, np.int8), False, None, False)


def test_consecutive_ids_wrapping_the_outcome_ring():
    """Consecutive ids stored as runs of slots (wrapping the ring) join like any others:
    the newest ``capacity`` ids are found, older ones are late, unseen ones unknown."""
    rec, _ = make(outcome_capacity=10)
    for start in range(0, 23, 7):
        for i in range(start, min(start + 7, 23)):
            rec.append((i, i % 2, 0.01, 0, False, 0.5, False))
        rec.flush()
    assert [rec.record_outcome(i, "y", 1.0).name for i in (22, 13, 12, 30)] == [
        "ACCEPTED",
        "ACCEPTED",
        "LATE",
        "UNKNOWN",
    ]
    rec.append((21, 0, 0.01, 0, False, 0.5, False))  # an id seen before: not newer, kept out
    rec.flush()
    assert rec.record_outcome(21, "y", 1.0).name == "ACCEPTED"


def test_a_negative_code_reads_alike_on_every_path():
    """A negative int code (a caller's bug) is decoded by the column paths; the record by
    record path decodes it the same way (it left the status at -1), and every path rejects
    the record for its negative variant."""
    rows = [(0, record_code(0), 0.0, 0.0), (1, -3, 0.0, 0.0)]
    fast = recorder_module._columns_fast(list(rows))
    slow = recorder_module._columns_slow(list(rows))
    assert fast is not None
    for name in ("rid", "var", "st", "fb", "ov"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    rec, _ = make(("v1",))
    for r in rows:
        rec.append(r)
    rec.flush()
    assert rec.snapshot().rejected == {"record:bad_variant": 1}

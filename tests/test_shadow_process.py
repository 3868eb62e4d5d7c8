"""Process isolation of the shadow: ``ShadowMirror(..., isolation="process")``.

The shadow models live in ``shadow_models`` (module level, so that the spawned worker process
can unpickle them). Every wait is bounded; every worker process is closed by the fixture.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.util
import os
import pickle
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import safeserve as ss
from safeserve import _shadow_process
from safeserve._errors import ConfigError
from safeserve._shadow import ShadowMirror
from safeserve._shadow_process import Ring, decode, encode, ring_geometry
from safeserve.stats import Verdict
from safeserve.testing import FakeClock
from tests import shadow_support as sm
from tests.shadow_support import WAIT, check_identities, forked, reports_on_call, wait_until

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "AF_UNIX"), reason="process isolation needs Unix domain sockets"
)


@pytest.fixture
def mirrors() -> Iterator[list[ShadowMirror]]:
    made: list[ShadowMirror] = []
    yield made
    for m in made:
        m.close(timeout=5.0)


def started(made: list[ShadowMirror], model: Any, **kw: Any) -> ShadowMirror:
    m = ShadowMirror(model, isolation="process", **kw)
    made.append(m)
    assert m.start(WAIT), m.report().reason
    return m


def test_the_shadow_runs_in_another_process_and_compares(
    mirrors: list[ShadowMirror], tmp_path: Path
) -> None:
    log = tmp_path / "pairs.txt"
    m = started(mirrors, sm.label, sink=sm.PidSink(log), name="labels")
    assert m.pid is not None
    assert m.pid != os.getpid()
    assert m.thread_count() == 0  # no thread of this process takes part
    for i in range(100):
        assert m.submit(i, "cat", 0.001, request_id=i)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.isolation, r.state, r.submitted, r.compared) == ("process", "running", 100, 100)
    assert r.disagreements == 30
    assert r.label_verdict is Verdict.FAIL
    lines = log.read_text().split()
    assert {int(p) for p in lines[0::3]} == {m.pid}
    assert sorted(int(i) for i in lines[1::3]) == list(range(100))


def test_numeric_pairs_match_the_thread_mirror(mirrors: list[ShadowMirror]) -> None:
    """The same requests give the same statistics whichever side the shadow runs on."""
    rng = np.random.default_rng(3)
    xs = rng.normal(size=300)
    ys = xs + rng.normal(0, 0.1, size=300)
    reports = []
    for isolation in ("thread", "process"):
        m = ShadowMirror(float, isolation=isolation, margin=0.5, name=isolation)  # type: ignore[arg-type]
        mirrors.append(m)
        assert m.start(WAIT)
        for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
            assert m.submit(float(x), float(y), 0.001, i)
        assert m.wait_idle(WAIT)
        reports.append(m.report())
    t, p = reports
    assert p.compared == t.compared == 300
    assert p.difference_mean == pytest.approx(float(np.mean(xs - ys)), rel=1e-9)
    assert p.difference_mean == pytest.approx(t.difference_mean, rel=1e-12)
    assert p.difference_variance == pytest.approx(t.difference_variance, rel=1e-9)
    assert p.numeric_verdict is t.numeric_verdict is Verdict.PASS


def test_a_score_shadow_far_within_the_margin_keeps_its_worker(
    mirrors: list[ShadowMirror],
) -> None:
    """20,000 identical scores at a 0.5 margin in a worker process: the report's p-value no
    longer overflows there (the worker process died in report(), and the mirror then reported
    it failed: a perfect shadow was FAILed)."""
    m = started(mirrors, float, margin=0.5, name="far")
    for start in range(0, 20_000, 1_000):
        for i in range(start, start + 1_000):
            v = 0.25 if i % 2 else 0.75
            m.submit(v, v, 0.001, i)
        assert m.wait_idle(WAIT)
    r = m.report()
    assert (r.state, r.compared) == ("running", 20_000)
    assert (r.numeric_verdict, r.p_difference) == (Verdict.PASS, 1.0)


def test_an_answer_too_far_off_to_compare_is_an_error_in_the_worker(
    mirrors: list[ShadowMirror],
) -> None:
    """As with threads: a shadow answering 1e150 on 1 row in 10 gets 60 'too_large' errors in
    600 requests, and the error check FAILs it."""
    m = started(mirrors, sm.far_shadow, margin=0.05, name="far")
    for i in range(600):
        m.submit(i, sm.far_primary(i), 0.001, i)
    assert m.wait_idle(WAIT)
    r = m.report()
    assert r.error_reasons == {"exception": 0, "non_finite": 0, "too_large": 60, "mismatch": 0}
    assert (r.compared, r.error_verdict, r.verdict) == (540, Verdict.FAIL, Verdict.FAIL)
    check_identities(r)


def test_requests_before_the_worker_is_ready_are_dropped_and_counted(
    mirrors: list[ShadowMirror],
) -> None:
    m = ShadowMirror(sm.same_label, isolation="process", name="lazy")
    mirrors.append(m)
    assert m.state == "idle"
    assert m.submit(1, sm.same_label(1), 0.001) is False  # starts the worker, off the path
    wait_until(lambda: m.state == "running", "the worker process")
    assert m.submit(2, sm.same_label(2), 0.001)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert r.drop_reasons["starting"] >= 1
    assert r.compared >= 1
    assert r.submitted == 2


def test_exceptions_in_the_shadow_are_counted(mirrors: list[ShadowMirror]) -> None:
    m = started(mirrors, sm.flaky, name="flaky")
    for i in range(50):
        assert m.submit(i, sm.same_label(i), 0.001, i)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert r.error_reasons["exception"] == 5
    assert r.compared == 45


def test_inputs_that_cannot_travel_are_counted_never_raised(
    mirrors: list[ShadowMirror],
) -> None:
    m = started(mirrors, sm.same_label, name="inputs")
    assert m.submit(threading.Lock(), "cat", 0.001) is False  # cannot be pickled here
    assert m.submit(b"x" * (64 << 20), "cat", 0.001) is False  # larger than any socket buffer
    assert m.submit(sm.Unpicklable(), "cat", 0.001)  # sent, but cannot be rebuilt there
    assert m.submit(4, sm.same_label(4), 0.001)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert r.drop_reasons["unpicklable"] == 1
    assert r.drop_reasons["too_large"] + r.drop_reasons["queue_full"] == 1
    assert r.drop_reasons["undecodable"] == 1
    assert r.compared == 1


def test_a_hung_shadow_is_contained_and_terminated_at_close(
    mirrors: list[ShadowMirror],
) -> None:
    m = started(mirrors, sm.hang, workers=1, timeout=0.05, max_stuck=1, queue_size=50)
    for i in range(5_000):
        m.submit(i, 1, 0.001, i)
    wait_until(lambda: m.report().state == "suspended", "suspension in the worker")
    r = m.report()
    check_identities(r)
    assert r.timeouts >= 2
    assert r.stuck >= 1
    assert r.drop_reasons["queue_full"] > 0
    assert r.queued <= 2 * 50  # at most queue_size in the socket, and as many in the worker
    assert m.thread_count() == 0
    pid = m.pid
    assert m.close(timeout=1.0)  # the hung call cannot end the process; close does
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    final = m.report()
    check_identities(final)
    assert final.state == "closed"
    assert final.queued == 0
    assert m.submit(1, 1, 0.001) is False
    assert m.report().refused == 1


def test_a_crashing_shadow_fails_the_verdict(mirrors: list[ShadowMirror]) -> None:
    m = started(mirrors, sm.crash, name="crash")
    m.submit(1, "a", 0.001)
    wait_until(lambda: m.report().state == "failed", "the failure to be seen")
    m.submit(2, "a", 0.001)
    r = m.report()
    check_identities(r)
    assert r.verdict is Verdict.FAIL
    assert "worker process" in r.reason
    assert r.drop_reasons["worker_exited"] >= 1
    assert m.close(timeout=5.0)


def test_a_worker_that_cannot_load_the_model_fails(mirrors: list[ShadowMirror]) -> None:
    m = ShadowMirror(sm.Unpicklable(), isolation="process")  # type: ignore[arg-type]
    mirrors.append(m)
    assert m.start(WAIT) is False
    r = m.report()
    assert r.state == "failed"
    assert r.verdict is Verdict.FAIL
    assert "could not start" in r.reason


def test_a_worker_process_that_does_not_start_fails_and_closes(
    mirrors: list[ShadowMirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Process.start`` raising (no process was made) fails the mirror; close still works."""
    ctx = multiprocessing.get_context("spawn")

    def refuse(self: Any) -> None:
        raise RuntimeError("cannot start a process here")

    monkeypatch.setattr(type(ctx.Process(target=print)), "start", refuse)
    m = ShadowMirror(sm.label, isolation="process")
    mirrors.append(m)
    assert m.start(WAIT) is False
    r = m.report()
    assert r.state == "failed"
    assert "cannot start a process here" in r.reason
    assert m.submit(np.zeros(2), 0, 0.001) is False
    assert m.close(timeout=5.0) is True


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shadow_model": lambda x: x}, "cannot be pickled"),
        ({"shadow_model": sm.label, "sink": lambda p: None}, "sink"),
        ({"shadow_model": sm.label, "clock": lambda: 0.0}, "clock"),
        ({"shadow_model": sm.label, "isolation": "fiber"}, "'fiber'"),
    ],
)
def test_bad_process_options_raise_config_error(kwargs: dict[str, Any], match: str) -> None:
    kwargs = {"isolation": "process", **kwargs}
    with pytest.raises(ConfigError, match=match):
        ShadowMirror(**kwargs)


def test_shadow_then_canary_with_a_process_shadow_rolls_back_on_disagreement() -> None:
    """The pipeline ends in the shadow phase: no user ever sees the candidate.

    The router runs on a fake clock; the worker process times the shadow on its own clock.
    """
    shadow = ss.Shadow(
        "v1", "v2", isolation="process", min_duration=0.0, min_pairs=50, max_disagreement=0.05
    )
    canary = ss.Canary("v1", "v2", steps=(5, 100))
    router = ss.Router(
        {"v1": sm.primary_label, "v2": sm.label},
        strategy=ss.Pipeline([shadow, canary]),
        clock=FakeClock(),
    )
    try:
        mirror = router._mirror
        assert mirror is not None
        assert mirror.start(WAIT)
        served = set()
        for i in range(400):
            served.add(router.route(i, key=i).variant)
        assert mirror.wait_idle(WAIT)
        decision = router.evaluate()
        assert decision is not None
        assert decision.action is ss.Action.ROLLBACK
        assert served == {"v1"}
        assert router.status().phase is ss.Phase.ROLLED_BACK
    finally:
        router.close()


_shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
_arrays = st.one_of(
    hnp.arrays(
        dtype=st.sampled_from(["<f8", ">f8", "<f4", "<i8", ">i4", "u1", "?", "<c16", "<U3"]),
        shape=_shapes,
    ),
    hnp.arrays(dtype=object, shape=_shapes, elements=st.one_of(st.integers(), st.text())),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.builds(np.float64, st.floats(allow_nan=False)),
    st.builds(np.int8, st.integers(-128, 127)),
)
_values = st.one_of(
    _scalars, _arrays, st.lists(_scalars, max_size=4), st.tuples(_scalars, _scalars)
)


@given(x=_values, y=_values, latency=st.one_of(st.floats(allow_nan=False), _scalars), rid=_scalars)
@settings(max_examples=300, deadline=None)
def test_the_wire_format_gives_back_what_was_sent(x: Any, y: Any, latency: Any, rid: Any) -> None:
    """Every value crosses to the worker with its type, dtype, shape and contents."""
    back = decode(encode(x, y, latency, rid))
    for sent, got in zip((x, y, latency, rid), back, strict=True):
        assert type(got) is type(sent)
        if isinstance(sent, np.ndarray):
            assert got.dtype == sent.dtype
            assert got.shape == sent.shape
            assert got.flags.writeable
            np.testing.assert_array_equal(got, sent)
        elif isinstance(sent, list | tuple):
            assert [type(e) for e in got] == [type(e) for e in sent]
            assert list(got) == list(sent)
        else:
            assert got == sent


# -- the shared-memory ring -------------------------------------------------------------------

_RING_DTYPES = ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "i1", "u1", "<u8", "?", "<c16"]
_ring_arrays = hnp.arrays(
    dtype=st.sampled_from(_RING_DTYPES),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
)
_ring_outputs = st.one_of(
    _ring_arrays,
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.text(max_size=20),
    st.builds(np.float64, st.floats()),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.int8, st.integers(-128, 127)),
    st.builds(np.bool_, st.booleans()),
)
_ring_requests = st.tuples(
    _ring_arrays,
    _ring_outputs,
    st.floats(allow_nan=False),
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
)


def assert_same(got: Any, sent: Any) -> None:
    """``got`` has ``sent``'s type (and dtype and shape) and value."""
    assert type(got) is type(sent)
    if isinstance(sent, np.ndarray | np.generic):
        assert got.dtype == sent.dtype
        assert got.shape == sent.shape
        np.testing.assert_array_equal(got, sent)
        if isinstance(sent, np.ndarray):
            assert got.flags.writeable
    elif isinstance(sent, float) and np.isnan(sent):
        assert np.isnan(got)
    else:
        assert got == sent


@pytest.fixture
def rings() -> Iterator[list[Ring]]:
    made: list[Ring] = []
    yield made
    for r in made:
        r.close()


def new_ring(made: list[Ring], slots: int, slot_bytes: int = 4096) -> Ring:
    r = Ring.create(slots, slot_bytes)
    made.append(r)
    return r


@given(requests=st.lists(_ring_requests, min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_the_ring_gives_back_what_was_put(requests: list[tuple[Any, Any, float, Any]]) -> None:
    """Numeric arrays and every supported output cross the ring with type, dtype, shape and
    value, also when consecutive requests change layout."""
    ring = Ring.create(8, 65536)  # room for two of the largest arrays drawn (10,000 bytes)
    try:
        for request in requests:
            assert ring.put(*request)
        for request in requests:
            got = ring.take()
            assert got is not None
            for g, s in zip(got, request, strict=True):
                assert_same(g, s)
        assert ring.take() is None
        assert ring.unconsumed() == 0
    finally:
        ring.close()


@pytest.mark.parametrize(
    ("x", "y", "latency", "rid"),
    [
        ([1.0, 2.0], 1.0, 0.001, 1),  # not an array
        (np.arange(3, dtype=">f8"), 1.0, 0.001, 1),  # not in native byte order
        (np.zeros((3, 3))[:, 0], 1.0, 0.001, 1),  # not C-contiguous
        (np.zeros((3, 3)).T, 1.0, 0.001, 1),  # Fortran order
        (np.array([1, "a"], dtype=object), 1.0, 0.001, 1),
        (np.array(["ab"]), 1.0, 0.001, 1),  # a str dtype
        (np.zeros((1, 1, 1, 1, 1)), 1.0, 0.001, 1),  # more than 4 dimensions
        (np.zeros(600), 1.0, 0.001, 1),  # more bytes than a slot holds
        (np.zeros(3), "x" * 5000, 0.001, 1),  # a label larger than a slot
        (np.zeros(3), [1, 2], 0.001, 1),  # an output of another kind
        (np.zeros(3), 2**63, 0.001, 1),  # an int beyond 64 bits
        (np.zeros(3), "\ud800", 0.001, 1),  # a str that is not encodable
        (np.zeros(3), np.zeros(3, dtype=">i4"), 0.001, 1),
        (np.zeros(3), 1.0, 1, 1),  # an int latency
        (np.zeros(3), 1.0, 0.001, "r1"),  # a str request id
        (np.zeros(3), 1.0, 0.001, True),  # a bool request id
        (np.zeros(3), 1.0, 0.001, 2**64),  # an int request id beyond 64 bits
    ],
)
def test_requests_the_ring_cannot_carry_are_refused_and_publish_nothing(
    rings: list[Ring], x: Any, y: Any, latency: Any, rid: Any
) -> None:
    ring = new_ring(rings, 2, slot_bytes=4096 + 128 - 64)  # 4,064 payload bytes
    assert ring.put(x, y, latency, rid) is False
    assert ring.take() is None
    assert ring.put(np.arange(2.0), "ok", 0.5, 3)  # still the first slot, seq 1
    x2, y2, latency2, rid2 = ring.take()  # type: ignore[misc]
    assert (x2.tolist(), y2, latency2, rid2) == ([0.0, 1.0], "ok", 0.5, 3)


def test_the_ring_wraps_around_with_exact_counts(rings: list[Ring]) -> None:
    """Thousands of requests through 3 slots: each comes back once, in order; a put into a
    full ring is refused and counted, and succeeds once the reader has taken a slot."""
    ring = new_ring(rings, 3)
    rng = np.random.default_rng(5)
    sent = taken = refused = 0
    out: list[int] = []
    while taken < 3_000:
        for _ in range(int(rng.integers(1, 5))):  # sometimes more than the ring holds
            ok = ring.put(np.full(4, float(sent)), sent % 7 == 0, 0.001, sent)
            assert ok is (sent - taken < 3)
            if ok:
                sent += 1
            else:
                refused += 1
        assert ring.unconsumed() == sent - taken
        for _ in range(int(rng.integers(1, 4))):
            got = ring.take()
            if got is None:
                assert taken == sent
                break
            x, y, _, rid = got
            assert rid == taken
            assert y is (taken % 7 == 0)
            assert x[0] == taken
            out.append(rid)
            taken += 1
    assert out == list(range(taken))
    assert ring.full == refused > 0


def test_requests_of_one_layout_take_the_short_path_and_come_back_whole(
    rings: list[Ring], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of requests with the last one's layout (array output, int id) skips the general
    path; a change of layout (another output length, a scalar output, no id) takes it once,
    and every request comes back whole through a ring that wraps around many times."""
    ring = new_ring(rings, 5)
    sent: list[tuple[Any, Any, float, Any]] = []
    general: list[int] = []  # the requests (by index) that took the general path
    fields = ring._fields
    monkeypatch.setattr(ring, "_fields", lambda *a: general.append(len(sent)) or fields(*a))
    rng = np.random.default_rng(3)
    plan = [((1, 4), (1, 2), 1)] * 40 + [((1, 4), (1, 3), 1)] * 30 + [((1, 4), (1, 2), 1)] * 30
    plan += [((1, 4), None, 1)] * 10 + [((1, 4), (1, 2), None)] * 5 + [((2, 4), (2, 2), 1)] * 40
    for i, (xs, ys, rid_kind) in enumerate(plan):
        y: Any = float(i) if ys is None else rng.normal(size=ys)
        request = (rng.normal(size=xs), y, 0.001 * i, None if rid_kind is None else i)
        assert ring.put(*request)
        sent.append(request)
        got = ring.take()
        assert got is not None
        for g, want in zip(got, request, strict=True):
            assert_same(g, want)
    # The general path: each change of layout (0, 40, 70, 115), the scalar outputs (100-109)
    # and the requests with no id (110-114).
    assert general == [0, 40, 70, *range(100, 115), 115]
    assert ring.take() is None


@pytest.mark.parametrize("path", ["first request", "same layout again"])
def test_a_torn_slot_is_not_taken_until_complete(rings: list[Ring], path: str) -> None:
    """The reader never acts on a slot whose bytes do not match its checksum (a write seen in
    part, as on a weakly ordered CPU); it takes the slot once the bytes are all there. Both
    ways of writing a slot: a request that sets the layout, and one of the same layout."""
    ring = new_ring(rings, 2)
    x = np.arange(8.0)
    slot = 0
    if path == "same layout again":
        assert ring.put(x + 1, np.array([0.5, 0.5]), 0.001, 10)
        assert ring.take() is not None
        slot = 1
    assert ring.put(x, np.array([0.25, 0.75]), 0.002, 11)
    at = _shadow_process._CONTROL + slot * ring.slot_bytes
    view = ring._view
    words = ring.words
    payload = at + _shadow_process._PAYLOAD
    for corrupt in (
        lambda: view.__setitem__(payload + 3, view[payload + 3] ^ 0x40),  # an old payload byte
        lambda: words.__setitem__((at >> 3) + 1, words[(at >> 3) + 1] ^ 1),  # an old check
        lambda: view.__setitem__(at + 40, view[at + 40] ^ 1),  # an old header byte (rid)
        lambda: words.__setitem__((at >> 3) + 2, 0),  # the sequence number not yet there
    ):
        whole = bytes(view[at : at + 4096])
        corrupt()
        for _ in range(3):  # polls: never taken, never released
            assert ring.take() is None
            assert ring.unconsumed() == 1
            assert words[at >> 3] == 0  # no ack: the producer cannot reuse the slot
        view[at : at + 4096] = whole  # the rest of the write arrives
    got = ring.take()
    assert got is not None
    np.testing.assert_array_equal(got[0], x)
    assert got[1].tolist() == [0.25, 0.75]
    assert got[2:] == (0.002, 11)
    assert ring.unconsumed() == 0


def test_the_ring_geometry_bounds_its_memory() -> None:
    """A slot per queued request up to 4,096; each slot 4 to 64 KiB; max(1 MiB, 4 KiB a slot)
    in all, so at most 16 MiB, for any queue size."""
    for q in [1, 2, 7, 16, 17, 50, 255, 256, 257, 1000, 4096, 4097, 10**6]:
        slots, size = ring_geometry(q)
        assert slots == min(q, 4096)
        assert size % 64 == 0
        assert 4096 <= size <= 65536
        assert slots * size <= max(1 << 20, slots * 4096) <= 16 << 20


# -- the ring in a process-isolated mirror ----------------------------------------------------


def ring_mappings() -> int:
    """Mappings of ring memory in this process (Linux: /proc/self/maps)."""
    return Path("/proc/self/maps").read_text().count("safeserve-shadow-ring")


def ring_files() -> int:
    """File descriptors of ring memory open in this process (Linux: /proc/self/fd)."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
            n += "safeserve-shadow-ring" in os.readlink(f"/proc/self/fd/{fd}")
    return n


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps"
)


def test_array_requests_take_the_ring_and_others_the_socket(
    mirrors: list[ShadowMirror], tmp_path: Path
) -> None:
    log = tmp_path / "pairs.txt"
    m = started(mirrors, sm.row_sum, sink=sm.PidSink(log), margin=0.1, name="paths")
    link = m._link
    assert link is not None
    rows = np.arange(40.0).reshape(10, 4)
    for i, row in enumerate(rows):
        assert m.submit(row, float(row.sum()), 0.001, i)  # the ring
    assert m.submit(list(rows[0]), 6.0, 0.001, 10)  # a list: the socket
    big = np.arange(1000.0)  # 8,000 bytes: more than a 4 KiB slot holds
    assert m.submit(big, float(big.sum()), 0.001, 11)  # the socket
    assert m.submit(rows[1], float(rows[1].sum()), 0.001, "r12")  # a str id: the socket
    assert link.sent_by_path() == (10, 3)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.compared, r.dropped) == (13, 13, 0)
    assert r.difference_mean == 0.0
    ids = log.read_text().split()[1::3]
    assert sorted(ids) == sorted([str(i) for i in range(12)] + ["r12"])


def test_the_ring_wraps_around_in_the_worker_with_exact_counts(
    mirrors: list[ShadowMirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 requests through a 4-slot ring, in bursts that fill it: all arrive, none dropped."""
    monkeypatch.setattr(_shadow_process, "RING_SLOTS", 4)
    m = started(mirrors, sm.row_sum, margin=0.1, name="wrap")
    link = m._link
    assert link is not None
    for burst in range(100):
        for i in range(4):
            x = np.full(3, float(burst * 4 + i))
            assert m.submit(x, float(x.sum()), 0.001, burst * 4 + i)
        assert m.wait_idle(WAIT)  # the worker took all four: the ring is empty again
    assert link.sent_by_path() == (400, 0)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.mirrored, r.compared, r.dropped) == (400, 400, 400, 0)
    assert r.difference_mean == 0.0


needs_sigstop = pytest.mark.skipif(
    not hasattr(signal, "SIGSTOP"), reason="stops the worker with SIGSTOP"
)


def stop(pid: int) -> None:
    """Stop the worker process and wait until it is stopped: ``kill`` only sends the signal,
    and a worker thread that runs on until the signal is handled could still take a request."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + WAIT
    while True:
        got, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
        if got == pid and os.WIFSTOPPED(status):
            return
        assert time.monotonic() < deadline, "the worker process did not stop"
        time.sleep(0.001)


@needs_sigstop
def test_ring_and_socket_together_hold_at_most_queue_size(
    mirrors: list[ShadowMirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that takes nothing (stopped): exactly queue_size requests are in flight, the
    ring's 8 and 42 in the socket; every other one is dropped as queue_full, never blocked."""
    monkeypatch.setattr(_shadow_process, "RING_SLOTS", 8)
    m = started(mirrors, sm.row_sum, queue_size=50, name="bound")
    link = m._link
    assert link is not None
    pid = m.pid
    assert pid is not None
    stop(pid)
    try:
        results = [m.submit(np.full(4, float(i)), 4.0 * i, 0.001, i) for i in range(500)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert results == [True] * 50 + [False] * 450
    assert link.sent_by_path() == (8, 42)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.compared) == (500, 50)
    assert r.drop_reasons["queue_full"] == 450
    assert r.dropped == 450


class CountingProcess:
    """A stand-in for the link's process that counts the looks at its exit code."""

    def __init__(self, process: Any) -> None:
        self.process, self.looks = process, 0

    @property
    def exitcode(self) -> int | None:
        self.looks += 1
        return self.process.exitcode  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.process, name)


@needs_sigstop
def test_requests_at_the_limit_look_at_the_worker_at_most_once_a_millisecond(
    mirrors: list[ShadowMirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each look is a system call on the request path, and a shadow that cannot keep up keeps
    the link at its limit: 1,000 drops within one (frozen) millisecond look once."""
    m = started(mirrors, sm.hang, workers=1, timeout=60.0, queue_size=10, name="looks")
    link = m._link
    assert link is not None
    assert m.submit(np.zeros(3), 1.0, 0.001, 0)
    wait_until(lambda: m.report().running == 1, "the call to hang")
    # Stopped, the worker frees no slot (its receiving thread would otherwise take what it then
    # drops itself), so once the ring is full every request finds the limit.
    pid = m.pid
    assert pid is not None
    stop(pid)
    try:
        filled = [m.submit(np.zeros(3), 1.0, 0.001, i) for i in range(40)]
        assert filled.count(True) <= 10  # at most queue_size more in flight
        assert not filled[-1]
        counting = CountingProcess(link._process)
        link._process = counting  # type: ignore[assignment]
        link._look_at = 0.0
        monkeypatch.setattr(time, "monotonic", lambda: 1.0)
        results = [m.submit(np.zeros(3), 1.0, 0.001, i) for i in range(1_000)]
        monkeypatch.undo()
        link._process = counting.process
    finally:
        os.kill(pid, signal.SIGCONT)
    assert results.count(False) == 1_000
    assert counting.looks == 1


class PollRecorder:
    """A worker connection whose polls and sends are recorded."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.polls, self.sent = conn, list[float](), list[Any]()

    def poll(self, timeout: float = 0.0) -> bool:
        self.polls.append(timeout)
        return bool(self.conn.poll(timeout))

    def send(self, obj: Any) -> None:
        self.sent.append(obj)
        self.conn.send(obj)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@needs_sigstop
def test_a_report_that_does_not_wait_never_waits_and_never_piles_up_requests(
    mirrors: list[ShadowMirror],
) -> None:
    """report(wait=False), as the router's evaluations on request threads call it: with the
    worker stopped, it only looks (every poll 0 s), asks once however often it is called, and
    once the worker answers, the next call has the fresh figures."""
    m = started(mirrors, sm.row_sum, workers=1, queue_size=100, name="no-wait")
    link = m._link
    assert link is not None
    assert m.report().submitted == 0  # a first answer, the last known from now on
    pid = m.pid
    assert pid is not None
    recorder = PollRecorder(link._conn)
    link._conn = recorder  # type: ignore[assignment]
    stop(pid)
    try:
        for i in range(5):
            m.submit(np.full(3, float(i)), 3.0 * i, 0.001, i)
        reports = [m.report(wait=False) for _ in range(20)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert recorder.polls
    assert set(recorder.polls) == {0.0}
    assert [op for op, _, _ in recorder.sent] == ["report"]  # asked once, not 20 times
    assert all("did not answer within 0 s" in r.reason for r in reports)
    assert all(r.submitted == 5 and r.queued + r.completed == 5 for r in reports)
    wait_until(lambda: m.report(wait=False).completed == 5, "the fresh report")
    link._conn = recorder.conn


def test_the_router_evaluates_on_request_threads_without_waiting_for_reports() -> None:
    """Automatic evaluations (run by a request) ask the shadow for its report without
    waiting; router.evaluate() waits for a fresh one."""
    clock = FakeClock()
    with ss.Router(
        {"v1": sm.label, "v2": sm.label},
        strategy=ss.Shadow("v1", "v2", min_pairs=10**9, evaluate_every=10),
        clock=clock,
    ) as router:
        mirror = router._mirror
        assert mirror is not None
        waits: list[bool] = []
        report = mirror.report

        def recording(*, wait: bool = True) -> Any:
            waits.append(wait)
            return report(wait=wait)

        mirror.report = recording  # type: ignore[method-assign]
        for i in range(2_000):
            clock.advance(0.01)
            router.predict(i, key=i)
        assert waits
        assert set(waits) == {False}
        waits.clear()
        router.evaluate()
        assert waits == [True]


def test_a_suspended_worker_with_every_thread_stuck_still_takes_and_counts(
    mirrors: list[ShadowMirror],
) -> None:
    """What arrives is taken and counted as suspended, as a suspended mirror does in this
    process: nothing waits in the ring to run, stale, once the hang ends, and wait_idle (stuck
    calls aside) returns."""
    m = started(mirrors, sm.hang, workers=1, timeout=0.05, max_stuck=0, queue_size=100)
    assert m.submit(np.zeros(3), 1.0, 0.001, 0)
    wait_until(lambda: m.report().state == "suspended", "the hung call to suspend the worker")
    for i in range(1, 51):
        assert m.submit(np.full(3, float(i)), 1.0, 0.001, i)
    wait_until(lambda: m.report().suspended == 50, "50 counted as suspended")
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.suspended, r.queued, r.stuck, r.timeouts) == (51, 50, 0, 1, 1)


def test_the_worker_goes_on_with_the_ring_when_its_socket_fails() -> None:
    """The worker process's code, run here on a thread: with its socket failing under it
    (closed: every receive raises), it keeps taking requests off the ring."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    slots, size = ring_geometry(50)
    ring = Ring.create(slots, size)
    socket.send_fds(ours, [b"ring"], [ring.fileno()])
    ring.close_fd()
    conn, child = multiprocessing.Pipe(duplex=True)
    options = {"workers": 2, "queue_size": 50, "margin": 0.1, "name": "socket-fails"}
    worker = threading.Thread(
        target=_shadow_process._worker_main,
        args=(child, theirs, slots, size, 1 << 20, pickle.dumps((sm.row_sum, None)), options),
        daemon=True,
    )
    worker.start()
    seq = 0

    def ask(op: str, arg: Any) -> Any:
        nonlocal seq
        seq += 1
        conn.send((op, seq, arg))
        while True:
            assert conn.poll(WAIT)
            got, answer = conn.recv()
            if got == seq:
                return answer

    try:
        assert conn.poll(WAIT)
        assert conn.recv()[0] == "ready"
        theirs.close()
        time.sleep(0.2)  # a hundred polls: the receiving thread has met the failure by now
        assert any(t.name == "safeserve-shadow-receiver" for t in threading.enumerate())
        for i in range(5):
            x = np.full(3, float(i))
            assert ring.put(x, float(x.sum()), 0.001, i)
        wait_until(lambda: ask("report", None)[0].compared == 5, "5 compared off the ring")
        assert ring.words[0] == 5
    finally:
        ask("close", 5.0)
        worker.join(WAIT)
        ring.close()
        ours.close()
        conn.close()
    assert not worker.is_alive()


def test_a_new_ring_takes_its_pages_at_creation_not_in_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Else each slot's first request would take a page fault on the request path. The pages
    are written in 256 KiB pieces, with the GIL let go after each (the ring is made on a thread
    of the serving process): 16 pieces for the default 4 MiB."""
    resource = pytest.importorskip("resource", reason="page-fault counts need getrusage")
    yields: list[float] = []
    monkeypatch.setattr(time, "sleep", yields.append)
    ring = Ring.create(*ring_geometry(1000))
    monkeypatch.undo()
    assert len(yields) == 16
    assert set(yields) == {0}
    try:
        x, y = np.arange(32.0), np.array([0.25, 0.75])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(1000):
            assert ring.put(x, y, 0.001, i)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    finally:
        ring.close()
    assert faults < 100  # one per slot (1,000) if the pages were left for the first write


def test_a_hung_shadow_on_array_inputs_is_bounded(mirrors: list[ShadowMirror]) -> None:
    m = started(mirrors, sm.hang, workers=1, timeout=0.05, max_stuck=1, queue_size=50)
    link = m._link
    assert link is not None
    for i in range(3_000):
        m.submit(np.full(8, float(i)), 1.0, 0.001, i)
    wait_until(lambda: m.report().state == "suspended", "suspension in the worker")
    r = m.report()
    check_identities(r)
    assert link.sent_by_path()[0] > 0
    assert r.queued <= 2 * 50
    assert r.drop_reasons["queue_full"] + r.suspended > 0
    assert m.close(timeout=1.0)
    final = m.report()
    check_identities(final)
    assert final.queued == 0


@needs_proc
def test_the_shared_memory_is_released_at_close(mirrors: list[ShadowMirror]) -> None:
    """Unmapped and its descriptor closed (mmap keeps a duplicate while it is mapped)."""
    before, fds_before = ring_mappings(), ring_files()
    m = started(mirrors, sm.row_sum, name="release")
    assert m.submit(np.ones(3), 3.0, 0.001, 1)
    assert ring_mappings() == before + 1
    assert ring_files() == fds_before + 1
    pid = m.pid
    assert m.close(timeout=5.0)
    assert (ring_mappings(), ring_files()) == (before, fds_before)
    assert pid is not None
    with pytest.raises(ProcessLookupError):  # nor is it mapped in a worker any more
        os.kill(pid, 0)


@needs_proc
def test_the_shared_memory_is_released_when_the_worker_dies(
    mirrors: list[ShadowMirror],
) -> None:
    before = ring_mappings()
    m = started(mirrors, sm.crash, name="crash-ring")
    assert ring_mappings() == before + 1
    m.submit(np.ones(3), "a", 0.001)  # through the ring; the shadow ends the worker
    wait_until(lambda: m.report().state == "failed", "the failure to be seen")
    assert ring_mappings() == before
    assert m.submit(np.ones(3), "a", 0.001) is False
    r = m.report()
    check_identities(r)
    assert r.verdict is Verdict.FAIL
    assert r.drop_reasons["worker_exited"] == 1


def test_a_request_for_the_socket_is_counted_with_its_outcome(
    mirrors: list[ShadowMirror],
) -> None:
    """A request the ring cannot carry is encoded outside the lock; a report taken meanwhile
    must not see it submitted but not yet sent or dropped."""
    m = started(mirrors, sm.primary_label, name="socket-count")
    seen = reports_on_call(m, m._link, "_send_encoded")
    assert m.submit([1, 2], "a", 0.001)  # a list: not for the ring
    assert len(seen) == 1
    check_identities(seen[0])
    assert m.wait_idle(WAIT)
    check_identities(m.report())


def test_a_dead_worker_is_seen_on_the_request_path_with_the_ring(
    mirrors: list[ShadowMirror],
) -> None:
    """The ring makes no system call that would fail once the worker is gone: at the
    in-flight limit the link looks at the worker, and every later request is counted as
    worker_exited (not queue_full), without waiting for a report."""
    m = started(mirrors, sm.crash, name="crash-limit", queue_size=10)
    link = m._link
    assert link is not None
    m.submit(np.ones(3), "a", 0.001)  # the shadow ends the worker
    process = link._process
    assert process is not None
    wait_until(lambda: process.exitcode is not None, "the worker to exit")
    accepted = sum(m.submit(np.ones(3), "a", 0.001, i) for i in range(100))
    assert link.state == "failed"  # seen by submit itself
    assert accepted <= 10  # what fit under the limit (queue_size) before it was reached
    r = m.report()
    check_identities(r)
    assert r.drop_reasons["queue_full"] == 0
    assert r.drop_reasons["worker_exited"] == 100 - accepted
    assert r.verdict is Verdict.FAIL


@needs_proc
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_unmaps_the_ring_and_starts_afresh(
    mirrors: list[ShadowMirror],
) -> None:
    m = started(mirrors, sm.row_sum, margin=0.1, name="fork-ring")
    before = ring_mappings()

    def child() -> bool:
        return m.state == "idle" and ring_mappings() == before - 1 and m.report().submitted == 0

    # The child leaves as a process that exits normally does: multiprocessing's exit function
    # terminates the daemonic children it knows of, which must not include the parent's worker.
    assert forked(child, multiprocessing.util._exit_function) == 0  # type: ignore[attr-defined]
    for i in range(5):  # the parent's ring is untouched
        assert m.submit(np.full(2, float(i)), 2.0 * i, 0.001, i)
    assert m.wait_idle(WAIT)
    r = m.report()
    assert (r.compared, r.dropped) == (5, 0)


# -- batches ----------------------------------------------------------------------------


def test_batch_rows_reach_the_worker_and_are_compared_row_by_row(
    mirrors: list[ShadowMirror], tmp_path: Path
) -> None:
    """A batch goes to the worker process as datagrams; each row is a request there."""
    log = tmp_path / "pairs.txt"
    m = started(mirrors, sm.batch_label, sink=sm.PidSink(log), name="batch")
    assert m.submit_batch(np.arange(100), ["cat"] * 100, 0.001, np.arange(100)) == 100
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.mirrored, r.compared, r.disagreements) == (100, 100, 100, 30)
    assert r.latency_pairs == 1
    assert m._link is not None
    assert m._link.sent_by_path() == (0, 100)
    lines = log.read_text().split()
    assert {int(p) for p in lines[0::3]} == {m.pid}
    assert sorted(int(i) for i in lines[1::3]) == list(range(100))


@pytest.mark.parametrize("start", [0, 1, 2_500, 4_999, 5_003])
def test_a_large_batch_is_cut_into_pieces_that_cover_every_row_once(start: int) -> None:
    """800 KB of rows: pieces of at most max_bytes, every row in exactly one, cut from row
    ``start`` (so that a buffer too small for all of them loses other rows each batch)."""
    X = np.random.default_rng(0).normal(size=(5_000, 20))
    ids = np.arange(5_000)
    pieces = list(
        _shadow_process.batch_datagrams(X, X.sum(axis=1), 0.001, ids, 10_000, 64 << 10, start)
    )
    assert len(pieces) > 1
    assert all(d is not None and len(d) <= 64 << 10 for _, d in pieces)
    got = [_shadow_process.decode_batch(d).args for _, d in pieces if d is not None]
    rows = np.concatenate([g[3] for g in got])
    assert sorted(rows.tolist()) == list(range(5_000))
    assert rows[0] == start % 5_000
    for Xp, Yp, _, idp in got:
        assert np.array_equal(Xp, X[idp])
        assert np.array_equal(Yp, X[idp].sum(axis=1))
    small = np.ones((10, 3))
    assert [
        r for r, _ in _shadow_process.batch_datagrams(small, small, 0.0, None, 10, 1 << 20, 7)
    ] == [10]


@pytest.mark.parametrize("rows", [250, 256, 240, 1_000, 7])
def test_successive_batches_are_cut_from_rows_spread_over_the_batch(rows: int) -> None:
    """Whatever the batch size (also one that divides the piece size), the first 20 batches
    start at rows spread over the batch: at most 20 % the largest gap between them."""
    starts = sorted({_shadow_process.cut_start(k, rows) for k in range(1, 21)})
    assert len(starts) == min(20, rows)
    gaps = np.diff([*starts, starts[0] + rows])
    assert gaps.max() <= max(1, 0.2 * rows)


def test_batch_rows_in_pieces_all_arrive_while_the_worker_keeps_up(
    mirrors: list[ShadowMirror],
) -> None:
    """5,000 rows in batches of 500, each cut into pieces where the socket's buffer is
    small: every row is compared, with the worker taking the pieces as they come."""
    X = np.random.default_rng(0).normal(size=(5_000, 20))
    m = started(mirrors, sm.row_sums, queue_size=2_000, margin=1e-6, name="large")
    for lo in range(0, 5_000, 500):
        assert m.submit_batch(X[lo : lo + 500], X[lo : lo + 500].sum(axis=1), 0.001) == 500
        assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.compared, r.errors, r.dropped) == (5_000, 0, 0)
    assert r.difference_mean == pytest.approx(0.0, abs=1e-9)
    assert r.numeric_verdict is Verdict.PASS


@needs_sigstop
def test_pieces_beyond_a_small_socket_buffer_are_dropped_and_counted(
    mirrors: list[ShadowMirror], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a host whose socket buffer is small (the kernel's default), pieces are an eighth
    of it; with the worker stopped, the pieces that fit are sent and the rest dropped as
    queue_full, counted per row, never waited for."""
    monkeypatch.setattr(_shadow_process, "SEND_BUFFER", 64 << 10)
    m = started(mirrors, sm.row_sums, queue_size=20_000, name="small")
    link = m._link
    assert link is not None
    assert link._sock is not None
    granted = link._sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert link._piece <= max(4096, granted // 8)
    pid = m.pid
    assert pid is not None
    X = np.random.default_rng(0).normal(size=(5_000, 20))
    stop(pid)
    try:
        sent = m.submit_batch(X, X.sum(axis=1), 0.001)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0 < sent < 5_000
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.compared, r.drop_reasons["queue_full"]) == (5_000, sent, 5_000 - sent)


@needs_sigstop
def test_batch_rows_beyond_queue_size_are_dropped_and_counted(
    mirrors: list[ShadowMirror],
) -> None:
    """With the worker stopped, rows go in datagrams of a quarter of queue_size each until
    queue_size rows are in flight; the others are dropped, counted per row."""
    m = started(mirrors, sm.row_sums, queue_size=100, name="rows")
    pid = m.pid
    assert pid is not None
    stop(pid)
    try:
        X = np.ones((300, 3))
        sent = m.submit_batch(X, np.full(300, 3.0), 0.001, np.arange(300))
        more = m.submit_batch(X[:5], np.full(5, 3.0), 0.001)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (sent, more) == (100, 0)
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert (r.submitted, r.compared, r.drop_reasons["queue_full"]) == (305, 100, 205)


def test_batch_rows_that_cannot_travel_are_counted_per_row(mirrors: list[ShadowMirror]) -> None:
    """Rows that cannot be pickled here, or rebuilt in the worker, are counted per row."""
    m = started(mirrors, sm.batch_label, name="travel")
    assert m.submit_batch([threading.Lock()] * 3, ["cat"] * 3, 0.001) == 0
    assert m.submit_batch([sm.Unpicklable()] * 4, ["cat"] * 4, 0.001) == 4
    assert m.submit_batch([1, 2], ["cat", "cat"], 0.001) == 2
    assert m.wait_idle(WAIT)
    r = m.report()
    check_identities(r)
    assert r.drop_reasons["unpicklable"] == 3
    assert r.drop_reasons["undecodable"] == 4
    assert (r.submitted, r.compared) == (9, 2)


@pytest.mark.parametrize(
    ("X", "Y", "ids"),
    [
        (np.arange(12.0).reshape(4, 3), np.array([1, 0, 1, 1]), np.arange(4)),
        ([1, "a", None], ["x", "y", "z"], None),
        ([{"f": 1}, {"f": 2}], np.array(["a", "b"]), [7, 8]),
    ],
)
def test_the_batch_wire_format_gives_back_what_was_sent(X: Any, Y: Any, ids: Any) -> None:
    """Arrays, plain lists and objects come back as sent; a row count that does not match
    the parts is refused."""
    data = _shadow_process.encode_batch(X, Y, 0.25, ids)
    assert _shadow_process.batch_rows(data) == len(X)
    X2, Y2, latency, ids2 = _shadow_process.decode_batch(data).args
    assert np.array_equal(np.asarray(X2, dtype=object), np.asarray(X, dtype=object))
    assert list(Y2) == list(Y)
    assert latency == 0.25
    assert (ids2 is None) == (ids is None)
    if ids is not None:
        assert list(ids2) == list(ids)
    broken = bytearray(data)
    broken[1:5] = struct.pack("=I", len(X) + 1)
    with pytest.raises(ValueError, match="holds parts of other lengths"):
        _shadow_process.decode_batch(bytes(broken))

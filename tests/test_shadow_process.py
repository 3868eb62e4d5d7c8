"""Process isolation of the shadow: ``ShadowMirror(..., isolation="process")``.

The shadow models live in ``shadow_models`` (module level, so that the spawned worker process
can unpickle them). Every wait is bounded; every worker process is closed by the fixture.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import safeserve as ss
from safeserve._errors import ConfigError
from safeserve._shadow import ShadowMirror
from safeserve._shadow_process import decode, encode
from safeserve.stats import Verdict
from safeserve.testing import FakeClock
from tests import shadow_support as sm
from tests.shadow_support import WAIT, check_identities, wait_until

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

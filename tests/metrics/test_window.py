"""Sliding windows: rings of slices under an injected clock or an observation count."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeserve._errors import ConfigError
from safeserve.metrics import (
    CountWindow,
    LogHistogram,
    Moments,
    SlidingWindow,
    TimeWindow,
)


class Clock:
    """A settable clock."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.0, 20.0), st.floats(-100.0, 100.0)), min_size=1, max_size=200)
)
def test_time_window_matches_the_events_of_its_slices(steps: list[tuple[float, float]]):
    """After any sequence of clock moves, the window holds exactly the events of its last
    `slices` slices (numpy on the raw events as the oracle)."""
    clock = Clock()
    spec = TimeWindow(length=30.0, slices=3)
    w = SlidingWindow(Moments, spec, clock=clock)
    events: list[tuple[float, float]] = []
    for dt, x in steps:
        clock.t += dt
        w.update(x)
        events.append((clock.t, x))
    now = math.floor(clock.t / spec.slice_length)
    kept = np.array([x for t, x in events if math.floor(t / spec.slice_length) > now - 3])
    total = w.total()
    assert total.n == kept.size
    if kept.size:
        assert total.mean == pytest.approx(float(kept.mean()), rel=1e-9, abs=1e-9)
    if kept.size > 1:
        assert total.variance == pytest.approx(float(kept.var(ddof=1)), rel=1e-9, abs=1e-9)


def test_time_window_slice_expires_and_is_subtracted():
    """An observation leaves the window once its slice is older than the ring."""
    clock = Clock(0.0)
    w = SlidingWindow(LogHistogram, TimeWindow(length=300.0, slices=30), clock=clock)
    w.update(0.5)
    clock.t = 295.0
    w.update(0.1)
    assert w.total().n == 2
    clock.t = 300.0  # slice [0, 10) has left the ring
    assert w.total().n == 1
    clock.t = 1e6  # a jump past the whole window clears it
    assert w.total().n == 0


def test_clock_going_backwards_lands_in_the_newest_slice():
    """A clock that goes backwards neither rewinds the ring nor corrupts the total: the
    observations count in the newest slice and expire with it."""
    clock = Clock(100.0)
    w = SlidingWindow(Moments, TimeWindow(length=30.0, slices=3), clock=clock)
    w.update(1.0)
    clock.t = 40.0  # backwards by 60 s
    w.update(3.0)
    assert (w.total().n, w.total().mean) == (2, 2.0)
    clock.t = 105.0  # still the slice [100, 110)
    w.update(5.0)
    assert w.total().n == 3
    clock.t = 130.0  # [100, 110) expires, and with it every observation above
    assert w.total().n == 0


def test_non_finite_clock_reading_is_ignored():
    """A NaN clock reading does not move the window nor break it."""
    clock = Clock(0.0)
    w = SlidingWindow(Moments, TimeWindow(length=30.0, slices=3), clock=clock)
    w.update(1.0)
    clock.t = math.nan
    w.update(2.0)
    assert w.total().n == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(0, 2**31))
def test_count_window_holds_the_most_recent_observations(batches: list[int], seed: int):
    """A count window of size N in K slices holds the last (K-1)*N/K + (n mod N/K)
    observations, whatever the batch sizes (numpy on the raw stream as the oracle)."""
    rng = np.random.default_rng(seed)
    spec = CountWindow(size=40, slices=4)
    w = SlidingWindow(Moments, spec)
    stream = []
    for b in batches:
        xs = rng.normal(5.0, 2.0, b)
        w.update_many(xs)
        stream.extend(xs.tolist())
    cap = spec.slice_size
    keep = min(len(stream), (spec.slices - 1) * cap + len(stream) % cap)
    tail = np.array(stream[len(stream) - keep :])
    total = w.total()
    assert total.n == keep
    assert total.mean == pytest.approx(float(tail.mean()), rel=1e-9)
    if keep > 1:
        assert total.variance == pytest.approx(float(tail.var(ddof=1)), rel=1e-9)


def test_moments_do_not_drift_over_many_rotations():
    """After 10,000 slices of large-offset data the window still agrees with numpy to 1e-9
    (the closed total is rebuilt once per turn of the ring)."""
    rng = np.random.default_rng(2)
    spec = CountWindow(size=100, slices=10)
    w = SlidingWindow(Moments, spec)
    x = 1e6 + rng.lognormal(5.0, 1.0, 100_000)
    for chunk in np.array_split(x, 997):
        w.update_many(chunk)
    tail = x[-90:]  # 100,000 is a multiple of the slice size: the current slice is empty
    assert w.total().n == 90
    assert w.total().mean == pytest.approx(float(tail.mean()), rel=1e-12)
    assert w.total().variance == pytest.approx(float(tail.var(ddof=1)), rel=1e-9)


def test_memory_is_fixed_whatever_the_traffic():
    """The ring keeps the same number of slices and the same array sizes after 1M values."""
    clock = Clock()
    w = SlidingWindow(LogHistogram, TimeWindow(length=60.0, slices=6), clock=clock)
    sizes = [s.counts.nbytes for s in w.slices]
    rng = np.random.default_rng(0)
    for _ in range(100):
        w.update_many(rng.lognormal(-3, 1, 10_000))
        clock.t += 1.7
    assert [s.counts.nbytes for s in w.slices] == sizes
    assert len(w.slices) == 6


def test_slices_are_listed_oldest_first():
    """`slices` ends with the current slice."""
    clock = Clock()
    w = SlidingWindow(Moments, TimeWindow(length=3.0, slices=3), clock=clock)
    for t in (0.0, 1.0, 2.0):
        clock.t = t
        w.update(t)
    assert [s.mean for s in w.slices] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: TimeWindow(length=0.0),
        lambda: TimeWindow(length=math.inf),
        lambda: TimeWindow(slices=0),
        lambda: CountWindow(size=10, slices=3),
        lambda: CountWindow(size=-1),
        lambda: SlidingWindow(Moments, TimeWindow()),  # no clock
        lambda: SlidingWindow(Moments, "300s"),  # type: ignore[arg-type]
    ],
)
def test_bad_window_config_is_rejected(make):
    """Bad lengths, counts, a missing clock or a bad spec raise ConfigError."""
    with pytest.raises(ConfigError):
        make()

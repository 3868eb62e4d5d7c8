"""FakeClock: a callable of simulated seconds that moves only forward, only when told."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import safeserve as ss
from safeserve.testing import FakeClock

BAD_SECONDS = [-1.0, -1e-9, math.nan, math.inf, -math.inf, True, "1", None]


def test_starts_where_told_and_reads_as_a_float() -> None:
    """The clock reads its start value, as a float, until moved."""
    clock = FakeClock(start=7)
    assert clock() == 7.0
    assert isinstance(clock(), float)
    assert clock.now == 7.0
    assert FakeClock()() == 0.0


def test_advance_moves_forward_and_returns_the_new_time() -> None:
    """advance() adds its argument and returns the new reading."""
    clock = FakeClock(1.0)
    assert clock.advance(2.0) == 3.0
    assert clock.advance(0) == 3.0
    assert clock() == 3.0


@given(st.lists(st.integers(min_value=0, max_value=10**6), max_size=50))
@settings(max_examples=50)
def test_advances_add_up_exactly(steps: list[int]) -> None:
    """A sequence of advances (exact binary fractions) ends at their exact sum."""
    clock = FakeClock()
    for k in steps:
        clock.advance(k / 8)
    assert clock() == sum(steps) / 8


@pytest.mark.parametrize("bad", BAD_SECONDS)
def test_advance_rejects_negative_or_non_finite(bad: object) -> None:
    """advance() raises ConfigError naming the value, and the clock does not move."""
    clock = FakeClock(5.0)
    with pytest.raises(ss.ConfigError, match="seconds"):
        clock.advance(bad)  # type: ignore[arg-type]
    assert clock() == 5.0


@pytest.mark.parametrize("bad", BAD_SECONDS[:-2])
def test_sleep_is_advance(bad: object) -> None:
    """sleep() advances like advance() and rejects the same values."""
    clock = FakeClock()
    clock.sleep(0.5)
    assert clock() == 0.5
    with pytest.raises(ss.ConfigError):
        clock.sleep(bad)  # type: ignore[arg-type]
    assert clock() == 0.5


def test_set_moves_to_an_absolute_time_but_never_back() -> None:
    """set() jumps forward, accepts the current time, and refuses to go back."""
    clock = FakeClock(10.0)
    clock.set(12.5)
    clock.set(12.5)
    assert clock() == 12.5
    with pytest.raises(ss.ConfigError, match=r"back from 12\.5 to 12\.0"):
        clock.set(12.0)
    assert clock() == 12.5


@pytest.mark.parametrize("bad", [math.nan, math.inf, "3", None])
def test_set_and_start_reject_non_finite(bad: object) -> None:
    """set() and the constructor raise ConfigError for a non-finite or non-number."""
    clock = FakeClock()
    with pytest.raises(ss.ConfigError):
        clock.set(bad)  # type: ignore[arg-type]
    with pytest.raises(ss.ConfigError):
        FakeClock(bad)  # type: ignore[arg-type]
    assert clock() == 0.0


def test_concurrent_advances_are_not_lost() -> None:
    """Advances from several threads all count (the lock serializes them)."""
    clock = FakeClock()

    def work() -> None:
        for _ in range(5000):
            clock.advance(1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock() == 20_000.0


def test_repr_shows_the_time() -> None:
    """The repr shows the current reading."""
    clock = FakeClock(3.25)
    assert repr(clock) == "FakeClock(3.25)"


def test_router_measures_latency_on_the_fake_clock() -> None:
    """A router built with the clock records the time a model moved it as latency."""
    clock = FakeClock()

    def model(x: float) -> float:
        clock.advance(0.125)
        return x

    router = ss.Router({"v1": model}, clock=clock)
    for _ in range(10):
        router.predict(1.0, key="u")
    lat = router.status().metrics.variant("v1").latency_moments
    assert (lat.n, lat.mean) == (10, 0.125)
    assert clock() == 1.25

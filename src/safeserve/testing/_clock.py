"""A fake clock: simulated seconds that move only when told to."""

from __future__ import annotations

import math
import threading

from .._errors import ConfigError

__all__ = ["FakeClock"]


def _seconds(name: str, value: object) -> float:
    """Return ``value`` as a finite float, or raise a ConfigError naming it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    return v


class FakeClock:
    """A clock for tests and simulations: a callable returning seconds that you move by hand.

    Pass it as ``clock=`` to :class:`safeserve.Router` (and to the fault injectors), so that
    latencies, metric windows, bake times and delayed outcomes all follow simulated time.
    It never goes backwards. Reading it is lock-free; moving it takes a lock, so several
    threads may advance it.

    Args:
        start: The initial reading, in seconds.

    Raises:
        ConfigError: when ``start`` is not a finite number.

    >>> from safeserve.testing import FakeClock
    >>> clock = FakeClock(start=100.0)
    >>> clock()
    100.0
    >>> clock.advance(2.5)
    102.5
    >>> clock.sleep(0.5)
    >>> clock.set(110)
    >>> clock
    FakeClock(110.0)
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        self._now = _seconds("start", start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        """Return the current simulated time in seconds."""
        return self._now

    @property
    def now(self) -> float:
        """The current simulated time in seconds (same as calling the clock)."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` and return the new time.

        Raises:
            ConfigError: for a negative, infinite or NaN ``seconds``.

        >>> from safeserve.testing import FakeClock
        >>> FakeClock().advance(0.25)
        0.25
        """
        s = _seconds("seconds", seconds)
        if s < 0.0:
            raise ConfigError(f"seconds must not be negative, got {seconds!r}")
        with self._lock:
            self._now += s
            return self._now

    def set(self, t: float) -> None:
        """Move the clock to the absolute time ``t`` (never backwards).

        Setting the current time again is allowed and does nothing.

        Raises:
            ConfigError: when ``t`` is not finite or lies before the current time.

        >>> from safeserve.testing import FakeClock
        >>> clock = FakeClock(5.0)
        >>> try:
        ...     clock.set(4.0)
        ... except ValueError as e:
        ...     print(e)
        cannot move the clock back from 5.0 to 4.0
        """
        v = _seconds("t", t)
        with self._lock:
            if v < self._now:
                raise ConfigError(f"cannot move the clock back from {self._now!r} to {t!r}")
            self._now = v

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` without waiting: a drop-in for ``time.sleep`` in tests.

        Raises:
            ConfigError: for a negative, infinite or NaN ``seconds``.
        """
        self.advance(seconds)

    def __repr__(self) -> str:
        return f"FakeClock({self._now!r})"


FakeClock.__module__ = "safeserve.testing"

"""Sliding windows as rings of slices, under an injected clock or an observation count."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, Generic, Protocol, Self, TypeVar

import attrs
from attrs import frozen

from .._errors import ConfigError

__all__ = ["CountWindow", "SlidingWindow", "TimeWindow", "WindowSpec"]


def _positive_number(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{attribute.name} must be a positive number, got {value!r}")


def _positive_int(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{attribute.name} must be a positive int, got {value!r}")


@frozen
class TimeWindow:
    """A window over the last ``length`` seconds of the injected clock, in ``slices`` slices.

    The window holds the current slice (partly filled) and the ``slices - 1`` before it, so it
    spans between ``length - length / slices`` and ``length`` seconds. When a slice expires,
    its summary is subtracted from the running total.

    Args:
        length: Seconds covered.
        slices: Number of slices in the ring.

    >>> TimeWindow(length=60.0, slices=6).slice_length
    10.0
    """

    length: float = attrs.field(default=300.0, validator=_positive_number)
    slices: int = attrs.field(default=30, validator=_positive_int)

    @property
    def slice_length(self) -> float:
        """Seconds per slice."""
        return float(self.length) / self.slices

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data."""
        return {"kind": "time", "length": float(self.length), "slices": self.slices}


@frozen
class CountWindow:
    """A window over the last ``size`` observations, in ``slices`` slices of ``size / slices``.

    The window holds the current slice (partly filled) and the ``slices - 1`` full ones before
    it, so it covers between ``size - size / slices`` and ``size`` observations.

    Args:
        size: Observations covered; must be a multiple of ``slices``.
        slices: Number of slices in the ring.

    >>> CountWindow(size=10_000, slices=10).slice_size
    1000
    """

    size: int = attrs.field(default=100_000, validator=_positive_int)
    slices: int = attrs.field(default=10, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.size % self.slices:
            raise ConfigError(f"size {self.size!r} must be a multiple of slices {self.slices!r}")

    @property
    def slice_size(self) -> int:
        """Observations per slice."""
        return self.size // self.slices

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data."""
        return {"kind": "count", "size": self.size, "slices": self.slices}


WindowSpec = TimeWindow | CountWindow


class _Summary(Protocol):
    # Called as methods: every summary adds and subtracts in place.
    def __iadd__(self, other: Any, /) -> Any: ...

    def __isub__(self, other: Any, /) -> Any: ...

    def copy(self) -> Any: ...

    def reset(self) -> None: ...


S = TypeVar("S", bound=_Summary)


class SlidingWindow(Generic[S]):
    """A ring of summary slices plus the running total of the closed ones.

    New observations go to the current slice only. When the window moves on, the current slice
    is added to the closed total and the oldest slice is subtracted from it, cleared and
    reused, so memory is fixed whatever the traffic. Once per turn of the ring the closed total
    is rebuilt from its slices, so that floating-point rounding from repeated subtraction cannot
    build up. :meth:`total` is the closed total plus the current slice.

    Time windows read the injected ``clock`` on each access. A clock that goes backwards does not
    move the window back: observations keep landing in the newest slice until the clock passes
    it again. A jump forward by a whole window or more clears every slice. A non-finite clock
    reading is ignored (the window does not move).

    Args:
        factory: Returns an empty summary (anything with ``+=``, ``-=``, ``copy``, ``reset``).
        spec: A :class:`TimeWindow` or a :class:`CountWindow`.
        clock: Seconds; required for a :class:`TimeWindow`.

    >>> from safeserve.metrics import Moments
    >>> now = [0.0]
    >>> w = SlidingWindow(Moments, TimeWindow(length=30.0, slices=3), clock=lambda: now[0])
    >>> w.update_many([1.0, 2.0]).total().n
    2
    >>> now[0] = 25.0
    >>> w.update_many([10.0]).total().n
    3
    >>> now[0] = 35.0  # the slice [0, 10) has expired
    >>> w.total().mean
    10.0
    """

    def __init__(
        self,
        factory: Callable[[], S],
        spec: WindowSpec | None = None,
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        spec = TimeWindow() if spec is None else spec
        if not isinstance(spec, TimeWindow | CountWindow):
            raise ConfigError(f"spec must be a TimeWindow or a CountWindow, got {spec!r}")
        if isinstance(spec, TimeWindow) and not callable(clock):
            raise ConfigError(f"a TimeWindow needs a clock callable, got {clock!r}")
        self.spec: WindowSpec = spec
        self._clock = clock
        self._k = spec.slices
        self._slices: list[S] = [factory() for _ in range(self._k)]
        self._closed: S = factory()
        self._head = 0
        self._rotations = 0
        self._fill = 0
        self._epoch: int | None = None
        if isinstance(spec, TimeWindow):
            self._slice_seconds = spec.slice_length
            self._capacity = sys.maxsize
        else:
            self._slice_seconds = math.inf
            self._capacity = spec.slice_size

    # -- moving the ring -----------------------------------------------------------------

    def _rotate(self) -> None:
        self._closed.__iadd__(self._slices[self._head])
        self._head = (self._head + 1) % self._k
        oldest = self._slices[self._head]
        self._closed.__isub__(oldest)
        oldest.reset()
        self._fill = 0
        self._rotations += 1
        if self._rotations % self._k == 0:
            self._rebuild()

    def _rebuild(self) -> None:
        self._closed.reset()
        for i, s in enumerate(self._slices):
            if i != self._head:
                self._closed.__iadd__(s)

    def _clear(self) -> None:
        for s in self._slices:
            s.reset()
        self._closed.reset()
        self._fill = 0

    def tick(self) -> None:
        """Move a time window to the clock's current time (count windows do not move here)."""
        if self._clock is None or not isinstance(self.spec, TimeWindow):
            return
        t = self._clock()
        if not math.isfinite(t):
            return
        epoch = math.floor(t / self._slice_seconds)
        if self._epoch is None:
            self._epoch = epoch
            return
        steps = epoch - self._epoch
        if steps <= 0:
            return  # same slice, or the clock went backwards: stay on the newest slice
        self._epoch = epoch
        if steps >= self._k:
            self._clear()
            return
        for _ in range(steps):
            self._rotate()

    def current(self) -> S:
        """Return the slice new observations go to (after moving a time window)."""
        self.tick()
        return self._slices[self._head]

    def room(self) -> int:
        """Observations the current slice of a count window still takes (huge for time)."""
        return self._capacity - self._fill

    def advance(self, n: int) -> None:
        """Tell a count window that ``n`` observations went into the current slice.

        ``n`` must not exceed :meth:`room`; the ring moves on when the slice is full.
        """
        if n < 0 or n > self.room():
            raise ConfigError(f"cannot advance by {n!r}: room for {self.room()!r}")
        self._fill += n
        if isinstance(self.spec, CountWindow) and self._fill >= self._capacity:
            self._rotate()

    # -- river-like convenience for plain summaries -------------------------------------

    def update(self, x: Any) -> Self:
        """Add one observation through the summary's ``update``."""
        self.current().update(x)  # type: ignore[attr-defined]
        if isinstance(self.spec, CountWindow):
            self.advance(1)
        return self

    def update_many(self, xs: Any) -> Self:
        """Add a sequence of observations through ``update_many``, splitting across slices."""
        if isinstance(self.spec, TimeWindow):
            self.current().update_many(xs)  # type: ignore[attr-defined]
            return self
        start, total = 0, len(xs)
        while start < total:
            take = min(self.room(), total - start)
            self.current().update_many(xs[start : start + take])  # type: ignore[attr-defined]
            self.advance(take)
            start += take
        return self

    # -- reading -------------------------------------------------------------------------

    def total(self) -> S:
        """Return a new summary of the whole window (closed slices plus the current one)."""
        self.tick()
        out: S = self._closed.copy()
        out.__iadd__(self._slices[self._head])
        return out

    @property
    def slices(self) -> tuple[S, ...]:
        """The slices, oldest first (the last one is the current slice)."""
        h = self._head
        return tuple(self._slices[h + 1 :] + self._slices[: h + 1])

    def reset(self) -> None:
        """Forget every observation; a time window keeps its position on the clock."""
        self._clear()


SlidingWindow.__module__ = "safeserve.metrics"
TimeWindow.__module__ = "safeserve.metrics"
CountWindow.__module__ = "safeserve.metrics"

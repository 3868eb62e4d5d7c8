"""Fault injectors: wrap a model callable so that it fails in a controlled, seeded way."""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError, DataError

__all__ = [
    "Fault",
    "InjectedError",
    "add_latency",
    "corrupt_outputs",
    "drop_accuracy",
    "hang",
    "inject_errors",
]

Model = Callable[[Any], Any]
Clock = Callable[[], float]
Seconds = float | Callable[[np.random.Generator], float]


class InjectedError(RuntimeError):
    """The exception that :func:`inject_errors` raises in place of the model's answer.

    It is deliberately not a :class:`safeserve.SafeserveError`: to the router it is an ordinary
    model failure.

    >>> from safeserve.testing import InjectedError
    >>> issubclass(InjectedError, RuntimeError)
    True
    """


InjectedError.__module__ = "safeserve.testing"


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"rate must be a number in [0, 1], got {value!r}")
    v = float(value)
    if not 0.0 <= v <= 1.0:  # also rejects NaN
        raise ConfigError(f"rate must be a number in [0, 1], got {value!r}")
    return v


def _time(name: str, value: object, *, allow_inf: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    v = float(value)
    if math.isnan(v) or (math.isinf(v) and not (allow_inf and v > 0)):
        raise ConfigError(f"{name} must be a finite number of seconds, got {value!r}")
    return v


def _duration(name: str, value: object) -> float:
    v = _time(name, value, allow_inf=False)
    if v < 0.0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return v


def _is_simulated(clock: Clock | None) -> bool:
    """A clock with an ``advance`` method (such as FakeClock) keeps simulated time."""
    return clock is not None and callable(getattr(clock, "advance", None))


class Fault:
    """A model callable wrapped with an injected fault (the base of every injector).

    Build one with :func:`inject_errors`, :func:`add_latency`, :func:`corrupt_outputs`,
    :func:`drop_accuracy` or :func:`hang`, and pass it to the router in place of the model.

    A fault is *on* when :attr:`active` is true and the clock reads within ``[start, until)``;
    while it is on, each request is hit with probability ``rate`` (seeded, so a run is
    reproducible). :meth:`activate` and :meth:`deactivate` switch it by hand, e.g. at a given
    rollout step in a drill.

    With ``batch=True`` the wrapped model is called with batches (as by
    :meth:`safeserve.Router.predict_batch`) and the fault is drawn per row, vectorized.

    Attributes:
        model: The wrapped callable.
        rate: Share of requests hit while the fault is on.
        start: Simulated time from which the fault is on.
        until: Simulated time from which it is off again.
        batch: Whether the model is called with batches of rows.
        active: The manual switch.
        calls: Requests seen (rows, in batch mode), whether the fault was on or not.
        active_calls: Requests seen while the fault was on.
        faults: Requests hit by the fault.

    >>> from safeserve.testing import FakeClock, inject_errors
    >>> clock = FakeClock()
    >>> model = inject_errors(lambda x: x, 1.0, start=10.0, clock=clock)
    >>> model(3), model.is_on()
    (3, False)
    >>> clock.set(10.0)
    >>> model.deactivate()
    >>> model(4), model.calls, model.faults
    (4, 2, 0)
    """

    #: The injector's name, shown in the repr.
    kind: ClassVar[str] = "fault"

    def __init__(
        self,
        model: Model,
        *,
        rate: float = 1.0,
        start: float = 0.0,
        until: float = math.inf,
        clock: Clock | None = None,
        seed: int = 0,
        batch: bool = False,
        active: bool = True,
    ) -> None:
        if not callable(model):
            raise ConfigError(f"model must be callable, got {model!r}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        self.model = model
        self.rate = _rate(rate)
        self.start = _time("start", start, allow_inf=False)
        self.until = _time("until", until, allow_inf=True)
        if self.until <= self.start:
            raise ConfigError(f"until ({until!r}) must be after start ({start!r})")
        if clock is None and (self.start != 0.0 or self.until != math.inf):
            raise ConfigError(f"start={start!r} / until={until!r} need a clock=")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"seed must be an int, got {seed!r}")
        self.clock = clock
        self.batch = bool(batch)
        self.active = bool(active)
        self.calls = 0
        self.active_calls = 0
        self.faults = 0
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._rng = np.random.default_rng(seed)

    # -- switching -----------------------------------------------------------------------

    def activate(self) -> None:
        """Switch the fault on (it still waits for ``start`` and stops at ``until``)."""
        self.active = True

    def deactivate(self) -> None:
        """Switch the fault off; the wrapped model answers normally."""
        self.active = False

    def is_on(self) -> bool:
        """Return True when the fault is active and the clock is within ``[start, until)``."""
        if not self.active:
            return False
        if self.clock is None:
            return True
        return self.start <= self.clock() < self.until

    # -- calls ---------------------------------------------------------------------------

    def __call__(self, x: Any) -> Any:
        """Call the model, injecting the fault into the requests it hits."""
        n = len(x) if self.batch else 1
        if not self.is_on():
            with self._lock:
                self.calls += n
            return self.model(x)
        if self.batch:
            with self._lock:
                self.calls += n
                self.active_calls += n
                hit = self._rng.random(n) < self.rate
                k = int(hit.sum())
                self.faults += k
            return self._faulty_batch(x, hit) if k else self.model(x)
        with self._lock:
            self.calls += 1
            self.active_calls += 1
            hit1 = self.rate >= 1.0 or self._random.random() < self.rate
            if hit1:
                self.faults += 1
        return self._faulty(x) if hit1 else self.model(x)

    def _faulty(self, x: Any) -> Any:
        """Answer one request hit by the fault."""
        return self.model(x)

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        """Answer a batch in which the rows flagged by ``hit`` are hit by the fault."""
        return self.model(X)

    def _describe(self) -> str:
        return f"rate={self.rate:g}"

    def __repr__(self) -> str:
        window = f" start={self.start:g}" if self.start else ""
        if self.until != math.inf:
            window += f" until={self.until:g}"
        state = "active" if self.active else "inactive"
        mode = " batch" if self.batch else ""
        return (
            f"<{self.kind} {self._describe()}{window}{mode} {state} calls={self.calls} "
            f"faults={self.faults} model={self.model!r}>"
        )


Fault.__module__ = "safeserve.testing"


class _Errors(Fault):
    kind = "inject_errors"

    def _faulty(self, x: Any) -> Any:
        raise InjectedError(f"injected error (rate={self.rate:g})")

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        # One exception fails the whole call: the rows it takes down are all counted.
        with self._lock:
            self.faults += len(hit) - int(hit.sum())
        raise InjectedError(f"injected error in {int(hit.sum())} of {len(hit)} rows")


def inject_errors(
    model: Model,
    rate: float,
    *,
    start: float = 0.0,
    until: float = math.inf,
    clock: Clock | None = None,
    seed: int = 0,
    batch: bool = False,
    active: bool = True,
) -> Fault:
    """Wrap ``model`` so that a seeded share ``rate`` of requests raises :class:`InjectedError`.

    A request hit by the fault does not reach the model. In batch mode each row is drawn
    independently and the call raises when at least one row is hit, i.e. with probability
    ``1 - (1 - rate) ** n`` for ``n`` rows: that is what a real batch model does when one row
    breaks it, and the router counts every row of the failed call as an error. ``faults`` then
    counts all the rows of the failed calls. For per-row failures in a batch, use
    :func:`corrupt_outputs` with a validator on the router instead.

    Args:
        model: The callable to wrap.
        rate: Share of requests (or rows) that fail while the fault is on, in ``[0, 1]``.
        start: Simulated time from which the fault is on (needs ``clock``).
        until: Simulated time from which it is off again (needs ``clock``).
        clock: The clock that ``start`` and ``until`` refer to, usually the router's
            :class:`FakeClock`.
        seed: Seed of the draws that pick the failing requests.
        batch: True when the model is called with batches of rows.
        active: Start switched on (True) or wait for :meth:`Fault.activate`.

    Returns:
        The wrapped model, a :class:`Fault`.

    Raises:
        ConfigError: for a rate outside ``[0, 1]``, ``until <= start``, or a time window
            without a clock.

    >>> from safeserve.testing import InjectedError, inject_errors
    >>> model = inject_errors(lambda x: x + 1, 0.5, seed=1)
    >>> outcomes = []
    >>> for x in range(1000):
    ...     try:
    ...         outcomes.append(model(x) == x + 1)
    ...     except InjectedError:
    ...         outcomes.append(False)
    >>> model.calls, model.faults, outcomes.count(False) == model.faults
    (1000, 473, True)
    """
    return _Errors(
        model,
        rate=rate,
        start=start,
        until=until,
        clock=clock,
        seed=seed,
        batch=batch,
        active=active,
    )


def _pause(clock: Clock | None, seconds: float, event: threading.Event | None = None) -> None:
    """Spend ``seconds``: advance a simulated clock, else wait in real time."""
    if seconds <= 0.0:
        return
    if _is_simulated(clock):
        clock.advance(seconds)  # type: ignore[union-attr]
    elif event is not None:
        event.wait(seconds)
    else:
        time.sleep(seconds)


class _Latency(Fault):
    kind = "add_latency"

    def __init__(
        self, model: Model, *, seconds: Seconds | None, factor: float | None, **kw: Any
    ) -> None:
        super().__init__(model, **kw)
        if seconds is None and factor is None:
            raise ConfigError("add_latency needs seconds= or factor=")
        if seconds is not None and not callable(seconds):
            seconds = _duration("seconds", seconds)
        if factor is not None:
            f = _duration("factor", factor)
            if f < 1.0:
                raise ConfigError(f"factor must be at least 1, got {factor!r}")
            factor = f
        self.seconds = seconds
        self.factor = factor
        self._timer: Clock = self.clock if self.clock is not None else time.perf_counter

    def _extra(self, k: int) -> float:
        """Extra seconds for ``k`` requests hit by the fault."""
        s = self.seconds
        if s is None:
            return 0.0
        if not callable(s):
            return s * k
        with self._lock:
            draws = [s(self._rng) for _ in range(k)]
        for d in draws:
            real = isinstance(d, int | float | np.integer | np.floating)
            if isinstance(d, bool) or not real or not 0.0 <= d < math.inf:
                raise DataError(f"seconds(rng) must return finite seconds >= 0, got {d!r}")
        return math.fsum(draws)

    def _slow(self, x: Any, k: int, share: float) -> Any:
        t0 = self._timer()
        y = self.model(x)
        extra = self._extra(k)
        if self.factor is not None:
            extra += (self.factor - 1.0) * (self._timer() - t0) * share
        _pause(self.clock, extra)
        return y

    def _faulty(self, x: Any) -> Any:
        return self._slow(x, 1, 1.0)

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        k = int(hit.sum())
        return self._slow(X, k, k / len(hit))

    def _describe(self) -> str:
        parts = []
        if self.seconds is not None:
            s = self.seconds
            parts.append(f"seconds={s!r}" if callable(s) else f"seconds={s:g}")
        if self.factor is not None:
            parts.append(f"factor={self.factor:g}")
        return " ".join([*parts, super()._describe()])


def add_latency(
    model: Model,
    seconds: Seconds | None = None,
    *,
    factor: float | None = None,
    rate: float = 1.0,
    start: float = 0.0,
    until: float = math.inf,
    clock: Clock | None = None,
    seed: int = 0,
    batch: bool = False,
    active: bool = True,
) -> Fault:
    """Wrap ``model`` so that the requests it hits take longer.

    The extra time is spent after the model answers. Under a simulated clock (one with an
    ``advance`` method, such as :class:`FakeClock`) the clock is advanced, so the router's
    latency measurement sees it in simulated time and nothing waits; with any other clock,
    or none, the call sleeps for real.

    In batch mode each row is drawn independently and the call is slowed by ``seconds`` per
    row hit: the router attributes a batch call's duration evenly to its rows, so the mean
    latency per row rises by ``rate * seconds``.

    Args:
        model: The callable to wrap.
        seconds: Extra seconds per request hit: a number, or ``seconds(rng) -> float`` drawn
            per request from the injector's seeded generator (e.g. a log-normal tail).
        factor: Multiply the model's own duration (measured on ``clock``) by this (>= 1).
            Both may be given; the extras add up.
        rate: Share of requests slowed while the fault is on.
        start: Simulated time from which the fault is on (needs ``clock``).
        until: Simulated time from which it is off again (needs ``clock``).
        clock: The router's clock.
        seed: Seed of the draws.
        batch: True when the model is called with batches of rows.
        active: Start switched on (True) or wait for :meth:`Fault.activate`.

    Returns:
        The wrapped model, a :class:`Fault`.

    Raises:
        ConfigError: for neither ``seconds`` nor ``factor``, a negative ``seconds``, a
            ``factor`` below 1, or a bad rate or time window.

    >>> from safeserve.testing import FakeClock, add_latency
    >>> clock = FakeClock()
    >>> slow = add_latency(lambda x: x, 0.2, clock=clock)
    >>> slow(1), clock()
    (1, 0.2)
    >>> slower = add_latency(slow, factor=3.0, clock=clock)
    >>> slower(1), round(clock(), 6)
    (1, 0.8)
    """
    return _Latency(
        model,
        seconds=seconds,
        factor=factor,
        rate=rate,
        start=start,
        until=until,
        clock=clock,
        seed=seed,
        batch=batch,
        active=active,
    )


def _filled(y: Any, value: Any) -> Any:
    """``value`` in the shape of one output ``y``."""
    if isinstance(y, np.ndarray):
        return np.full(y.shape, value)
    if isinstance(y, list | tuple):
        return type(y)([value] * len(y))
    return value


class _Corrupt(Fault):
    kind = "corrupt_outputs"

    def __init__(self, model: Model, *, value: Any, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.value = value

    def _faulty(self, x: Any) -> Any:
        return _filled(self.model(x), self.value)

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        ys = self.model(X)
        if isinstance(ys, np.ndarray) and ys.shape[:1] == hit.shape:
            dtype = np.result_type(ys.dtype, np.asarray(self.value).dtype)
            out = ys.astype(dtype, copy=True)
            out[hit] = self.value
            return out
        rows = list(ys)
        if len(rows) != len(hit):
            raise DataError(f"the model returned {len(rows)} outputs for {len(hit)} rows")
        for i in np.flatnonzero(hit).tolist():
            rows[i] = _filled(rows[i], self.value)
        return rows

    def _describe(self) -> str:
        return f"value={self.value!r} {super()._describe()}"


def corrupt_outputs(
    model: Model,
    rate: float,
    *,
    value: Any = math.nan,
    start: float = 0.0,
    until: float = math.inf,
    clock: Clock | None = None,
    seed: int = 0,
    batch: bool = False,
    active: bool = True,
) -> Fault:
    """Wrap ``model`` so that a share ``rate`` of its outputs is replaced by ``value``.

    An array output is filled with ``value`` in its own shape. With NaN (the default) and a
    router validator such as ``validators={"v2": ss.is_finite}``, each corrupted output counts
    as an error of that variant and, with ``fallback`` on, the baseline answers instead. In
    batch mode each row is drawn independently; an array of outputs is copied (to a dtype that
    can hold ``value``) and only the rows hit are replaced.

    Args:
        model: The callable to wrap.
        rate: Share of requests (or rows) whose output is corrupted while the fault is on.
        value: What a corrupted output becomes (NaN, None, -1, ...).
        start: Simulated time from which the fault is on (needs ``clock``).
        until: Simulated time from which it is off again (needs ``clock``).
        clock: The router's clock.
        seed: Seed of the draws.
        batch: True when the model is called with batches of rows.
        active: Start switched on (True) or wait for :meth:`Fault.activate`.

    Returns:
        The wrapped model, a :class:`Fault`.

    Raises:
        ConfigError: for a bad rate or time window.

    >>> import numpy as np
    >>> from safeserve.testing import corrupt_outputs
    >>> model = corrupt_outputs(lambda X: X.sum(axis=1), 0.5, batch=True, seed=3)
    >>> model(np.ones((6, 2))).tolist()
    [nan, nan, 2.0, 2.0, nan, nan]
    """
    return _Corrupt(
        model,
        value=value,
        rate=rate,
        start=start,
        until=until,
        clock=clock,
        seed=seed,
        batch=batch,
        active=active,
    )


class _Accuracy(Fault):
    kind = "drop_accuracy"

    def __init__(
        self, model: Model, *, labels: tuple[Any, ...] | None, shift: float | None, **kw: Any
    ) -> None:
        super().__init__(model, **kw)
        if labels is not None:
            labels = tuple(labels)
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ConfigError(f"labels must be at least two distinct labels, got {labels!r}")
        if shift is not None:
            shift = _time("shift", shift, allow_inf=False)
        self.labels = labels
        self.shift = shift

    def _other_label(self, y: Any) -> Any:
        labels = self.labels
        assert labels is not None
        try:
            i = labels.index(y)
        except ValueError:
            raise DataError(f"output {y!r} is not one of the labels {labels!r}") from None
        with self._lock:
            j = self._random.randrange(len(labels) - 1)
        return labels[j if j < i else j + 1]

    def _wrong(self, y: Any) -> Any:
        """A wrong answer in place of one output ``y``."""
        if self.labels is not None:
            return self._other_label(y)
        if isinstance(y, bool | np.bool_):
            return not y
        if isinstance(y, int | np.integer):
            if y not in (0, 1):
                raise DataError(f"output {y!r} is not a 0/1 label: pass labels=")
            return 1 - y
        if isinstance(y, float | np.floating):
            return y + self.shift if self.shift is not None else 1.0 - y
        if isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype.kind == "f":
            return np.roll(y, 1)
        raise DataError(f"cannot make output {y!r} wrong: pass labels= for class labels")

    def _faulty(self, x: Any) -> Any:
        return self._wrong(self.model(x))

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        ys = self.model(X)
        rows = np.flatnonzero(hit)
        if isinstance(ys, np.ndarray) and ys.shape[:1] == hit.shape and self.labels is None:
            out = ys.copy()
            kind = ys.dtype.kind
            if kind == "b":
                out[rows] = ~ys[rows]
            elif kind in "iu":
                if not np.isin(ys[rows], (0, 1)).all():
                    raise DataError("outputs are not 0/1 labels: pass labels=")
                out[rows] = 1 - ys[rows]
            elif kind == "f" and ys.ndim == 1:
                out[rows] = ys[rows] + self.shift if self.shift is not None else 1.0 - ys[rows]
            elif kind == "f" and ys.ndim == 2:
                out[rows] = np.roll(ys[rows], 1, axis=1)
            else:
                raise DataError(f"cannot make outputs of dtype {ys.dtype} wrong: pass labels=")
            return out
        if len(ys) != len(hit):
            raise DataError(f"the model returned {len(ys)} outputs for {len(hit)} rows")
        if isinstance(ys, np.ndarray):
            out = ys.copy()
            for i in rows.tolist():
                out[i] = self._wrong(ys[i].item() if ys.ndim == 1 else ys[i])
            return out
        as_list = list(ys)
        for i in rows.tolist():
            as_list[i] = self._wrong(as_list[i])
        return as_list

    def _describe(self) -> str:
        extra = f"labels={self.labels!r} " if self.labels is not None else ""
        if self.shift is not None:
            extra += f"shift={self.shift:g} "
        return extra + super()._describe()


def drop_accuracy(
    model: Model,
    rate: float,
    *,
    labels: tuple[Any, ...] | None = None,
    shift: float | None = None,
    start: float = 0.0,
    until: float = math.inf,
    clock: Clock | None = None,
    seed: int = 0,
    batch: bool = False,
    active: bool = True,
) -> Fault:
    """Wrap ``model`` so that a share ``rate`` of its answers is wrong but still valid.

    The outputs keep their type and range, so validators pass them and error rates do not
    move: only delayed labels (outcomes joined with :meth:`safeserve.Router.record_outcome`)
    reveal the loss, e.g. a fraud model whose recall drops. A hit request's output becomes:

    - with ``labels``: another label, drawn uniformly among the others;
    - a bool, or an int 0/1: the other class;
    - a float score: ``1 - score`` (the other class's probability), or ``score + shift``
      when ``shift`` is given (e.g. ``shift=-0.3`` hides fraud from a threshold at 0.5);
    - a 1-D float array of class probabilities: rolled by one class.

    Args:
        model: The callable to wrap.
        rate: Share of requests (or rows) answered wrongly while the fault is on.
        labels: The class labels the model returns, when they are not bools or 0/1 ints.
        shift: Added to a hit float score, instead of replacing it by ``1 - score``.
        start: Simulated time from which the fault is on (needs ``clock``).
        until: Simulated time from which it is off again (needs ``clock``).
        clock: The router's clock.
        seed: Seed of the draws.
        batch: True when the model is called with batches of rows.
        active: Start switched on (True) or wait for :meth:`Fault.activate`.

    Returns:
        The wrapped model, a :class:`Fault`.

    Raises:
        ConfigError: for fewer than two distinct labels, a bad rate or time window.
        DataError: at call time, for an output the fault cannot make wrong (e.g. a label
            missing from ``labels``).

    >>> from safeserve.testing import drop_accuracy
    >>> model = drop_accuracy(lambda x: "fraud", 1.0, labels=("legit", "fraud"))
    >>> model(None)
    'legit'
    """
    return _Accuracy(
        model,
        labels=labels,
        shift=shift,
        rate=rate,
        start=start,
        until=until,
        clock=clock,
        seed=seed,
        batch=batch,
        active=active,
    )


class _Hang(Fault):
    kind = "hang"

    def __init__(self, model: Model, *, seconds: float, **kw: Any) -> None:
        super().__init__(model, **kw)
        self.seconds = _duration("seconds", seconds)
        self._released = threading.Event()

    def _stall(self) -> None:
        _pause(self.clock, self.seconds, self._released)

    def _faulty(self, x: Any) -> Any:
        self._stall()
        return self.model(x)

    def _faulty_batch(self, X: Any, hit: NDArray[np.bool_]) -> Any:
        self._stall()
        return self.model(X)

    def activate(self) -> None:
        """Switch the hang on again (calls block anew)."""
        self._released.clear()
        super().activate()

    def deactivate(self) -> None:
        """Switch the hang off and wake the calls that are blocked in real time."""
        super().deactivate()
        self._released.set()

    def release(self) -> None:
        """Wake every call blocked in real time, and switch the hang off."""
        self.deactivate()

    def _describe(self) -> str:
        return f"seconds={self.seconds:g} {super()._describe()}"


def hang(
    model: Model,
    seconds: float,
    *,
    rate: float = 1.0,
    start: float = 0.0,
    until: float = math.inf,
    clock: Clock | None = None,
    seed: int = 0,
    batch: bool = False,
    active: bool = True,
) -> Fault:
    """Wrap ``model`` so that the calls it hits stall for ``seconds`` before answering.

    Under a simulated clock (one with an ``advance`` method, such as :class:`FakeClock`) the
    clock jumps by ``seconds``, so the router records the stall as latency and every later
    request is served after it. With a real clock the call blocks on an event for at most
    ``seconds``; :meth:`Fault.deactivate` (or ``release()``) wakes the blocked calls at once,
    so a test never waits longer than it must. A stall holds up a whole call: in batch mode
    the call stalls once when any of its rows is hit.

    Args:
        model: The callable to wrap.
        seconds: How long a hit call stalls.
        rate: Share of requests (or rows) hit while the fault is on.
        start: Simulated time from which the fault is on (needs ``clock``).
        until: Simulated time from which it is off again (needs ``clock``).
        clock: The router's clock.
        seed: Seed of the draws.
        batch: True when the model is called with batches of rows.
        active: Start switched on (True) or wait for :meth:`Fault.activate`.

    Returns:
        The wrapped model, a :class:`Fault`.

    Raises:
        ConfigError: for a negative or non-finite ``seconds``, a bad rate or time window.

    >>> from safeserve.testing import FakeClock, hang
    >>> clock = FakeClock()
    >>> stuck = hang(lambda x: x, 30.0, start=5.0, clock=clock)
    >>> stuck(1), clock()
    (1, 0.0)
    >>> clock.set(5.0)
    >>> stuck(2), clock()
    (2, 35.0)
    """
    return _Hang(
        model,
        seconds=seconds,
        rate=rate,
        start=start,
        until=until,
        clock=clock,
        seed=seed,
        batch=batch,
        active=active,
    )

"""Helpers of the shadow tests: waits, the report identities, and module-level shadow models
and sinks that a worker process can unpickle (process isolation)."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from safeserve._shadow import ShadowMirror, ShadowReport

WAIT = 60.0  # upper bound of every wait (real seconds); never a speed assertion


def wait_until(pred: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``pred`` until true; fail (rather than hang) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.001)


def forked(check: Callable[[], bool], before_exit: Callable[[], None] | None = None) -> int:
    """Run ``check`` in a forked child and return the child's exit code (0: it returned
    true, 1: false, 2: it raised). The child never returns into pytest, ends itself after
    20 s (SIGALRM) if it hangs, and is killed if it has not ended within 30 s (-9)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:
        code = 2
        try:
            signal.alarm(20)
            code = 0 if check() else 1
            if before_exit is not None:
                before_exit()
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30.0
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -9
        time.sleep(0.02)
    return os.waitstatus_to_exitcode(done[1])


class ManualClock:
    """A clock that only moves when the test says so (thread-safe reads and writes)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Close every mirror and set every Event registered by a test, whatever happens."""
    things: list[Any] = []
    yield things
    for t in things:
        if isinstance(t, threading.Event):
            t.set()
    for t in things:
        if isinstance(t, ShadowMirror):
            t.close(timeout=5.0)


def reports_on_call(mirror: Any, owner: Any, method: str) -> list[ShadowReport]:
    """Make ``owner.method`` take ``mirror.report()`` each time it is called, before it runs:
    what a report from another thread sees at that instant. Returns the reports taken."""
    seen: list[ShadowReport] = []
    original = getattr(owner, method)

    def spy(*args: Any) -> Any:
        seen.append(mirror.report())
        return original(*args)

    setattr(owner, method, spy)
    return seen


def check_identities(r: ShadowReport) -> None:
    """The accounting identities that every report satisfies."""
    assert r.submitted == r.mirrored + r.dropped + r.suspended + r.refused
    assert r.mirrored == (r.completed + r.errors + r.timeouts + r.discarded + r.queued + r.running)
    assert r.completed == r.compared + r.skipped
    assert r.dropped == sum(r.drop_reasons.values())
    assert r.errors == sum(r.error_reasons.values())
    assert 0 <= r.late <= r.timeouts


def label(x: int) -> str:
    """Agrees with ``primary_label`` on x < 70 only."""
    return "cat" if x < 70 else "dog"


def primary_label(x: int) -> str:
    return "cat"


def same_label(x: int) -> str:
    return "cat" if x % 3 else "dog"


def hang(x: Any) -> Any:
    time.sleep(3600)


def crash(x: Any) -> Any:
    os._exit(3)


def flaky(x: int) -> str:
    if x % 10 == 0:
        raise RuntimeError(f"shadow failed on {x}")
    return same_label(x)


class PidSink:
    """Appends the pid of the process running the sink, one line per pair."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, pair: Any) -> None:
        with self.path.open("a") as f:
            f.write(f"{os.getpid()} {pair.request_id} {pair.shadow_output}\n")


class Unpicklable:
    """An input that pickles in the primary's process but fails to load in the worker."""

    def __reduce__(self) -> Any:
        return (_refuse, ())

    def __call__(self, x: Any) -> Any:
        return x


def _refuse() -> Any:
    raise RuntimeError("cannot be rebuilt here")


def far_primary(i: int) -> float:
    """Scores: 1.0 on 1 row in 10, 0.0 or 0.9 elsewhere."""
    return 1.0 if i % 10 == 0 else (0.0 if i % 2 else 0.9)


def far_shadow(i: int) -> float:
    """As :func:`far_primary`, but 1e150 where it answers 1.0 (too far off to compare)."""
    return 1e150 if i % 10 == 0 else far_primary(i)


def row_sum(x: Any) -> float:
    """A numeric shadow of array inputs: the sum of the input's values."""
    return float(np.sum(x))


def batch_label(X: Any) -> list[str]:
    """:func:`label` on each row of a batch."""
    return [label(int(x)) for x in X]


def row_sums(X: Any) -> Any:
    """:func:`row_sum` on each row of a 2-D batch."""
    return np.asarray(X, dtype=np.float64).sum(axis=1)


def one_short(X: Any) -> Any:
    """A batch shadow that loses the last row's output."""
    return list(X)[:-1]

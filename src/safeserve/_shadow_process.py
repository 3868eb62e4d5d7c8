"""Process isolation for shadow mirroring: the shadow model runs in a worker process.

A shadow model that holds the GIL (most pure-Python and many numpy-light models do) competes
with the primary for the interpreter even on worker threads: every time the shadow thread runs,
the request thread waits for it, and the primary's tail latency grows. With
``ShadowMirror(..., isolation="process")`` the primary's process does only this per mirrored
request: pickle ``(input, primary output, primary latency, request id)`` and hand it to the
kernel with one non-blocking ``send`` on a Unix datagram socket. No thread of the primary's
process takes part in mirroring. The worker process (started with the ``spawn`` method, so it
is safe in a process that already runs threads) receives the requests and runs an ordinary
thread-isolated :class:`~safeserve.ShadowMirror` on them: the shadow calls, the timeouts and
stuck-thread handling, the paired comparison, the sequential checks and the sink all happen
there. The worker lowers its own CPU priority (``nice`` +10), so that where the shadow and the
primary compete for a core the scheduler runs the primary first: the shadow is best effort.

Bounds: the worker counts the requests it takes off the socket in a shared-memory integer; a
request that would leave more than ``queue_size`` in the socket, or that does not fit in the
socket's send buffer, is dropped and counted (``queue_full``). So at most ``queue_size``
requests wait in the socket and ``queue_size`` more in the worker's queue, and their bytes are
bounded by the kernel's buffer. A request whose pickle is larger than the buffer can never be
sent and is counted as ``too_large``. A worker process that dies is not restarted: its mirrors
are dropped (``worker_exited``), the report's state becomes ``"failed"`` and its verdict FAIL,
since a shadow model that crashes its process must not be promoted. ``close`` stops the worker
and, if a hung call keeps it from exiting, terminates it.

The report merges the worker's report with the counts kept here; every identity of
:class:`~safeserve.ShadowReport` still holds, with requests still in the socket counted as
``queued`` (and as ``discarded`` once the worker is gone).
"""

from __future__ import annotations

import contextlib
import errno
import marshal
import multiprocessing
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
import numpy as np

from .stats import Verdict

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._shadow import ShadowMirror, ShadowReport

__all__ = ["DROP_REASONS", "ProcessLink"]

#: Why a request was not handed to the worker process, as counted in ``drop_reasons``.
DROP_REASONS: Final = (
    "queue_full",
    "starting",
    "unpicklable",
    "too_large",
    "worker_exited",
    "undecodable",
)
#: Seconds a worker process may take to start and load the shadow model.
START_TIMEOUT: Final = 120.0
#: Seconds ``report`` waits for the worker's answer before using its last one.
REPORT_TIMEOUT: Final = 5.0
#: Send buffer asked of the kernel for the request socket (it may grant less).
SEND_BUFFER: Final = 4 * 1024 * 1024
#: Niceness the worker process adds to its own (lower CPU priority than the primary's).
NICE: Final = 10
#: Seconds the worker's receiver sleeps when the socket is empty. It polls rather than blocks
#: in ``recv``: a send to a blocked reader wakes it with a "sync" hint that makes the scheduler
#: pull the reader onto the sender's CPU, where it would compete with the primary; a poll never
#: involves the primary's CPU. It delays the shadow by up to this much, and costs an idle worker
#: a few hundred wake-ups a second.
POLL: Final = 0.002

# Link states (the report's ``state`` while the worker runs is the worker mirror's state).
_IDLE, _STARTING, _RUNNING, _FAILED, _CLOSED = "idle", "starting", "running", "failed", "closed"


def _worker_main(
    conn: Connection,
    sock: socket.socket,
    taken: Any,
    max_size: int,
    payload: bytes,
    options: dict[str, Any],
) -> None:
    """The worker process: a thread-isolated mirror fed from the datagram socket."""
    from ._shadow import ShadowMirror

    with contextlib.suppress(AttributeError, OSError):
        # Best effort: where both compete for a core, the scheduler favours the primary.
        os.nice(NICE)
    try:
        model, sink = pickle.loads(payload)
        mirror = ShadowMirror(model, sink=sink, **options)
        if not mirror.start():
            raise RuntimeError("the worker threads could not start")
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    undecodable = 0
    # Held while a request is decoded and submitted, so that a report and the count of
    # undecodable requests describe the same instant.
    lock = threading.Lock()

    # A datagram is never larger than the sender's buffer, so one buffer of that size, reused,
    # receives any of them (decode copies what it keeps).
    buffer = bytearray(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + max_size)
    view = memoryview(buffer)
    sock.setblocking(False)

    def receive() -> None:
        nonlocal undecodable
        recv_into, loads, submit, sleep = sock.recv_into, decode, mirror.submit, time.sleep
        while True:
            try:
                n = recv_into(buffer)
            except BlockingIOError:
                sleep(POLL)
                continue
            except OSError:
                return
            data = view[:n]
            with lock:
                taken.value += 1  # read by the primary's process to bound what is in flight
                try:
                    x, y, latency, rid = loads(data)
                except BaseException:
                    undecodable += 1
                    continue
                submit(x, y, latency, rid)

    def received() -> int:
        with lock, mirror._lock:
            return mirror._submitted + undecodable

    def report() -> tuple[ShadowReport, int]:
        with lock:
            return mirror.report(), undecodable

    threading.Thread(target=receive, name="safeserve-shadow-receiver", daemon=True).start()
    conn.send(("ready", os.getpid()))
    while True:
        try:
            op, seq, arg = conn.recv()
        except (EOFError, OSError):  # the primary's process is gone
            mirror.close(timeout=0.0)
            return
        if op == "report":
            conn.send((seq, report()))
        elif op == "idle":
            idle = mirror.wait_idle(arg)
            conn.send((seq, (idle, received())))
        elif op == "close":
            stopped = mirror.close(timeout=arg)
            conn.send((seq, (*report(), stopped)))
            return


class ProcessLink:
    """The primary's side of a process-isolated mirror (used by :class:`ShadowMirror`)."""

    def __init__(self, owner: ShadowMirror, payload: bytes, options: dict[str, Any]) -> None:
        self._owner = owner
        self._payload = payload
        self._options = options
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._rpc_lock = threading.Lock()
        self._state = _IDLE
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._send: Callable[[bytes], int] | None = None
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._starter: threading.Thread | None = None
        self._taken: Any = None  # shared with the worker: requests it took off the socket
        self._limit = self._owner.queue_size
        self._ready = threading.Event()
        self._seq = 0
        self._submitted = 0
        self._sent = 0
        self._refused = 0
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._last: tuple[ShadowReport, int] | None = None
        self._failure: str | None = None
        self._stale = False

    # -- the request path ----------------------------------------------------------------

    def submit(
        self, x: Any, primary_output: Any, primary_latency: float, request_id: Any = None
    ) -> bool:
        """Encode the request and send it without blocking; count it whatever happens.

        A forked child of this process is reset by the at-fork hook, not checked here.
        """
        data: bytes | None = None
        if self._state is _RUNNING:
            try:
                data = encode(x, primary_output, primary_latency, request_id)
            except BaseException:
                data = None
        start = False
        with self._lock:
            self._submitted += 1
            state = self._state
            if state is not _RUNNING:
                if state is _CLOSED:
                    self._refused += 1
                    return False
                if state is _IDLE:
                    self._state = _STARTING
                    start = True
                self._drops["worker_exited" if state is _FAILED else "starting"] += 1
            elif data is None:
                self._drops["unpicklable"] += 1
                return False
            elif self._sent - self._taken.value >= self._limit:
                self._drops["queue_full"] += 1
                return False
            else:
                send = self._send
                assert send is not None
                try:
                    send(data)
                except BlockingIOError:
                    self._drops["queue_full"] += 1
                    return False
                except OSError as exc:
                    if exc.errno == errno.EMSGSIZE:
                        self._drops["too_large"] += 1
                    else:
                        self._drops["worker_exited"] += 1
                        self._fail_locked(f"sending to the worker process failed: {exc}")
                    return False
                self._sent += 1
                return True
        if start:
            self._start_async()
        return False

    # -- the worker process --------------------------------------------------------------

    def start(self, timeout: float) -> bool:
        """Start the worker process now (if not yet) and wait until it is ready."""
        if self._pid != os.getpid():
            self.reset_after_fork()
        with self._lock:
            start = self._state is _IDLE
            if start:
                self._state = _STARTING
        if start:
            self._start_async()
        self._ready.wait(max(0.0, timeout))
        return self._state is _RUNNING

    def _start_async(self) -> None:
        t = threading.Thread(
            target=self._spawn, name=f"safeserve-shadow-{self._owner.name}-start", daemon=True
        )
        self._starter = t
        try:
            t.start()
        except RuntimeError as exc:  # e.g. "can't start new thread"
            with self._lock:
                self._fail_locked(f"could not start the worker process: {exc}")
            self._ready.set()

    def _spawn(self) -> None:
        ours: socket.socket | None = None
        conn: Connection | None = None
        taken: Any = None
        process: BaseProcess | None = None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):  # else the kernel keeps its default
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            ours.setblocking(False)
            ctx = multiprocessing.get_context("spawn")
            conn, child_conn = ctx.Pipe(duplex=True)
            taken = ctx.RawValue("q", 0)
            process = ctx.Process(
                target=_worker_main,
                args=(
                    child_conn,
                    theirs,
                    taken,
                    ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                    self._payload,
                    self._options,
                ),
                name=f"safeserve-shadow-{self._owner.name}",
                daemon=True,
            )
            process.start()
            child_conn.close()
            theirs.close()
            if not conn.poll(START_TIMEOUT):
                raise TimeoutError(f"no answer within {START_TIMEOUT:g} s")
            status, detail = conn.recv()
        except BaseException as exc:
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._process = process
            self._conn = conn
            if status == "ready" and self._state is _STARTING and ours is not None:
                self._taken = taken
                self._sock = ours
                self._send = ours.send
                self._state = _RUNNING
            else:
                if status == "ready":  # closed while starting
                    self._state = _CLOSED
                else:
                    self._fail_locked(f"the worker process could not start: {detail}")
                if ours is not None:
                    ours.close()
        self._ready.set()
        if self._state is not _RUNNING:
            self._stop_process(1.0)

    def _fail_locked(self, reason: str) -> None:
        if self._state is not _CLOSED:
            self._state = _FAILED
            self._failure = reason

    def _rpc(self, op: str, arg: Any, timeout: float) -> Any:
        """Ask the worker; return its answer, or raise TimeoutError / EOFError."""
        with self._rpc_lock:
            conn = self._conn
            if conn is None:
                raise EOFError("no worker process")
            while conn.poll(0):  # answers to earlier calls that timed out
                conn.recv()
            self._seq += 1
            seq = self._seq
            conn.send((op, seq, arg))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not conn.poll(left):
                    raise TimeoutError(f"the worker process did not answer within {timeout:g} s")
                got, answer = conn.recv()
                if got == seq:
                    return answer

    def _ask(self, op: str, arg: Any, timeout: float) -> Any | None:
        """:meth:`_rpc`, with a dead worker marked failed and a slow one left be (None)."""
        try:
            return self._rpc(op, arg, timeout)
        except TimeoutError:
            return None
        except (EOFError, OSError) as exc:
            code = self._process.exitcode if self._process is not None else None
            with self._lock:
                self._fail_locked(f"the worker process exited (code {code}): {exc!r}")
            return None

    def _stop_process(self, timeout: float) -> bool:
        process = self._process
        if process is None:
            return True
        process.join(max(0.0, timeout))
        if process.is_alive():  # a hung shadow call keeps it from exiting
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
        return not process.is_alive()

    # -- control -------------------------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            state = self._state
            if state is _STARTING:
                self._ready.wait(max(0.0, deadline - time.monotonic()))
                state = self._state
            if state is not _RUNNING:
                return state is not _STARTING
            left = deadline - time.monotonic()
            answer = self._ask("idle", min(max(left, 0.0), 0.05), max(left, 0.0) + REPORT_TIMEOUT)
            if answer is not None:
                idle, received = answer
                with self._lock:
                    if idle and received >= self._sent:
                        return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.001)

    def close(self, timeout: float, drain: bool) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        if drain:
            self.wait_idle(timeout)
        with self._lock:
            state = self._state
            self._state = _CLOSED
        if state is _STARTING:
            self._ready.wait(max(0.0, deadline - time.monotonic()))
        stopped = True
        if self._conn is not None and state is _RUNNING:
            left = max(0.0, deadline - time.monotonic())
            answer = self._ask("close", left, left + REPORT_TIMEOUT)
            if answer is not None:
                report, undecodable, stopped = answer
                self._last = (report, undecodable)
        stopped = self._stop_process(max(0.0, deadline - time.monotonic())) and stopped
        for resource in (self._sock, self._conn):
            if resource is not None:
                resource.close()
        self._sock = self._send = self._conn = None
        return stopped

    def reset_after_fork(self) -> None:
        """In a forked child: the worker belongs to the parent; start afresh, counts at zero."""
        for resource in (self._sock, self._conn):
            if resource is not None:
                with contextlib.suppress(OSError):
                    resource.close()
        closed = self._state is _CLOSED
        self._init_runtime()
        if closed:
            self._state = _CLOSED

    @property
    def state(self) -> str:
        return self._state

    @property
    def pid(self) -> int | None:
        process = self._process
        return None if process is None else process.pid

    def thread_count(self) -> int:
        t = self._starter
        return int(t is not None and t.is_alive())

    # -- report --------------------------------------------------------------------------

    def report(self) -> ShadowReport:
        note = ""
        if self._state is _RUNNING:
            answer = self._ask("report", None, REPORT_TIMEOUT)
            if answer is None and self._state is _RUNNING:
                note = (
                    f"the worker process did not answer within {REPORT_TIMEOUT:g} s: "
                    "figures as of its last answer; "
                )
            elif answer is not None:
                self._last = answer
        with self._lock:
            last = self._last
            state = self._state
            submitted, sent, refused = self._submitted, self._sent, self._refused
            drops = dict(self._drops)
            failure = self._failure
        base, undecodable = last if last is not None else (self._owner._local_report(), 0)
        in_flight = max(0, sent - base.submitted - undecodable)
        drops["queue_full"] += base.dropped
        drops["undecodable"] = undecodable
        gone = state in (_FAILED, _CLOSED)
        changes: dict[str, Any] = {
            "isolation": "process",
            "state": base.state if state is _RUNNING else state,
            "submitted": submitted,
            "mirrored": base.mirrored + in_flight,
            "dropped": sum(drops.values()),
            "drop_reasons": drops,
            "refused": base.refused + refused,
            "queued": base.queued + (0 if gone else in_flight),
            "discarded": base.discarded + (in_flight if gone else 0),
        }
        if state is _FAILED:
            changes["verdict"] = Verdict.FAIL
            changes["reason"] = f"{failure}; {base.reason}"
        elif note:
            changes["reason"] = note + base.reason
        return attrs.evolve(base, **changes)


# -- the wire format of one request ---------------------------------------------------------

_ndarray: Final = np.ndarray
_MARSHAL, _PICKLE = b"M", b"P"
# Exact types that marshal reproduces as they are. (marshal also writes any object with the
# buffer protocol, numpy scalars and arrays included, as plain bytes: those must not reach it.)
_SCALARS: Final = frozenset((int, float, str, bool, bytes, type(None)))


def _plain(v: Any) -> tuple[Any, bool]:
    """(a marshal-able form of v, whether v is an array encoded as (dtype, shape, bytes)).

    Raises TypeError when v has no marshal-able form.
    """
    t = type(v)
    if t in _SCALARS:
        return v, False
    if t is _ndarray:
        if v.dtype.kind in "biufc" and v.dtype.isnative:
            return (v.dtype.char, v.shape, v.tobytes()), True
    elif (t is list or t is tuple) and all(type(e) in _SCALARS for e in v):
        return v, False
    raise TypeError(t)


def encode(x: Any, y: Any, latency: float, rid: Any) -> bytes:
    """One request as bytes: marshal for plain values and numeric arrays, pickle otherwise.

    :mod:`marshal` is several times faster than pickling a small numpy array (which goes through
    ``__reduce__``); both ends run the same interpreter, so its format is stable between them.
    A flag byte says which of ``x`` and ``y`` were arrays.

    >>> x = np.arange(6.0).reshape(2, 3)
    >>> back = decode(encode(x, "cat", 0.002, 7))
    >>> bool((back[0] == x).all()), back[1:]
    (True, ('cat', 0.002, 7))
    """
    try:
        px, ax = _plain(x)
        py, ay = _plain(y)
        if type(latency) is float and type(rid) in _SCALARS:
            return _MARSHAL + marshal.dumps((ax | ay << 1, px, py, latency, rid))
    except TypeError:  # numpy scalars, user objects, nested containers: pickle
        pass
    return _PICKLE + pickle.dumps((0, x, y, latency, rid), pickle.HIGHEST_PROTOCOL)


def _array(v: Any) -> Any:
    if isinstance(v, tuple):
        char, shape, raw = v
        return np.frombuffer(bytearray(raw), dtype=char).reshape(shape)  # writable, like pickle's
    return v


def decode(data: bytes | memoryview) -> tuple[Any, Any, float, Any]:
    """The inverse of :func:`encode`."""
    loads = marshal.loads if data[:1] == _MARSHAL else pickle.loads
    flags, x, y, latency, rid = loads(memoryview(data)[1:])
    if flags & 1:
        x = _array(x)
    if flags & 2:
        y = _array(y)
    return x, y, latency, rid


def payload_of(model: Any, sink: Any) -> bytes:
    """Pickle what the worker process needs, or raise TypeError saying what cannot be sent."""
    for what, obj in (("shadow model", model), ("sink", sink)):
        try:
            pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"isolation='process' sends the {what} to a worker process, but {obj!r} cannot "
                f"be pickled ({type(exc).__name__}: {exc}); define it at module level, or use "
                "isolation='thread'"
            ) from exc
    return pickle.dumps((model, sink), pickle.HIGHEST_PROTOCOL)


def supported() -> bool:
    """Whether this platform has the Unix datagram sockets process isolation uses."""
    try:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    except (AttributeError, OSError):
        return False
    a.close()
    b.close()
    return True

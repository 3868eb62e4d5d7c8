"""Process isolation for shadow mirroring: the shadow model runs in a worker process.

A shadow model that holds the GIL (most pure-Python and many numpy-light models do) competes
with the primary for the interpreter even on worker threads: every time the shadow thread runs,
the request thread waits for it, and the primary's tail latency grows. With ``ShadowMirror(...,
isolation="process")`` the primary's process does only this per mirrored request: it copies
``(input, primary output, primary latency, request id)`` into the next free slot of a ring in
shared memory (:class:`Ring`: numeric numpy inputs with numeric, boolean, ``None`` or
short-label outputs, the common case of a model server), or, for anything else, encodes it
(marshal, pickle as a fallback) and hands it to the kernel with one non-blocking ``send`` on a
Unix datagram socket. The rows of a batch (``submit_batch``) always take the socket, encoded the
same way in datagrams of at most :data:`BATCH_BYTES` (and an eighth of the socket's buffer);
pieces that do not fit in the buffer are dropped and counted, never waited for. The ring path
makes no system call and builds no byte string. No thread of the primary's process takes part in
mirroring. The worker process (started with the ``spawn`` method, so it is safe in a process
that already runs threads) drains the ring and the socket and runs an ordinary thread-isolated
:class:`~safeserve.ShadowMirror` on what it receives: the shadow calls, the timeouts and
stuck-thread handling, the paired comparison, the sequential checks and the sink all happen
there. The worker lowers its own CPU priority (``nice`` +10), so that where the shadow and the
primary compete for a core the scheduler runs the primary first: the shadow is best effort.

Bounds: the worker counts the requests it takes off the ring and the socket in a word of the
shared memory; a request that would leave more than ``queue_size`` waiting in the two together,
or that finds the ring full and does not fit in the socket's send buffer, is dropped and counted
(``queue_full``). So at most ``queue_size`` requests wait in the ring and the socket and
``queue_size`` more in the worker's queue. The ring has a slot for each of those
``queue_size`` requests (up to 4,096; its memory is fixed, at most 16 MiB, see
:func:`ring_geometry`), so that the socket carries only what the ring cannot, and the socket's
memory is bounded by the kernel's buffer. A request whose
encoding is larger than that buffer can never be sent and is counted as ``too_large``. A worker
process that dies is not restarted: its mirrors are dropped (``worker_exited``), the report's
state becomes ``"failed"`` and its verdict FAIL, since a shadow model that crashes its process
must not be promoted. ``close`` stops the worker and, if a hung call keeps it from exiting,
terminates it. Either way this process unmaps the ring, and the kernel frees it once the worker
is gone too.

The report merges the worker's report with the counts kept here; every identity of
:class:`~safeserve.ShadowReport` still holds, with requests still in the ring or the socket
counted as ``queued`` (and as ``discarded`` once the worker is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import marshal
import math
import mmap
import multiprocessing
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs
import numpy as np
import xxhash

from .stats import Verdict

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._shadow import ShadowMirror, ShadowReport

__all__ = ["DROP_REASONS", "ProcessLink", "Ring", "ring_geometry"]

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
#: Seconds between two looks at the worker process from a request that finds the limit.
LOOK: Final = 0.001
#: Niceness the worker process adds to its own (lower CPU priority than the primary's).
NICE: Final = 10
#: Seconds the worker's receiving thread sleeps when the ring and the socket are empty. It polls
#: rather than blocks in ``recv``: a send to a blocked reader wakes it with a "sync" hint that
#: makes the scheduler pull the reader onto the sender's CPU, where it would compete with the
#: primary; a poll never involves the primary's CPU (and the ring has no way to wake anyone). It
#: delays the shadow by up to this much, and costs an idle worker a few hundred wake-ups a
#: second.
POLL: Final = 0.002
#: Most slots of a ring; fewer when ``queue_size`` is smaller (0 turns the ring off).
RING_SLOTS: Final = 4096
#: Shared memory the slots of a ring share when they are few (each has at least 4 KiB).
RING_BYTES: Final = 1 << 20
#: Bytes of a ring written at a time when it is made (other threads run in between).
PREFAULT_BYTES: Final = 256 * 1024
#: Smallest and largest slot, in bytes (a slot holds a 104-byte header and the payload).
MIN_SLOT_BYTES: Final = 4096
MAX_SLOT_BYTES: Final = 65536
#: Most dimensions of an array sent through the ring (more take the socket).
MAX_NDIM: Final = 4
#: Most bytes of one datagram of batch rows: a larger batch is sent in several (each also has
#: at most a quarter of ``queue_size`` rows, so that part of a batch fits when all cannot).
BATCH_BYTES: Final = 256 * 1024
# Where successive batches start to be cut: multiples of the golden ratio's fraction, modulo 1,
# spread evenly over [0, 1) for any number of batches.
_GOLDEN: Final = (math.sqrt(5.0) - 1.0) / 2.0

# Link states (the report's ``state`` while the worker runs is the worker mirror's state).
_IDLE, _STARTING, _RUNNING, _FAILED, _CLOSED = "idle", "starting", "running", "failed", "closed"


def _worker_main(
    conn: Connection,
    sock: socket.socket,
    slots: int,
    slot_bytes: int,
    max_size: int,
    payload: bytes,
    options: dict[str, Any],
) -> None:
    """The worker process: a thread-isolated mirror fed from the ring and the datagram socket."""
    from ._shadow import ShadowMirror

    with contextlib.suppress(AttributeError, OSError):
        # Best effort: where both compete for a core, the scheduler favours the primary.
        os.nice(NICE)
    try:
        # The first datagram carries the ring's file descriptor (sent before this process
        # started, so it is already there).
        sock.settimeout(START_TIMEOUT)
        _, fds, _, _ = socket.recv_fds(sock, 16, 1)
        if len(fds) != 1:
            raise RuntimeError(f"expected the ring's file descriptor, got {fds!r}")
        ring = Ring.attach(fds[0], slots, slot_bytes)
        model, sink = pickle.loads(payload)
        mirror = ShadowMirror(model, sink=sink, **options)
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    undecodable = 0
    # Held while a taken request is counted, so that a report and the count of undecodable
    # requests describe the same instant.
    lock = threading.Lock()

    # A datagram is never larger than the sender's buffer, so one buffer of that size, reused,
    # receives any of them (decode copies what it keeps).
    buffer = bytearray(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + max_size)
    view = memoryview(buffer)
    sock.setblocking(False)
    ring_take, words = ring.take, ring.words

    socket_open = True

    def datagram() -> int:
        """Bytes of the next datagram in ``buffer``, or -1 when there is none."""
        nonlocal socket_open
        try:
            return sock.recv_into(buffer)
        except BlockingIOError:
            return -1
        except OSError:  # the socket failed (it should not): go on with the ring alone
            socket_open = False
            return -1

    def take(stopped: Callable[[], bool]) -> Any:
        """The next request (a tuple) or batch of rows (a :class:`BatchRows`): the ring
        first, then the socket, sleeping only when both are empty; None once the mirror
        closes."""
        nonlocal undecodable
        while not stopped():
            rows = 1
            got: Any
            try:
                got = ring_take()
            except Exception:  # a complete slot that does not decode (it was released)
                got = None
            else:
                if got is None:
                    n = datagram() if socket_open else -1
                    if n < 0:
                        time.sleep(POLL)
                        continue
                    try:
                        if view[0] == _BATCH[0]:
                            rows = batch_rows(view[:n])
                            got = decode_batch(view[:n])
                        else:
                            got = decode(view[:n])
                    except BaseException:
                        got = None
            with lock:
                # Read by the primary's process to bound what is in flight.
                words[0] += rows
                if got is None:
                    undecodable += rows
                    continue
            return got
        return None

    def received() -> int:
        with lock, mirror._lock:
            return mirror._submitted + undecodable

    def report() -> tuple[ShadowReport, int]:
        with lock:
            return mirror.report(), undecodable

    def receive() -> None:
        # Drains the ring and the socket into the mirror's queue as requests arrive, where
        # its worker threads take them (measured against letting each worker thread take its
        # next request itself, when free: that used half the CPU in this process, but made
        # the primary's p99 worse with a GIL-free shadow in five of six interleaved runs).
        stopped, submit, submit_batch = mirror._stop.is_set, mirror.submit, mirror.submit_batch
        while True:
            got = take(stopped)
            if got is None:
                return
            if type(got) is tuple:
                submit(*got)
            else:
                submit_batch(*got.args)  # decode_batch checked one output per row

    try:
        if not mirror.start():
            raise RuntimeError("the worker threads could not start")
        threading.Thread(target=receive, name="safeserve-shadow-receiver", daemon=True).start()
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
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
            # Counted first: a request counted after this is running or done, so "idle" then
            # means done (the other order could report idle with one counted but running).
            got = received()
            idle = mirror.wait_idle(arg)
            conn.send((seq, (idle, got)))
        elif op == "close":
            stopped = mirror.close(timeout=arg)
            conn.send((seq, (*report(), stopped)))
            return


def _no_ring(x: Any, y: Any, latency: Any, rid: Any) -> bool:
    """The ring's ``put`` while there is none: every request takes the socket."""
    return False


class ProcessLink:
    """The primary's side of a process-isolated mirror (used by :class:`ShadowMirror`).

    The ring holds ``ring_geometry(queue_size)`` slots: one per request that may wait, at most
    4,096 slots and 16 MiB of shared memory per mirror, whatever ``queue_size`` is.
    """

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
        # The ring (shared with the worker), its ``put`` while it has slots, and its words:
        # word 0 counts the requests the worker took off the ring and the socket.
        self._ring: Ring | None = None
        self._put: Callable[[Any, Any, Any, Any], bool] = _no_ring
        self._words: Any = None
        self._via_ring = 0  # requests sent through rings already released
        self._limit = self._owner.queue_size
        self._piece = BATCH_BYTES  # most bytes of a datagram of batch rows (see _spawn)
        self._batches = 0
        self._ready = threading.Event()
        self._seq = 0
        self._submitted = 0
        self._sent = 0  # through the ring and the socket
        self._seen = 0  # the worker's count of taken requests, as last read (a lower bound)
        self._look_at = 0.0  # time.monotonic() from which the limit may look at the worker
        self._refused = 0
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._last: tuple[ShadowReport, int] | None = None
        self._report_asked = 0  # the seq of a report asked for and not answered yet (0: none)
        self._failure: str | None = None

    # -- the request path ----------------------------------------------------------------

    def submit(
        self, x: Any, primary_output: Any, primary_latency: float, request_id: Any = None
    ) -> bool:
        """Hand the request to the worker without blocking; count it whatever happens.

        The ring when the request fits a slot, else the socket. A forked child of this process
        is reset by the at-fork hook, not checked here.
        """
        # A request is counted as submitted under the same lock as its outcome, so that a
        # report never sees it submitted but not yet sent or dropped.
        with self._lock:
            state = self._state
            if state is _RUNNING:
                # (The limit's first test, repeated here: a call fewer on the request path.)
                if self._sent - self._seen >= self._limit and self._full_locked():
                    self._submitted += 1
                    return False
                try:
                    ok = self._put(x, primary_output, primary_latency, request_id)
                except Exception:  # unpublished; the socket path decides
                    ok = False
                if ok:
                    self._submitted += 1
                    self._sent += 1
                    return True
                # Not for the ring: counted by the socket path, with its outcome.
            elif state is _CLOSED:
                self._submitted += 1
                self._refused += 1
                return False
            else:
                self._submitted += 1
                if state is _IDLE:
                    self._state = _STARTING
                self._drops["worker_exited" if state is _FAILED else "starting"] += 1
                if state is not _IDLE:
                    return False
        if state is _RUNNING:  # not for the ring (its kind or size), or the ring is full
            return self._send_encoded(x, primary_output, primary_latency, request_id)
        self._start_async()
        return False

    def submit_batch(self, X: Any, Y: Any, latency: float, ids: Any) -> int:
        """Send a batch's rows to the worker as datagrams (never through the ring) without
        blocking; count every row whatever happens; return how many rows were sent."""
        m = len(X)
        with self._lock:
            state = self._state
            if state is not _RUNNING:
                self._submitted += m
                if state is _CLOSED:
                    self._refused += m
                    return 0
                if state is _IDLE:
                    self._state = _STARTING
                self._drops["worker_exited" if state is _FAILED else "starting"] += m
                if state is not _IDLE:
                    return 0
        if state is not _RUNNING:
            self._start_async()
            return 0
        # Pieces that do not fit in the socket's buffer are dropped (the send never waits):
        # each batch is cut from another row, so that no part of every batch is the one lost.
        self._batches += 1
        max_rows = max(1, self._limit // 4)
        start = cut_start(self._batches, m)
        sent = 0
        for rows, data in batch_datagrams(X, Y, latency, ids, max_rows, self._piece, start):
            sent += self._send_data(data, rows)
        return sent

    def _full_locked(self, rows: int = 1) -> bool:
        """Whether ``queue_size`` requests are in flight (counting ``rows`` more); if so,
        count the drop of the rows.

        The worker's count only grows, so ``_seen`` gives an upper bound of what is in flight:
        the shared word is read only when that bound reaches the limit. The ring makes no
        system call that would fail once the worker is gone, so the limit is also where a dead
        worker shows: look (a non-blocking ``waitpid``) only then, and at most once a
        millisecond.
        """
        if self._sent - self._seen + rows <= self._limit:
            return False
        self._seen = self._words[0]
        if self._sent - self._seen + rows <= self._limit:
            return False
        process = self._process
        if process is not None:
            # At most once per LOOK seconds: a shadow that cannot keep up keeps this process
            # at the limit, and each look is a system call on the request path.
            now = time.monotonic()
            if now >= self._look_at:
                self._look_at = now + LOOK
                if process.exitcode is not None:
                    self._fail_locked(f"the worker process exited (code {process.exitcode})")
        self._drops["queue_full" if self._state is _RUNNING else "worker_exited"] += rows
        return True

    def _send_encoded(self, x: Any, y: Any, latency: float, rid: Any) -> bool:
        """The socket path: encode (outside the lock) and send one datagram."""
        try:
            data: bytes | None = encode(x, y, latency, rid)
        except BaseException:
            data = None
        return self._send_data(data, 1) == 1

    def _send_data(self, data: bytes | None, rows: int) -> int:
        """Send one encoded datagram of ``rows`` requests (None: they could not be encoded);
        count them; return how many were sent (all or none)."""
        with self._lock:
            self._submitted += rows
            state = self._state
            if state is not _RUNNING:  # closed, or failed, while encoding
                if state is _CLOSED:
                    self._refused += rows
                else:
                    self._drops["worker_exited" if state is _FAILED else "starting"] += rows
                return 0
            if data is None:
                self._drops["unpicklable"] += rows
                return 0
            if self._full_locked(rows):
                return 0
            send = self._send
            assert send is not None
            try:
                send(data)
            except BlockingIOError:
                self._drops["queue_full"] += rows
                return 0
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    self._drops["too_large"] += rows
                else:
                    self._drops["worker_exited"] += rows
                    self._fail_locked(f"sending to the worker process failed: {exc}")
                return 0
            self._sent += rows
            return rows

    def sent_by_path(self) -> tuple[int, int]:
        """(requests sent through the ring, through the socket) by this process."""
        with self._lock:
            ring = self._via_ring + (0 if self._ring is None else self._ring.published)
            return ring, self._sent - ring

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
        theirs: socket.socket | None = None
        conn: Connection | None = None
        child_conn: Connection | None = None
        process: BaseProcess | None = None
        ring: Ring | None = None
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):  # else the kernel keeps its default
                ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            ours.setblocking(False)
            slots, slot_bytes = ring_geometry(self._limit)
            ring = Ring.create(slots, slot_bytes)
            # The worker's first datagram: the ring's descriptor (its copy lives in the
            # message until the worker takes it, or the socket closes).
            socket.send_fds(ours, [b"ring"], [ring.fileno()])
            ring.close_fd()
            ctx = multiprocessing.get_context("spawn")
            conn, child_conn = ctx.Pipe(duplex=True)
            child = ctx.Process(
                target=_worker_main,
                args=(
                    child_conn,
                    theirs,
                    slots,
                    slot_bytes,
                    ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                    self._payload,
                    self._options,
                ),
                name=f"safeserve-shadow-{self._owner.name}",
                daemon=True,
            )
            child.start()
            process = child  # only a started process is joined or terminated later
            child_conn.close()
            theirs.close()
            if not conn.poll(START_TIMEOUT):
                raise TimeoutError(f"no answer within {START_TIMEOUT:g} s")
            status, detail = conn.recv()
        except BaseException as exc:
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
            for end in (theirs, child_conn):  # closed above once the worker started
                if end is not None:
                    with contextlib.suppress(OSError):
                        end.close()
        with self._lock:
            self._process = process
            self._conn = conn
            if status == "ready" and self._state is _STARTING and ours is not None:
                assert ring is not None
                self._ring = ring
                self._words = ring.words
                self._put = ring.put
                self._seen = 0
                self._sock = ours
                self._send = ours.send
                # Pieces of a batch: an eighth of the buffer the kernel granted, so that
                # several fit at once (a batch is sent back to back, and never waits).
                granted = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
                self._piece = min(BATCH_BYTES, max(4096, granted // 8))
                self._state = _RUNNING
            else:
                if status == "ready":  # closed while starting
                    self._state = _CLOSED
                else:
                    self._fail_locked(f"the worker process could not start: {detail}")
                if ours is not None:
                    ours.close()
                if ring is not None:
                    ring.close()
        self._ready.set()
        if self._state is not _RUNNING:
            self._stop_process(1.0)

    def _fail_locked(self, reason: str) -> None:
        if self._state is not _CLOSED:
            self._state = _FAILED
            self._failure = reason
        self._release_ring_locked()  # no request will be written to it again

    def _release_ring_locked(self) -> None:
        ring = self._ring
        self._ring = self._words = None
        self._put = _no_ring
        if ring is not None:
            self._via_ring += ring.published
            ring.close()

    def _rpc(self, op: str, arg: Any, timeout: float) -> Any:
        """Ask the worker; return its answer, or raise TimeoutError / EOFError.

        A report asked for while an earlier one is unanswered is not asked again: the answer
        to the earlier one will do (so that callers that do not wait never pile requests up
        in the pipe). Answers to earlier calls that timed out are read on the way; a report
        among them becomes the last known one. ``timeout`` 0 looks once, without waiting.
        """
        with self._rpc_lock:
            conn = self._conn
            if conn is None:
                raise EOFError("no worker process")
            if op == "report" and self._report_asked:
                seq = self._report_asked
            else:
                self._seq += 1
                seq = self._seq
                conn.send((op, seq, arg))
                if op == "report":
                    self._report_asked = seq
            deadline = time.monotonic() + timeout
            while True:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"the worker process did not answer within {timeout:g} s")
                got, answer = conn.recv()
                if got == self._report_asked:
                    self._report_asked = 0
                    self._last = answer
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
            self._release_ring_locked()
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
        """In a forked child: the worker belongs to the parent; start afresh, counts at zero.

        The child unmaps its copy of the parent's ring, which it must never write to.
        """
        ring, self._words = self._ring, None  # drop the view first, so the unmap happens
        for resource in (self._sock, self._conn, ring):
            if resource is not None:
                with contextlib.suppress(OSError):
                    resource.close()
        process = self._process
        if process is not None:
            # multiprocessing's list of children was copied into this process too; at exit
            # it would terminate the parent's worker (a daemon) as if it were ours.
            multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
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

    def report(self, *, wait: bool = True) -> ShadowReport:
        note = ""
        if self._state is _RUNNING:
            timeout = REPORT_TIMEOUT if wait else 0.0
            answer = self._ask("report", None, timeout)
            if answer is None and self._state is _RUNNING:
                note = (
                    f"the worker process did not answer within {timeout:g} s: "
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


# -- the ring: requests in shared memory ----------------------------------------------------
#
# Why this memory: a ``memfd_create`` file (Linux; elsewhere a temporary file unlinked as soon
# as it is open, as multiprocessing's own heap does), mapped with ``mmap`` here and in the
# worker, which receives the descriptor as the first datagram on its socket. It has no name
# that could outlive the two processes: the kernel frees it when the last mapping goes, also
# when both are killed, and no resource tracker takes part (``multiprocessing.shared_memory``
# names a segment in /dev/shm that leaks if its creator is killed, and on Python 3.11 a process
# that attaches registers it with the resource tracker a second time). An anonymous ``mmap``
# would be simpler but is inherited only across ``fork``, not by a spawned worker, and
# ``multiprocessing.RawArray`` keeps freed blocks of under 4 MB mapped in a per-process heap.
#
# Layout: a 64-byte control line (word 0: requests the worker took off the ring and the socket;
# written by the worker only), then ``slots`` slots of ``slot_bytes`` (a multiple of 64):
#
#   offset 0    u64      ack: the sequence number of the request the reader last took from
#                        this slot (0 before the first); written by the reader only
#   offset 8    u64      check: xxh3_64 of bytes [16, 96 + length)
#   offset 16   _DYNAMIC seq, length of the payload, request id kind, latency, request id,
#                        the output's value (a float, or an int or bool)
#   offset 56   _LAYOUT  the input's dtype and shape, the output's kind, dtype and shape
#   offset 96   payload  the input's bytes, then (8-aligned) the output's bytes
#
# Publication, and why a checksum: one producer (``submit``, under the link's lock) and one
# reader (the worker's receiver thread). Request ``seq`` (1, 2, ...) goes to slot
# ``(seq - 1) % slots``. The producer writes the payload, the header and last the check. On a
# weakly ordered CPU (ARM, POWER) another core may see these stores in any order, so "the seq
# field is set" or even "the check is set" does not mean "the slot is complete", and Python
# has no memory barrier to order them. So the reader copies the slot's bytes into its own
# memory and recomputes the checksum over the copy: only a copy whose checksum and sequence
# number match is used. A slot seen half written (new header with an old check, new check
# with an old payload) does not match - the sequence number is hashed too, so the previous
# occupant's valid check never vouches for the new one - and is read again on the next poll,
# by which time the stores have arrived (a false match has probability 2**-64 per look).
#
# Release: after a matching copy, the reader stores the slot's ack = seq. The producer writes
# request ``seq`` into a slot only when that slot's ack equals ``seq - slots`` (the previous
# occupant was taken), else the ring is full. The reader's store depends, through the branch on
# the checksum, on every load of the copy; stores are not made visible speculatively, so the
# producer cannot see the ack before the reader's copy is complete, and, from then on, the
# reader uses only its copy. Likewise the producer's writes follow its branch on the ack. An
# ack read torn between its old and new value can never equal the new value (they differ in the
# bytes taken from the old one), so a torn read only delays reuse. Neither side ever waits.
#
# Speed: right after a model call the caches are cold and the request path pays for every
# distinct operation, so the producer does few. It keeps the layout of the last request (the
# dtypes by identity, the shapes, the output's type) with its packed _LAYOUT bytes, and writes
# those into a slot only when the slot does not hold them already (a model server sends
# requests of one layout). It reads acks only when the slots it knows to be free run out, and
# then the ack of the request half a ring back (see ``_room``): once per half turn when the
# reader keeps up. A request then costs a few type checks, one copy per array, one pack of the
# varying header fields, one hash and one word store. The commonest request (an array output,
# an int id, the last request's layout) takes a short path at the top of ``put``, which also
# hashes through a view of the slot made once per slot and layout rather than per request:
# right after a model call, each step of the interpreter costs tens of nanoseconds, so the
# number of steps is the cost (about 10% less per request than the general path, measured).

_ndarray: Final = np.ndarray
#: dtype characters of the numeric types the ring carries (native byte order only).
_RING_CHARS: Final = {c: ord(c) for c in "?bBhHiIlLqQpPefdgFDG"}
#: numpy scalar types the ring carries as outputs (0-dim, given back as the same scalar).
_NP_SCALARS: Final = frozenset(np.dtype(c).type for c in _RING_CHARS)
# Output kinds.
_Y_NONE, _Y_BOOL, _Y_INT, _Y_FLOAT, _Y_STR, _Y_ARRAY, _Y_SCALAR = range(7)
_Y_KINDS: Final = {type(None): _Y_NONE, bool: _Y_BOOL, int: _Y_INT, float: _Y_FLOAT, str: _Y_STR}
#: seq, payload length, request id kind (0: None, 1: int), latency, request id, output value.
_DYNAMIC_Q: Final = struct.Struct("=QIB3xdqq")
_DYNAMIC_D: Final = struct.Struct("=QIB3xdqd")  # the same, with a float output value
#: x dtype, x ndim, y kind, y dtype, y ndim, x shape (4), y shape (4).
_LAYOUT: Final = struct.Struct("=BBBBB3x4I4I")
_START: Final = 16  # the header's offset in a slot
_LAYOUT_AT: Final = _START + _DYNAMIC_Q.size
_PAYLOAD: Final = _LAYOUT_AT + _LAYOUT.size  # the payload's offset in a slot (96)
_CONTROL: Final = 64  # the control line before the slots
_PAD: Final = ((0, 0, 0, 0), (0, 0, 0), (0, 0), (0,), ())
_hash: Final = xxhash.xxh3_64_intdigest


def ring_geometry(queue_size: int) -> tuple[int, int]:
    """(slots, bytes per slot) of the ring of a mirror with this ``queue_size``.

    One slot per request the mirror may hold, ``min(queue_size, RING_SLOTS)`` (at most 4,096),
    so that a request finds the ring full only when the shadow is that far behind. The slots
    share ``RING_BYTES`` (1 MiB), each between 4 KiB and 64 KiB: so a mirror's ring takes at
    most ``max(1 MiB, 4 KiB per slot)`` of shared memory, at most 16 MiB in all (4 MiB with the
    default ``queue_size=1000``), plus a 64-byte control line. A slot holds a 96-byte header
    and the payload, so any request the ring carries (see :class:`Ring`) whose input and output
    together take up to 4,000 bytes fits a slot (e.g. a row of 480 float64 features and its
    class probabilities); a larger one takes the socket.

    >>> ring_geometry(1000), ring_geometry(50), ring_geometry(1), ring_geometry(10**6)
    ((1000, 4096), (50, 20928), (1, 65536), (4096, 4096))
    """
    slots = max(0, min(queue_size, RING_SLOTS))
    if slots == 0:
        return 0, MIN_SLOT_BYTES
    size = min(max(RING_BYTES // slots, MIN_SLOT_BYTES), MAX_SLOT_BYTES)
    return slots, size // 64 * 64


def _shared_file(size: int) -> int:
    """A file descriptor of ``size`` zeroed bytes of memory that has no name anywhere."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("safeserve-shadow-ring", os.MFD_CLOEXEC)
    else:
        where = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, name = tempfile.mkstemp(prefix="safeserve-shadow-ring-", dir=where)
        os.unlink(name)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Ring:
    """A single-producer, single-consumer ring of fixed-size request slots in shared memory.

    :meth:`put` copies a request (a numeric numpy input in native byte order, C-contiguous, of
    at most 4 dimensions; an output that is such an array, a numpy scalar, a float, an int, a
    bool, None or a str; a float latency; an int or None request id) into the next free slot
    and publishes it, without a system call. It returns False, publishing nothing, for any
    other request, for one too big for a slot, and when the ring is full. :meth:`take` gives
    back the next published request, or None. The comment above this class explains why a
    half-written slot is never taken, on any CPU.

    Args:
        mm: The shared mapping, ``64 + slots * slot_bytes`` bytes or more.
        slots: Number of slots (0: the ring carries nothing).
        slot_bytes: Bytes per slot, a multiple of 64 of at least 128.
        fd: The mapping's file descriptor, kept for :meth:`fileno` until :meth:`close_fd`.

    >>> ring = Ring.create(slots=2, slot_bytes=4096)
    >>> ring.put(np.arange(3.0), "cat", 0.002, 7)
    True
    >>> x, y, latency, rid = ring.take()
    >>> x.tolist(), y, latency, rid
    ([0.0, 1.0, 2.0], 'cat', 0.002, 7)
    >>> ring.take() is None
    True
    >>> ring.put([1, 2], "cat", 0.002, 7)  # not an array: for the socket
    False
    >>> ring.close()
    """

    def __init__(self, mm: mmap.mmap, slots: int, slot_bytes: int, fd: int = -1) -> None:
        if (
            slots < 0
            or slot_bytes % 64
            or slot_bytes < _PAYLOAD
            or (len(mm) < _CONTROL + slots * slot_bytes)
        ):
            raise ValueError(f"bad ring geometry: {slots!r} slots of {slot_bytes!r} bytes")
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._fd = fd
        self._mm = mm
        self._view = memoryview(mm)
        #: The mapping as 64-bit words (aligned: single stores and loads).
        self.words: Any = (ctypes.c_uint64 * (len(mm) // 8)).from_buffer(mm)
        self._cap = slot_bytes - _PAYLOAD  # payload bytes per slot
        self._seq = 1  # the producer's next sequence number
        self._next = 1  # the reader's next sequence number
        self.full = 0  # requests the producer found no free slot for
        # The producer's layout of the last request (see "Speed" above).
        self._xdt: Any = None
        self._xs: Any = None
        self._yt: Any = None
        self._ydt: Any = None
        self._ys: Any = None
        self._ykind = -1
        self._xn = 0  # the input's bytes
        self._yo = 0  # the output's offset in the payload
        self._length = 0  # payload bytes (without a str output's)
        self._pack = _DYNAMIC_Q.pack_into
        self._layout = b""
        self._written: list[bytes] = [b""] * slots  # the _LAYOUT bytes each slot holds
        # Per slot, a view of the bytes its check covers at the layout's fixed length (every
        # output but a non-empty str): made on the slot's first such request, and made anew
        # when _learn changes the length.
        self._checked: list[memoryview | None] = [None] * slots
        self._until = slots  # the producer may write requests up to this one (see _room)

    @classmethod
    def create(cls, slots: int, slot_bytes: int) -> Ring:
        """A new zeroed ring in memory that a spawned process can map (see :meth:`fileno`)."""
        size = _CONTROL + slots * slot_bytes
        fd = _shared_file(size)
        try:
            mm = mmap.mmap(fd, size)
            # Take every page now: else the request path takes a page fault in each slot's
            # first request. In pieces, letting other threads run in between: this runs on a
            # thread of the serving process, and one 4 MiB write would hold the GIL for
            # milliseconds.
            zeros = memoryview(bytes(min(size, PREFAULT_BYTES)))
            for at in range(0, size, len(zeros)):
                n = min(len(zeros), size - at)
                mm[at : at + n] = zeros[:n]
                time.sleep(0)
        except BaseException:
            os.close(fd)
            raise
        return cls(mm, slots, slot_bytes, fd)

    @classmethod
    def attach(cls, fd: int, slots: int, slot_bytes: int) -> Ring:
        """Map the ring behind ``fd`` (received from its creator), then close ``fd``."""
        try:
            mm = mmap.mmap(fd, _CONTROL + slots * slot_bytes)
        finally:
            os.close(fd)
        return cls(mm, slots, slot_bytes)

    def fileno(self) -> int:
        """The mapping's file descriptor, to send to the process that will :meth:`attach`."""
        if self._fd < 0:
            raise ValueError("the ring's file descriptor is closed")
        return self._fd

    def close_fd(self) -> None:
        """Close the file descriptor (the mapping stays)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Unmap the ring here (the memory is freed once no process maps it)."""
        self.close_fd()
        self.slots = self._until = 0  # put and take see an empty ring from now on
        self._checked = []  # views of the mapping, released with it
        with contextlib.suppress(ValueError, BufferError):
            self._view.release()
        self.words = None
        with contextlib.suppress(ValueError, BufferError):
            self._mm.close()

    # -- producer ------------------------------------------------------------------------

    def put(self, x: Any, y: Any, latency: Any, rid: Any) -> bool:
        """Copy one request into the next free slot and publish it; False if it cannot be."""
        # The commonest request, with the fewest steps (right after a model call every step
        # costs): the last request's layout again, with an array output and an int id.
        if (
            type(x) is _ndarray
            and type(y) is _ndarray
            and type(latency) is float
            and type(rid) is int
            and x.dtype is self._xdt
            and y.dtype is self._ydt
            and x.shape == self._xs
            and y.shape == self._ys
        ):
            yb: Any = y
            length, rkind, yv = self._length, 1, 0
        else:
            fields = self._fields(x, y, latency, rid)
            if fields is None:
                return False
            yb, length, rkind, rid, yv = fields
        seq = self._seq
        if seq > self._until and not self._room(seq):
            self.full += 1
            return False
        i = (seq - 1) % self.slots
        at = _CONTROL + i * self.slot_bytes
        a = at + _PAYLOAD
        mm: Any = self._mm  # (typeshed's mmap does not take an ndarray)
        try:
            mm[a : a + self._xn] = x  # ValueError unless C-contiguous
            if yb is not None:
                mm[a + self._yo : a + length] = yb
            self._pack(mm, at + _START, seq, length, rkind, latency, rid, yv)
        except (ValueError, IndexError, BufferError, struct.error):
            return False  # not published: the check below was not written
        layout = self._layout
        if self._written[i] is not layout:
            mm[at + _LAYOUT_AT : at + _PAYLOAD] = layout
            self._written[i] = layout
        if length == self._length:  # every output but a str: the layout's fixed length
            checked = self._checked[i]
            if checked is None:
                checked = self._checked[i] = self._view[at + _START : a + length]
        else:
            checked = self._view[at + _START : a + length]
        self.words[(at >> 3) + 1] = _hash(checked)
        self._seq = seq + 1
        return True

    def _fields(
        self, x: Any, y: Any, latency: Any, rid: Any
    ) -> tuple[Any, int, int, int, Any] | None:
        """For any other request: learn its layout if new; return the output's bytes (or
        None), the payload's length, the id's kind, the id and the output's header value, or
        None when the ring cannot carry the request."""
        if type(x) is not _ndarray or type(latency) is not float:
            return None
        yt = type(y)
        yv: Any = 0
        if yt is _ndarray:
            if (
                x.dtype is not self._xdt
                or y.dtype is not self._ydt
                or x.shape != self._xs
                or y.shape != self._ys
            ) and not self._learn(x, y):
                return None
            yb: Any = y
            length = self._length
        else:
            if (
                yt is not self._yt or x.dtype is not self._xdt or x.shape != self._xs
            ) and not self._learn(x, y):
                return None
            yb = None
            length = self._length
            kind = self._ykind
            if kind == _Y_STR:
                try:
                    yb = y.encode()
                except UnicodeEncodeError:
                    return None
                length += len(yb)
                if length > self._cap:
                    return None
            elif kind == _Y_SCALAR:
                yb = y
            elif kind != _Y_NONE:
                yv = y  # a float, int or bool (an int out of range fails the pack)
        if type(rid) is int:
            return yb, length, 1, rid, yv
        if rid is None:
            return yb, length, 0, 0, yv
        return None

    def _room(self, seq: int) -> bool:
        """Whether request ``seq``'s slot is free; moves ``_until`` on as far as is known.

        Requests are taken in order, so once request ``c`` is taken every slot up to request
        ``c + slots`` is free. Look first at the request half a ring back (in a steady state
        long taken: one look per half turn), then at the slot's own previous request.
        """
        slots, words, size = self.slots, self.words, self.slot_bytes
        if not slots:
            return False
        for c in (seq - 1 - slots // 2, seq - slots):
            if c >= 1 and words[(_CONTROL + (c - 1) % slots * size) >> 3] == c:
                self._until = c + slots
                return True
        return seq <= slots  # the first turn: every slot is free

    def _learn(self, x: Any, y: Any) -> bool:
        """Make (x, y)'s layout the current one; False if the ring cannot carry them."""
        dt = x.dtype
        xcode = _RING_CHARS.get(dt.char)
        xs = x.shape
        if xcode is None or len(xs) > MAX_NDIM or not dt.isnative:
            return False
        yt = type(y)
        ydt: Any = None
        ys: tuple[int, ...] = ()
        ycode = yn = 0
        if yt is _ndarray:
            ydt = y.dtype
            c = _RING_CHARS.get(ydt.char)
            ys = y.shape
            if c is None or len(ys) > MAX_NDIM or not ydt.isnative:
                return False
            ykind, ycode, yn = _Y_ARRAY, c, y.nbytes
        elif yt in _NP_SCALARS:
            ykind, ycode, yn = _Y_SCALAR, _RING_CHARS[y.dtype.char], y.dtype.itemsize
        elif yt in _Y_KINDS:
            ykind = _Y_KINDS[yt]
        else:
            return False
        xn = x.nbytes
        yo = (xn + 7) & -8
        if yo + yn > self._cap or max(xs + ys, default=0) > 0xFFFFFFFF:
            return False
        self._layout = _LAYOUT.pack(
            xcode, len(xs), ykind, ycode, len(ys), *xs, *_PAD[len(xs)], *ys, *_PAD[len(ys)]
        )
        if yo + yn != self._length:  # the checked views cover the old length: new ones
            self._checked = [None] * self.slots
        self._xdt, self._xs, self._yt, self._ydt, self._ys = dt, xs, yt, ydt, ys
        self._ykind, self._xn, self._yo, self._length = ykind, xn, yo, yo + yn
        self._pack = (_DYNAMIC_D if ykind == _Y_FLOAT else _DYNAMIC_Q).pack_into
        return True

    # -- reader --------------------------------------------------------------------------

    def take(self) -> tuple[Any, Any, float, Any] | None:
        """The next published request (its slot released), or None when there is none yet.

        Raises:
            ValueError: for a complete slot that does not decode (its slot is released).
        """
        slots = self.slots
        if not slots:
            return None
        seq = self._next
        at = _CONTROL + (seq - 1) % slots * self.slot_bytes
        words = self.words
        if words[(at >> 3) + 2] != seq:  # the header's seq: not written yet (or torn)
            return None
        length = int.from_bytes(self._view[at + 24 : at + 28], sys.byteorder)
        if length > self._cap:
            return None  # a torn read
        # Our own copy, checked: only what it holds is used from here on.
        data = bytearray(self._view[at + 8 : at + _PAYLOAD + length])
        if _hash(memoryview(data)[8:]) != int.from_bytes(data[:8], sys.byteorder):
            return None  # not completely visible yet: look again on the next poll
        got, n, rkind, latency, rid, yv = _DYNAMIC_Q.unpack_from(data, _START - 8)
        if got != seq or n != length:
            return None
        words[at >> 3] = seq  # release the slot: the producer may reuse it
        self._next = seq + 1
        return _decode_slot(data, length, latency, rid if rkind else None, yv)

    @property
    def published(self) -> int:
        """Requests this producer has published."""
        return self._seq - 1

    def unconsumed(self) -> int:
        """Requests published by this producer that the reader has not taken (yet)."""
        words, slots, n = self.words, self.slots, 0
        for seq in range(max(1, self._seq - slots), self._seq):
            at = _CONTROL + (seq - 1) % slots * self.slot_bytes
            n += words[at >> 3] != seq
        return n


def _decode_slot(
    data: bytearray, length: int, latency: float, rid: Any, yv: int
) -> tuple[Any, Any, float, Any]:
    """(x, y, latency, rid) from a checked copy of a slot (its bytes from offset 8)."""
    xcode, xnd, ykind, ycode, ynd, *shapes = _LAYOUT.unpack_from(data, _LAYOUT_AT - 8)
    xs, ys = tuple(shapes[:xnd]), tuple(shapes[4 : 4 + ynd])
    start = _PAYLOAD - 8
    x = np.frombuffer(data, dtype=chr(xcode), count=math.prod(xs), offset=start).reshape(xs)
    yo = start + ((x.nbytes + 7) & -8)
    y: Any
    if ykind == _Y_ARRAY:
        y = np.frombuffer(data, dtype=chr(ycode), count=math.prod(ys), offset=yo).reshape(ys)
    elif ykind == _Y_SCALAR:
        y = np.frombuffer(data, dtype=chr(ycode), count=1, offset=yo)[0]
    elif ykind == _Y_FLOAT:
        (y,) = _FLOAT.unpack_from(data, _START - 8 + _DYNAMIC_Q.size - 8)
    elif ykind == _Y_STR:
        y = bytes(data[yo : start + length]).decode()
    elif ykind == _Y_INT:
        y = yv
    elif ykind == _Y_BOOL:
        y = bool(yv)
    elif ykind == _Y_NONE:
        y = None
    else:
        raise ValueError(f"unknown output kind {ykind!r}")
    return x, y, latency, rid


_FLOAT: Final = struct.Struct("=d")


# -- the wire format of one request ---------------------------------------------------------

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


_BATCH: Final = b"B"
_ROWS: Final = struct.Struct("=I")


class BatchRows:
    """The rows of a batch as the worker receives them: ``args`` is (X, Y, latency, ids)."""

    __slots__ = ("args",)

    def __init__(self, args: tuple[Any, Any, float, Any]) -> None:
        self.args = args


def encode_batch(X: Any, Y: Any, latency: float, ids: Any) -> bytes:
    """A batch's rows as one datagram: a flag, the row count, then as :func:`encode` does.

    >>> X = np.arange(6.0).reshape(3, 2)
    >>> back = decode_batch(encode_batch(X, ["a", "b", "c"], 0.001, np.arange(3)))
    >>> bool((back.args[0] == X).all()), back.args[1:3], back.args[3].tolist()
    (True, (['a', 'b', 'c'], 0.001), [0, 1, 2])
    """
    head = _BATCH + _ROWS.pack(len(X))
    try:
        px, ax = _plain(X)
        py, ay = _plain(Y)
        pi, ai = _plain(ids)
        if type(latency) is float:
            flags = ax | ay << 1 | ai << 2
            return head + _MARSHAL + marshal.dumps((flags, px, py, latency, pi))
    except TypeError:  # numpy scalars, user objects, nested containers: pickle
        pass
    return head + _PICKLE + pickle.dumps((0, X, Y, latency, ids), pickle.HIGHEST_PROTOCOL)


def batch_rows(data: bytes | memoryview) -> int:
    """The row count of a datagram made by :func:`encode_batch`."""
    (rows,) = _ROWS.unpack_from(data, 1)
    return int(rows)


def decode_batch(data: bytes | memoryview) -> BatchRows:
    """The inverse of :func:`encode_batch`; ValueError unless every part has a row each."""
    rows = batch_rows(data)
    body = memoryview(data)[1 + _ROWS.size :]
    loads = marshal.loads if body[:1] == _MARSHAL else pickle.loads
    flags, X, Y, latency, ids = loads(body[1:])
    if flags & 1:
        X = _array(X)
    if flags & 2:
        Y = _array(Y)
    if flags & 4:
        ids = _array(ids)
    if len(X) != rows or len(Y) != rows or (ids is not None and len(ids) != rows):
        raise ValueError(f"a batch datagram of {rows} rows holds parts of other lengths")
    return BatchRows((X, Y, latency, ids))


def cut_start(k: int, rows: int) -> int:
    """The row from which the ``k``-th batch of ``rows`` rows is cut into pieces: spread over
    the rows for any ``rows`` (a multiple of the golden ratio's fraction, modulo 1).

    >>> [cut_start(k, 250) for k in range(1, 6)]
    [154, 59, 213, 118, 22]
    """
    return int((k * _GOLDEN) % 1.0 * rows)


def batch_datagrams(
    X: Any,
    Y: Any,
    latency: float,
    ids: Any,
    max_rows: int,
    max_bytes: int = BATCH_BYTES,
    start: int = 0,
) -> Iterator[tuple[int, bytes | None]]:
    """(rows, datagram) pieces of a batch, each of at most ``max_rows`` rows and, when rows
    allow, ``max_bytes``; None for a piece that cannot be encoded. A batch that needs several
    pieces is cut from row ``start`` to the end, then the rows before ``start``."""

    def piece(lo: int, hi: int) -> bytes | None:
        try:
            return encode_batch(X[lo:hi], Y[lo:hi], latency, None if ids is None else ids[lo:hi])
        except BaseException:
            return None

    m = len(X)
    step = min(m, max_rows)
    while True:  # the rows per piece, from the first rows' size
        data = piece(0, step)
        if data is None or len(data) <= max_bytes or step == 1:
            break
        step = max(1, step * max_bytes // len(data))
    if step >= m:
        yield m, data
        return
    start %= m
    for lo, end in ((start, m), (0, start)):
        while lo < end:
            hi = min(end, lo + step)
            data = piece(lo, hi)
            if data is not None and len(data) > max_bytes and hi - lo > 1:
                step = max(1, (hi - lo) * max_bytes // len(data))  # larger rows here: finer
                continue
            yield hi - lo, data
            lo = hi


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

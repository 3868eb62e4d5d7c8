"""A traffic simulator that drives a real Router under a FakeClock."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import attrs
import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError, DataError, TransitionError
from ._clock import FakeClock

__all__ = ["SimulationResult", "SimulationTick", "TrafficSimulator"]

Features = Callable[[np.random.Generator, int], NDArray[Any]]
Outcome = Callable[[Any, Any, str, np.random.Generator], float | None]
Delay = Callable[[np.random.Generator], float]
Repeat = Literal["zipf", "uniform"]

#: Requests generated at once (arrival gaps, users and features are drawn in such chunks, so
#: the traffic of a seed does not depend on the batch size or the tick interval).
_CHUNK = 4096
_NO_LIMIT = 2**62


@attrs.frozen
class SimulationTick:
    """The router's state at one tick of a simulation, as plain data.

    Attributes:
        time: Simulated time of the tick.
        requests: Requests sent so far in this run.
        weights: Percent of traffic per variant after the tick's evaluation.
        version: The routing-table version after the tick's evaluation.
        outcomes: Outcomes delivered so far in this run.
        decision: What ``router.evaluate()`` returned at this tick (None without it).

    >>> from safeserve.testing import SimulationTick
    >>> SimulationTick(time=1.5, requests=1000, weights={"v1": 95.0, "v2": 5.0}, version=1,
    ...                outcomes=0).requests
    1000
    """

    time: float
    requests: int
    weights: dict[str, float]
    version: int
    outcomes: int
    decision: Any = None


@attrs.frozen
class SimulationResult:
    """What one :meth:`TrafficSimulator.run` did, as plain data (this run only).

    Attributes:
        requests: Requests sent to the router.
        seconds: Simulated seconds the run spanned.
        start: Simulated time at the start of the run.
        end: Simulated time at the end of the run.
        stop_reason: ``"requests"``, ``"seconds"`` or ``"until"``.
        per_variant: Requests per variant the router routed them to (intention to treat:
            a request that fell back to the baseline counts for the variant it was routed to).
        fallbacks: Requests per variant that the baseline answered in its place.
        exposed: Distinct users per variant served (or routed) by it.
        users: Distinct users who sent a request.
        raised: Requests whose exception came out of the router (counted, then skipped).
        outcomes_sent: Outcomes queued for delayed delivery.
        outcomes_delivered: Outcomes passed to ``router.record_outcome``.
        outcomes_pending: Outcomes still queued at the end of the run (a later ``run`` or
            :meth:`TrafficSimulator.drain` delivers them).
        outcome_results: Delivered outcomes by the router's verdict (``ACCEPTED``, ``LATE``..).
        outcome_counts: Accepted outcomes per variant.
        outcome_sums: Sum of the accepted outcome values per variant.
        ticks: Snapshots at the ticks, oldest first; evenly thinned to at most ``max_ticks``.
        tick_stride: Ticks per kept snapshot (1 unless the list was thinned).

    >>> import safeserve as ss
    >>> from safeserve.testing import FakeClock, TrafficSimulator
    >>> clock = FakeClock()
    >>> router = ss.Router({"v1": lambda x: 0.0}, clock=clock)
    >>> result = TrafficSimulator(router, clock=clock, rate=10.0).run(seconds=60.0)
    >>> result.stop_reason, result.seconds, result.requests, len(result.ticks)
    ('seconds', 60.0, 617, 0)
    """

    requests: int
    seconds: float
    start: float
    end: float
    stop_reason: str
    per_variant: dict[str, int]
    fallbacks: dict[str, int]
    exposed: dict[str, int]
    users: int
    raised: int
    outcomes_sent: int
    outcomes_delivered: int
    outcomes_pending: int
    outcome_results: dict[str, int]
    outcome_counts: dict[str, int]
    outcome_sums: dict[str, float]
    ticks: tuple[SimulationTick, ...]
    tick_stride: int

    @property
    def rate(self) -> float:
        """Requests per simulated second over the run (``nan`` for a zero-length run)."""
        return self.requests / self.seconds if self.seconds > 0 else math.nan


SimulationTick.__module__ = "safeserve.testing"
SimulationResult.__module__ = "safeserve.testing"


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_float(name: str, value: object, *, zero_ok: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and (v >= 0.0 if zero_ok else v > 0.0)):
        raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
    return v


class _Source:
    """Arrival gaps, user ids and feature rows, drawn in fixed chunks from three streams."""

    def __init__(
        self,
        seeds: list[np.random.SeedSequence],
        *,
        rate: float,
        cdf: NDArray[np.float64] | None,
        users: int,
        features: Features | int,
    ) -> None:
        self._gaps = np.random.default_rng(seeds[0])
        self._users = np.random.default_rng(seeds[1])
        self._features = np.random.default_rng(seeds[2])
        self._scale = 1.0 / rate
        self._cdf = cdf
        self._n_users = users
        self._make = features
        self._pieces: list[tuple[NDArray[np.float64], NDArray[np.int64], NDArray[Any]]] = []

    def _chunk(self) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[Any]]:
        n = _CHUNK
        gaps = self._gaps.exponential(self._scale, n)
        if self._cdf is None:
            users = self._users.integers(0, self._n_users, n, dtype=np.int64)
        else:
            users = np.searchsorted(self._cdf, self._users.random(n), side="right")
            users = np.minimum(users, self._n_users - 1).astype(np.int64)
        make = self._make
        if isinstance(make, int):
            X: NDArray[Any] = self._features.standard_normal((n, make))
        else:
            X = make(self._features, n)
            if not isinstance(X, np.ndarray) or X.ndim < 1 or X.shape[0] != n:
                shape = getattr(X, "shape", type(X).__name__)
                raise DataError(f"features(rng, {n}) must return an array of {n} rows, got {shape}")
        return gaps, users, X

    def take(self, n: int) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[Any]]:
        """Return the next ``n`` requests' gaps, users and features."""
        parts = []
        need = n
        while need:
            if not self._pieces:
                self._pieces.append(self._chunk())
            g, u, X = self._pieces[0]
            if len(g) <= need:
                parts.append(self._pieces.pop(0))
                need -= len(g)
            else:
                parts.append((g[:need], u[:need], X[:need]))
                self._pieces[0] = (g[need:], u[need:], X[need:])
                need = 0
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )

    def unread(self, g: NDArray[np.float64], u: NDArray[np.int64], X: NDArray[Any]) -> None:
        """Put requests back, to be returned first by the next :meth:`take`."""
        if len(g):
            self._pieces.insert(0, (g, u, X))


class _Run:
    """Mutable tallies of one run."""

    def __init__(self) -> None:
        self.requests = 0
        self.raised = 0
        self.sent = 0
        self.delivered = 0
        self.results: Counter[str] = Counter()
        self.ticks: list[SimulationTick] = []
        self.stride = 1
        self.tick_index = 0
        self.evaluate: Callable[[], Any] | None = None


class TrafficSimulator:
    """Drive a real :class:`safeserve.Router` with simulated users under a :class:`FakeClock`.

    Requests arrive as a Poisson process of ``rate`` per simulated second. Each comes from one
    of ``users`` users (the user's int id is the routing key), drawn with realistic repeat
    visits: with ``repeat_visits="zipf"`` user ``k`` (counting from 0) visits with probability
    proportional to ``(k + 1) ** -exponent``, so a few users come back often and many come
    once; ``"uniform"`` draws every user alike. Each request carries a feature row.

    For each answered request, ``outcome(x, y, variant, rng)`` may return a delayed outcome
    (a conversion, a fraud label, revenue) or None; it is queued to arrive ``outcome_delay``
    simulated seconds later and delivered with ``router.record_outcome`` once the clock has
    passed it. Every ``tick_every`` requests the simulator calls ``router.evaluate()`` (when the
    router has it), takes a snapshot and calls the hooks.

    Arrival gaps, users and features come from their own seeded streams, drawn in fixed
    chunks, so a seed gives the same traffic whatever the models, the batch size or the
    outcome function; outcomes and delays come from a fourth and fifth stream. Two simulators
    built alike give identical results.

    The simulator serves one request at a time (or one batch): latency injected under the
    fake clock moves simulated time, and requests that arrived meanwhile are served after it.
    It is not thread-safe; drive it from one thread.

    Args:
        router: The router to drive; it must use ``clock``.
        clock: The :class:`FakeClock` the router (and any fault injector) reads.
        users: Number of distinct users.
        repeat_visits: ``"zipf"`` or ``"uniform"``.
        exponent: The Zipf exponent ``s`` (0 is uniform). The default 0.6 gives, among
            10,000 users, about 1% of all requests to the most frequent user; the classic
            ``s = 1`` gives that user 10%, which makes each variant's share of *requests*
            swing widely (a 5% canary gets 5% of users but anywhere from 0% to 11% of the
            requests), as it does in a real service with a few very heavy users.
        features: ``features(rng, n) -> array of n rows``, or an int ``d`` for ``d`` standard
            normal features per request.
        rate: Mean requests per simulated second.
        outcome: ``outcome(x, y, variant, rng) -> float | None``: the delayed outcome of one
            request. In batch mode, if it has a ``batch(X, Y, variants, rng)`` attribute
            returning one float per row (NaN: no outcome), that is called once per batch.
        outcome_delay: Seconds until an outcome arrives: a number is the mean of an
            exponential delay; or ``delay(rng) -> seconds``.
        outcome_name: The name outcomes are recorded under.
        seed: Seed of every random stream.
        batch: Send requests in batches of this size with ``router.route_batch`` (much faster;
            a batch is served at its last request's arrival time). None: one by one with
            ``router.route``.
        max_ticks: Tick snapshots kept per run (evenly thinned beyond that).

    Raises:
        ConfigError: for a bad option.

    >>> import safeserve as ss
    >>> from safeserve.testing import FakeClock, TrafficSimulator
    >>> clock = FakeClock()
    >>> router = ss.Router(
    ...     {"v1": lambda x: float(x.sum() > 0), "v2": lambda x: float(x.sum() > 0)},
    ...     strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
    ...     clock=clock,
    ... )
    >>> sim = TrafficSimulator(router, clock=clock, rate=50.0, users=1000,
    ...                        outcome=lambda x, y, v, rng: y, outcome_delay=2.0)
    >>> result = sim.run(5000)
    >>> result.requests, round(result.seconds), result.per_variant
    (5000, 99, {'v1': 2463, 'v2': 2537})
    >>> result.users < 5000, result.outcomes_pending, sim.drain(), sim.pending
    (True, 106, 106, 0)
    """

    def __init__(
        self,
        router: Any,
        *,
        clock: FakeClock,
        users: int = 10_000,
        repeat_visits: Repeat = "zipf",
        exponent: float = 0.6,
        features: Features | int = 4,
        rate: float = 100.0,
        outcome: Outcome | None = None,
        outcome_delay: float | Delay = 30.0,
        outcome_name: str = "converted",
        seed: int = 0,
        batch: int | None = None,
        max_ticks: int = 1000,
    ) -> None:
        if not callable(getattr(router, "route", None)):
            raise ConfigError(f"router must be a safeserve.Router, got {router!r}")
        if not isinstance(clock, FakeClock):
            raise ConfigError(f"clock must be a FakeClock (the router's), got {clock!r}")
        self._n_users = _positive_int("users", users)
        if repeat_visits not in ("zipf", "uniform"):
            raise ConfigError(f"repeat_visits must be 'zipf' or 'uniform', got {repeat_visits!r}")
        self.exponent = _positive_float("exponent", exponent, zero_ok=True)
        if not callable(features):
            features = _positive_int("features", features)
        self.rate = _positive_float("rate", rate)
        if outcome is not None and not callable(outcome):
            raise ConfigError(f"outcome must be callable, got {outcome!r}")
        if not callable(outcome_delay):
            outcome_delay = _positive_float("outcome_delay", outcome_delay, zero_ok=True)
        if not isinstance(outcome_name, str) or not outcome_name:
            raise ConfigError(f"outcome_name must be a non-empty str, got {outcome_name!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
        self._batch = None if batch is None else _positive_int("batch", batch)
        self._max_ticks = _positive_int("max_ticks", max_ticks)
        self.router = router
        self.clock = clock
        self.repeat_visits = repeat_visits
        self.outcome = outcome
        self.outcome_delay = outcome_delay
        self.outcome_name = outcome_name
        self.seed = seed
        cdf: NDArray[np.float64] | None = None
        if repeat_visits == "zipf" and self.exponent > 0:
            weights = np.arange(1, self._n_users + 1, dtype=np.float64) ** -self.exponent
            cdf = np.cumsum(weights)
            cdf /= cdf[-1]
        seeds = np.random.SeedSequence(seed).spawn(5)
        self._source = _Source(
            seeds[:3], rate=self.rate, cdf=cdf, users=self._n_users, features=features
        )
        self._outcome_rng = np.random.default_rng(seeds[3])
        self._delay_rng = np.random.default_rng(seeds[4])
        self._last_arrival = clock()
        self._heap: list[tuple[float, int, float, int]] = []
        self._variants: dict[str, int] = {}
        self._names: list[str] = []
        self._exposed: list[NDArray[np.bool_]] = []
        # Per-run tallies (reset by run()); index = variant index.
        self._run_exposed: list[NDArray[np.bool_]] = []
        self._run_seen = np.zeros(self._n_users, dtype=np.bool_)
        self._run_routed: list[int] = []
        self._run_fallbacks: list[int] = []
        self._run_counts: list[int] = []
        self._run_sums: list[float] = []
        self._lifetime_requests = 0

    # -- public helpers ------------------------------------------------------------------

    @property
    def users(self) -> int:
        """The number of distinct users in the population."""
        return self._n_users

    @property
    def pending(self) -> int:
        """Outcomes queued and not yet delivered."""
        return len(self._heap)

    @property
    def requests(self) -> int:
        """Requests sent over the simulator's lifetime (every run)."""
        return self._lifetime_requests

    def exposed_users(self, variant: str) -> NDArray[np.int64]:
        """Return the ids of every user served by ``variant`` so far, over all runs, sorted.

        Diffing two calls tells which users a fault reached between them (a drill's
        "users exposed to the faulty candidate").

        Raises:
            ConfigError: for a variant that served no request yet and is not a router variant.
        """
        j = self._variants.get(variant)
        if j is None:
            if variant in getattr(self.router, "weights", {}):
                return np.empty(0, dtype=np.int64)
            raise ConfigError(f"unknown variant {variant!r}; seen: {self._names!r}")
        return np.flatnonzero(self._exposed[j]).astype(np.int64)

    def drain(self) -> int:
        """Deliver every pending outcome, advancing the clock to each one's due time.

        Returns:
            The number of outcomes delivered.
        """
        run = _Run()
        while self._heap:
            due = self._heap[0][0]
            if due > self.clock():
                self.clock.set(due)
            self._deliver(run, due)
        return run.delivered

    # -- the run -------------------------------------------------------------------------

    def run(
        self,
        requests: int | None = None,
        *,
        seconds: float | None = None,
        until: Callable[[Any], bool] | None = None,
        on_tick: Callable[[SimulationTick], None] | None = None,
        tick_every: int = 1000,
    ) -> SimulationResult:
        """Send traffic until ``requests`` are sent, ``seconds`` have passed, or ``until``.

        Simulated time moves to each arrival; due outcomes are delivered before the next
        request is served. Every ``tick_every`` requests: ``router.evaluate()`` runs if the
        router has it, a :class:`SimulationTick` is taken, ``on_tick(tick)`` is called, then
        the run stops if ``until(router)`` is true. A later ``run`` continues the same traffic.
        A router without a rollout (no strategy, or a fixed split) raises
        :class:`safeserve.TransitionError` from ``evaluate()``; the run then stops calling it.

        Args:
            requests: Stop after this many requests.
            seconds: Stop after this many simulated seconds (the clock ends exactly there).
            until: ``until(router) -> bool``, checked at every tick.
            on_tick: Called with each tick's snapshot.
            tick_every: Requests between ticks (in batch mode, a tick falls after the batch
                that reaches it; batches are cut so they never straddle a tick).

        Returns:
            A :class:`SimulationResult` for this run.

        Raises:
            ConfigError: when neither ``requests`` nor ``seconds`` bounds the run, or for a
                bad argument.
            DataError: when ``features``, ``outcome`` or ``outcome_delay`` return bad values.
        """
        if requests is None and seconds is None:
            raise ConfigError("run() needs requests= or seconds= to bound the run")
        limit = _NO_LIMIT if requests is None else _positive_int("requests", requests)
        span = math.inf if seconds is None else _positive_float("seconds", seconds)
        tick_every = _positive_int("tick_every", tick_every)
        for name, fn in (("until", until), ("on_tick", on_tick)):
            if fn is not None and not callable(fn):
                raise ConfigError(f"{name} must be callable, got {fn!r}")
        clock = self.clock
        start = clock()
        end_time = start + span
        self._last_arrival = max(self._last_arrival, start)
        self._reset_run()
        run = _Run()
        run.evaluate = getattr(self.router, "evaluate", None)
        stop_reason = "requests"
        while run.requests < limit:
            next_tick = (run.requests // tick_every + 1) * tick_every
            m = min(_CHUNK, limit - run.requests, next_tick - run.requests)
            gaps, users, X = self._source.take(m)
            times = self._last_arrival + np.cumsum(gaps)
            if times[-1] > end_time:
                keep = int(np.searchsorted(times, end_time, side="right"))
                self._source.unread(gaps[keep:], users[keep:], X[keep:])
                gaps, users, X, times = gaps[:keep], users[:keep], X[:keep], times[:keep]
                stop_reason = "seconds"
            if len(times):
                self._last_arrival = float(times[-1])
                if self._batch is None:
                    self._serve_one_by_one(run, times, users, X)
                else:
                    self._serve_batches(run, times, users, X)
            if stop_reason == "seconds":
                break
            if run.requests == next_tick:
                self._tick(run, on_tick)
                if until is not None and until(self.router):
                    stop_reason = "until"
                    break
        if stop_reason == "seconds":
            if end_time > clock():
                clock.set(end_time)
            self._last_arrival = max(self._last_arrival, end_time)
            self._deliver(run, clock())
        self._lifetime_requests += run.requests
        return self._result(run, start, stop_reason)

    # -- internals -----------------------------------------------------------------------

    def _variant(self, name: str) -> int:
        j = self._variants.get(name)
        if j is None:
            j = self._variants[name] = len(self._names)
            self._names.append(name)
            self._exposed.append(np.zeros(self._n_users, dtype=np.bool_))
            self._run_exposed.append(np.zeros(self._n_users, dtype=np.bool_))
            self._run_routed.append(0)
            self._run_fallbacks.append(0)
            self._run_counts.append(0)
            self._run_sums.append(0.0)
        return j

    def _reset_run(self) -> None:
        for name in getattr(self.router, "weights", {}):
            self._variant(name)
        for arr in self._run_exposed:
            arr[:] = False
        self._run_seen[:] = False
        n = len(self._names)
        self._run_routed = [0] * n
        self._run_fallbacks = [0] * n
        self._run_counts = [0] * n
        self._run_sums = [0.0] * n

    def _expose(self, users: NDArray[np.int64], vidx: NDArray[np.int64]) -> None:
        """Mark who was served by which variant (``vidx`` is -1 where the router raised)."""
        self._run_seen[users] = True
        counts = np.bincount(vidx[vidx >= 0], minlength=len(self._names))
        for j in np.flatnonzero(counts).tolist():
            who = users[vidx == j]
            self._exposed[j][who] = True
            self._run_exposed[j][who] = True
            self._run_routed[j] += int(counts[j])

    def _delay(self) -> float:
        d = self.outcome_delay
        if not callable(d):
            return float(self._delay_rng.exponential(d)) if d > 0 else 0.0
        v = d(self._delay_rng)
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
            raise DataError(f"outcome_delay(rng) must return seconds, got {v!r}")
        f = float(v)
        if not (math.isfinite(f) and f >= 0.0):
            raise DataError(f"outcome_delay(rng) must return seconds >= 0, got {v!r}")
        return f

    def _queue(self, run: _Run, now: float, rid: int, value: Any, j: int) -> None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise DataError(f"outcome() must return a number or None, got {value!r}") from None
        heapq.heappush(self._heap, (now + self._delay(), rid, v, j))
        run.sent += 1

    def _deliver(self, run: _Run, now: float) -> None:
        heap = self._heap
        record = self.router.record_outcome
        name = self.outcome_name
        counts, sums = self._run_counts, self._run_sums
        while heap and heap[0][0] <= now:
            _, rid, value, j = heapq.heappop(heap)
            result = record(rid, name, value)
            verdict = getattr(result, "name", str(result))
            run.results[verdict] += 1
            run.delivered += 1
            if verdict == "ACCEPTED":
                counts[j] += 1
                sums[j] += value

    def _serve_one_by_one(
        self,
        run: _Run,
        times: NDArray[np.float64],
        users: NDArray[np.int64],
        X: NDArray[Any],
    ) -> None:
        clock = self.clock
        heap = self._heap
        route = self.router.route
        outcome = self.outcome
        orng = self._outcome_rng
        index = self._variants
        fallbacks = self._run_fallbacks
        vidx = np.full(len(times), -1, dtype=np.int64)
        for i, (t, u) in enumerate(zip(times.tolist(), users.tolist(), strict=True)):
            now = clock()
            if t > now:
                clock.set(t)
                now = t
            if heap and heap[0][0] <= now:
                self._deliver(run, now)
            x = X[i]
            try:
                r = route(x, key=u)
            except Exception:
                run.raised += 1
                continue
            name = r.variant
            j = index.get(name)
            if j is None:
                j = self._variant(name)  # appends to the lists aliased above
            vidx[i] = j
            if r.fallback:
                fallbacks[j] += 1
            if outcome is not None:
                value = outcome(x, r.value, name, orng)
                if value is not None:
                    self._queue(run, now, r.request_id, value, j)
        run.requests += len(times)
        self._expose(users, vidx)

    def _serve_batches(
        self,
        run: _Run,
        times: NDArray[np.float64],
        users: NDArray[np.int64],
        X: NDArray[Any],
    ) -> None:
        assert self._batch is not None
        clock = self.clock
        route_batch = self.router.route_batch
        outcome = self.outcome
        vectorized = getattr(outcome, "batch", None)
        n = len(times)
        vidx = np.full(n, -1, dtype=np.int64)
        for b0 in range(0, n, self._batch):
            b1 = min(b0 + self._batch, n)
            t = float(times[b1 - 1])
            now = clock()
            if t > now:
                clock.set(t)
                now = t
            if self._heap and self._heap[0][0] <= now:
                self._deliver(run, now)
            Xb = X[b0:b1]
            try:
                rb = route_batch(Xb, keys=users[b0:b1])
            except Exception:
                run.raised += b1 - b0
                continue
            uniq, inverse = np.unique(np.asarray(rb.variants), return_inverse=True)
            lut = np.array([self._variant(str(v)) for v in uniq.tolist()], dtype=np.int64)
            jb = lut[inverse.reshape(-1)]
            vidx[b0:b1] = jb
            fb = np.asarray(rb.fallback, dtype=bool)
            if fb.any():
                for j, c in enumerate(np.bincount(jb[fb], minlength=len(self._names)).tolist()):
                    self._run_fallbacks[j] += c
            if outcome is None:
                continue
            names = np.asarray(rb.variants)
            ids = np.asarray(rb.request_ids).tolist()
            values = rb.values
            if vectorized is not None:
                out = np.asarray(vectorized(Xb, values, names, self._outcome_rng), dtype=float)
                if out.shape != (b1 - b0,):
                    raise DataError(
                        f"outcome.batch() must return {b1 - b0} floats, got shape {out.shape}"
                    )
                for k in np.flatnonzero(~np.isnan(out)).tolist():
                    self._queue(run, now, ids[k], out[k], int(jb[k]))
            else:
                for k in range(b1 - b0):
                    value = outcome(Xb[k], values[k], str(names[k]), self._outcome_rng)
                    if value is not None:
                        self._queue(run, now, ids[k], value, int(jb[k]))
        run.requests += n
        self._expose(users, vidx)

    def _tick(self, run: _Run, on_tick: Callable[[SimulationTick], None] | None) -> None:
        decision = None
        if run.evaluate is not None:
            try:
                decision = run.evaluate()
            except TransitionError:
                run.evaluate = None  # no rollout to judge (e.g. a FixedSplit): stop asking
        router = self.router
        tick = SimulationTick(
            time=self.clock(),
            requests=run.requests,
            weights=dict(getattr(router, "weights", {})),
            version=int(getattr(router, "version", 0)),
            outcomes=run.delivered,
            decision=decision,
        )
        if run.tick_index % run.stride == 0:
            run.ticks.append(tick)
            if len(run.ticks) > self._max_ticks:
                run.ticks = run.ticks[::2]
                run.stride *= 2
        run.tick_index += 1
        if on_tick is not None:
            on_tick(tick)

    def _result(self, run: _Run, start: float, stop_reason: str) -> SimulationResult:
        end = self.clock()
        names = self._names
        return SimulationResult(
            requests=run.requests,
            seconds=end - start,
            start=start,
            end=end,
            stop_reason=stop_reason,
            per_variant=dict(zip(names, self._run_routed, strict=True)),
            fallbacks=dict(zip(names, self._run_fallbacks, strict=True)),
            exposed={n: int(a.sum()) for n, a in zip(names, self._run_exposed, strict=True)},
            users=int(self._run_seen.sum()),
            raised=run.raised,
            outcomes_sent=run.sent,
            outcomes_delivered=run.delivered,
            outcomes_pending=len(self._heap),
            outcome_results=dict(sorted(run.results.items())),
            outcome_counts=dict(zip(names, self._run_counts, strict=True)),
            outcome_sums=dict(zip(names, self._run_sums, strict=True)),
            ticks=tuple(run.ticks),
            tick_stride=run.stride,
        )

    def __repr__(self) -> str:
        return (
            f"<TrafficSimulator users={self._n_users} rate={self.rate:g}/s "
            f"{self.repeat_visits} requests={self._lifetime_requests} pending={self.pending} "
            f"t={self.clock()!r}>"
        )


TrafficSimulator.__module__ = "safeserve.testing"

"""The Router: per request, pick a variant by hash, call it, count what happened."""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import attrs
import numpy as np
import structlog
import xxhash
from numpy.typing import NDArray

from ._allocation import Allocation
from ._errors import ConfigError, InvalidOutputError, TransitionError
from ._hashing import BUCKETS, HASH_VERSION, Key, buckets_of, key_bytes, salt_seed
from ._rollout import Phase, Rollout
from ._shadow import ShadowMirror, ShadowReport
from .drift import DriftMonitor
from .metrics import MetricsSnapshot, Recorder, TimeWindow, record_code
from .policy import Decision, Policy
from .strategies import BlueGreen, Canary, Pipeline, Shadow, Strategy

__all__ = ["Routed", "RoutedBatch", "Router", "Status"]

_xxh3 = xxhash.xxh3_64_intdigest
_new_tuple = tuple.__new__
_log = structlog.get_logger("safeserve")

# Record status codes (see safeserve.metrics.Status).
_OK, _ERROR, _INVALID = 0, 1, 2

#: How many requests go by between two automatic flushes of the metric buffer.
FLUSH_EVERY = 4096
#: Most seconds the router leaves a record in the metric buffer past its request (fewer for
#: an outcome_ttl under 100 s: a hundredth of it).
FLUSH_SECONDS = 1.0

Model = Callable[[Any], Any]
Validator = Callable[[Any], bool]
OverrideFn = Callable[[Key | None, Any], str | None]


class Routed(NamedTuple):
    """What :meth:`Router.route` returns.

    Attributes:
        value: The answer returned to the caller.
        variant: The variant the key was routed to. Delayed outcomes are attributed to it
            (intention to treat), even when ``fallback`` is true.
        request_id: Pass it to :meth:`Router.record_outcome` to join a delayed outcome.
        fallback: True when the variant failed and the baseline answered instead.
        version: The routing-table version that made the decision.
    """

    value: Any
    variant: str
    request_id: int
    fallback: bool = False
    version: int = 0


class RoutedBatch(NamedTuple):
    """What :meth:`Router.route_batch` returns: values, variants and ids in input order."""

    values: Any
    variants: NDArray[np.str_]
    request_ids: NDArray[np.int64]
    fallback: NDArray[np.bool_]
    version: int


@attrs.frozen
class Status:
    """A point-in-time view of a router, as plain data.

    Attributes:
        name: The rollout's name.
        phase: The rollout phase.
        version: The routing-table version (grows by one per change).
        weights: Percent of traffic per variant.
        step: Index of the current step, or None when the strategy has no steps.
        decisions: The recent decisions, oldest first.
        metrics: The per-variant metric windows.
        keyless: Requests that came without a key (random bucket, counted apart).
        stable: The variant that is the stable version now (the candidate once promoted).
        shadow: The shadow comparison while a shadow phase runs, else None.
        evaluation_errors: Automatic evaluations that raised on a request's thread (each
            logged as ``safeserve.evaluation_failed``; the request itself was served). Not 0
            means the rollout is not being judged: look at the log.
    """

    name: str
    phase: Phase
    version: int
    weights: dict[str, float]
    step: int | None
    decisions: tuple[Any, ...]
    metrics: MetricsSnapshot
    keyless: int
    stable: str
    shadow: ShadowReport | None = None
    evaluation_errors: int = 0


Status.__module__ = "safeserve"


@attrs.frozen(eq=False)
class _Snapshot:
    """The immutable routing table that the request path reads with one attribute access."""

    version: int
    allocation: Allocation
    seed: int
    table: tuple[int, ...]
    names: tuple[str, ...]
    models: tuple[Model, ...]
    validators: tuple[Validator | None, ...]
    fallback: bool
    override_keys: Mapping[Hashable, int] | None
    override_fn: OverrideFn | None
    observe: Callable[[Any, int], None] | None = None
    mirror: ShadowMirror | None = None
    #: Variants that overrides may not force (a rolled-back candidate, a released baseline).
    blocked: frozenset[int] = frozenset()
    plain: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # True when no override is configured: the request path then skips those lookups.
        object.__setattr__(self, "plain", self.override_keys is None and self.override_fn is None)


def _check_validator(name: str, v: object) -> Validator | None:
    if v is None or callable(v):
        return v
    raise ConfigError(f"validator for {name!r} must be callable, got {v!r}")


class Router:
    """Route each request to one version of a model and count what happened.

    Args:
        models: Variant name -> callable taking one input (``predict``) or a batch
            (``predict_batch``) and returning the output.
        strategy: How traffic is split, e.g. :class:`safeserve.Canary`. Without one, every
            request goes to the first model.
        clock: A callable returning seconds that never go back; ``time.perf_counter`` by
            default. Inject a fake clock to make tests deterministic. A recorder passed in is
            flushed when the router is made, and then flushed on this clock's time (see
            :attr:`~safeserve.metrics.Recorder.flush_within`).
        name: The rollout's name (in logs and status).
        salt: The hash salt; by default ``name``. Changing it reshuffles every user.
        fallback: When a candidate raises or its output fails validation, answer with the
            baseline (the error is counted either way). With ``False`` the exception propagates.
        validators: Variant name -> ``validator(output) -> bool``; a rejected output counts as
            an error (see :func:`safeserve.is_finite`, :func:`safeserve.has_shape`).
        overrides: Key -> variant: these keys always get that variant (internal testers).
            Counted apart and kept out of the statistics.
        override: ``override(key, x) -> variant name or None``: a predicate form of
            ``overrides``, consulted after the key map, at most once per request (also for
            a request routed again because the evaluation it ran moved the weights). Neither
            form forces a rolled-back candidate (the request then routes as if not forced).
        seed: Seed of the generator that buckets keyless requests.
        recorder: The metric recorder; one is built from ``clock`` when omitted.

    >>> import safeserve as ss
    >>> router = ss.Router(
    ...     {"v1": lambda x: x * 2, "v2": lambda x: x * 2 + 0.001},
    ...     strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
    ... )
    >>> router.predict(10, key="user-4")
    20
    >>> r = router.route(10, key="user-6")
    >>> r.variant, r.value
    ('v2', 20.001)
    >>> router.set_weights({"v2": 0})
    >>> router.route(10, key="user-6").variant
    'v1'
    """

    def __init__(
        self,
        models: Mapping[str, Model],
        *,
        strategy: Strategy | None = None,
        clock: Callable[[], float] | None = None,
        name: str = "default",
        salt: str | None = None,
        fallback: bool = True,
        validators: Mapping[str, Validator | None] | None = None,
        overrides: Mapping[Key, str] | None = None,
        override: OverrideFn | None = None,
        seed: int | None = None,
        recorder: Recorder | None = None,
        policy: Policy | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        if not isinstance(models, Mapping) or not models:
            raise ConfigError(
                f"models must be a non-empty mapping of name -> callable, got {models!r}"
            )
        for vname, model in models.items():
            if not isinstance(vname, str) or not vname:
                raise ConfigError(f"model names must be non-empty str, got {vname!r}")
            if not callable(model):
                raise ConfigError(f"model {vname!r} is not callable: {model!r}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        if override is not None and not callable(override):
            raise ConfigError(f"override must be callable, got {override!r}")
        self.name = name
        self._clock: Callable[[], float] = clock or time.perf_counter
        self._strategy = strategy
        candidates: tuple[str, ...] = ()
        weights: dict[str, float] = {}
        if strategy is None:
            baseline = next(iter(models))
        else:
            if not all(hasattr(strategy, a) for a in ("baseline", "candidates", "initial_weights")):
                raise ConfigError(
                    f"strategy must be a strategy such as ss.Canary(...), got {strategy!r}"
                )
            baseline, candidates = strategy.baseline, strategy.candidates
            weights = strategy.initial_weights()
        roles = [("baseline", baseline)] + [("candidate", c) for c in candidates]
        for role, vname in roles:
            if vname not in models:
                raise ConfigError(f"{role} {vname!r} is not one of the models {list(models)!r}")
        allocation = Allocation(baseline, candidates, weights)
        self._variants = allocation.variants
        # Models that the strategy does not route to are kept reachable by overrides only.
        self._extra = tuple(n for n in models if n not in self._variants)
        self._all = self._variants + self._extra
        self._models = tuple(models[n] for n in self._all)
        validators = dict(validators or {})
        for vname in validators:
            if vname not in models:
                raise ConfigError(f"validator for unknown variant {vname!r}")
        self._validators = tuple(_check_validator(n, validators.get(n)) for n in self._all)
        self._fallback = bool(fallback)
        self._salt = name if salt is None else salt
        self._seed = salt_seed(self._salt)
        index = {n: i for i, n in enumerate(self._all)}
        override_keys: dict[Hashable, int] | None = None
        if overrides:
            override_keys = {}
            for k, vname in overrides.items():
                key_bytes(k)  # validates the key
                if vname not in index:
                    raise ConfigError(f"override for key {k!r} names unknown variant {vname!r}")
                override_keys[k] = index[vname]
        self._index = index
        self._override_keys = override_keys
        self._override_fn = override
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigError(f"policy must be a safeserve.Policy, got {policy!r}")
        if recorder is None:
            # A rollout's windows restart at every step and should cover a whole step.
            rollout = _stages(strategy) is not None
            window = TimeWindow(length=86_400.0, slices=48) if rollout else None
            recorder = Recorder(self._all, clock=self._clock, window=window)
        elif tuple(recorder.variants) != self._all:
            # Records name variants by index: another order would judge one model's requests
            # as another's.
            raise ConfigError(
                f"recorder's variants {tuple(recorder.variants)!r} must be the router's, in "
                f"its order (baseline, candidates, others): {self._all!r}"
            )
        self._recorder = recorder
        # A request made _flush_every after the last flush flushes first, so that a record
        # waits in the buffer no longer than that past its request (an outcome's time to live
        # counts from within it, however quiet the service; see Recorder.flush_within).
        self._flush_every = min(FLUSH_SECONDS, recorder.outcome_ttl / 100.0)
        recorder.flush_within = self._flush_every
        recorder.flush()  # (a recorder of the caller's may hold records: they count from now)
        self._flush_due = self._clock() + self._flush_every
        self._due_at = self._flush_due
        # Every record the router makes is a 4-tuple: the recorder's flat buffer takes it.
        self._append = self._recorder._extend
        # Request ids start at a random point, so that an id from another router (another
        # process, an earlier run) is not joined to one of this router's requests.
        first_id = _first_request_id(0)
        self._ids = itertools.count(first_id)
        # Rows served by predict_batch beyond the one request id each batch takes (under
        # _rows_lock): request ids plus these count the requests towards an evaluation.
        self._rows = 0
        self._rows_lock = threading.Lock()
        self._lock = threading.RLock()  # serializes writers (weight changes, flush bookkeeping)
        self._flush_lock = threading.Lock()
        self._keyless_lock = threading.Lock()
        self._keyless = 0
        self._rng = random.Random(seed)
        self._rollout: Rollout | None = None
        self._evaluation_errors = 0
        self._eval_lock = threading.Lock()
        self._last_eval = (first_id - 1, self._clock())
        self._evaluate_every = FLUSH_EVERY
        self._evaluate_interval = math.inf
        self._paces: tuple[tuple[int, float], ...] = ((FLUSH_EVERY, math.inf),)
        # The request path's one look at the time (_due_at): upkeep is due when an
        # evaluation falls due by time (_eval_due; math.inf while one is claimed, or for a
        # manual rollout) or when the metric buffer has waited _flush_every since the last
        # flush (_flush_due), which keeps the recorder's promise (see Recorder.flush_within).
        self._eval_due = math.inf  # armed below, once the rollout exists
        self._baseline_released = False  # blue/green after keep_old (see _release_baseline)
        if drift is not None and not isinstance(drift, DriftMonitor):
            raise ConfigError(f"drift must be a safeserve.drift.DriftMonitor, got {drift!r}")
        self._drift = drift
        self._mirror: ShadowMirror | None = None
        # The running mirror, for a router dropped without close(): its threads (or worker
        # process) hold no reference to the router, so it is collected, and then they stop.
        # A weak reference: the finalizer's arguments live in a global registry, and the
        # mirror holds the models, which may hold the router (a service's bound methods).
        self._mirror_box: list[weakref.ref[ShadowMirror] | None] = [None]
        weakref.finalize(self, _close_left_open, self._mirror_box).atexit = False
        self._unmirrored: ShadowMirror | None = None  # the mirror a warning named (batches)
        self._snapshot = self._build(allocation, version=1)
        stages = _stages(strategy)
        if stages is not None:
            shadow, canary, blue_green = stages
            first = shadow or blue_green or canary
            assert first is not None
            # Each stage evaluates at its own pace: the shadow phase at the shadow's, the
            # rest at the canary's or the blue/green's (see _pace).
            after = canary or blue_green or first
            self._paces = (
                (first.evaluate_every, first.evaluate_interval),
                (after.evaluate_every, after.evaluate_interval),
            )
            self._evaluate_every, self._evaluate_interval = self._paces[0]
            self._rollout = Rollout(
                name=name,
                baseline=allocation.baseline,
                candidate=allocation.candidates[0],
                steps=canary.steps if canary else (100.0,) if blue_green else (),
                policy=policy or Policy(),
                clock=self._clock,
                apply=self._apply_weights,
                reset_windows=self._reset_windows,
                min_duration=(
                    canary.min_duration if canary else blue_green.watch if blue_green else 0.0
                ),
                min_samples=(
                    canary.min_samples if canary else blue_green.min_samples if blue_green else 0
                ),
                deadline=canary.deadline if canary else None,
                on_deadline=canary.on_deadline if canary else "rollback",
                auto=canary.automatic if canary else True,
                start_weight=weights[allocation.candidates[0]],
                canary_weight=canary.weight if canary else None,
                drift=drift,
                drift_confirmations=canary.drift_confirmations if canary else 2,
                drift_resume_after=canary.drift_resume_after if canary else 600.0,
                shadow=shadow,
                start_mirror=self._start_mirror,
                blue_green=blue_green,
                validate=self._validate_preview,
                snapshot=self._recorder.snapshot,
                release=self._release_baseline,
            )
        elif policy is not None:
            raise ConfigError("a policy needs a rollout strategy such as ss.Canary")
        if drift is not None and self._rollout is None:
            raise ConfigError("a drift monitor needs a rollout strategy such as ss.Canary")
        # The request path checks for upkeep when the request id hits this mask, and at once
        # when an evaluation falls due by time (one float comparison per request).
        every = min(256, *(pace[0] for pace in self._paces))
        self._mask = (1 << (every.bit_length() - 1)) - 1
        auto = self._rollout is not None and self._rollout.auto
        self._set_eval_due(self._last_eval[1] + self._evaluate_interval if auto else math.inf)
        _ROUTERS.add(self)  # for the at-fork reset of its locks (a router built in full)
        _log.info(
            "safeserve.router_created",
            rollout=name,
            variants=list(self._all),
            weights=allocation.weights,
            hash_version=HASH_VERSION,
        )

    # -- shadow and blue/green plumbing ---------------------------------------------------

    def _rebuild(self) -> None:
        """Swap in a new snapshot with the same weights (mirror or models changed)."""
        with self._lock:
            old = self._snapshot
            self._snapshot = self._build(old.allocation, version=old.version + 1)

    def _pace(self, *, shadow: bool) -> None:
        """Evaluate at the pace of the shadow phase (``shadow``) or of the stage after it
        (a pipeline ran every phase at the fastest phase's pace)."""
        every, interval = self._paces[0 if shadow else -1]
        if (every, interval) == (self._evaluate_every, self._evaluate_interval):
            return
        self._evaluate_every, self._evaluate_interval = every, interval
        if self._eval_due != math.inf:  # armed (not claimed, not manual)
            self._set_eval_due(self._last_eval[1] + interval)

    def _start_mirror(self, config: Shadow | None) -> ShadowMirror | None:
        """Start mirroring to the candidate (``config``) or stop it (``None``)."""
        old = self._mirror
        if config is None:
            self._mirror = None
        else:
            # A process-isolated shadow is timed in its worker process, not on our clock.
            clock = self._clock if config.isolation == "thread" else None
            self._mirror = ShadowMirror(
                self._models[self._index[config.shadow]], clock=clock, **config.mirror_options()
            )
        self._mirror_box[0] = None if self._mirror is None else weakref.ref(self._mirror)
        self._pace(shadow=config is not None)
        self._rebuild()
        if old is not None:
            # The routing table no longer names it, so nothing more reaches it. Closed off
            # this thread: a phase change often runs on the thread of the request whose
            # evaluation made it, and a close joins busy workers (or ends a worker process).
            _close_soon(old)
        return self._mirror

    def _mirror_one(
        self, snap: _Snapshot, x: Any, key: Key | None, y: Any, latency: float, rid: int
    ) -> None:
        """Hand a served request to the shadow if its key falls in the mirrored share.

        A keyless request is mirrored by a hash of its request id: consecutive ids spread over
        the buckets, so a share is mirrored evenly in time, not in bursts of consecutive ids.
        """
        mirror = snap.mirror
        assert mirror is not None
        kb = rid.to_bytes(8, "little") if key is None else key_bytes(key)
        bucket = _xxh3(kb, snap.seed) % BUCKETS
        if bucket < mirror.mirror_bucket_limit:
            mirror.submit(x, y, latency, rid)

    def _reset_windows(self, *, end: bool = False) -> Mapping[str, Mapping[str, int]]:
        """New metric windows for the rollout; ``end``: its attempt ended, and outcomes of the
        requests it served (those with an id below the next one, still running ones too) are
        judged in no later window."""
        return self._recorder.reset(first_judged_id=next(self._ids) if end else None)

    def _validate_preview(self) -> str | None:
        """Run the blue/green validation callable on the preview; return why it failed."""
        strategy = self._strategy
        bg = strategy.phases[1] if isinstance(strategy, Pipeline) else strategy
        check = bg.validation if isinstance(bg, BlueGreen) else None
        if check is None:
            return None
        try:
            ok = check(self._models[1])
            passed = bool(ok)  # an array, say, has no truth value: a failure, not an error
        except Exception as exc:
            return f"validation raised {type(exc).__name__}: {exc}"
        return None if passed else f"validation returned {_short(ok)}"

    def _release_baseline(self) -> None:
        """Drop the old version after keep_old (blue/green): it can no longer serve."""
        name = self._all[0]
        models = list(self._models)
        models[0] = _released(name)
        self._models = tuple(models)
        self._baseline_released = True
        # Nothing to fall back to any more: the new version's failures reach the caller, as
        # a baseline's do (not as "released" errors of the old one).
        self._fallback = False
        self._rebuild()
        _log.info("safeserve.released", rollout=self.name, variant=name)

    def close(self) -> None:
        """Stop background work (the shadow mirror's threads). Idempotent.

        A router left open is closed once it is garbage collected, unless its models hold it
        (methods of the object that owns the router): the mirror's threads then keep it, and
        its owner, alive. Close a router you are done with (or use it in a ``with`` block).
        """
        if self._mirror is not None:
            self._mirror.close(timeout=1.0)

    def _after_fork(self) -> None:
        """In a forked child: the threads that may have held this router's locks (a flush,
        an evaluation, a transition) do not exist here, so every lock starts afresh; what
        they were doing is left as far as it got (the parent's data, which a child only
        inherits). The shadow mirror resets itself (see :mod:`safeserve._shadow`)."""
        self._rows_lock = threading.Lock()
        self._lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._keyless_lock = threading.Lock()
        self._eval_lock = threading.Lock()
        # Ids of its own, after every id the parent had handed out (the outcome ring keeps
        # the newer id of a slot) and far from those the parent hands out next: an outcome
        # for a request served by the other process is not joined to one of this one's.
        last = max(next(self._ids), self._recorder._ring.newest)
        first = _first_request_id(last)
        self._ids = itertools.count(first)
        self._last_eval = (first - 1 + self._rows, self._last_eval[1])
        if self._eval_due == math.inf and self._rollout is not None and self._rollout.auto:
            self._set_eval_due(self._clock() + self._evaluate_interval)  # an evaluation's claim
        self._recorder._after_fork()
        if self._rollout is not None:
            self._rollout._after_fork()
        if self._drift is not None:
            self._drift._lock = threading.Lock()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- configuration -------------------------------------------------------------------

    def _build(self, allocation: Allocation, *, version: int) -> _Snapshot:
        override_keys, override_fn = self._override_keys, self._override_fn
        rollout = getattr(self, "_rollout", None)
        blocked: list[str] = []
        if rollout is not None and rollout.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
            # A rolled-back candidate serves nobody, not even forced keys, until retry().
            blocked.append(rollout.candidate)
        if self._baseline_released:
            # Released after a blue/green switch (keep_old): nothing left to force keys to.
            blocked.append(self._all[0])
        for name in blocked:
            index = self._index[name]
            if override_keys is not None:
                override_keys = {k: v for k, v in override_keys.items() if v != index} or None
            if override_fn is not None:
                override_fn = _blocking(override_fn, name)
        return _Snapshot(
            version=version,
            allocation=allocation,
            seed=self._seed,
            table=allocation.table,
            names=self._all,
            models=self._models,
            validators=self._validators,
            fallback=self._fallback,
            override_keys=override_keys,
            override_fn=override_fn,
            observe=None if self._drift is None else self._drift.observe,
            mirror=self._mirror,
            blocked=frozenset(self._index[name] for name in blocked),
        )

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Change some variants' traffic percentages at once (one atomic snapshot swap).

        Raising a candidate's weight only adds users to it; lowering it only removes users.
        During a canary rollout the rollout continues from the new weight (a manual step).

        Args:
            weights: Variant name -> percent. Variants not named keep their weight.

        Raises:
            ConfigError: for an unknown variant or invalid weights (the old table stays).
            TransitionError: when the rollout is not at a canary step (a shadow phase, a
                blue/green rollout, or one that has ended): the weights stay.
        """
        rollout = self._rollout
        if rollout is None:
            self._apply_weights(weights)
            return
        with rollout.lock, rollout.changing():  # status() sees both, or neither
            rollout.require_canary_step("set weights of")
            self._apply_weights(weights)
            rollout.set_weight(self._snapshot.allocation.weights[rollout.candidate])

    def _apply_weights(self, weights: Mapping[str, float]) -> None:
        """Build the routing table for ``weights`` and swap it in (one attribute write)."""
        with self._lock:
            old = self._snapshot
            allocation = old.allocation.with_weights(weights)
            self._snapshot = self._build(allocation, version=old.version + 1)
        _log.info(
            "safeserve.weights_changed",
            rollout=self.name,
            version=old.version + 1,
            weights=allocation.weights,
        )

    @property
    def weights(self) -> dict[str, float]:
        """Percent of traffic per variant in the current routing table."""
        return self._snapshot.allocation.weights

    @property
    def version(self) -> int:
        """The version of the current routing table."""
        return self._snapshot.version

    @property
    def recorder(self) -> Recorder:
        """The metric recorder fed by this router."""
        return self._recorder

    # -- the request path ----------------------------------------------------------------

    def _route_again(
        self, x: Any, key: Key | None, vi: int, forced: bool
    ) -> tuple[_Snapshot, int, bool]:
        """Route a request again on the current snapshot, which an evaluation run by the
        request itself changed (``vi``, ``forced``: its first routing).

        The override callable is not asked again: its first answer stands (None stays None;
        a variant stays forced unless the new snapshot blocks it, as after a rollback, where
        its answer counts as None). A keyless request is counted once.
        """
        snap = self._snapshot
        if forced:
            if vi not in snap.blocked:
                return snap, vi, True
            # Forced to a variant blocked since. By the key map (consulted first), the
            # callable was not asked yet: ask it now, once. By the callable: its answer now
            # counts as None, as the blocking wrapper would make it.
            original, fn = self._override_keys, snap.override_fn
            if (
                fn is not None
                and key is not None
                and original is not None
                and _forced_key(original, key) == vi
            ):
                name = fn(key, x)
                if name is not None:
                    return snap, self._forced(name), True
        if key is not None:
            return snap, snap.table[_xxh3(key_bytes(key), snap.seed) % BUCKETS], False
        if forced:  # its first routing counted no keyless request
            return snap, snap.table[self._keyless_bucket()], False
        with self._keyless_lock:  # counted at its first routing
            return snap, snap.table[self._rng.randrange(BUCKETS)], False

    def _keyless_bucket(self) -> int:
        with self._keyless_lock:
            self._keyless += 1
            return self._rng.randrange(BUCKETS)

    def _pick(self, snap: _Snapshot, x: Any, key: Key | None) -> tuple[int, bool]:
        """Return (variant index, overridden) for one request."""
        kind = type(key)
        if kind is str:
            try:
                kb = key.encode()  # type: ignore[union-attr]
            except UnicodeEncodeError:
                kb = key_bytes(key)  # type: ignore[arg-type]  # raises InvalidKeyError
        elif kind is int:
            try:
                kb = key.to_bytes(8, "little", signed=True)  # type: ignore[union-attr]
            except OverflowError:
                kb = key_bytes(key)  # type: ignore[arg-type]  # raises InvalidKeyError
        elif key is None:
            return self._pick_keyless(snap, x)
        else:
            kb = key_bytes(key)
        if snap.plain:
            return snap.table[_xxh3(kb, snap.seed) % BUCKETS], False
        if snap.override_keys is not None:
            try:  # inline: the request path (see _forced_key)
                forced_i = snap.override_keys.get(key)
            except (TypeError, ValueError):  # a key that cannot be hashed
                forced_i = _forced_key(snap.override_keys, key)
            if forced_i is not None:
                return forced_i, True
        if snap.override_fn is not None:
            forced = snap.override_fn(key, x)
            if forced is not None:
                return self._forced(forced), True
        return snap.table[_xxh3(kb, snap.seed) % BUCKETS], False

    def _pick_keyless(self, snap: _Snapshot, x: Any) -> tuple[int, bool]:
        if snap.override_fn is not None:
            forced = snap.override_fn(None, x)
            if forced is not None:
                return self._forced(forced), True
        return snap.table[self._keyless_bucket()], False

    def _forced(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise ConfigError(
                f"override returned unknown variant {name!r}; known: {list(self._all)!r}"
            ) from None

    def _failed(
        self, snap: _Snapshot, rid: int, vi: int, override: bool, x: Any, latency: float
    ) -> Any:
        """Count a model exception; re-raise it, or answer with the baseline.

        (A failed call's record carries the output 0.0, never read: a float keeps the record
        in the layout the flush reads fastest.)
        """
        if vi == 0 or not snap.fallback:
            self._append((rid, record_code(vi, _ERROR, False, override), latency, 0.0))
            raise  # the exception being handled by the caller
        self._append((rid, record_code(vi, _ERROR, True, override), latency, 0.0))
        return snap.models[0](x)

    def _rejected(
        self,
        snap: _Snapshot,
        rid: int,
        vi: int,
        override: bool,
        x: Any,
        y: Any,
        latency: float,
    ) -> tuple[Any, bool]:
        """Count an output its validator rejected; answer with the baseline if allowed."""
        if vi == 0:
            # Nothing to fall back to: count it and answer as the service did before.
            self._append((rid, record_code(vi, _INVALID, False, override), latency, 0.0))
            return y, False
        if not snap.fallback:
            self._append((rid, record_code(vi, _INVALID, False, override), latency, 0.0))
            raise InvalidOutputError(
                f"output of {snap.names[vi]!r} failed validator {snap.validators[vi]!r}: {y!r}"
            )
        self._append((rid, record_code(vi, _INVALID, True, override), latency, 0.0))
        return snap.models[0](x), True

    def route(self, x: Any, *, key: Key | None = None) -> Routed:
        """Route one request and return the answer with the variant and a request id.

        Args:
            x: The model input, passed unchanged to the chosen model.
            key: The user's id (``str``, ``bytes`` or ``int``); the same key always gets the
                same variant for the same weights. Without a key the bucket is random.

        Returns:
            A :class:`Routed` with ``.value``, ``.variant`` and ``.request_id``.

        Raises:
            InvalidKeyError: for an unsupported key.
            Exception: whatever the baseline raises, and the candidate's exception when
                ``fallback`` is off.
        """
        return self._request(x, key, True)  # type: ignore[no-any-return]

    def predict(self, x: Any, *, key: Key | None = None) -> Any:
        """Route one request and return only the answer (see :meth:`route`).

        The caller never sees a request id, so none is kept for delayed outcomes (as with
        :meth:`predict_batch`); use :meth:`route` for requests whose outcomes will come.
        """
        return self._request(x, key, False)

    def _request(self, x: Any, key: Key | None, full: bool) -> Any:
        """The request path behind route (``full``: return a Routed) and predict.

        Kept in one function, with the rare cases in helpers, because each Python call
        costs about as much as the hash itself.
        """
        snap = self._snapshot
        if snap.plain and type(key) is str:
            try:
                vi = snap.table[_xxh3(key.encode(), snap.seed) % BUCKETS]
            except UnicodeEncodeError:
                key_bytes(key)  # raises InvalidKeyError (a lone surrogate)
                raise
            override = False
        else:
            vi, override = self._pick(snap, x, key)
        rid = next(self._ids)
        # The id a record keeps: the request id when the caller gets it (route, for delayed
        # outcomes), else -1.
        rec_id = rid if full else -1
        clock = self._clock
        t0 = clock()
        if t0 >= self._due_at:
            # Before this request's record goes in: the flush then takes only records made
            # within _flush_every of the last one (see Recorder.flush_within). Then this
            # request is routed again (an evaluation may have moved the weights or rolled
            # back) and timed from here (the upkeep is not the model's latency).
            self._maintain(rid, wait=True)
            if self._snapshot is not snap:
                snap, vi, override = self._route_again(x, key, vi, override)
            t0 = clock()
        try:
            y = snap.models[vi](x)
        except Exception:
            try:
                y = self._failed(snap, rec_id, vi, override, x, clock() - t0)
            finally:
                self._upkeep(rid)
            fell_back = True
        else:
            t1 = clock()
            latency = t1 - t0
            validator = snap.validators[vi]
            if validator is not None and not _valid(validator, y):
                try:
                    y, fell_back = self._rejected(snap, rec_id, vi, override, x, y, latency)
                finally:
                    self._upkeep(rid)
            else:
                # The record's code: variant << 4 | status OK (0) << 2 | no fallback | override.
                self._append((rec_id, vi << 4 | override, latency, y))
                if snap.observe is not None:
                    snap.observe(x, vi)
                if snap.mirror is not None and not override:
                    self._mirror_one(snap, x, key, y, latency, rid)
                if not rid & self._mask:
                    self._maintain(rid)
                fell_back = False
        if full:
            # tuple.__new__ skips the NamedTuple's Python-level __new__ (half the cost).
            return _new_tuple(Routed, (y, snap.names[vi], rid, fell_back, snap.version))
        return y

    def __call__(self, x: Any, *, key: Key | None = None) -> Any:
        """Same as :meth:`predict`."""
        return self.predict(x, key=key)

    # -- batches -------------------------------------------------------------------------

    def _batch_indices(
        self, snap: _Snapshot, X: Any, keys: Any, n: int
    ) -> tuple[NDArray[np.integer[Any]], NDArray[np.bool_], NDArray[np.int64]]:
        override = np.zeros(n, dtype=bool)
        if keys is None:
            with self._keyless_lock:
                self._keyless += n
                buckets = np.array([self._rng.randrange(BUCKETS) for _ in range(n)], dtype=np.int64)
            key_list: Any = [None] * n
        else:
            if len(keys) != n:
                raise ConfigError(f"got {len(keys)} keys for {n} rows")
            buckets = buckets_of(keys, seed=snap.seed)
            key_list = keys
        vi = snap.allocation.array.take(buckets)  # the owner of each bucket (int16)
        if snap.override_keys is not None or snap.override_fn is not None:
            as_list = key_list.tolist() if isinstance(key_list, np.ndarray) else key_list
            for i, k in enumerate(as_list):
                forced: int | None = None
                if k is not None and snap.override_keys is not None:
                    forced = _forced_key(snap.override_keys, k)
                if forced is None and snap.override_fn is not None:
                    name = snap.override_fn(k, X[i])
                    forced = None if name is None else self._forced(name)
                if forced is not None:
                    vi[i] = forced
                    override[i] = True
        return vi, override, buckets

    def route_batch(self, X: Any, *, keys: Any = None) -> RoutedBatch:
        """Route many rows at once: one hash pass, one model call per variant.

        Args:
            X: A numpy array (rows on axis 0) or a list of inputs.
            keys: One key per row: a numpy integer array, or a sequence of str/bytes/int.
                None buckets every row at random.

        Returns:
            A :class:`RoutedBatch`; ``values`` is a numpy array when every model returned one,
            else a list, in input order.
        """
        snap = self._snapshot
        n = len(X)
        vi, override, buckets = self._batch_indices(snap, X, keys, n)
        # Each next() is atomic, so ids stay unique while other threads take theirs.
        ids = np.fromiter(itertools.islice(self._ids, n), dtype=np.int64, count=n)
        values, fell_back = self._run_slices(snap, X, vi, override, buckets, ids)
        names = np.asarray(snap.names)[vi] if n else np.empty(0, dtype=np.str_)
        return RoutedBatch(values, names, ids, fell_back, snap.version)

    def predict_batch(self, X: Any, *, keys: Any = None) -> Any:
        """Route many rows at once and return the answers in input order.

        >>> import numpy as np, safeserve as ss
        >>> router = ss.Router(
        ...     {"v1": lambda X: X.sum(axis=1), "v2": lambda X: X.sum(axis=1) * 10},
        ...     strategy=ss.Canary(baseline="v1", candidate="v2", weight=50),
        ... )
        >>> router.predict_batch(np.ones((4, 2)), keys=np.arange(4)).tolist()
        [20.0, 20.0, 2.0, 20.0]
        """
        snap = self._snapshot
        n = len(X)
        vi, override, buckets = self._batch_indices(snap, X, keys, n)
        return self._run_slices(snap, X, vi, override, buckets, None)[0]

    def _run_slices(
        self,
        snap: _Snapshot,
        X: Any,
        vi: NDArray[np.integer[Any]],
        override: NDArray[np.bool_],
        buckets: NDArray[np.int64],
        ids: NDArray[np.int64] | None,
    ) -> tuple[Any, NDArray[np.bool_]]:
        """Call each variant once on its rows; record one batch per slice; mirror the rows in
        the mirrored share; return the answers in input order and which rows the baseline
        answered instead (``ids``: the request ids, or None when the rows have none).

        The batch counts towards the next automatic evaluation also when it raises (a
        candidate that fails every batch must still be judged).
        """
        n = len(vi)
        try:
            return self._serve_slices(snap, X, vi, override, buckets, ids)
        finally:
            # The batch counts as n requests towards the next automatic evaluation:
            # predict_batch takes one request id (taking n would cost more than routing) and
            # adds the others.
            if ids is not None and n:
                last = int(ids[-1])
            else:
                last = next(self._ids)
                if n > 1:
                    with self._rows_lock:
                        self._rows += n - 1
            self._maintain(last, flush=True)

    def _serve_slices(
        self,
        snap: _Snapshot,
        X: Any,
        vi: NDArray[np.integer[Any]],
        override: NDArray[np.bool_],
        buckets: NDArray[np.int64],
        ids: NDArray[np.int64] | None,
    ) -> tuple[Any, NDArray[np.bool_]]:
        """:meth:`_run_slices` but the upkeep."""
        n = len(vi)
        is_array = isinstance(X, np.ndarray)
        fallback = np.zeros(n, dtype=bool)
        parts: list[tuple[NDArray[np.intp] | None, Any]] = []
        clock = self._clock
        start = clock()  # when the batch's requests were made (for their outcomes)
        # One pass per variant (a handful) beats a sort of the whole batch; a variant with
        # every row gets the batch itself (idx None), not a copy.
        groups: list[tuple[int, NDArray[np.intp] | None]] = []
        for j in range(len(snap.names)) if n else ():
            hit = vi == j
            count = int(np.count_nonzero(hit))
            if count == n:
                groups = [(j, None)]
                break
            if count:
                groups.append((j, np.flatnonzero(hit)))
        # The baseline's slice first: a candidate's outputs that could not stand beside its
        # own (another shape per row, text beside numbers) are invalid, and the baseline
        # answers those rows instead.
        groups.sort(key=lambda g: g[0] != 0)
        like: _RowKind | None = None  # the baseline's outputs: shape per row, kind of values
        any_override = bool(override.any())
        redo: list[NDArray[np.intp] | None] = []
        # Per slice, what its record holds: (variant, rows, per-row seconds, status, the
        # variant's own outputs or None).
        slices: list[tuple[int, NDArray[np.intp] | None, float, Any, Any]] = []
        # The baseline's outputs that are not one per row: (name, outputs, rows), raised once
        # every slice is recorded.
        broken: tuple[str, Any, int] | None = None
        failure: Exception | None = None
        for j, idx in groups:
            m = n if idx is None else len(idx)
            xs = X if idx is None else X.take(idx, axis=0) if is_array else [X[i] for i in idx]
            t0 = clock()
            try:
                ys = snap.models[j](xs)
            except Exception as exc:
                latency = (clock() - t0) / m
                if j == 0 or not snap.fallback:
                    slices.append((j, idx, latency, _ERROR, None))
                    failure = exc  # raised once the slices served so far are recorded
                    break
                fallback[_rows(idx, n)] = True
                redo.append(idx)
                slices.append((j, idx, latency, _ERROR, None))
                continue
            latency = (clock() - t0) / m
            whole = _has_rows(ys, m)
            if whole and j == 0 and isinstance(ys, np.ndarray):
                like = _row_kind(ys)
            if not whole or (j != 0 and like is not None and not _fits(ys, like)):
                bad: NDArray[np.bool_] | None = np.ones(m, dtype=bool)
            elif snap.validators[j] is None:
                bad = None
            else:
                bad = ~_valid_rows(snap.validators[j], ys)
            own = ys if whole else None  # the variant's outputs, for its metrics
            if bad is None or not bad.any():
                parts.append((idx, ys))
                slices.append((j, idx, latency, _OK, own))
                continue
            status = np.where(bad, _INVALID, _OK).astype(np.int8)
            if j == 0:
                # Nothing to fall back to: count them and answer as the service did before
                # (outputs that are not one per row cannot be put back in order: see below).
                parts.append((idx, ys))
                slices.append((j, idx, latency, status, own))
                if not whole:
                    broken = (snap.names[j], ys, m)
                continue
            if not snap.fallback:
                slices.append((j, idx, latency, status, None))
                failure = InvalidOutputError(
                    f"{int(bad.sum())} output(s) of {snap.names[j]!r} failed validation"
                )
                break
            rows = _rows(idx, n)
            fallback[rows[bad]] = True
            redo.append(rows[bad])
            keep = ~bad
            if keep.any():
                parts.append((rows[keep], _take(ys, keep)))
            slices.append((j, idx, latency, status, own))
        # One record batch per variant slice: a slice has one variant and one latency per
        # row, which the recorder summarizes without a pass per row. Recorded before anything
        # raises (a failure above, a fallback call below), so that no served slice is lost.
        for j, idx, latency, status, own in slices:
            fb: Any = False
            if isinstance(status, int) and status == _ERROR:
                fb = bool(fallback[0 if idx is None else idx[0]])  # the whole slice, or none
            elif redo:
                fb = fallback if idx is None else fallback[idx]
            self._record_slice(
                ids, j, idx, n, latency, status, fb, own, override, any_override, start
            )
        if failure is not None:
            raise failure
        for idx in redo:
            xs = X if idx is None else X.take(idx, axis=0) if is_array else [X[i] for i in idx]
            ys = snap.models[0](xs)
            if not _has_rows(ys, len(xs)):
                broken = (snap.names[0], ys, len(xs))
            parts.append((idx, ys))
        if broken is not None:
            name, ys, m = broken
            raise InvalidOutputError(
                f"{name!r} answered {m} rows with {_describe_rows(ys)}, not one output per row"
            )
        values = _scatter(parts, n, checked=like is not None)
        if snap.observe is not None and n:
            self._drift.observe_batch(X, vi)  # type: ignore[union-attr]
        if snap.mirror is not None and n:
            try:
                self._mirror_rows(snap, X, slices, buckets, override, ids)
            except Exception as exc:  # rows that cannot be taken apart: never the caller's
                if snap.mirror is not self._unmirrored:
                    self._unmirrored = snap.mirror
                    _log.warning(
                        "safeserve.batch_not_mirrored",
                        rollout=self.name,
                        reason=f"the batch's rows could not be selected for the shadow "
                        f"({type(exc).__name__}: {exc}); pass a numpy array or a list",
                    )
        return values, fallback

    def _mirror_rows(
        self,
        snap: _Snapshot,
        X: Any,
        slices: list[tuple[int, NDArray[np.intp] | None, float, Any, Any]],
        buckets: NDArray[np.int64],
        override: NDArray[np.bool_],
        ids: NDArray[np.int64] | None,
    ) -> None:
        """Hand the shadow each slice's answered rows in the mirrored share, as one batch.

        As for single requests: rows a variant answered and its validator accepted, whose
        bucket is below the mirror's limit (keys mirror the same users as ``predict``;
        keyless rows by their random buckets), never overridden rows.
        """
        mirror = snap.mirror
        assert mirror is not None
        n = len(buckets)
        mirrored = buckets < mirror.mirror_bucket_limit
        mirrored &= ~override
        for _j, idx, latency, status, own in slices:
            if own is None:  # the call failed, or gave a wrong number of outputs
                continue
            keep = mirrored if idx is None else mirrored[idx]
            if isinstance(status, np.ndarray):
                keep = keep & (status == _OK)
            elif status != _OK:
                continue
            k = int(np.count_nonzero(keep))
            if not k:
                continue
            if k == len(keep) and idx is None:
                xs, ys, rids = X, own, ids
                if mirror.isolation == "thread" and hasattr(X, "copy"):
                    # Held until a worker runs it: a copy, since a caller may refill its
                    # batch buffer for the next call (the process path copies as it sends).
                    xs = X.copy()
            else:
                rows = _rows(idx, n)[keep]
                xs = X.take(rows, axis=0) if isinstance(X, np.ndarray) else [X[i] for i in rows]
                ys = _take(own, keep)
                rids = None if ids is None else ids[rows]
            mirror.submit_batch(xs, ys, latency, rids)

    def _record_slice(
        self,
        ids: NDArray[np.int64] | None,
        j: int,
        idx: NDArray[np.intp] | None,
        n: int,
        latency: float,
        status: Any,
        fallback: Any,
        outputs: Any,
        override: NDArray[np.bool_],
        any_override: bool = True,
        when: float | None = None,
    ) -> None:
        """Buffer the record batch of one slice; columns that are the same on every row of
        the slice go as scalars (the recorder then keeps a summary only). ``when``: the
        batch's time."""
        m = n if idx is None else len(idx)
        rid: Any = -1 if ids is None else ids if idx is None else ids[idx]
        ov: Any = (override if idx is None else override[idx]) if any_override else False
        if outputs is None and np.ndim(rid) == 0 and np.ndim(status) == 0:
            fallback = np.full(m, fallback, dtype=bool)  # gives the slice its length
        self._recorder.append_batch(
            rid, j, latency, status, fallback, outputs, ov, request_time=when
        )

    # -- metrics, outcomes and status ------------------------------------------------------

    def _upkeep(self, rid: int) -> None:
        """The served path's check for upkeep (inline there), for requests that failed: a
        candidate that fails every request must still be judged."""
        if not rid & self._mask or self._clock() >= self._due_at:
            self._maintain(rid)

    def _set_eval_due(self, when: float) -> None:
        """Set when an evaluation falls due by time (``math.inf``: claimed, or manual), and
        the request path's one look at the time with it (the sooner of that and the flush)."""
        self._eval_due = when
        self._due_at = min(when, self._flush_due)

    def _maintain(self, rid: int, *, flush: bool = False, wait: bool = False) -> None:
        """Upkeep on the request path: flush the metric buffer and, when due, evaluate.

        ``rid`` is the request's id; with the rows that batches added, it counts the requests
        served (``flush``: flush now, as after a batch). Never blocks (if another thread is
        already at it, this one returns at once) unless ``wait``: a request that finds the
        flush due by time waits for a flush under way (one flush long, once a second at most),
        so that its record cannot join a flush that began before the request was made, which
        would stamp it as made before it was (see Recorder.flush_within).
        """
        # (A bounded wait: the thread that holds the lock may be this one, re-entering from a
        # clock or a signal handler.)
        if not self._flush_lock.acquire(timeout=self._flush_every if wait else 0):
            return
        try:
            rollout = self._rollout
            due = False
            served = rid + self._rows
            now = self._clock()
            # A manual (pinned) canary is judged only when asked, on router.evaluate().
            if rollout is not None and rollout.auto:
                if self._eval_due == math.inf and not self._eval_lock.locked():
                    # Automatic again after a manual stretch (a retry() after a pinned
                    # canary): the evaluation interval counts from now.
                    self._set_eval_due(now + self._evaluate_interval)
                due = served - self._last_eval[0] >= self._evaluate_every or now >= self._eval_due
                if due:
                    # Claimed: other requests stop calling in until this evaluation is done.
                    self._set_eval_due(math.inf)
            elif rollout is not None:
                # Manual now (a pinned canary after a shadow phase): no time is due, so that
                # requests stop calling in (an evaluation by hand sets it again if needed).
                self._set_eval_due(math.inf)
            if (
                due
                or flush
                or now >= self._flush_due
                or now < self._flush_due - self._flush_every  # an injected clock went back
                or self._recorder.pending() >= FLUSH_EVERY
            ):
                self._recorder.flush()
                self._flush_due = now + self._flush_every
                self._due_at = min(self._eval_due, self._flush_due)
        finally:
            self._flush_lock.release()
        if due and self._eval_lock.acquire(blocking=False):
            try:
                self._evaluate(served, wait=False)  # on a request's thread: never waits
            except Exception:
                # An automatic evaluation never fails the request that happened to run it.
                self._evaluation_errors += 1
                _log.exception("safeserve.evaluation_failed", rollout=self.name)
            finally:
                self._eval_lock.release()
                if self._eval_due == math.inf:
                    self._set_eval_due(self._clock() + self._evaluate_interval)

    def flush(self) -> int:
        """Move buffered request records into the metric windows now; return how many."""
        with self._flush_lock:
            return self._recorder.flush()

    def record(self, variant: str, name: str, value: float) -> None:
        """Record a custom metric value for a variant (e.g. a model confidence).

        Raises:
            ConfigError: for an unknown variant.
        """
        try:
            vi = self._index[variant]
        except KeyError:
            raise ConfigError(f"unknown variant {variant!r}; known: {list(self._all)!r}") from None
        self._recorder.record_custom(vi, name, value)

    def record_outcome(self, request_id: int, name: str, value: float) -> Any:
        """Join a delayed outcome (a label, a conversion, revenue) to the variant that served.

        Late, unknown and duplicate ids are counted in ``status().metrics``, never dropped
        silently. Returns the recorder's result for this outcome.
        """
        return self._recorder.record_outcome(request_id, name, value)

    def status(self) -> Status:
        """Return the router's state and metrics as plain data.

        The phase, step, decisions and routing table describe one instant, never half of a
        transition: they are read between two transitions, without the rollout's lock (which
        a long evaluation or validation holds), waiting only while a transition is made.
        """
        self.flush()
        rollout = self._rollout
        decisions: tuple[Any, ...]
        if rollout is None:
            snap = self._snapshot
            phase, step, decisions, stable = Phase.PROMOTED, None, (), snap.allocation.baseline
        else:
            snap, phase, step, stable, decisions = self._between_transitions(rollout)
        return Status(
            name=self.name,
            phase=phase,
            version=snap.version,
            weights=snap.allocation.weights,
            step=step,
            decisions=decisions,
            metrics=self._recorder.snapshot(),
            keyless=self._keyless,
            stable=stable,
            # Outside the lock: a worker process's report may take a while.
            shadow=snap.mirror.report() if snap.mirror is not None else None,
            evaluation_errors=self._evaluation_errors,
        )

    def _between_transitions(self, rollout: Rollout) -> tuple[Any, Phase, Any, str, Any]:
        """(snapshot, phase, step, stable, decisions) read while no transition is under way
        (the rollout's change count even and the same before and after), for at most a few
        seconds of transitions; then as they are."""

        def read() -> tuple[Any, Phase, Any, str, Any]:
            h = tuple(rollout.history)
            return self._snapshot, rollout.phase, rollout.step, rollout.stable, h

        if rollout.lock.acquire(blocking=False):
            # Free (or held by this very thread, inside a change: a log processor, a reset
            # hook): read under it, at once.
            try:
                return read()
            finally:
                rollout.lock.release()
        deadline = time.monotonic() + 5.0
        while True:
            before = rollout.changes
            if not before & 1:
                try:
                    got = read()
                except RuntimeError:  # the history changed while it was copied
                    pass
                else:
                    if rollout.changes == before:
                        return got
            if time.monotonic() > deadline:
                with rollout.lock:  # a transition that long: wait for it
                    return read()
            time.sleep(0.0002)

    # -- rollout controls ----------------------------------------------------------------------

    def _need_rollout(self) -> Rollout:
        if self._rollout is None:
            raise TransitionError(
                f"router {self.name!r} has no rollout: give it a strategy such as ss.Canary"
            )
        return self._rollout

    def _evaluate(self, rid: int, *, wait: bool = True) -> Decision | None:
        """Evaluate now; ``wait=False`` (on a request's thread): not at all while another
        thread holds the rollout (a blue/green validation run by ``promote()``, a manual
        change), so that no request waits for it (None then; the next one is due as usual)."""
        rollout = self._need_rollout()
        self.flush()
        now = self._clock()
        self._last_eval = (rid, now)
        if self._rollout is not None and self._rollout.auto:
            self._set_eval_due(now + self._evaluate_interval)
        if wait:
            # The snapshot under the rollout's lock, as below: taken before it, a change made
            # meanwhile by another thread (a promotion) had the old step's window judged as
            # the new step's.
            with rollout.lock:
                return rollout.evaluate(self._recorder.snapshot(), wait=True)
        if not rollout.lock.acquire(blocking=False):
            return None
        try:
            return rollout.evaluate(self._recorder.snapshot(), wait=False)
        finally:
            rollout.lock.release()

    def evaluate(self) -> Decision:
        """Judge the rollout's checks now and act on the verdicts; return the decision.

        Evaluations also run by themselves every ``evaluate_every`` requests or
        ``evaluate_interval`` seconds; two never run at once.

        Raises:
            TransitionError: when the router has no rollout.
        """
        self._need_rollout()
        with self._eval_lock:
            decision = self._evaluate(self._last_eval[0])
        assert decision is not None  # (waited for the rollout)
        return decision

    def promote(self, *, full: bool = False) -> Decision:
        """Move the candidate to the next step now (``full=True``: to 100% and done).

        In a shadow phase (paused or not) this ends the phase and starts the next one, as
        passing it would. Before a blue/green switch it validates the preview first, unless it
        already passed: a failing validation rolls back (the returned decision says so) and
        nothing switches. After the switch, during the watch, only ``full=True`` ends the
        watch early (a plain ``promote()`` then raises, so that a call meant to switch, made
        just after an automatic switch, does not also skip the watch).

        Raises:
            TransitionError: unless the rollout is progressing, paused, in a shadow phase or
                waiting for its blue/green switch; and during a blue/green watch without
                ``full=True``.
        """
        return self._need_rollout().promote(full=full)

    def rollback(self, *, reason: str = "rolled back by hand") -> Decision:
        """Send every request to the baseline now, in one snapshot swap.

        The candidate serves no request that starts after this returns, not even for
        overridden keys, until :meth:`retry`. Calls already running finish.

        Raises:
            TransitionError: unless the rollout is progressing, paused or promoted.
        """
        return self._need_rollout().rollback(reason)

    def pause(self, *, reason: str = "paused by hand") -> Decision:
        """Freeze the weights until :meth:`resume`: no promotion, and comparisons judged but
        not acted on; a breached guardrail still rolls back (an absolute limit)."""
        return self._need_rollout().pause(reason)

    def resume(self) -> Decision:
        """Leave a pause."""
        return self._need_rollout().resume()

    def abort(self, *, reason: str = "aborted by hand") -> Decision:
        """Stop the rollout by hand: back to the baseline, until :meth:`retry`."""
        return self._need_rollout().abort(reason)

    def retry(self) -> Decision:
        """Start a rolled-back or aborted rollout again from its first step."""
        return self._need_rollout().retry()

    def __repr__(self) -> str:
        shares = ", ".join(f"{n}={w:g}%" for n, w in self.weights.items())
        return f"<safeserve.Router {self.name!r} {shares} v{self.version}>"


for _cls in (Router, Routed, RoutedBatch):
    _cls.__module__ = "safeserve"
del _cls


def _blocking(fn: OverrideFn, blocked: str) -> OverrideFn:
    """Wrap an override predicate so that it never forces ``blocked``."""

    def override(key: Key | None, x: Any) -> str | None:
        name = fn(key, x)
        return None if name == blocked else name

    return override


def _valid(validator: Validator, y: Any) -> bool:
    try:
        return bool(validator(y))
    except Exception:
        return False


def _valid_rows(validator: Validator | None, ys: Any) -> NDArray[np.bool_]:
    n = len(ys)
    if validator is None:
        return np.ones(n, dtype=bool)
    batch = getattr(validator, "batch", None)
    if batch is not None:
        try:
            ok = np.asarray(batch(ys), dtype=bool)
            if ok.shape == (n,):
                return ok
        except Exception:
            return np.zeros(n, dtype=bool)
    return np.fromiter((_valid(validator, y) for y in ys), dtype=bool, count=n)


def _close_left_open(box: list[weakref.ref[ShadowMirror] | None]) -> None:
    """A router left open was collected: close its mirror, if its threads still run."""
    ref = box[0]
    mirror = None if ref is None else ref()
    if mirror is not None:
        _close_soon(mirror)


def _close_soon(mirror: ShadowMirror) -> None:
    """Close a mirror on a thread of its own (a close joins busy workers, or ends a worker
    process): after a phase change, or once a router left open is collected."""
    try:
        threading.Thread(
            target=mirror.close, kwargs={"timeout": 1.0}, name="safeserve-mirror-close", daemon=True
        ).start()
    except RuntimeError:  # no thread to be had: stop the workers without waiting for them
        mirror.close(timeout=0.0)


def _rows(idx: NDArray[np.intp] | None, n: int) -> Any:
    """The row indices of a slice (``None``: every row of the batch)."""
    return np.arange(n) if idx is None else idx


def _take(ys: Any, mask: NDArray[np.bool_]) -> Any:
    if isinstance(ys, np.ndarray):
        return ys[mask]
    return [y for y, m in zip(ys, mask.tolist(), strict=True) if m]


def _forced_key(override_keys: Mapping[Hashable, int], key: Any) -> int | None:
    """The variant a key is forced to, or None. A key that cannot be hashed (a bytearray, a
    writable memoryview) is looked up by its bytes, as it is hashed: by the hash contract it
    is the same key as those bytes."""
    try:
        return override_keys.get(key)
    except (TypeError, ValueError):
        if isinstance(key, bytearray | memoryview):
            return override_keys.get(bytes(key))
        return None


def _has_rows(ys: Any, m: int) -> bool:
    """Whether a batch call's outputs are one per row (``len`` may fail on what a model
    returns: None, a scalar, a numpy scalar)."""
    try:
        return len(ys) == m
    except Exception:
        return False


def _describe_rows(ys: Any) -> str:
    try:
        return f"{len(ys)} outputs"
    except Exception:
        return f"a {type(ys).__name__} ({_short(ys)})"


_random_ids = random.SystemRandom()


def _first_request_id(after: int) -> int:
    """A first request id: for a new router (``after`` 0) at random in [2**32, 2**43), where
    two routers' first billion ids meet with a chance of about 1 in 4,000; in a forked child,
    2**36 to 2**40 past the last id the parent handed out, which the parent then needs tens of
    billions of requests to reach. Below 2**45 (for 15 nested forks), where the recorder's
    fast flush path takes ids."""
    if after == 0:
        return _random_ids.randrange(1 << 32, 1 << 43)
    return after + 1 + _random_ids.randrange(1 << 36, 1 << 40)


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # a model's odd output must not turn one error into another
        return "unprintable"
    return text if len(text) <= 60 else text[:57] + "..."


_RowKind = tuple[tuple[int, ...], str]


def _row_kind(ys: NDArray[Any]) -> _RowKind:
    """An array of outputs' shape per row ((): one value, also for shape (1,)), and what its
    values are: numbers, text, objects (which stand beside anything), or another dtype (times,
    records), which stands beside its own kind only."""
    shape = ys.shape[1:]
    kind = ys.dtype.kind
    what = {"U": "text", "S": "text", "a": "text", "O": "objects"}.get(kind, "numbers")
    if kind not in "biufcUSaO":
        what = f"values of dtype {ys.dtype.str}"
    return (() if math.prod(shape) == 1 else shape), what


def _fits(ys: Any, like: _RowKind) -> bool:
    """Whether a candidate's outputs can stand beside the baseline's array in one array: the
    same shape per row (one value per row: (k,) beside (k, 1) too) and values of one kind, or
    objects. Outputs that are not an array go back as a list, as before, unchecked."""
    if not isinstance(ys, np.ndarray):
        return True
    shape, what = _row_kind(ys)
    return shape == like[0] and (what == like[1] or "objects" in (what, like[1]))


def _scatter(
    parts: list[tuple[NDArray[np.intp] | None, Any]], n: int, *, checked: bool = False
) -> Any:
    """The parts' outputs in row order: one array if every part is one, else a list.
    ``checked``: every part was checked against the baseline's outputs already."""
    if parts and all(isinstance(ys, np.ndarray) for _, ys in parts):
        first = parts[0][1]
        kinds = [] if checked else [_row_kind(ys) for _, ys in parts]
        if kinds and any(not _fits(ys, kinds[0]) for _, ys in parts):
            # (Only where the baseline served no row of the batch but answered the rows it
            # took over from a candidate: its outputs were not there to check against.)
            raise InvalidOutputError(
                "the models' outputs for one batch cannot be put in one array: per row, "
                + " and ".join(
                    f"shape {shape} of {what}" for shape, what in sorted(set(kinds), key=repr)
                )
            )
        dtype = np.result_type(*[ys.dtype for _, ys in parts])
        out = np.empty((n, *first.shape[1:]), dtype=dtype)
        # One value per row (shape (n,) or (n, 1)): scattering flat values is cheaper.
        flat = out.reshape(-1) if out.size == n else None
        for idx, ys in parts:
            if idx is None:
                out[...] = ys
            elif flat is not None and ys.size == idx.size:
                flat[idx] = ys.reshape(-1)
            else:
                out[idx] = ys
        return out
    result: list[Any] = [None] * n
    for idx, ys in parts:
        for i, y in zip(range(n) if idx is None else idx.tolist(), ys, strict=True):
            result[i] = y
    return result


def _stages(strategy: object) -> tuple[Shadow | None, Canary | None, BlueGreen | None] | None:
    """Split a rollout strategy into its (shadow, canary, blue/green) stages; None if none."""
    if isinstance(strategy, Canary):
        return None, strategy, None
    if isinstance(strategy, Shadow):
        return strategy, None, None
    if isinstance(strategy, BlueGreen):
        return strategy.shadow, None, strategy
    if isinstance(strategy, Pipeline):
        first, second = strategy.phases
        assert isinstance(first, Shadow)
        if isinstance(second, Canary):
            return first, second, None
        assert isinstance(second, BlueGreen)
        return first, None, second
    return None


_ROUTERS: weakref.WeakSet[Router] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for router in list(_ROUTERS):
        # One router's failure must not leave the others with their parent's locks.
        with contextlib.suppress(Exception):
            router._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _released(name: str) -> Model:
    """Stand-in for a model released after a blue/green switch."""

    def released(x: Any) -> Any:
        raise TransitionError(f"model {name!r} was released after the blue/green switch")

    return released

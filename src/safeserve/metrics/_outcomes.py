"""Delayed outcomes: a bounded ring that joins an outcome to the request that earned it."""

from __future__ import annotations

import enum

import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError

__all__ = ["OutcomeResult"]


class OutcomeResult(enum.IntEnum):
    """What became of one delayed outcome passed to ``record_outcome``.

    Every call is counted under exactly one result, so nothing is silently dropped or counted
    twice.

    >>> from safeserve.metrics import OutcomeResult
    >>> OutcomeResult.ACCEPTED.name, int(OutcomeResult.DUPLICATE)
    ('ACCEPTED', 1)
    """

    #: Joined to the serving variant and added to its outcome window.
    ACCEPTED = 0
    #: The same request id and outcome name were accepted before.
    DUPLICATE = 1
    #: Older than the time-to-live, its slot in the ring reused by a newer request, or its
    #: request served by a rollout attempt that has ended (rolled back).
    LATE = 2
    #: Never recorded: a negative id, an id of the wrong type, or one not (yet) recorded.
    UNKNOWN = 3
    #: The request was forced by an override; kept out of the statistics.
    OVERRIDE = 4
    #: The value is not a finite real number.
    INVALID_VALUE = 5
    #: The name is not a string, or the bound on distinct outcome names is reached.
    INVALID_NAME = 6


OutcomeResult.__module__ = "safeserve.metrics"


class _OutcomeRing:
    """Request id -> (variant, override, time) in numpy arrays indexed by ``id % capacity``.

    Request ids increase monotonically, so a slot holds the newest id that mapped to it; an id
    older than the slot's is known to be evicted (late), a newer one was never stored.
    """

    __slots__ = ("capacity", "ids", "newest", "override", "seen", "time", "variant")

    def __init__(self, capacity: int, n_variants: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"outcome_capacity must be a positive int, got {capacity!r}")
        dtype = np.int16 if n_variants <= np.iinfo(np.int16).max else np.int32
        self.capacity = capacity
        # Every array is written in full now (np.full, not the lazily mapped np.zeros): the
        # memory is taken once, here, and a flush never stalls on the first touch of a page
        # (a flush runs on a request's path; the first turn of a lazily mapped ring took
        # page faults on every flush).
        self.ids: NDArray[np.int64] = np.full(capacity, -1, dtype=np.int64)
        self.variant: NDArray[np.signedinteger] = np.full(capacity, 0, dtype=dtype)
        self.override: NDArray[np.bool_] = np.full(capacity, False, dtype=np.bool_)
        self.time: NDArray[np.float64] = np.full(capacity, 0.0, dtype=np.float64)
        self.seen: dict[str, NDArray[np.bool_]] = {}
        self.newest = -1

    def store(
        self,
        ids: NDArray[np.int64],
        variant: NDArray[np.int64],
        override: NDArray[np.bool_],
        now: float | NDArray[np.float64],
    ) -> None:
        """Remember non-negative request ids (vectorized); a newer id owns a shared slot.

        ``now`` is when the requests were made: one time for all, or one per id.
        """
        n = ids.size
        if n == 0:
            return
        when = now if isinstance(now, np.ndarray) else np.full(n, now)
        first = int(ids[0])
        if (
            first > self.newest
            and n <= self.capacity
            and int(ids[-1]) - first == n - 1
            and bool((ids[1:] > ids[:-1]).all())
        ):
            # Consecutive new ids (one router thread): a contiguous run of slots, written
            # with slices; every id is newer than any stored one, so all of them are kept.
            start = first % self.capacity
            split = min(n, self.capacity - start)
            for lo, hi, at in ((0, split, start), (split, n, 0)):
                if hi > lo:
                    dst = slice(at, at + hi - lo)
                    self.ids[dst] = ids[lo:hi]
                    self.variant[dst] = variant[lo:hi]
                    self.override[dst] = override[lo:hi]
                    self.time[dst] = when[lo:hi]
                    for seen in self.seen.values():
                        seen[dst] = False
            self.newest = first + n - 1
            return
        if n > 1 and not bool((ids[1:] > ids[:-1]).all()):
            # Out of order (threads finishing in another order): sorted, so that where two
            # ids share a slot the newer is written last and owns it.
            order = np.argsort(ids, kind="stable")
            ids, variant, override = ids[order], variant[order], override[order]
            when = when[order]
        slots = ids % self.capacity if int(ids.max()) >= self.capacity else ids
        keep = ids > self.ids[slots]
        if not keep.all():
            if not keep.any():
                return
            ids, variant, override, slots = ids[keep], variant[keep], override[keep], slots[keep]
            when = when[keep]
        self.ids[slots] = ids
        self.variant[slots] = variant
        self.override[slots] = override
        self.time[slots] = when
        for seen in self.seen.values():
            seen[slots] = False
        if ids.size:
            self.newest = max(self.newest, int(ids.max()))

    def find(self, request_id: int) -> tuple[int, int]:
        """Return ``(slot, state)``: state 0 found, 1 evicted by a newer id, 2 not stored."""
        slot = request_id % self.capacity
        held = int(self.ids[slot])
        if held == request_id:
            return slot, 0
        return slot, 1 if held > request_id else 2

    def seen_for(self, name: str) -> NDArray[np.bool_]:
        """Return the duplicate markers for outcome ``name`` (created on first use)."""
        seen = self.seen.get(name)
        if seen is None:
            seen = self.seen[name] = np.full(self.capacity, False, dtype=np.bool_)
        return seen

    def clear(self) -> None:
        """Forget every stored request id."""
        self.ids[:] = -1
        self.newest = -1
        for seen in self.seen.values():
            seen[:] = False

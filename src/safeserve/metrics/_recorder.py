"""The per-variant recorder: a list append per request, a vectorized flush into the windows."""

from __future__ import annotations

import enum
import marshal
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any, Final, Literal, NamedTuple, Self, TypeVar

import numpy as np
import structlog
from numpy.typing import ArrayLike, NDArray

from .._errors import ConfigError, DataError
from ._outcomes import OutcomeResult, _OutcomeRing
from ._snapshot import MetricsSnapshot, VariantMetrics
from ._summaries import (
    LIMIT,
    CategoryCounts,
    Counts,
    LogHistogram,
    Moments,
    SignedLogHistogram,
)
from ._window import CountWindow, SlidingWindow, TimeWindow, WindowSpec

__all__ = ["OutputKind", "Recorder", "Status", "record_code"]

_log = structlog.get_logger("safeserve")


class Status(enum.IntEnum):
    """Status code of one request record.

    >>> from safeserve.metrics import Status
    >>> [int(s) for s in Status]
    [0, 1, 2, 3]
    """

    #: The model answered and its output was accepted.
    OK = 0
    #: The model raised an exception.
    ERROR = 1
    #: A validator rejected the model's output.
    INVALID = 2
    #: The model call ran out of time.
    TIMEOUT = 3


Status.__module__ = "safeserve.metrics"

OutputKind = Literal["auto", "numeric", "label", "ignore"]
_OUTPUT_KINDS = ("auto", "numeric", "label", "ignore")

#: Window counters, in the order of the flush's count matrix.
_COUNTS = ("requests", "ok", "error", "invalid", "timeout", "fallbacks")
_TOTALS = (*_COUNTS, "overrides")
_KINDS = ("numeric", "label", "vector", "none")

_FLOAT_TYPES = frozenset({float, np.float64, np.float32, np.float16})
_INT_TYPES = frozenset(
    {int, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64}
)
_BOOL_TYPES = frozenset({bool, np.bool_})
_LABEL_TYPES = frozenset({str, np.str_}) | _INT_TYPES | _BOOL_TYPES
_NUMERIC_TYPES = _FLOAT_TYPES | _INT_TYPES | _BOOL_TYPES

#: numpy kinds whose batch outputs are summarized as arrays (not row by row).
_ARR = "fiubUS"
_GET = tuple(itemgetter(i) for i in range(7))
#: Variant index given to a record that is neither a record tuple nor a readable 7-tuple.
_MALFORMED = np.iinfo(np.int64).min
_SUM = np.add.reduce
_MIN = np.minimum.reduce
_MAX = np.maximum.reduce
#: Up to this many variants, per-variant figures come from a mask per variant.
_FEW_GROUPS = 8
#: Records converted and ingested at once: small enough for the temporaries to stay in cache.
_BLOCK = 1 << 14

# A record's code packs its variant index, status and two flags into one int (see
# record_code): the hot path builds a 4-tuple, and the flush reads all four at once.
_OVERRIDE_BIT = 1
_FALLBACK_BIT = 2
_STATUS_SHIFT = 2
_VARIANT_SHIFT = 4

# The marshal fast path (see _columns_marshal). Version 2 writes no back-references, so
# every record is spelled out in full: per field a type byte ("i" int32, "l" a longer int, "g"
# float64) and its little-endian payload, after a tuple's "(" + int32 4 when the records are
# tuples. A list is "[" + int32 length, then its items.
_MARSHAL_VERSION = 2
_LIST_HEAD = 5


def _layouts(
    tuple_head: bytes,
) -> tuple[tuple[int, np.dtype[Any], NDArray[np.intp], NDArray[np.uint8]], ...]:
    """The record layouts read at fixed offsets: (size, numpy layout, type-byte positions,
    type bytes). An int32 request id, or one in [2**31, 2**45), which marshal writes as "l"
    and 3 digits of 15 bits; then an int32 code, a float latency and a float output."""
    out = []
    for rid_format, rid_head in (("<i4", b"i"), ("(3,)<u2", b"l\x03\x00\x00\x00")):
        head = tuple_head + rid_head
        size = len(head) + (4 if rid_format == "<i4" else 6) + 5 + 9 + 9
        layout = np.dtype(
            {
                "names": ["rid", "code", "lat", "out"],
                "formats": [rid_format, "<i4", "<f8", "<f8"],
                "offsets": [len(head), size - 22, size - 17, size - 8],
                "itemsize": size,
            }
        )
        positions = np.array([*range(len(head)), size - 23, size - 18, size - 9])
        out.append((size, layout, positions, np.frombuffer(head + b"igg", np.uint8)))
    return tuple(out)


#: Records as 4-tuples (33 or 39 bytes each) and as four items of a flat list (28 or 34).
_TUPLE_LAYOUTS = _layouts(b"(\x04\x00\x00\x00")
_FLAT_LAYOUTS = _layouts(b"")


def record_code(
    variant_index: int, status: int = 0, fallback: bool = False, override: bool = False
) -> int:
    """Pack a request record's variant index, status and flags into the record's code.

    A record is ``(request_id, code, latency_s, output)``; the code is
    ``variant_index << 4 | status << 2 | fallback << 1 | override``, so that the request path
    builds one small tuple and the flush decodes every field at once. The router computes its
    codes once per variant; see :class:`Recorder` for the fields.

    Args:
        variant_index: Index of the variant in the recorder's ``variants``.
        status: A :class:`Status`.
        fallback: The baseline answered instead of the variant.
        override: The request was forced to the variant (counted apart).

    Returns:
        The code, a non-negative int.

    Raises:
        DataError: for a negative or non-int variant index or an unknown status.

    >>> from safeserve.metrics import Status, record_code
    >>> record_code(1), record_code(1, Status.ERROR, fallback=True)
    (16, 22)
    """
    if isinstance(variant_index, bool) or not isinstance(variant_index, int) or variant_index < 0:
        raise DataError(f"variant_index must be a non-negative int, got {variant_index!r}")
    if isinstance(status, bool) or status not in (0, 1, 2, 3):
        raise DataError(f"status must be a Status (0 to 3), got {status!r}")
    return (
        variant_index << _VARIANT_SHIFT
        | int(status) << _STATUS_SHIFT
        | bool(fallback) << 1
        | bool(override)
    )


class _Columns:
    """Request records as parallel arrays (outputs as a float array, a list, or None).

    ``out_none`` (with a float array ``out``) marks the rows whose output was ``None``.
    """

    __slots__ = (
        "fb",
        "lat",
        "lat_type",
        "out",
        "out_none",
        "ov",
        "rid",
        "st",
        "t",
        "timed_once",
        "var",
    )

    def __init__(
        self,
        rid: NDArray[np.int64],
        var: NDArray[np.int64],
        lat: NDArray[np.float64],
        st: NDArray[np.int64],
        fb: NDArray[np.bool_],
        out: NDArray[np.float64] | list[Any] | None,
        ov: NDArray[np.bool_],
        lat_type: NDArray[np.bool_] | None = None,
        timed_once: bool = False,
        out_none: NDArray[np.bool_] | None = None,
        t: NDArray[np.float64] | None = None,
    ) -> None:
        self.rid, self.var, self.lat, self.st, self.fb = rid, var, lat, st, fb
        self.out, self.ov, self.lat_type, self.out_none = out, ov, lat_type, out_none
        # When each request was made (a batch given its time), or None: see Recorder.flush.
        self.t = t
        # One model call of one variant timed once (a batch slice): one latency observation.
        self.timed_once = timed_once

    def __len__(self) -> int:
        return int(self.var.size)

    def take(self, mask: NDArray[np.bool_]) -> _Columns:
        out = self.out
        if isinstance(out, np.ndarray):
            out = out[mask]
        elif out is not None:
            out = list(compress(out, mask.tolist()))
        lt = None if self.lat_type is None else self.lat_type[mask]
        on = None if self.out_none is None else self.out_none[mask]
        return _Columns(
            self.rid[mask],
            self.var[mask],
            self.lat[mask],
            self.st[mask],
            self.fb[mask],
            out,
            self.ov[mask],
            lt,
            self.timed_once,
            on,
            None if self.t is None else self.t[mask],
        )

    def rows(self, start: int, stop: int) -> _Columns:
        """Rows ``start:stop`` (views of the columns)."""
        out = self.out
        if out is not None:
            out = out[start:stop]
        lt = None if self.lat_type is None else self.lat_type[start:stop]
        on = None if self.out_none is None else self.out_none[start:stop]
        return _Columns(
            self.rid[start:stop],
            self.var[start:stop],
            self.lat[start:stop],
            self.st[start:stop],
            self.fb[start:stop],
            out,
            self.ov[start:stop],
            lt,
            self.timed_once,
            on,
            None if self.t is None else self.t[start:stop],
        )

    def outputs_list(self) -> list[Any]:
        """The outputs as a list (``None`` where there was none)."""
        out = self.out
        if out is None:
            return [None] * len(self)
        if not isinstance(out, np.ndarray):
            return list(out)
        values: list[Any] = list(out) if out.ndim > 1 else out.tolist()
        if self.out_none is not None:
            for i in np.flatnonzero(self.out_none).tolist():
                values[i] = None
        return values


def _unpack(
    rid: NDArray[np.int64],
    code: NDArray[np.int64],
    lat: NDArray[np.float64],
    out: NDArray[np.float64] | list[Any],
) -> _Columns:
    """Columns from the record fields, the code split into variant, status and flags."""
    return _Columns(
        rid,
        code >> _VARIANT_SHIFT,
        lat,
        (code >> _STATUS_SHIFT) & 3,
        (code & _FALLBACK_BIT).astype(np.bool_),
        out,
        (code & _OVERRIDE_BIT).astype(np.bool_),
    )


def _columns_fast(chunk: list[Any]) -> _Columns | None:
    """Convert records column by column (itemgetter + ``np.fromiter``), or return ``None``
    when the chunk is not all 4-tuples or all readable 7-tuples of the plain field types."""
    n = len(chunk)
    if set(map(type, chunk)) != {tuple}:
        return None
    width = sum(map(len, chunk))
    if width not in (4 * n, 7 * n):
        return None
    # A shorter tuple raises IndexError: with the sum above, every tuple has the same width.
    cols = [list(map(g, chunk)) for g in _GET[: width // n]]
    # The types the record-by-record path reads as they are (it rejects a bool id, say).
    types = [set(map(type, c)) for c in cols]
    if not types[2] <= {float, int}:  # the latency
        return None
    if width == 4 * n:
        if types[0] | types[1] != {int}:
            return None
        return _unpack(
            np.fromiter(cols[0], np.int64, n),
            np.fromiter(cols[1], np.int64, n),
            np.fromiter(cols[2], np.float64, n),
            cols[3],
        )
    if not (types[0] | types[1] | types[3] <= {int, Status} and types[4] | types[6] == {bool}):
        return None
    return _Columns(
        np.fromiter(cols[0], np.int64, n),
        np.fromiter(cols[1], np.int64, n),
        np.fromiter(cols[2], np.float64, n),
        np.fromiter(cols[3], np.int64, n),
        np.fromiter(cols[4], np.bool_, n),
        cols[5],
        np.fromiter(cols[6], np.bool_, n),
    )


class _NumericSummary(NamedTuple):
    """Numeric outputs of one slice: signed histogram, count, mean, M2, and the counts of
    non-finite values and of values beyond ``LIMIT`` (rejected)."""

    hist: NDArray[np.int64] | None
    n: int
    mean: float
    m2: float
    non_finite: int
    too_large: int = 0


class _Slice:
    """One timed call of one variant over ``n`` rows that share status OK, no request id and
    no override (a ``predict_batch`` slice), with its numeric outputs summarized."""

    __slots__ = ("fb", "lat", "n", "summary", "var")

    def __init__(self, var: int, n: int, lat: float, fb: bool, summary: _NumericSummary) -> None:
        self.var, self.n, self.lat, self.fb, self.summary = var, n, lat, fb, summary

    def __len__(self) -> int:
        return self.n


def _columns_marshal(chunk: list[Any], flat: bool = False) -> _Columns | None:
    """Convert record tuples of the common layout at C speed, or return ``None``.

    The common layout is the router's: ``(request_id, code, latency_s, output)`` with an int
    id below 2**45, an int32 code and float latency and output. ``marshal`` writes the whole
    chunk out in one C pass, and numpy reads each field at its fixed offset in the records.
    Every record is checked: the chunk must have exactly the layout's size, and every
    record's tuple header and type bytes must be the expected ones. Any other chunk (a
    ``None``, int or str output, numpy scalars, ids straddling 2**31...) returns ``None`` and
    takes the general path, with the same result.

    With ``flat``, ``chunk`` holds the records' fields four by four (the router's buffer).
    """
    n = len(chunk) // 4 if flat else len(chunk)
    if not n:
        return None
    # Three records looked at first: marshal would copy an array output's whole buffer.
    for j in (0, n // 2, n - 1):
        rec = chunk[4 * j : 4 * j + 4] if flat else chunk[j]
        if not (
            (flat or (type(rec) is tuple and len(rec) == 4))
            and type(rec[0]) is int
            and type(rec[1]) is int
            and type(rec[2]) is float
            and type(rec[3]) is float
        ):
            return None
    try:
        data = marshal.dumps(chunk, _MARSHAL_VERSION)
    except ValueError:  # an object marshal cannot write (a numpy scalar, an enum member...)
        return None
    for size, layout, positions, types in _FLAT_LAYOUTS if flat else _TUPLE_LAYOUTS:
        if len(data) != _LIST_HEAD + size * n:
            continue
        raw = np.frombuffer(data, np.uint8, size * n, _LIST_HEAD).reshape(n, size)
        if not (raw[:, positions] == types).all():
            return None
        rec = np.frombuffer(data, layout, n, _LIST_HEAD)
        if layout["rid"].shape == ():
            rid = rec["rid"].astype(np.int64)
        else:
            digits = rec["rid"].astype(np.int64)
            rid = digits[:, 2] << 30
            rid |= digits[:, 1] << 15
            rid |= digits[:, 0]
        return _unpack(
            rid, rec["code"].astype(np.int64), rec["lat"].astype(np.float64), rec["out"].copy()
        )
    return None


_D = TypeVar("_D", bound=np.generic)


def _within(x: NDArray[np.float64]) -> bool:
    """Whether every value is finite and within ``LIMIT`` (a NaN fails both comparisons)."""
    return not x.size or (float(_MIN(x)) >= -LIMIT and float(_MAX(x)) <= LIMIT)


def _out_of_range(x: NDArray[np.float64]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The values that are not finite, and the finite ones beyond ``LIMIT``."""
    fin = np.isfinite(x)
    return ~fin, fin & (np.abs(x) > LIMIT)


def _spread(a: NDArray[_D], n: int) -> NDArray[_D]:
    """A batch column as ``n`` values of its own (one value applies to every row)."""
    return np.full(n, a.reshape(-1)[0], dtype=a.dtype) if a.size == 1 else a.reshape(-1).copy()


def _to_columns(chunk: list[Any], marshal_path: bool = True) -> _Columns:
    """Records as columns: the marshal path, else itemgetter, else one by one."""
    cols = _columns_marshal(chunk) if marshal_path else None
    if cols is None:
        try:
            cols = _columns_fast(chunk)
        except (TypeError, ValueError, OverflowError, IndexError):
            cols = None
    return _columns_slow(chunk) if cols is None else cols


#: What _int_or gives for a value that is no int64 (no int64 equals it).
_NO_INT: Final = 2**63


def _int_or(x: object, default: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int | np.integer):
        return default
    v = int(x)
    return v if -(2**63) <= v < 2**63 else default


def _columns_slow(chunk: list[Any]) -> _Columns:
    """Convert records one by one, turning bad fields into values the ingest rejects.

    A record is a 4-tuple ``(request_id, code, latency_s, output)`` or the readable 7-tuple
    ``(request_id, variant_index, latency_s, status, fallback, output, override)``.
    """
    n = len(chunk)
    rid = np.full(n, -1, np.int64)
    var = np.full(n, -1, np.int64)
    lat = np.full(n, np.nan, np.float64)
    lat_type = np.zeros(n, np.bool_)
    st = np.full(n, -1, np.int64)
    fb = np.zeros(n, np.bool_)
    ov = np.zeros(n, np.bool_)
    out: list[Any] = [None] * n
    for i, rec in enumerate(chunk):
        if not isinstance(rec, tuple) or len(rec) not in (4, 7):
            var[i] = _MALFORMED  # dropped and counted by the ingest
            continue
        if len(rec) == 4:
            r, code, la, o = rec
            c = _int_or(code, _NO_INT)
            # Any int64 code is decoded, as the column paths do (a negative one gives a
            # negative variant, rejected by the ingest).
            if c != _NO_INT:
                var[i] = c >> _VARIANT_SHIFT
                st[i] = (c >> _STATUS_SHIFT) & 3
                fb[i] = bool(c & _FALLBACK_BIT)
                ov[i] = bool(c & _OVERRIDE_BIT)
        else:
            r, v, la, s, f, o, ovr = rec
            var[i] = _int_or(v, -1)
            st[i] = _int_or(s, -1)
            fb[i] = bool(f) if isinstance(f, bool | np.bool_ | int) else False
            ov[i] = bool(ovr) if isinstance(ovr, bool | np.bool_ | int) else False
        rid[i] = _int_or(r, -1)
        if isinstance(la, int | float | np.integer | np.floating) and not isinstance(la, bool):
            lat[i] = _real(la)  # an int past float64's range reads as an infinity
        else:
            lat_type[i] = True
        out[i] = o
    return _Columns(rid, var, lat, st, fb, out, ov, lat_type)


def _groups(idx: NDArray[np.int64], k: int) -> list[tuple[int, NDArray[np.bool_] | None]]:
    """``(group, mask)`` for each group present in ``idx`` (``k`` groups at most); the mask
    is ``None`` when the group holds every row."""
    size = idx.size
    if size == 0:
        return []
    if k == 2:  # a baseline and one candidate: one comparison
        m = idx == 1
        c = int(np.count_nonzero(m))
        if c in (0, size):
            return [(int(c > 0), None)]
        return [(0, ~m), (1, m)]
    out: list[tuple[int, NDArray[np.bool_] | None]] = []
    for g in range(k):
        m = idx == g
        c = int(np.count_nonzero(m))
        if c == size:
            return [(g, None)]
        if c:
            out.append((g, m))
    return out


def _moments_rows(
    x: NDArray[np.float64], groups: list[tuple[int, NDArray[np.bool_] | None]], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-group count, mean and M2 of each row of ``x`` (rows: quantities, columns: the
    same observations): two passes, the mean corrected by the deviations' own mean (so
    that equal values give their value back exactly)."""
    r = x.shape[0]
    n = np.zeros(k, np.int64)
    mu = np.zeros((r, k))
    dev = np.zeros((r, k))
    sq = np.zeros((r, k))
    for g, m in groups:
        xg = x if m is None else x.compress(m, axis=1)
        c = xg.shape[1]
        n[g] = c
        mu[:, g] = _SUM(xg, axis=1) / c  # pairwise sums along each row, as ndarray.mean
        d = xg - mu[:, g, None]
        dev[:, g] = _SUM(d, axis=1)
        d *= d
        sq[:, g] = _SUM(d, axis=1)
    safe = np.maximum(n, 1)
    corr = dev / safe
    sq -= corr * corr * n
    return n, mu + corr, np.maximum(sq, 0.0)


def _moments_of(
    x: NDArray[np.float64], groups: list[tuple[int, NDArray[np.bool_] | None]], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-group count, mean and M2 of ``x`` (see :func:`_moments_rows`)."""
    n, mean, m2 = _moments_rows(x[None, :], groups, k)
    return n, mean[0], m2[0]


def _group_moments(
    idx: NDArray[np.int64], x: NDArray[np.float64], k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per-group count, mean and M2 (two passes with a mean correction)."""
    if k <= _FEW_GROUPS or idx.size == 0:
        # A few groups (variants): a mask and plain reductions per group beat four weighted
        # bincounts over every row.
        return _moments_of(x, _groups(idx, k), k)
    n = np.bincount(idx, minlength=k)
    safe = np.maximum(n, 1)
    mean = np.bincount(idx, weights=x, minlength=k) / safe
    d = x - mean[idx]
    c = np.bincount(idx, weights=d, minlength=k) / safe
    m2 = np.bincount(idx, weights=d * d, minlength=k) - n * c * c
    return n, mean + c, np.maximum(m2, 0.0)


class _VariantSlice:
    """Everything one variant records in one slice of its window."""

    __slots__ = (
        "counts",
        "custom",
        "labels",
        "latency",
        "latency_moments",
        "log_latency",
        "outcomes",
        "output",
        "output_hist",
    )

    def __init__(
        self,
        latency: LogHistogram,
        output_hist: SignedLogHistogram,
        labels: CategoryCounts,
    ) -> None:
        self.counts = Counts(_COUNTS)
        self.latency = latency
        self.latency_moments = Moments()
        self.log_latency = Moments()
        self.output = Moments()
        self.output_hist = output_hist
        self.labels = labels
        self.custom: dict[str, Moments] = {}
        self.outcomes: dict[str, Moments] = {}

    def __iadd__(self, other: _VariantSlice) -> Self:
        self.counts += other.counts
        self.latency += other.latency
        self.latency_moments += other.latency_moments
        self.log_latency += other.log_latency
        self.output += other.output
        self.output_hist += other.output_hist
        self.labels += other.labels
        for mine, theirs in ((self.custom, other.custom), (self.outcomes, other.outcomes)):
            for name, m in theirs.items():
                if m.n:
                    if name in mine:
                        mine[name] += m
                    else:
                        mine[name] = m.copy()
        return self

    def __isub__(self, other: _VariantSlice) -> Self:
        self.counts -= other.counts
        self.latency -= other.latency
        self.latency_moments -= other.latency_moments
        self.log_latency -= other.log_latency
        self.output -= other.output
        self.output_hist -= other.output_hist
        self.labels -= other.labels
        for mine, theirs in ((self.custom, other.custom), (self.outcomes, other.outcomes)):
            for name, m in theirs.items():
                if m.n:
                    mine[name] -= m
        return self

    def copy(self) -> _VariantSlice:
        out = _VariantSlice(self.latency.copy(), self.output_hist.copy(), self.labels.copy())
        out.counts = self.counts.copy()
        out.latency_moments = self.latency_moments.copy()
        out.log_latency = self.log_latency.copy()
        out.output = self.output.copy()
        out.custom = {k: m.copy() for k, m in self.custom.items()}
        out.outcomes = {k: m.copy() for k, m in self.outcomes.items()}
        return out

    def reset(self) -> None:
        self.counts.reset()
        self.latency.reset()
        self.latency_moments.reset()
        self.log_latency.reset()
        self.output.reset()
        self.output_hist.reset()
        self.labels.reset()
        for m in self.custom.values():
            m.reset()
        for m in self.outcomes.values():
            m.reset()


def _is_str(x: object) -> bool:
    return isinstance(x, str)


def _real(x: object) -> float | None:
    """``float(x)`` for a real number (bools as 0/1), ``None`` for anything else."""
    if isinstance(x, int | float | np.integer | np.floating | np.bool_):
        try:
            return float(x)
        except OverflowError:  # an int past float64's range: counted as not finite
            return math.inf if x > 0 else -math.inf
    return None


class Recorder:
    """Per-variant metric windows fed by the router's hot path.

    The hot path is one call: ``recorder.append(record)`` is the bound ``append`` of a plain
    list, with ``record = (request_id, code, latency_s, output)``. :meth:`flush` drains that
    list without a lock on the appenders and ingests it with numpy into one sliding window per
    variant; :meth:`snapshot` flushes and returns plain data.

    Records: ``request_id`` is a process-unique, increasing int (or ``-1``); ``code`` is
    :func:`record_code` of the variant index (into ``variants``), the :class:`Status`, whether
    the baseline answered instead (``fallback``), and whether the request was forced to the
    variant (``override``: counted apart in ``totals["overrides"]`` and kept out of the
    windows); ``latency_s`` is the model call's duration in seconds; ``output`` is the model's
    output (read only when the status is OK). The readable 7-tuple ``(request_id,
    variant_index, latency_s, status, fallback, output, override)`` is accepted too; the flush
    converts it record by record, several times slower.

    Outputs (status OK only) with ``outputs="auto"``: floats go to moments and a signed
    log-bucket histogram; str, int and bool outputs are class labels; size-1 arrays count as
    their element; bigger arrays are counted as ``vector`` and not summarized; ``None`` is
    counted as ``none``. ``outputs="numeric"`` reads ints and bools as numbers,
    ``outputs="label"`` takes only labels, ``outputs="ignore"`` skips outputs.

    Bad input never reaches a window: a NaN, infinite, negative or non-numeric latency, a
    non-finite numeric output, an unknown variant index or status are counted with a reason in
    ``rejected``; the rest of the record still counts.

    Args:
        variants: Variant names, in index order.
        clock: Seconds (the router's injected clock).
        window: A :class:`TimeWindow` (default: 300 s in 30 slices) or a :class:`CountWindow`
            (per variant: the last ``size`` non-override requests).
        outcome_ttl: Seconds after which an outcome is late.
        outcome_capacity: Request ids remembered for outcomes (a ring; memory is about
            19 bytes per id, taken when the recorder is made, plus 1 byte per id and outcome
            name, taken on the name's first outcome).
        outputs: How outputs are summarized: ``"auto"``, ``"numeric"``, ``"label"``,
            ``"ignore"``.
        relative_accuracy: Relative accuracy of the latency and output histograms.
        min_latency: Smallest latency resolved in seconds (smaller ones count as zero, and
            the log-latency moments use ``log(max(latency, min_latency))``).
        max_latency: Largest latency resolved in seconds.
        max_labels: Distinct class labels kept apart per variant (then ``other``).
        max_names: Distinct custom metric names, and outcome names, accepted.

    Raises:
        ConfigError: for an empty or duplicated variant list or a bad option.

    >>> from safeserve.metrics import Recorder, Status, record_code
    >>> rec = Recorder(["v1", "v2"], clock=lambda: 0.0)
    >>> rec.append((0, record_code(0), 0.010, 0.7))
    >>> rec.append((1, record_code(1, Status.ERROR, fallback=True), 0.030, None))
    >>> rec.flush()
    2
    >>> rec.record_outcome(0, "converted", 1.0).name
    'ACCEPTED'
    >>> snap = rec.snapshot()
    >>> snap.variant("v1").outcomes["converted"].mean, snap.variant("v2").errors
    (1.0, 1)
    """

    def __init__(
        self,
        variants: Sequence[str],
        *,
        clock: Callable[[], float],
        window: WindowSpec | None = None,
        outcome_ttl: float = 3600.0,
        outcome_capacity: int = 1_000_000,
        outputs: OutputKind = "auto",
        relative_accuracy: float = 0.01,
        min_latency: float = 1e-6,
        max_latency: float = 1e4,
        max_labels: int = 64,
        max_names: int = 32,
    ) -> None:
        names = tuple(variants) if not isinstance(variants, str) else (variants,)
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"variants must be distinct and non-empty, got {variants!r}")
        if not all(isinstance(n, str) for n in names):
            raise ConfigError(f"variant names must be str, got {variants!r}")
        if not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        window = TimeWindow() if window is None else window
        if not isinstance(window, TimeWindow | CountWindow):
            raise ConfigError(f"window must be a TimeWindow or a CountWindow, got {window!r}")
        if (
            isinstance(outcome_ttl, bool)
            or not isinstance(outcome_ttl, int | float)
            or not outcome_ttl > 0
        ):
            raise ConfigError(f"outcome_ttl must be a positive number, got {outcome_ttl!r}")
        if outputs not in _OUTPUT_KINDS:
            raise ConfigError(f"outputs must be one of {_OUTPUT_KINDS!r}, got {outputs!r}")
        if isinstance(max_names, bool) or not isinstance(max_names, int) or max_names < 1:
            raise ConfigError(f"max_names must be a positive int, got {max_names!r}")
        self.variants: tuple[str, ...] = names
        self.window: WindowSpec = window
        self.outcome_ttl = float(outcome_ttl)
        #: Seconds within which whoever appends also flushes (math.inf: no such promise). A
        #: record carries no time, so a flush stamps the buffered requests as made at the
        #: latest at the previous flush plus this (at the latest now): an outcome's time to
        #: live then counts from within this of its request. The router sets it and keeps the
        #: promise: a request made this long after the last flush flushes first.
        self.flush_within = math.inf
        self._flushed_at = float(clock())
        self.outputs: OutputKind = outputs
        self._clock = clock
        self._nv = len(names)
        self._latency_proto = LogHistogram(
            relative_accuracy=relative_accuracy, min_value=min_latency, max_value=max_latency
        )
        self._log_floor = math.log(self._latency_proto.spec[1])
        self._output_proto = SignedLogHistogram(relative_accuracy=relative_accuracy)
        self._labels_proto = [CategoryCounts(max_labels=max_labels) for _ in names]
        self._max_names = max_names
        self._rings: list[SlidingWindow[_VariantSlice]] = [
            SlidingWindow(self._slice_factory(v), window, clock=clock) for v in range(self._nv)
        ]
        self._ring = _OutcomeRing(outcome_capacity, self._nv)
        # Outcomes of requests with a lower id are judged in no window (see reset).
        self._first_judged_id = 0
        self._lock = threading.RLock()
        self._flushing = False  # a flush is under way (see flush)
        self._count_lock = threading.Lock()
        # Buffers: appends only ever go to the end, flush removes a prefix.
        self._buf: list[Any] = []
        self._batches: list[_Columns | _Slice] = []
        self._custom_buf: list[tuple[int, str, float]] = []
        #: The hot path: ``recorder.append(record)`` (a bound ``list.append``).
        self.append: Callable[[Any], None] = self._buf.append
        # The router's own hot path: ``_extend((request_id, code, latency_s, output))`` puts
        # the record's four fields in a flat list (one atomic extend; the tuple is freed at
        # once, and the flush writes and frees no tuples). Only for code that always passes a
        # 4-tuple: any other length would shift every later record.
        self._flat: list[Any] = []
        self._extend: Callable[[tuple[Any, Any, Any, Any]], None] = self._flat.extend
        # Lifetime counters.
        self._records = 0
        self._totals = [Counts(_TOTALS) for _ in names]
        self._kinds = [Counts(_KINDS) for _ in names]
        self._rejected: list[Counter[str]] = [Counter() for _ in names]
        self._rejected_global: Counter[str] = Counter()
        self._outcome_results: Counter[str] = Counter()
        self._outcome_reasons: Counter[str] = Counter()
        self._outcome_by_variant: list[Counter[str]] = [Counter() for _ in names]
        self._custom_names: set[str] = set()
        self._outcome_names: set[str] = set()

    def _slice_factory(self, v: int) -> Callable[[], _VariantSlice]:
        def make() -> _VariantSlice:
            return _VariantSlice(
                self._latency_proto.copy(),
                self._output_proto.copy(),
                self._labels_proto[v].empty_like(),
            )

        return make

    # -- writing ---------------------------------------------------------------------------

    def append_batch(
        self,
        request_ids: ArrayLike,
        variant_index: ArrayLike,
        latency_s: ArrayLike,
        status: ArrayLike,
        fallback: ArrayLike,
        outputs: ArrayLike | Sequence[Any] | None,
        override: ArrayLike,
        *,
        request_time: float | None = None,
    ) -> None:
        """Buffer the records of a batch call at once (one row per input row).

        Each column holds one value per row, or a single value (a scalar) for every row.

        Args:
            request_ids: int64 ids, ``-1`` where none.
            variant_index: Variant index per row.
            latency_s: Seconds per row (e.g. the slice's call time divided evenly).
            status: :class:`Status` code per row.
            fallback: Whether the baseline answered in place of the variant, per row.
            outputs: A 1-D float array, a sequence of outputs, or ``None`` when not kept.
            override: Whether the row was forced by an override.
            request_time: When the batch's requests were made, on the recorder's clock (an
                outcome's time to live counts from it); None: as for single records (see
                :meth:`flush`).

        With a scalar ``variant_index`` and a scalar ``latency_s`` the batch is one timed
        call of one variant (a slice of ``predict_batch``): it counts one latency observation
        (per-row time), since its rows share one measurement. When its other columns are
        scalars too (no request ids, one status) and its outputs are numbers, they are
        summarized at once and only the summary is kept until the flush.

        Raises:
            DataError: when the columns differ in length or cannot be read as numbers.
        """
        try:
            rid = np.asarray(request_ids, dtype=np.int64)
            var = np.asarray(variant_index, dtype=np.int64)
            lat = np.asarray(latency_s, dtype=np.float64)
            st = np.asarray(status, dtype=np.int64)
            fb = np.asarray(fallback, dtype=np.bool_)
            ov = np.asarray(override, dtype=np.bool_)
        except (TypeError, ValueError, OverflowError) as e:
            raise DataError(f"batch columns must be numeric arrays: {e}") from None
        columns = (rid, var, lat, st, fb, ov)
        # A column of one value applies to every row.
        sizes = {a.size for a in columns if a.size != 1}
        if outputs is not None:
            sizes.add(len(outputs))  # type: ignore[arg-type]
        if len(sizes) > 1:
            raise DataError(f"batch columns differ in length: {sorted(sizes)!r}")
        n = sizes.pop() if sizes else 1
        once = np.ndim(variant_index) == 0 and np.ndim(latency_s) == 0
        if once and n and all(a.ndim == 0 for a in columns):
            summary = self._slice_summary(int(rid), int(var), int(st), bool(ov), outputs)
            if summary is not None:
                self._batches.append(_Slice(int(var), n, float(lat), bool(fb), summary))
                return
        out: NDArray[Any] | list[Any] | None
        if outputs is None:
            out = None
        elif isinstance(outputs, np.ndarray) and outputs.ndim == 1 and outputs.dtype.kind == "f":
            out = outputs.astype(np.float64, copy=True)
        elif isinstance(outputs, np.ndarray) and outputs.ndim >= 1 and outputs.dtype.kind in _ARR:
            # Labels, numbers in (n, 1) columns, or vectors stay an array: summarized vectorized.
            out = outputs.copy()
        elif isinstance(outputs, np.ndarray) and outputs.ndim >= 1:
            out = list(outputs)  # object arrays: judged row by row
        else:
            out = list(outputs)  # type: ignore[arg-type]
        self._batches.append(
            _Columns(
                _spread(rid, n),
                _spread(var, n),
                _spread(lat, n),
                _spread(st, n),
                _spread(fb, n),
                out,
                _spread(ov, n),
                timed_once=once,
                t=None if request_time is None else np.full(n, float(request_time)),
            )
        )

    def _slice_summary(
        self, rid: int, var: int, st: int, ov: bool, outputs: object
    ) -> _NumericSummary | None:
        """Summarize the numeric outputs of a uniform, answered batch slice right away."""
        if not (
            rid < 0
            and st == Status.OK
            and not ov
            and 0 <= var < self._nv
            and isinstance(self.window, TimeWindow)
        ):
            return None
        if self.outputs == "ignore":
            return _NumericSummary(None, 0, 0.0, 0.0, 0)
        if not (
            isinstance(outputs, np.ndarray)
            and outputs.ndim >= 1
            and math.prod(outputs.shape[1:]) == 1  # one number per row
        ):
            return None
        kind = outputs.dtype.kind
        if not (
            (kind == "f" and self.outputs in ("auto", "numeric"))
            or (kind in "iub" and self.outputs == "numeric")
        ):
            return None
        x = outputs.reshape(-1).astype(np.float64, copy=False)
        bad = large = 0
        if not _within(x):
            nan, big = _out_of_range(x)
            bad, large = int(np.count_nonzero(nan)), int(np.count_nonzero(big))
            x = x[~(nan | big)]
        h = self._output_proto
        c = x.size
        if c == 0:
            return _NumericSummary(None, 0, 0.0, 0.0, bad, large)
        mean = float(_SUM(x) / c)
        hist = np.zeros(h.counts.size, dtype=np.int64)
        dev = sq = 0.0
        d = np.empty(min(c, _BLOCK))
        # Block by block, so that the temporaries stay in cache: the buckets, and the
        # deviations from the mean and their squares (two passes with a mean correction).
        for start in range(0, c, _BLOCK):
            xb = x[start : start + _BLOCK]
            hist += np.bincount(h.index_of(xb), minlength=hist.size)
            db = d[: xb.size]
            np.subtract(xb, mean, out=db)
            dev += float(_SUM(db))
            db *= db
            sq += float(_SUM(db))
        corr = dev / c
        return _NumericSummary(hist, c, mean + corr, max(sq - c * corr * corr, 0.0), bad, large)

    def record_custom(self, variant_index: int, name: str, value: float) -> bool:
        """Record a custom metric value (a confidence, a cost...) for a variant.

        The value joins the variant's window at the next flush. A non-finite or non-numeric
        value, an unknown variant index, a non-str name or one past ``max_names`` distinct
        names is rejected and counted with its reason.

        Returns:
            Whether the value was accepted.

        >>> from safeserve.metrics import Recorder
        >>> rec = Recorder(["v1"], clock=lambda: 0.0)
        >>> rec.record_custom(0, "confidence", 0.9), rec.record_custom(0, "confidence", "x")
        (True, False)
        >>> rec.snapshot().variant("v1").rejected
        {'custom:bad_type': 1}
        """
        v = _int_or(variant_index, -1)
        if not 0 <= v < self._nv:
            self._reject_global("custom:bad_variant")
            return False
        if not _is_str(name):
            self._reject(v, "custom:bad_name")
            return False
        x = _real(value)
        if x is None:
            self._reject(v, "custom:bad_type")
            return False
        if not math.isfinite(x):
            self._reject(v, "custom:non_finite")
            return False
        if abs(x) > LIMIT:
            self._reject(v, "custom:too_large")
            return False
        if name not in self._custom_names:
            with self._count_lock:
                if name not in self._custom_names:
                    if len(self._custom_names) >= self._max_names:
                        self._rejected[v]["custom:too_many_names"] += 1
                        return False
                    self._custom_names.add(name)
        self._custom_buf.append((v, name, x))
        return True

    def _reject(self, v: int, reason: str, k: int = 1) -> None:
        with self._count_lock:
            self._rejected[v][reason] += k

    def _reject_global(self, reason: str, k: int = 1) -> None:
        with self._count_lock:
            self._rejected_global[reason] += k

    # -- flushing --------------------------------------------------------------------------

    def pending(self) -> int:
        """Return the number of buffered request records and batches not yet flushed
        (during a flush, those it is taking in count until it ends)."""
        return len(self._buf) + len(self._flat) // 4 + len(self._batches)

    def flush(self) -> int:
        """Ingest every buffered record into the windows; return how many request rows.

        Safe while other threads keep appending: a prefix of each buffer is read, then
        deleted (appends only go to the end), and flushes are serialized by a lock. A flush
        started on the thread of a flush under way (from a signal handler that takes a
        snapshot, say) returns 0 at once: the one under way takes everything in.

        For delayed outcomes, the requests taken in count as made no later than the previous
        flush plus :attr:`flush_within`, and no later than now (a batch given its
        ``request_time``: then).
        """
        with self._lock:
            if self._flushing:
                return 0
            self._flushing = True
            try:
                return self._flush()
            finally:
                self._flushing = False

    def _flush(self) -> int:
        """:meth:`flush` itself (the lock held, no other flush under way on this thread)."""
        now = float(self._clock())  # before draining: a failing clock loses nothing
        # The latest time the buffered requests can have been made (see "flush_within").
        made = min(now, self._flushed_at + self.flush_within)
        self._flushed_at = now
        buf = self._buf
        n = len(buf)
        f = self._flat
        k = len(f)  # a multiple of 4: each extend adds a record's four fields at once
        bb = self._batches
        m = len(bb)
        batches = bb[:m]
        del bb[:m]
        cb = self._custom_buf
        c = len(cb)
        customs = cb[:c]
        del cb[:c]
        rows = self._ingest_prefix(f, k, True, made) + self._ingest_prefix(buf, n, False, made)
        # Batches go in one by one: a batch slice usually holds one variant with one
        # latency, which the ingest summarizes without a pass per row.
        for part in batches:
            rows += len(part)
            if isinstance(part, _Slice):
                self._ingest_slice(part)
            else:
                self._ingest(part, made)
        self._records += rows
        if customs:
            self._ingest_custom(customs)
        return rows

    def _ingest_prefix(self, buffer: list[Any], k: int, flat: bool, now: float) -> int:
        """Ingest ``buffer[:k]`` block by block, read in place, then delete it; return the
        rows. Appends only go to the end and flushes hold the lock, so the prefix stays put.
        (A copy first would touch every record twice more, which a large backlog pays in
        cache misses.)"""
        step = 4 * _BLOCK if flat else _BLOCK
        rows = 0
        try:
            for start in range(0, k, step):
                rows += self._ingest_records(buffer[start : min(k, start + step)], flat, now)
        finally:
            del buffer[:k]
        return rows

    def _ingest_records(self, records: list[Any], flat: bool, now: float) -> int:
        """Convert and ingest one block of records (``flat``: fields four by four); return
        how many. A failure (a bug, never bad input) is counted with the block's size in
        ``record:flush_error`` and logged (``safeserve.flush_error``, with the traceback)
        instead of losing the rest of the flush."""
        size = len(records) // 4 if flat else len(records)
        try:
            cols = _columns_marshal(records, flat=True) if flat else _to_columns(records)
            if cols is None:  # flat, not all of the common layout: as tuples, the general way
                it = iter(records)
                cols = _to_columns(list(zip(it, it, it, it, strict=True)), marshal_path=False)
            self._ingest_block(cols, now)
        except Exception:
            self._reject_global("record:flush_error", size)
            _log.exception("safeserve.flush_error", records=size)
        return size

    def _ingest(self, cols: _Columns, now: float) -> None:
        n = len(cols)
        if n > _BLOCK and not cols.timed_once:
            # Block by block: the temporaries stay in cache (a timed batch call stays whole:
            # its one latency observation is counted once).
            for start in range(0, n, _BLOCK):
                self._ingest_block(cols.rows(start, start + _BLOCK), now)
        else:
            self._ingest_block(cols, now)

    def _ingest_block(self, cols: _Columns, now: float) -> None:
        nv = self._nv
        var, st = cols.var, cols.st
        if var.size == 0:
            return
        if _MIN(var) < 0 or _MAX(var) >= nv:
            good = (var >= 0) & (var < nv)
            malformed = int((var == _MALFORMED).sum())
            if malformed:
                self._reject_global("record:malformed", malformed)
            if int((~good).sum()) > malformed:
                self._reject_global("record:bad_variant", int((~good).sum()) - malformed)
            cols = cols.take(good)
            var, st = cols.var, cols.st
            if var.size == 0:
                return
        if _MIN(st) < 0 or _MAX(st) > 3:
            good = (st >= 0) & (st <= 3)
            for v, k in enumerate(np.bincount(var[~good], minlength=nv).tolist()):
                if k:
                    self._reject(v, "record:bad_status", k)
            cols = cols.take(good)
            if len(cols) == 0:
                return
        rid = cols.rid
        # When the requests were made: the batch's own time, else the flush's bound.
        when: Any = now if cols.t is None else cols.t
        if _MIN(rid) >= 0:
            self._ring.store(rid, cols.var, cols.ov, when)
        elif _MAX(rid) >= 0:
            has_id = rid >= 0
            at = when if cols.t is None else when[has_id]
            self._ring.store(rid[has_id], cols.var[has_id], cols.ov[has_id], at)
        if cols.ov.any():
            per = np.bincount(cols.var[cols.ov], minlength=nv)
            for v in np.flatnonzero(per).tolist():
                self._totals[v].counts[-1] += per[v]
            cols = cols.take(~cols.ov)
            if len(cols) == 0:
                return
        if isinstance(self.window, TimeWindow):
            self._ingest_slices(cols, [r.current() for r in self._rings])
            return
        # Count windows: each variant's rows fill its current slice, then the next one.
        var = cols.var
        order = np.argsort(var, kind="stable")
        sorted_var = var[order]
        starts = np.searchsorted(sorted_var, np.arange(nv))
        pos = np.empty(var.size, np.int64)
        pos[order] = np.arange(var.size) - starts[sorted_var]
        cap = self.window.slice_size
        fill = np.array([cap - r.room() for r in self._rings], np.int64)
        offset = (fill[var] + pos) // cap
        for o in range(int(offset.max()) + 1):
            sel = offset == o
            part = cols if o == 0 and sel.all() else cols.take(sel)
            self._ingest_slices(part, [r.current() for r in self._rings])
            per = np.bincount(part.var, minlength=nv)
            for v in np.flatnonzero(per).tolist():
                self._rings[v].advance(int(per[v]))

    def _ingest_slices(self, cols: _Columns, dest: list[_VariantSlice]) -> None:
        nv = self._nv
        var, st, lat = cols.var, cols.st, cols.lat
        if var.size == 0:
            return
        # Counts: requests, ok, error, invalid, timeout, fallbacks.
        mat = np.zeros((nv, 6), np.int64)
        ok: NDArray[np.bool_] | None = None  # rows with status OK (None: every row)
        if st.any():
            key = var * 4
            key += st
            mat[:, 1:5] = np.bincount(key, minlength=4 * nv).reshape(nv, 4)
            mat[:, 0] = mat[:, 1:5].sum(axis=1)
            ok = st == 0
        else:
            mat[:, 0] = mat[:, 1] = np.bincount(var, minlength=nv)
        if cols.fb.any():
            mat[:, 5] = np.bincount(var[cols.fb], minlength=nv)
        for v in np.flatnonzero(mat[:, 0]).tolist():
            dest[v].counts.counts += mat[v]
            self._totals[v].counts[:6] += mat[v]
        # Latency of answered requests only: a call that failed fast (or hung) says nothing
        # about how long the model takes, and would skew the comparison.
        sel = ok
        lat_min = float(_MIN(lat))
        # NaN fails the min; an infinity, or a value beyond LIMIT, takes the sum past LIMIT.
        lat_ok = lat_min >= 0 and float(_SUM(lat)) <= LIMIT
        if not lat_ok:
            valid = (lat >= 0) & (lat <= LIMIT)
            self._count_bad_latency(cols, valid)
            sel = valid if ok is None else ok & valid
        lv = var if sel is None else var.compress(sel)
        m = lv.size
        out = cols.out
        # Float outputs of exactly the rows whose latency is summarized (status OK, valid
        # latency, no None among them) share the per-variant masks and reductions.
        share = (
            lat_ok
            and isinstance(out, np.ndarray)
            and out.ndim == 1
            and out.dtype == np.float64
            and self.outputs in ("auto", "numeric")
            and (
                cols.out_none is None
                or not (cols.out_none.any() if ok is None else (cols.out_none & ok).any())
            )
        )
        if cols.timed_once and m:
            # A batch slice is one timed call: one observation of its time per row, so that
            # the statistics weigh calls, not the rows that share one measurement.
            self._one_latency(dest[int(lv[0])], float(lat[0] if sel is None else lat[sel][0]))
            share = False
        elif m:
            h = self._latency_proto
            lo = h.spec[1]
            x = np.empty((3 if share else 2, m))
            if sel is None:
                x[0] = lat
            else:
                lat.compress(sel, out=x[0])
            logs = x[1]
            if lat_min >= 0.5 * lo:  # log_of's floor at min_value / 2 changes nothing
                np.log(x[0], out=logs)
            else:
                np.maximum(x[0], 0.5 * lo, out=logs)
                np.log(logs, out=logs)
            nb = h.counts.size
            key = lv * nb
            key += h.index_of_log(logs)  # the logs are needed anyway: the formula's bucket
            hist = np.bincount(key, minlength=nv * nb).reshape(nv, nb)
            if not lat_min > lo * 1.000001:  # else every log is above the floor already
                np.maximum(logs, self._log_floor, out=logs)
            if share:
                assert isinstance(out, np.ndarray)
                if ok is None:
                    x[2] = out
                else:
                    out.compress(ok, out=x[2])
                if not _within(x[2]):
                    share = False  # non-finite or too large outputs are rejected: other rows
                    x = x[:2]
            if nv <= _FEW_GROUPS:
                n, mean, m2 = _moments_rows(x, _groups(lv, nv), nv)
            else:
                parts = [_group_moments(lv, row, nv) for row in x]
                n = parts[0][0]
                mean = np.array([p[1] for p in parts])
                m2 = np.array([p[2] for p in parts])
            for v in np.flatnonzero(n).tolist():
                d = dest[v]
                nvv = int(n[v])
                d.latency.counts += hist[v]
                d.latency_moments._merge_raw(nvv, float(mean[0, v]), float(m2[0, v]))
                d.log_latency._merge_raw(nvv, float(mean[1, v]), float(m2[1, v]))
            if share:
                ho = self._output_proto
                # Only the span of buckets the outputs reach is counted and added (a signed
                # histogram has thousands of buckets; a block's outputs fill a few hundred).
                idx = ho.index_of(x[2])
                first = int(_MIN(idx))
                span = int(_MAX(idx)) - first + 1
                key = lv * span
                key += idx
                key -= first
                ohist = np.bincount(key, minlength=nv * span).reshape(nv, span)
                for v in np.flatnonzero(n).tolist():
                    d = dest[v]
                    d.output_hist.counts[first : first + span] += ohist[v]
                    d.output._merge_raw(int(n[v]), float(mean[2, v]), float(m2[2, v]))
                    self._kinds[v].counts[0] += n[v]
        else:
            share = False
        if self.outputs != "ignore" and not share:
            self._ingest_outputs(cols, dest)

    def _ingest_slice(self, part: _Slice) -> None:
        """Add a summarized batch slice (see :meth:`append_batch`) to its variant's window."""
        v, n = part.var, part.n
        d = self._rings[v].current()
        row = np.array([n, n, 0, 0, 0, n if part.fb else 0], dtype=np.int64)
        d.counts.counts += row
        self._totals[v].counts[:6] += row
        x = part.lat
        if 0 <= x <= LIMIT:
            self._one_latency(d, x)
        else:
            reason = (
                "latency:nan"
                if x != x
                else "latency:negative"
                if x < 0
                else "latency:inf"
                if math.isinf(x)
                else "latency:too_large"
            )
            self._reject(v, reason, n)
        if self.outputs == "ignore":
            return
        s = part.summary
        if s.non_finite:
            self._reject(v, "output:non_finite", s.non_finite)
        if s.too_large:
            self._reject(v, "output:too_large", s.too_large)
        if s.hist is not None:
            d.output_hist.counts += s.hist
            d.output._merge_raw(s.n, s.mean, s.m2)
            self._kinds[v].counts[0] += s.n

    def _one_latency(self, d: _VariantSlice, x: float) -> None:
        """Add one latency observation (a timed batch call) to a variant's slice."""
        h = self._latency_proto
        d.latency.counts[h._index_scalar(x)] += 1
        d.latency_moments._merge_raw(1, x, 0.0)
        log_x = max(float(h.log_of(np.array([x]))[0]), self._log_floor)
        d.log_latency._merge_raw(1, log_x, 0.0)

    def _count_bad_latency(self, cols: _Columns, ok_lat: NDArray[np.bool_]) -> None:
        lat, var = cols.lat, cols.var
        bad_type = np.zeros(lat.size, np.bool_) if cols.lat_type is None else cols.lat_type
        reasons = (
            ("latency:bad_type", bad_type),
            ("latency:nan", np.isnan(lat) & ~bad_type),
            ("latency:inf", np.isposinf(lat)),
            ("latency:too_large", np.isfinite(lat) & (lat > LIMIT)),
            ("latency:negative", lat < 0),
        )
        for reason, mask in reasons:
            if mask.any():
                for v, k in enumerate(np.bincount(var[mask], minlength=self._nv).tolist()):
                    if k:
                        self._reject(v, reason, k)

    def _ingest_outputs(self, cols: _Columns, dest: list[_VariantSlice]) -> None:
        ok = cols.st == 0
        if not ok.any():
            return
        ovar = cols.var[ok]
        out = cols.out
        nv = self._nv
        if out is None:
            per = np.bincount(ovar, minlength=nv)
            for v in np.flatnonzero(per).tolist():
                self._kinds[v].counts[3] += per[v]
            return
        if isinstance(out, np.ndarray):
            if cols.out_none is not None:
                none = cols.out_none[ok]
                if none.any():
                    per = np.bincount(ovar[none], minlength=nv)
                    for v in np.flatnonzero(per).tolist():
                        self._kinds[v].counts[3] += per[v]
                    some = ~none
                    self._ingest_array(ovar[some], out[ok][some], dest)
                    return
            self._ingest_array(ovar, out[ok], dest)
            return
        sub = out if ok.all() else list(compress(out, ok.tolist()))
        types = set(map(type, sub))
        mode = self.outputs
        if (types <= _FLOAT_TYPES and mode != "label") or (
            types <= _NUMERIC_TYPES and mode == "numeric"
        ):
            try:
                x = np.fromiter(sub, np.float64, len(sub))
            except OverflowError:  # an int past float64's range
                x = np.array([_real(o) for o in sub], np.float64)
            self._ingest_numeric(ovar, x, dest)
        elif types <= _LABEL_TYPES and mode in ("auto", "label"):
            self._ingest_labels(ovar, sub, dest)
        else:
            self._ingest_mixed(ovar, sub, dest)

    def _ingest_array(
        self, var: NDArray[np.int64], out: NDArray[Any], dest: list[_VariantSlice]
    ) -> None:
        """Outputs of a batch that came as one numpy array, summarized without a Python loop."""
        mode = self.outputs
        kind = out.dtype.kind
        if out.ndim > 1 and math.prod(out.shape[1:]) == 1:
            out = out.reshape(-1)  # size-1 rows count as their element
        if out.ndim > 1:
            per = np.bincount(var, minlength=self._nv)
            for v in np.flatnonzero(per).tolist():
                self._kinds[v].counts[2] += per[v]
        elif kind == "f" or (kind in "iub" and mode == "numeric"):
            if kind == "f" and mode == "label":
                for v, k in enumerate(np.bincount(var, minlength=self._nv).tolist()):
                    if k:
                        self._reject(v, "output:not_a_label", k)
                return
            self._ingest_numeric(var, out.astype(np.float64, copy=False), dest)
        elif kind in "US" and mode == "numeric":
            for v, k in enumerate(np.bincount(var, minlength=self._nv).tolist()):
                if k:
                    self._reject(v, "output:not_numeric", k)
        else:
            for v in np.unique(var).tolist():
                labels, counts = np.unique(out[var == v], return_counts=True)
                dest[v].labels.update_counts(
                    dict(zip(labels.tolist(), counts.tolist(), strict=True))
                )
                self._kinds[v].counts[1] += int(counts.sum())

    def _ingest_numeric(
        self, var: NDArray[np.int64], x: NDArray[np.float64], dest: list[_VariantSlice]
    ) -> None:
        """Moments and signed histogram of numeric outputs."""
        nv = self._nv
        if not _within(x):  # a NaN, an infinity or a value beyond LIMIT somewhere
            nan, big = _out_of_range(x)
            for reason, mask in (("output:non_finite", nan), ("output:too_large", big)):
                for v, k in enumerate(np.bincount(var[mask], minlength=nv).tolist()):
                    if k:
                        self._reject(v, reason, k)
            keep = ~(nan | big)
            var, x = var[keep], x[keep]
        if x.size == 0:
            return
        h = self._output_proto
        nb = h.counts.size
        key = var * nb
        key += h.index_of(x)
        hist = np.bincount(key, minlength=nv * nb).reshape(nv, nb)
        n, mean, m2 = _group_moments(var, x, nv)
        for v in np.flatnonzero(n).tolist():
            d = dest[v]
            d.output_hist.counts += hist[v]
            d.output._merge_raw(int(n[v]), float(mean[v]), float(m2[v]))
            self._kinds[v].counts[0] += n[v]

    def _ingest_labels(
        self, var: NDArray[np.int64], labels: list[Any], dest: list[_VariantSlice]
    ) -> None:
        present = np.unique(var).tolist()
        for v in present:
            mine = labels if len(present) == 1 else list(compress(labels, (var == v).tolist()))
            counted = Counter(mine)
            dest[v].labels.update_counts(counted)
            self._kinds[v].counts[1] += len(mine)

    def _ingest_mixed(
        self, var: NDArray[np.int64], outs: list[Any], dest: list[_VariantSlice]
    ) -> None:
        mode = self.outputs
        num_v: list[int] = []
        num_x: list[float] = []
        lab_v: list[int] = []
        lab_x: list[Any] = []
        for v, o in zip(var.tolist(), outs, strict=True):
            if isinstance(o, np.ndarray):
                if o.size != 1:
                    self._kinds[v].counts[2] += 1
                    continue
                o = o.reshape(-1)[0]
            if o is None:
                self._kinds[v].counts[3] += 1
            elif isinstance(o, str | np.str_):
                if mode == "numeric":
                    self._reject(v, "output:not_numeric")
                else:
                    lab_v.append(v)
                    lab_x.append(o)
            elif isinstance(o, bool | np.bool_ | int | np.integer):
                if mode == "numeric":
                    num_v.append(v)
                    num_x.append(_real(o) or 0.0)  # an int: never None
                else:
                    lab_v.append(v)
                    lab_x.append(o)
            elif isinstance(o, float | np.floating):
                if mode == "label":
                    self._reject(v, "output:not_a_label")
                else:
                    num_v.append(v)
                    num_x.append(float(o))
            elif isinstance(o, list | tuple):
                self._kinds[v].counts[2] += 1
            else:
                self._reject(v, "output:bad_type")
        if num_x:
            self._ingest_numeric(np.array(num_v, np.int64), np.array(num_x, np.float64), dest)
        if lab_x:
            self._ingest_labels(np.array(lab_v, np.int64), lab_x, dest)

    def _ingest_custom(self, customs: list[tuple[int, str, float]]) -> None:
        groups: dict[tuple[int, str], list[float]] = {}
        for v, name, x in customs:
            groups.setdefault((v, name), []).append(x)
        for (v, name), xs in groups.items():
            cur = self._rings[v].current()
            m = cur.custom.get(name)
            if m is None:
                m = cur.custom[name] = Moments()
            m.update_many(np.array(xs, np.float64))

    # -- outcomes --------------------------------------------------------------------------

    def record_outcome(self, request_id: int, name: str, value: float) -> OutcomeResult:
        """Join a delayed outcome to the variant that served ``request_id``.

        The value (0/1 for a conversion or a label, a real number for revenue) goes into the
        variant's window of outcome ``name`` (moments: a proportion is the mean of 0/1).
        Unflushed records are flushed first when the id is not found. Every call is counted
        under exactly one :class:`OutcomeResult`.

        Args:
            request_id: The id the router gave the request.
            name: The outcome's name (at most ``max_names`` distinct names).
            value: A finite real number (``True``/``False`` count as 1/0).

        Returns:
            What became of the outcome.

        >>> from safeserve.metrics import Recorder
        >>> rec = Recorder(["v1"], clock=lambda: 0.0)
        >>> rec.append((7, 0, 0.01, 0.5))
        >>> [rec.record_outcome(i, "sale", 12.5).name for i in (7, 7, 8)]
        ['ACCEPTED', 'DUPLICATE', 'UNKNOWN']
        """
        with self._lock:
            result, reason, v = self._join(request_id, name, value)
            self._outcome_results[result.name.lower()] += 1
            if reason:
                self._outcome_reasons[reason] += 1
            if v >= 0:
                self._outcome_by_variant[v][result.name.lower()] += 1
            return result

    def _join(
        self, request_id: object, name: object, value: object
    ) -> tuple[OutcomeResult, str, int]:
        if isinstance(request_id, bool) or not isinstance(request_id, int | np.integer):
            return OutcomeResult.UNKNOWN, "unknown:bad_type", -1
        rid = int(request_id)
        if rid < 0:
            return OutcomeResult.UNKNOWN, "unknown:negative", -1
        if rid >= 2**63:
            return OutcomeResult.UNKNOWN, "unknown:not_recorded", -1
        ring = self._ring
        slot, state = ring.find(rid)
        if state == 2 and self.pending():
            self.flush()
            slot, state = ring.find(rid)
        if state == 1:
            return OutcomeResult.LATE, "late:evicted", -1
        if state == 2:
            return OutcomeResult.UNKNOWN, "unknown:not_recorded", -1
        v = int(ring.variant[slot])
        if ring.override[slot]:
            return OutcomeResult.OVERRIDE, "", v
        if not isinstance(name, str):
            return OutcomeResult.INVALID_NAME, "invalid_name:bad_type", v
        if name not in self._outcome_names and len(self._outcome_names) >= self._max_names:
            return OutcomeResult.INVALID_NAME, "invalid_name:too_many_names", v
        x = _real(value)
        if x is None:
            return OutcomeResult.INVALID_VALUE, "invalid_value:bad_type", v
        if not math.isfinite(x):
            return OutcomeResult.INVALID_VALUE, "invalid_value:non_finite", v
        if abs(x) > LIMIT:
            return OutcomeResult.INVALID_VALUE, "invalid_value:too_large", v
        now = float(self._clock())
        if now - float(ring.time[slot]) > self.outcome_ttl:
            return OutcomeResult.LATE, "late:expired", v
        if rid < self._first_judged_id:
            # Served by a rollout attempt that has ended: its outcome would be judged as the
            # next attempt's.
            return OutcomeResult.LATE, "late:previous_window", v
        seen = ring.seen_for(name)
        self._outcome_names.add(name)
        if seen[slot]:
            return OutcomeResult.DUPLICATE, "", v
        seen[slot] = True
        cur = self._rings[v].current()
        m = cur.outcomes.get(name)
        if m is None:
            m = cur.outcomes[name] = Moments()
        m.update(x)
        return OutcomeResult.ACCEPTED, "", v

    # -- reading ---------------------------------------------------------------------------

    def snapshot(self) -> MetricsSnapshot:
        """Flush, then return every variant's window as plain data."""
        with self._lock:
            self.flush()
            now = float(self._clock())
            variants = []
            for v, name in enumerate(self.variants):
                t = self._rings[v].total()
                c = t.counts.to_dict()
                with self._count_lock:
                    rejected = dict(sorted(self._rejected[v].items()))
                variants.append(
                    VariantMetrics(
                        name=name,
                        requests=c["requests"],
                        ok=c["ok"],
                        errors=c["error"] + c["invalid"] + c["timeout"],
                        errors_by_status={k: c[k] for k in ("error", "invalid", "timeout")},
                        fallbacks=c["fallbacks"],
                        latency=t.latency,
                        latency_moments=t.latency_moments,
                        log_latency=t.log_latency,
                        output=t.output,
                        output_histogram=t.output_hist,
                        labels=t.labels,
                        custom={k: m for k, m in sorted(t.custom.items()) if m.n},
                        outcomes={k: m for k, m in sorted(t.outcomes.items()) if m.n},
                        totals=self._totals[v].to_dict(),
                        output_kinds=self._kinds[v].to_dict(),
                        outcome_results=dict(sorted(self._outcome_by_variant[v].items())),
                        rejected=rejected,
                    )
                )
            with self._count_lock:
                rejected_global = dict(sorted(self._rejected_global.items()))
            return MetricsSnapshot(
                time=now,
                window=self.window.to_dict(),
                variants=tuple(variants),
                records=self._records,
                outcome_results=dict(sorted(self._outcome_results.items())),
                outcome_reasons=dict(sorted(self._outcome_reasons.items())),
                rejected=rejected_global,
            )

    def _after_fork(self) -> None:
        """In a forked child: fresh locks (a flush under way in the parent stays where it
        got to, in the child's copy; nothing more is lost)."""
        self._lock = threading.RLock()
        self._count_lock = threading.Lock()
        self._flushing = False

    def reset(self, *, first_judged_id: int | None = None) -> dict[str, dict[str, int]]:
        """Clear every window (e.g. at a new rollout step); lifetime counters and the
        outcome ring stay. Buffered records are flushed into the old windows first. With
        ``first_judged_id`` (a rollout's attempt ended: the router's next request id), an
        outcome of a request with a lower id, recorded yet or still being served, is counted
        ``LATE`` (``late:previous_window``) rather than judged in any later window.

        Returns:
            Each variant's lifetime totals at the reset (as in a snapshot's ``totals``), so
            that a caller counting requests between resets knows where the new windows begin.
        """
        with self._lock:
            self.flush()
            for r in self._rings:
                r.reset()
            if first_judged_id is not None:
                self._first_judged_id = max(self._first_judged_id, int(first_judged_id))
            return {name: t.to_dict() for name, t in zip(self.variants, self._totals, strict=True)}

    def __repr__(self) -> str:
        return f"<safeserve.metrics.Recorder {list(self.variants)!r} {self.window!r}>"


Recorder.__module__ = "safeserve.metrics"

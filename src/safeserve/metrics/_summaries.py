"""Mergeable and subtractable streaming summaries.

Every summary here follows river's streaming API (``update`` / ``update_many`` / ``revert`` /
``get``) and adds itself to another of its kind with ``+=`` / ``+`` and removes one with ``-=`` /
``-``. Subtraction is what lets a sliding window drop the slice that expires without keeping the
raw observations; addition is what lets several worker processes add their figures together.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._errors import ConfigError, DataError

__all__ = [
    "CategoryCounts",
    "Counts",
    "LogHistogram",
    "Moments",
    "SignedLogHistogram",
]

_LABEL_TYPES: tuple[type, ...] = (str, int, np.integer, np.str_, np.bool_)

#: Clears the sign bit of a float64 read as an int64 (its magnitude's bits).
_ABS: Final = 0x7FFF_FFFF_FFFF_FFFF
#: Bits of the largest finite float64.
_MAX_FINITE_BITS: Final = 0x7FEF_FFFF_FFFF_FFFF
#: Largest lookup table (cells) built for a bucket layout; finer layouts use the logs.
_MAX_CELLS: Final = 1 << 16
#: Values bucketed per pass by ``bucket_counts``.
_COUNT_BLOCK: Final = 1 << 15
_PACK_D = struct.Struct("<d")
_UNPACK_Q = struct.Struct("<q")


#: The largest magnitude a summary takes: squares of deviations (up to 4e200), summed over any
#: number of values a window can hold, stay far from float64's overflow (about 1.8e308). A
#: larger value poisons no window: it is rejected like a NaN.
LIMIT = 1e100


def _finite_array(xs: ArrayLike, what: str) -> NDArray[np.float64]:
    """Return ``xs`` as a 1-D float64 array, raising ``DataError`` on a non-finite value or
    one beyond ``LIMIT``."""
    try:
        raw = np.asarray(xs)
        if raw.dtype.kind not in "biuf":
            raise TypeError
        a = raw.astype(np.float64, copy=False).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be real numbers, got {xs!r}") from None
    if a.size and not (np.abs(a) <= LIMIT).all():
        bad = a[~(np.abs(a) <= LIMIT)][0]
        raise DataError(f"{what} must be finite and within +-{LIMIT:g}, got {float(bad)!r}")
    return a


def _finite_scalar(x: object, what: str, limit: float = LIMIT) -> float:
    """Return ``x`` as a float, raising ``DataError`` when it is not a finite real number
    within ``limit``."""
    if isinstance(x, bool | np.bool_) or not isinstance(x, int | float | np.integer | np.floating):
        raise DataError(f"{what} must be a real number, got {x!r}")
    try:
        v = float(x)
    except OverflowError:  # an int past float64's range
        v = math.inf
    if not math.isfinite(v):
        raise DataError(f"{what} must be finite, got {x!r}")
    if abs(v) > limit:
        raise DataError(f"{what} must be within +-{limit:g}, got {x!r}")
    return v


class Counts:
    """A fixed set of named integer counters that add and subtract as a vector.

    Args:
        names: The counter names, fixed at construction.

    >>> c = Counts(("requests", "errors"))
    >>> c.update("requests", 3).update("errors")["requests"]
    3
    >>> (c + c).to_dict()
    {'requests': 6, 'errors': 2}
    """

    __slots__ = ("_index", "counts", "names")

    def __init__(self, names: Sequence[str]) -> None:
        names = tuple(names)
        if len(set(names)) != len(names) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"counter names must be distinct strings, got {names!r}")
        self.names: tuple[str, ...] = names
        self._index = {n: i for i, n in enumerate(names)}
        self.counts: NDArray[np.int64] = np.zeros(len(names), dtype=np.int64)

    def update(self, name: str, k: int = 1) -> Self:
        """Add ``k`` (a non-negative int) to the counter ``name``.

        Raises:
            DataError: for an unknown name or a negative or non-integer ``k``.
        """
        try:
            i = self._index[name]
        except (KeyError, TypeError):
            raise DataError(f"unknown counter {name!r}; known: {list(self.names)!r}") from None
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise DataError(f"a count must be a non-negative int, got {k!r}")
        self.counts[i] += int(k)
        return self

    def __getitem__(self, name: str) -> int:
        try:
            return int(self.counts[self._index[name]])
        except KeyError:
            raise DataError(f"unknown counter {name!r}; known: {list(self.names)!r}") from None

    def _check(self, other: object) -> Counts:
        if not isinstance(other, Counts) or other.names != self.names:
            raise DataError(f"cannot combine {self!r} with {other!r}")
        return other

    def __iadd__(self, other: Counts) -> Self:
        self.counts += self._check(other).counts
        return self

    def __isub__(self, other: Counts) -> Self:
        o = self._check(other)
        if (o.counts > self.counts).any():
            raise DataError(f"cannot subtract {o!r} from the smaller {self!r}")
        self.counts -= o.counts
        return self

    def __add__(self, other: Counts) -> Counts:
        out = self.copy()
        out += other
        return out

    def __sub__(self, other: Counts) -> Counts:
        out = self.copy()
        out -= other
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Counts)
            and other.names == self.names
            and bool((other.counts == self.counts).all())
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Counts:
        """Return an independent copy."""
        out = Counts.__new__(Counts)
        out.names, out._index, out.counts = self.names, self._index, self.counts.copy()
        return out

    def reset(self) -> None:
        """Set every counter back to zero."""
        self.counts[:] = 0

    def to_dict(self) -> dict[str, int]:
        """Return the counters as a plain ``{name: count}`` dict."""
        return dict(zip(self.names, self.counts.tolist(), strict=True))

    def __repr__(self) -> str:
        return f"Counts({self.to_dict()!r})"


class Moments:
    """Count, mean and sum of squared deviations (Welford), mergeable and subtractable.

    Merging uses Chan et al.'s pairwise update and subtracting inverts it, so a window can drop
    an expiring slice exactly; no running sum of squares is kept (it loses precision on large
    offsets such as latency in microseconds).

    Args:
        n: Number of observations (to rebuild a summary from its fields).
        mean: Their mean.
        m2: Sum of squared deviations from the mean.

    >>> m = Moments().update_many([1.0, 2.0, 3.0, 4.0])
    >>> m.n, m.mean, round(m.variance, 4)
    (4, 2.5, 1.6667)
    >>> (m - Moments().update_many([1.0, 2.0])).mean
    3.5
    """

    __slots__ = ("m2", "mean", "n")

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise DataError(f"n must be a non-negative int, got {n!r}")
        mean = _finite_scalar(mean, "mean")
        m2 = _finite_scalar(m2, "m2", math.inf)
        if m2 < 0:
            raise DataError(f"m2 must be >= 0, got {m2!r}")
        self.n = int(n)
        self.mean = mean if n else 0.0
        self.m2 = m2 if n > 1 else 0.0

    # -- river-style streaming API -------------------------------------------------------

    def update(self, x: float) -> Self:
        """Add one finite observation.

        Raises:
            DataError: for a non-finite or non-numeric ``x``, or one beyond ``LIMIT``.
        """
        v = _finite_scalar(x, "an observation")
        self.n += 1
        d = v - self.mean
        self.mean += d / self.n
        self.m2 += d * (v - self.mean)
        return self

    def update_many(self, xs: ArrayLike) -> Self:
        """Add a batch of finite observations (two-pass on the batch, then a merge).

        Raises:
            DataError: when any value is not finite or beyond ``LIMIT``; nothing is added then.
        """
        a = _finite_array(xs, "observations")
        if a.size:
            mean = float(a.mean())
            d = a - mean
            d *= d
            self._merge_raw(int(a.size), mean, float(np.add.reduce(d)))
        return self

    def revert(self, x: float) -> Self:
        """Remove one observation that was added before."""
        v = _finite_scalar(x, "an observation")
        self._subtract_raw(1, v, 0.0)
        return self

    def get(self) -> float:
        """Return the mean (river's ``get``); ``nan`` when empty."""
        return self.mean if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (``ddof=1``); ``nan`` below two observations."""
        return self.m2 / (self.n - 1) if self.n > 1 else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (``ddof=1``)."""
        return math.sqrt(self.variance)

    # -- merge and subtract --------------------------------------------------------------

    def _merge_raw(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        if self.n == 0:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        total = self.n + n
        d = mean - self.mean
        self.mean += d * n / total
        self.m2 += m2 + d * d * (self.n * n / total)
        self.n = total

    def _subtract_raw(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        if n > self.n:
            raise DataError(f"cannot subtract {n!r} observations from {self.n!r}")
        rest = self.n - n
        if rest == 0:
            self.n, self.mean, self.m2 = 0, 0.0, 0.0
            return
        mean_a = self.mean + (self.mean - mean) * n / rest
        d = mean - mean_a
        m2_a = self.m2 - m2 - d * d * (rest * n / self.n)
        self.n, self.mean = rest, mean_a
        self.m2 = max(m2_a, 0.0) if rest > 1 else 0.0

    def _check(self, other: object) -> Moments:
        if not isinstance(other, Moments):
            raise DataError(f"cannot combine Moments with {other!r}")
        return other

    def __iadd__(self, other: Moments) -> Self:
        o = self._check(other)
        self._merge_raw(o.n, o.mean, o.m2)
        return self

    def __isub__(self, other: Moments) -> Self:
        o = self._check(other)
        self._subtract_raw(o.n, o.mean, o.m2)
        return self

    def __add__(self, other: Moments) -> Moments:
        out = self.copy()
        out += other
        return out

    def __sub__(self, other: Moments) -> Moments:
        out = self.copy()
        out -= other
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Moments) and (self.n, self.mean, self.m2) == (
            other.n,
            other.mean,
            other.m2,
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Moments:
        """Return an independent copy."""
        out = Moments.__new__(Moments)
        out.n, out.mean, out.m2 = self.n, self.mean, self.m2
        return out

    def reset(self) -> None:
        """Forget every observation."""
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return ``n``, ``mean``, ``m2`` and ``variance`` as plain data (``None`` if undefined)."""
        var = self.variance
        return {
            "n": self.n,
            "mean": self.mean if self.n else None,
            "m2": self.m2,
            "variance": None if math.isnan(var) else var,
        }

    def __repr__(self) -> str:
        return f"Moments(n={self.n!r}, mean={self.mean!r}, m2={self.m2!r})"


def _float_bits(v: float) -> int:
    """The bits of a float64 as a signed int (ordered like the value for ``v >= 0``)."""
    return int(_UNPACK_Q.unpack(_PACK_D.pack(v))[0])


class _BitIndex:
    """Bucket lookup from a float's bit pattern, equal bucket for bucket to a log formula.

    A non-negative float64 read as an int64 grows with its value, and its top bits (the
    exponent and the first ``m`` mantissa bits, HDR-histogram style) cut the axis into cells
    whose width is at most ``2**-m`` of their start. With ``m`` chosen so that a cell is
    narrower than a log bucket, at most one bucket boundary falls in a cell, and two small
    tables give the bucket of any value: ``index = key[cell] + (bits > bound[cell])``. The
    boundaries are found once, by bisection over the bit patterns with the formula itself,
    so the lookup returns exactly the formula's bucket without a logarithm per value.

    Use :meth:`build`, which returns ``None`` when the layout is too fine for small tables
    or the formula is not monotone on the bit patterns (the caller keeps the formula then).
    """

    __slots__ = ("bound_list", "bounds", "key_list", "keys", "last", "offset", "shift")

    def __init__(self, thresholds: NDArray[np.int64], shift: int) -> None:
        cells = thresholds >> shift
        self.shift = shift
        self.offset = int(cells[0]) - 1  # cell 0 lies wholly below the first boundary
        self.last = int(cells[-1]) - self.offset + 1  # the last cell wholly above the last one
        start = (np.arange(self.last + 1, dtype=np.int64) + self.offset) << shift
        keys = np.searchsorted(thresholds, start, side="right")
        nxt = thresholds[np.minimum(keys, thresholds.size - 1)]
        inside = (keys < thresholds.size) & (nxt <= start + ((1 << shift) - 1))
        #: Bucket of each cell's first value.
        self.keys: NDArray[np.intp] = keys.astype(np.intp)
        #: Largest bits still in ``keys[cell]`` (the next boundary's bits minus one), or
        #: int64's maximum when no boundary falls in the cell.
        self.bounds: NDArray[np.int64] = np.where(inside, nxt - 1, _ABS).astype(np.int64)
        self.key_list: list[int] = self.keys.tolist()
        self.bound_list: list[int] = self.bounds.tolist()

    @classmethod
    def build(
        cls, formula: Callable[[NDArray[np.float64]], NDArray[np.intp]], size: int
    ) -> _BitIndex | None:
        """Tables for ``formula`` (bucket of finite values >= 0, in ``[0, size)``)."""
        if not 2 <= size <= _MAX_CELLS // 3:  # cells run to about three per bucket
            return None
        want = np.arange(1, size, dtype=np.int64)
        lo = np.zeros(size - 1, dtype=np.int64)
        hi = np.full(size - 1, _MAX_FINITE_BITS, dtype=np.int64)
        if not (formula(hi[:1].view(np.float64)) == size - 1).all():
            return None
        while bool((lo < hi).any()):  # 63 rounds at most: smallest bits with bucket >= i
            mid = lo + (hi - lo) // 2
            up = formula(mid.view(np.float64)) >= want
            hi = np.where(up, mid, hi)
            lo = np.where(up, lo, mid + 1)
        t = hi
        # Each boundary must start its bucket exactly: a monotone formula, no empty bucket.
        if not (
            (np.diff(t) > 0).all()
            and (formula(t.view(np.float64)) == want).all()
            and (formula((t - 1).view(np.float64)) == want - 1).all()
        ):
            return None
        for m in range(21):
            shift = 52 - m
            cells = t >> shift
            if (np.diff(cells) > 0).all():
                if int(cells[-1] - cells[0]) + 3 > _MAX_CELLS:
                    return None
                return cls(t, shift)
        return None

    def __call__(self, bits: NDArray[np.int64]) -> NDArray[np.intp]:
        """Buckets of values given by their bits (non-negative int64); ``bits`` is reused."""
        c = bits >> self.shift
        c -= self.offset
        k = self.keys.take(c, mode="clip")
        b = self.bounds.take(c, mode="clip")
        b -= bits
        b >>= 63  # -1 where bits > bound: the value is past the cell's boundary
        k -= b
        return k

    def scalar(self, bits: int) -> int:
        """The bucket of one value given by its (non-negative) bits."""
        c = min(max((bits >> self.shift) - self.offset, 0), self.last)
        return self.key_list[c] + (bits > self.bound_list[c])


_BIT_INDEXES: dict[tuple[float, float, float], _BitIndex | None] = {}


class _DenseHistogram:
    """Arithmetic shared by the dense histograms: counts add, subtract and compare exactly.

    Subclasses define ``counts``, ``spec`` (the bucket layout), ``value_at`` and ``copy``.
    """

    __slots__ = ()
    counts: NDArray[np.int64]

    @property
    def spec(self) -> tuple[float, float, float]:  # pragma: no cover - defined by subclasses
        raise TypeError

    def value_at(self, index: int) -> float:  # pragma: no cover - defined by subclasses
        raise TypeError

    def copy(self) -> Self:  # pragma: no cover - defined by subclasses
        raise TypeError

    def index_of(self, xs: NDArray[np.float64]) -> NDArray[np.intp]:  # pragma: no cover
        raise TypeError

    def bucket_counts(self, xs: NDArray[np.float64]) -> NDArray[np.int64]:
        """Return how many of the (finite, valid) values fall in each bucket of ``counts``.

        Large arrays are read in blocks, so that the temporaries stay in cache.
        """
        size = self.counts.size
        if xs.size <= _COUNT_BLOCK:
            return np.bincount(self.index_of(xs), minlength=size)
        out = np.zeros(size, dtype=np.int64)
        for start in range(0, xs.size, _COUNT_BLOCK):
            out += np.bincount(self.index_of(xs[start : start + _COUNT_BLOCK]), minlength=size)
        return out

    def quantile(self, q: float) -> float:
        """Return the ``q``-quantile (``np.quantile(..., method='lower')`` within ``a``).

        Returns ``nan`` when empty.

        Raises:
            DataError: for ``q`` outside ``[0, 1]``.
        """
        return _quantile_from_counts(self.counts, q, self.value_at)

    def get(self) -> float:
        """Return the median (river's ``get``)."""
        return self.quantile(0.5)

    def _check(self, other: object) -> Self:
        if type(other) is not type(self) or other.spec != self.spec:
            raise DataError(f"cannot combine {self!r} with {other!r}")
        return other

    def __iadd__(self, other: Self) -> Self:
        self.counts += self._check(other).counts
        return self

    def __isub__(self, other: Self) -> Self:
        o = self._check(other)
        if (o.counts > self.counts).any():
            raise DataError(f"cannot subtract {o!r} from the smaller {self!r}")
        self.counts -= o.counts
        return self

    def __add__(self, other: Self) -> Self:
        out = self.copy()
        out += other
        return out

    def __sub__(self, other: Self) -> Self:
        out = self.copy()
        out -= other
        return out

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and other.spec == self.spec
            and bool((other.counts == self.counts).all())
        )

    __hash__ = None  # type: ignore[assignment]

    def reset(self) -> None:
        """Forget every observation."""
        self.counts[:] = 0


class LogHistogram(_DenseHistogram):
    """A DDSketch-style histogram with fixed log-spaced buckets and dense numpy counts.

    A positive value ``x`` goes to bucket ``k = ceil(log_gamma(x))`` with
    ``gamma = (1 + a) / (1 - a)``; the bucket's representative value ``2 gamma^k / (1 + gamma)``
    is within a relative error ``a`` of every value in it (Masson, Rim & Lee, "DDSketch", VLDB
    2019). The keys cover ``[min_value, max_value]`` once and for all, so counts are a dense
    vector that adds and subtracts exactly. Values below the lowest bucket (``min_value`` within
    the relative accuracy; zero included) fall in an underflow bucket reported as ``0.0``;
    values above the highest bucket fall in an overflow bucket reported as ``max_value`` (a
    lower bound). Negative values are rejected. The bucket of a value is read from its
    float64 bits through two small tables built once per layout, which give exactly the
    formula's bucket without a logarithm per value (a layout finer than about 0.1% takes the
    logarithm).

    Args:
        relative_accuracy: ``a``, the relative error guarantee of every quantile.
        min_value: Smallest value resolved (default 1 microsecond, for latency in seconds).
        max_value: Largest value resolved (default 10,000 s).

    >>> h = LogHistogram().update_many([0.010, 0.020, 0.030, 0.040, 0.500])
    >>> round(h.quantile(0.5), 4), h.n
    (0.0299, 5)
    >>> len(h.counts)  # fixed, whatever the traffic
    1154
    """

    __slots__ = ("_bits", "_inv_ln_gamma", "counts", "gamma", "key_max", "key_min", "spec")

    def __init__(
        self,
        *,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-6,
        max_value: float = 1e4,
    ) -> None:
        a, lo, hi = relative_accuracy, min_value, max_value
        if not (isinstance(a, int | float) and 0 < a < 1):
            raise ConfigError(f"relative_accuracy must be in (0, 1), got {a!r}")
        if not (isinstance(lo, int | float) and isinstance(hi, int | float) and 0 < lo < hi):
            raise ConfigError(f"need 0 < min_value < max_value, got {lo!r} and {hi!r}")
        if not math.isfinite(hi):
            raise ConfigError(f"max_value must be finite, got {hi!r}")
        self.spec: tuple[float, float, float] = (float(a), float(lo), float(hi))
        self.gamma = (1 + a) / (1 - a)
        self._inv_ln_gamma = 1.0 / math.log(self.gamma)
        self.key_min = math.ceil(math.log(lo) * self._inv_ln_gamma)
        self.key_max = math.ceil(math.log(hi) * self._inv_ln_gamma)
        nbins = self.key_max - self.key_min + 1
        if nbins > 1_000_000:
            raise ConfigError(f"{nbins!r} buckets is too many: widen relative_accuracy")
        #: counts[0]: underflow and zero; counts[1:-1]: keys key_min..key_max; counts[-1]: overflow
        self.counts: NDArray[np.int64] = np.zeros(nbins + 2, dtype=np.int64)
        spec = self.spec
        if spec not in _BIT_INDEXES:
            if len(_BIT_INDEXES) >= 64:
                _BIT_INDEXES.clear()
            _BIT_INDEXES[spec] = _BitIndex.build(self.index_of_log_scale, nbins + 2)
        self._bits = _BIT_INDEXES[spec]

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.counts.sum())

    @property
    def underflow(self) -> int:
        """Observations below the lowest bucket, about ``min_value`` (zeros included)."""
        return int(self.counts[0])

    @property
    def overflow(self) -> int:
        """Observations above the highest bucket, about ``max_value``."""
        return int(self.counts[-1])

    def index_of(self, xs: NDArray[np.float64]) -> NDArray[np.intp]:
        """Return the bucket index in ``counts`` of each (finite, non-negative) value.

        The bucket is ``ceil(log_gamma(x))`` as computed by :meth:`index_of_log_scale`; at the
        default accuracy it is read from the value's bits through two small tables (no
        logarithm per value), which give exactly the same bucket.
        """
        bits = self._bits
        if bits is None:
            return self.index_of_log_scale(xs)
        b = np.asarray(xs, dtype=np.float64).view(np.int64) & _ABS  # -0.0 reads as 0.0
        return bits(b)

    def index_of_log_scale(self, xs: NDArray[np.float64]) -> NDArray[np.intp]:
        """Return the bucket of each value by the formula ``ceil(log(x) / log(gamma))``.

        This is the definition :meth:`index_of` follows; it takes a logarithm per value.
        """
        return self.index_of_log(self.log_of(np.asarray(xs, dtype=np.float64)))

    def log_of(self, xs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Return ``log(max(x, min_value / 2))``: finite logs that :meth:`index_of_log` reads."""
        t = np.maximum(xs, self.spec[1] * 0.5)
        np.log(t, out=t)
        return t

    def index_of_log(self, logs: NDArray[np.float64]) -> NDArray[np.intp]:
        """Return the bucket index in ``counts`` of values given by their (finite) logs."""
        t = logs * self._inv_ln_gamma
        np.ceil(t, out=t)
        t -= self.key_min - 1
        np.maximum(t, 0.0, out=t)  # np.clip, without its wrapper's cost on small arrays
        np.minimum(t, self.counts.size - 1, out=t)
        return t.astype(np.intp)

    def update(self, x: float) -> Self:
        """Add one finite, non-negative observation.

        Raises:
            DataError: for a negative, non-finite or non-numeric ``x``, or one beyond ``LIMIT``.
        """
        v = _finite_scalar(x, "an observation")
        if v < 0:
            raise DataError(f"a {type(self).__name__} takes values >= 0, got {x!r}")
        self.counts[self._index_scalar(v)] += 1
        return self

    def _index_scalar(self, v: float) -> int:
        bits = self._bits
        if bits is None:
            return int(self.index_of_log_scale(np.array([v], dtype=np.float64))[0])
        return bits.scalar(_float_bits(v) & _ABS)

    def update_many(self, xs: ArrayLike) -> Self:
        """Add a batch of finite, non-negative observations.

        Raises:
            DataError: when any value is negative or not finite; nothing is added then.
        """
        a = _finite_array(xs, "observations")
        if a.size and a.min() < 0:
            raise DataError(f"a LogHistogram takes values >= 0, got {float(a.min())!r}")
        self.counts += self.bucket_counts(a)
        return self

    def revert(self, x: float) -> Self:
        """Remove one observation that was added before."""
        v = _finite_scalar(x, "an observation")
        i = self._index_scalar(max(v, 0.0))
        if self.counts[i] == 0:
            raise DataError(f"cannot revert {x!r}: its bucket is empty")
        self.counts[i] -= 1
        return self

    def value_at(self, index: int) -> float:
        """Return the representative value of bucket ``index`` of ``counts``."""
        if index <= 0:
            return 0.0
        if index >= self.counts.size - 1:
            return self.spec[2]
        k = index - 1 + self.key_min
        return float(2.0 * self.gamma**k / (1.0 + self.gamma))

    def copy(self) -> LogHistogram:
        """Return an independent copy."""
        out = LogHistogram.__new__(LogHistogram)
        out.spec, out.gamma, out._inv_ln_gamma = self.spec, self.gamma, self._inv_ln_gamma
        out.key_min, out.key_max, out.counts = self.key_min, self.key_max, self.counts.copy()
        out._bits = self._bits
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration and the non-empty buckets as plain data.

        ``bins`` maps each non-empty index of ``counts`` to its count.
        """
        nz = np.flatnonzero(self.counts)
        a, lo, hi = self.spec
        return {
            "relative_accuracy": a,
            "min_value": lo,
            "max_value": hi,
            "n": self.n,
            "bins": dict(zip(nz.tolist(), self.counts[nz].tolist(), strict=True)),
        }

    def __repr__(self) -> str:
        a, lo, hi = self.spec
        return f"LogHistogram(n={self.n}, relative_accuracy={a!r}, range=({lo!r}, {hi!r}))"


def _quantile_from_counts(counts: NDArray[np.int64], q: float, value_at: Any) -> float:
    return quantile_from_cumulative(np.cumsum(counts), q, value_at)


def quantile_from_cumulative(cum: NDArray[np.int64], q: float, value_at: Any) -> float:
    """The ``q``-quantile (numpy's ``method='lower'``) from cumulative bucket counts.

    Several quantiles of one histogram can share one ``np.cumsum`` of its counts.
    """
    if isinstance(q, bool) or not isinstance(q, int | float | np.floating) or not 0 <= q <= 1:
        raise DataError(f"a quantile level must be in [0, 1], got {q!r}")
    n = int(cum[-1]) if cum.size else 0
    if n == 0:
        return math.nan
    rank = math.floor(float(q) * (n - 1))  # numpy's method='lower'
    idx = int(np.searchsorted(cum, rank, side="right"))
    return float(value_at(idx))


class SignedLogHistogram(_DenseHistogram):
    """A log-bucket histogram for values of either sign (DDSketch's two-sided layout).

    Negative values go to a mirror of :class:`LogHistogram` over ``|x|``; values with
    ``|x| < min_value`` (zero included) are reported as ``0.0``. Every quantile is within the
    relative accuracy of the exact one, whatever the sign. The counts are one dense vector:
    ``[negative side | positive side]``.

    Args:
        relative_accuracy: ``a``, the relative error guarantee of every quantile.
        min_value: Smallest magnitude resolved.
        max_value: Largest magnitude resolved (beyond it a value reports ``±max_value``).

    >>> h = SignedLogHistogram().update_many([-2.0, -1.0, 0.0, 1.0, 3.0])
    >>> round(h.quantile(0.0), 2), h.quantile(0.5), round(h.quantile(1.0), 2)
    (-1.99, 0.0, 2.97)
    """

    __slots__ = ("_side", "counts")

    def __init__(
        self,
        *,
        relative_accuracy: float = 0.01,
        min_value: float = 1e-6,
        max_value: float = 1e9,
    ) -> None:
        self._side = LogHistogram(
            relative_accuracy=relative_accuracy, min_value=min_value, max_value=max_value
        )
        self.counts: NDArray[np.int64] = np.zeros(2 * self._side.counts.size, dtype=np.int64)

    @property
    def spec(self) -> tuple[float, float, float]:
        """``(relative_accuracy, min_value, max_value)``."""
        return self._side.spec

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.counts.sum())

    def index_of(self, xs: NDArray[np.float64]) -> NDArray[np.intp]:
        """Return the bucket index in ``counts`` of each finite value."""
        side = self._side
        half = side.counts.size
        bits = side._bits
        if bits is None:
            idx = side.index_of_log_scale(np.abs(xs))
            return np.where(np.asarray(xs) < 0, half - 1 - idx, half + idx)
        b = np.add(xs, 0.0, dtype=np.float64).view(np.int64)  # -0.0 + 0.0 is 0.0
        sign = b >> 63  # -1 for a negative value, else 0
        b &= _ABS
        idx = bits(b)
        idx ^= sign  # half - 1 - idx on the negative side (~idx == -1 - idx)
        idx += half
        return idx

    def update(self, x: float) -> Self:
        """Add one finite observation.

        Raises:
            DataError: for a non-finite or non-numeric ``x``, or one beyond ``LIMIT``.
        """
        v = _finite_scalar(x, "an observation")
        self.counts[self._index_scalar(v)] += 1
        return self

    def update_many(self, xs: ArrayLike) -> Self:
        """Add a batch of finite observations.

        Raises:
            DataError: when any value is not finite or beyond ``LIMIT``; nothing is added then.
        """
        a = _finite_array(xs, "observations")
        self.counts += self.bucket_counts(a)
        return self

    def revert(self, x: float) -> Self:
        """Remove one observation that was added before."""
        v = _finite_scalar(x, "an observation")
        i = self._index_scalar(v)
        if self.counts[i] == 0:
            raise DataError(f"cannot revert {x!r}: its bucket is empty")
        self.counts[i] -= 1
        return self

    def _index_scalar(self, v: float) -> int:
        half = self._side.counts.size
        idx = self._side._index_scalar(abs(v))
        return half - 1 - idx if v < 0 else half + idx

    def value_at(self, index: int) -> float:
        """Return the representative value of bucket ``index`` of ``counts``."""
        half = self._side.counts.size
        if index < half:
            return -self._side.value_at(half - 1 - index)
        return self._side.value_at(index - half)

    def copy(self) -> SignedLogHistogram:
        """Return an independent copy."""
        out = SignedLogHistogram.__new__(SignedLogHistogram)
        out._side, out.counts = self._side, self.counts.copy()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration and the non-empty buckets as plain data."""
        nz = np.flatnonzero(self.counts)
        a, lo, hi = self.spec
        return {
            "relative_accuracy": a,
            "min_value": lo,
            "max_value": hi,
            "n": self.n,
            "bins": dict(zip(nz.tolist(), self.counts[nz].tolist(), strict=True)),
        }

    def __repr__(self) -> str:
        a, lo, hi = self.spec
        return f"SignedLogHistogram(n={self.n}, relative_accuracy={a!r}, range=({lo!r}, {hi!r}))"


class _Vocabulary:
    """Label -> index map shared by the slices of one window (first come, first served)."""

    __slots__ = ("index", "labels", "max_labels")

    def __init__(self, max_labels: int) -> None:
        self.max_labels = max_labels
        self.labels: list[str] = []
        self.index: dict[str, int] = {}

    def slot(self, label: str) -> int:
        i = self.index.get(label)
        if i is None:
            if len(self.labels) >= self.max_labels:
                return self.max_labels  # the "other" bucket
            i = self.index[label] = len(self.labels)
            self.labels.append(label)
        return i


def _label_str(label: object) -> str:
    if isinstance(label, str):
        return str(label)
    if isinstance(label, bool | np.bool_):
        return "True" if label else "False"
    if isinstance(label, int | np.integer):
        return str(int(label))
    raise DataError(f"a class label must be a str, int or bool, got {label!r}")


class CategoryCounts:
    """Counts per class label, with at most ``max_labels`` distinct labels.

    Labels are kept as strings (``1`` and ``"1"`` are the same class). Labels are given slots in
    the order they first appear; once ``max_labels`` are known, any new label is counted in the
    ``other`` bucket, so memory stays bounded. Summaries made with :meth:`empty_like` share the
    same label slots, so they add and subtract as dense vectors; summaries from elsewhere are
    combined label by label.

    Args:
        max_labels: The number of distinct labels kept apart.

    >>> c = CategoryCounts(max_labels=2).update_many(["cat", "dog", "cat", "emu"])
    >>> c.to_dict()
    {'cat': 2, 'dog': 1}
    >>> c.other, c.n
    (1, 4)
    """

    __slots__ = ("counts", "vocabulary")

    def __init__(self, *, max_labels: int = 64) -> None:
        if isinstance(max_labels, bool) or not isinstance(max_labels, int) or max_labels < 1:
            raise ConfigError(f"max_labels must be a positive int, got {max_labels!r}")
        self.vocabulary = _Vocabulary(max_labels)
        self.counts: NDArray[np.int64] = np.zeros(max_labels + 1, dtype=np.int64)

    def empty_like(self) -> CategoryCounts:
        """Return an empty summary that shares this one's label slots."""
        out = CategoryCounts.__new__(CategoryCounts)
        out.vocabulary = self.vocabulary
        out.counts = np.zeros_like(self.counts)
        return out

    @property
    def max_labels(self) -> int:
        """The number of distinct labels kept apart."""
        return self.vocabulary.max_labels

    @property
    def n(self) -> int:
        """Number of observations (``other`` included)."""
        return int(self.counts.sum())

    @property
    def other(self) -> int:
        """Observations whose label found no free slot."""
        return int(self.counts[-1])

    def update(self, label: object, k: int = 1) -> Self:
        """Count ``label`` ``k`` times.

        Raises:
            DataError: for a label that is not a str, int or bool, or a negative ``k``.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise DataError(f"a count must be a non-negative int, got {k!r}")
        self.counts[self.vocabulary.slot(_label_str(label))] += int(k)
        return self

    def update_many(self, labels: Iterable[object]) -> Self:
        """Count every label of ``labels``.

        Raises:
            DataError: for a label that is not a str, int or bool; nothing is counted then.
        """
        counted: dict[object, int] = {}
        for lab in labels:
            counted[lab] = counted.get(lab, 0) + 1
        return self.update_counts(counted)

    def update_counts(self, counted: Mapping[Any, int]) -> Self:
        """Add a ``{label: count}`` mapping at once.

        Raises:
            DataError: for a bad label or count; nothing is counted then.
        """
        items = [(_label_str(lab), k) for lab, k in counted.items()]
        for lab, k in items:
            if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
                raise DataError(f"a count must be a non-negative int, got {k!r} for {lab!r}")
        for lab, k in items:
            self.counts[self.vocabulary.slot(lab)] += int(k)
        return self

    def to_dict(self) -> dict[str, int]:
        """Return ``{label: count}`` for the labels with a slot (``other`` apart)."""
        labels = self.vocabulary.labels
        return {lab: int(self.counts[i]) for i, lab in enumerate(labels) if self.counts[i]}

    def _aligned(self, other: object) -> NDArray[np.int64]:
        """Return ``other``'s counts laid out in this summary's slots."""
        if not isinstance(other, CategoryCounts):
            raise DataError(f"cannot combine CategoryCounts with {other!r}")
        if other.vocabulary is self.vocabulary:
            return other.counts
        out = np.zeros_like(self.counts)
        for i, lab in enumerate(other.vocabulary.labels):
            out[self.vocabulary.slot(lab)] += other.counts[i]
        out[-1] += other.counts[-1]
        return out

    def __iadd__(self, other: CategoryCounts) -> Self:
        self.counts += self._aligned(other)
        return self

    def __isub__(self, other: CategoryCounts) -> Self:
        o = self._aligned(other)
        if (o > self.counts).any():
            raise DataError(f"cannot subtract {other!r} from the smaller {self!r}")
        self.counts -= o
        return self

    def __add__(self, other: CategoryCounts) -> CategoryCounts:
        out = self.copy()
        out += other
        return out

    def __sub__(self, other: CategoryCounts) -> CategoryCounts:
        out = self.copy()
        out -= other
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CategoryCounts)
            and self.to_dict() == other.to_dict()
            and self.other == other.other
        )

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> CategoryCounts:
        """Return an independent copy (sharing the label slots)."""
        out = self.empty_like()
        out.counts[:] = self.counts
        return out

    def reset(self) -> None:
        """Forget every observation (the label slots stay)."""
        self.counts[:] = 0

    def __repr__(self) -> str:
        return f"CategoryCounts({self.to_dict()!r}, other={self.other!r})"


for _cls in (Counts, Moments, LogHistogram, SignedLogHistogram, CategoryCounts):
    _cls.__module__ = "safeserve.metrics"
del _cls

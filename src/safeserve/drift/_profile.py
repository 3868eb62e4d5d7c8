"""Reference profiles: what "no drift" looks like, as plain JSON-serializable data.

A profile holds, per numeric feature, the cut points of reference-quantile bins (deciles by
default), the reference count in each bin, a bounded random sample of the reference values
(for KS and Wasserstein), and the reference mean and standard deviation; per categorical
feature, the most frequent categories with their counts and an "other" bucket that also
receives every category never seen in the reference.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np

from .._errors import ConfigError, DataError

__all__ = [
    "CategoricalFeature",
    "NumericFeature",
    "ProfileBuilder",
    "ReferenceProfile",
]

Category = str | int
PROFILE_FORMAT = 1


def _floats(values: Iterable[object]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)  # type: ignore[arg-type]


def _ints(values: Iterable[object]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)  # type: ignore[call-overload]


def _categories(values: Iterable[Category]) -> tuple[Category, ...]:
    return tuple(values)


def _check_positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


@attrs.frozen
class NumericFeature:
    """The reference profile of one numeric feature.

    Args:
        name: Feature name.
        edges: Interior bin cut points, strictly increasing; bin ``i`` is
            ``[edges[i-1], edges[i])`` with open ends, so there are ``len(edges) + 1`` bins.
        counts: Reference rows per bin.
        sample: A sorted random sample of the reference values (at most ``sample_size``).
        mean: Reference mean.
        std: Reference population standard deviation.

    >>> f = NumericFeature("age", edges=(30.0,), counts=(4, 6), sample=(20.0, 40.0),
    ...                    mean=31.0, std=9.0)
    >>> f.n_bins, f.n_rows
    (2, 10)
    """

    name: str
    edges: tuple[float, ...] = attrs.field(converter=_floats)
    counts: tuple[int, ...] = attrs.field(converter=_ints)
    sample: tuple[float, ...] = attrs.field(converter=_floats)
    mean: float = attrs.field(converter=float)
    std: float = attrs.field(converter=float)
    kind: Literal["numeric"] = attrs.field(default="numeric", init=False)

    def __attrs_post_init__(self) -> None:
        if len(self.counts) != len(self.edges) + 1:
            raise DataError(
                f"feature {self.name!r}: {len(self.edges)!r} edges need "
                f"{len(self.edges) + 1!r} counts, got {len(self.counts)!r}"
            )
        e = np.asarray(self.edges)
        if not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
            raise DataError(f"feature {self.name!r}: edges must increase, got {self.edges!r}")
        if min(self.counts) < 0 or sum(self.counts) < 1:
            raise DataError(f"feature {self.name!r}: bad counts {self.counts!r}")
        s = np.asarray(self.sample)
        if s.size == 0 or not np.all(np.isfinite(s)) or np.any(np.diff(s) < 0):
            raise DataError(f"feature {self.name!r}: sample must be sorted, finite, non-empty")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std >= 0):
            raise DataError(f"feature {self.name!r}: bad mean/std {self.mean!r}/{self.std!r}")

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.counts)

    @property
    def n_rows(self) -> int:
        """Number of reference rows."""
        return sum(self.counts)


@attrs.frozen
class CategoricalFeature:
    """The reference profile of one categorical feature.

    Args:
        name: Feature name.
        categories: The categories kept, most frequent first (``str`` or ``int``).
        counts: Reference rows per category, then the "other" bucket (rare categories
            lumped together); live categories never seen in the reference also go there.

    >>> f = CategoricalFeature("country", categories=("fr", "de"), counts=(6, 3, 1))
    >>> f.n_bins, f.n_rows
    (3, 10)
    """

    name: str
    categories: tuple[Category, ...] = attrs.field(converter=_categories)
    counts: tuple[int, ...] = attrs.field(converter=_ints)
    kind: Literal["categorical"] = attrs.field(default="categorical", init=False)

    def __attrs_post_init__(self) -> None:
        for c in self.categories:
            if not isinstance(c, str | int):
                raise DataError(f"feature {self.name!r}: category {c!r} is not str or int")
        if len(set(self.categories)) != len(self.categories):
            raise DataError(f"feature {self.name!r}: duplicate categories {self.categories!r}")
        if len(self.counts) != len(self.categories) + 1:
            raise DataError(
                f"feature {self.name!r}: {len(self.categories)!r} categories need "
                f"{len(self.categories) + 1!r} counts (last = other), got {len(self.counts)!r}"
            )
        if min(self.counts) < 0 or sum(self.counts) < 1:
            raise DataError(f"feature {self.name!r}: bad counts {self.counts!r}")

    @property
    def n_bins(self) -> int:
        """Number of buckets, "other" included."""
        return len(self.counts)

    @property
    def n_rows(self) -> int:
        """Number of reference rows."""
        return sum(self.counts)


Feature = NumericFeature | CategoricalFeature


def _features(values: Iterable[Feature]) -> tuple[Feature, ...]:
    return tuple(values)


@attrs.frozen
class ReferenceProfile:
    """The reference distribution of every feature, in column order.

    Build one with :meth:`from_data` (training data) or :class:`ProfileBuilder` (live
    baseline traffic); store it with :meth:`to_dict` (plain JSON) and :meth:`from_dict`.

    Args:
        features: One :class:`NumericFeature` or :class:`CategoricalFeature` per column.

    Raises:
        DataError: If there is no feature, names repeat, or features disagree on the row count.

    >>> import numpy as np
    >>> X = np.arange(40.0).reshape(20, 2)
    >>> p = ReferenceProfile.from_data(X, names=["a", "b"], bins=4)
    >>> p.names, p.n_rows, p.features[0].edges
    (('a', 'b'), 20, (9.5, 19.0, 28.5))
    >>> ReferenceProfile.from_dict(p.to_dict()) == p
    True
    """

    features: tuple[Feature, ...] = attrs.field(converter=_features)

    def __attrs_post_init__(self) -> None:
        if not self.features:
            raise DataError("a profile needs at least one feature")
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"duplicate feature names {dupes!r}")
        rows = {f.n_rows for f in self.features}
        if len(rows) != 1:
            raise DataError(f"features disagree on the reference row count: {sorted(rows)!r}")

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in column order."""
        return tuple(f.name for f in self.features)

    @property
    def n_rows(self) -> int:
        """Number of reference rows."""
        return self.features[0].n_rows

    @property
    def numeric(self) -> tuple[NumericFeature, ...]:
        """The numeric features, in column order."""
        return tuple(f for f in self.features if isinstance(f, NumericFeature))

    @property
    def categorical(self) -> tuple[CategoricalFeature, ...]:
        """The categorical features, in column order."""
        return tuple(f for f in self.features if isinstance(f, CategoricalFeature))

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        names: Sequence[str] | None = None,
        categorical: Collection[str | int] = (),
        bins: int = 10,
        max_categories: int = 50,
        sample_size: int = 2000,
        seed: int = 0,
    ) -> ReferenceProfile:
        """Profile training data.

        Args:
            data: A 2-D array ``(rows, features)`` (object dtype for mixed columns) or a
                mapping of column name to 1-D array, all of one length.
            names: Column names for an array (default ``x0, x1, ...``); ignored for a mapping.
            categorical: Names or column indices of the categorical columns.
            bins: Quantile bins per numeric feature (10 = deciles); tied quantiles merge.
            max_categories: Categories kept per categorical feature; rarer ones go to "other".
            sample_size: Reference values kept per numeric feature for KS and Wasserstein.
            seed: Seed of the sample draw.

        Returns:
            The profile.

        Raises:
            ConfigError: If an option is invalid or ``categorical`` names an unknown column.
            DataError: If the data are empty, ragged, or hold non-finite numeric values or
                missing categories.

        >>> p = ReferenceProfile.from_data({"n": [1.0, 2.0, 3.0], "c": ["x", "y", "x"]},
        ...                                categorical=["c"])
        >>> p.features[1].categories, p.features[1].counts
        (('x', 'y'), (2, 1, 0))
        """
        bins = _check_positive_int("bins", bins, 2)
        max_categories = _check_positive_int("max_categories", max_categories)
        sample_size = _check_positive_int("sample_size", sample_size, 2)
        cols = _columns(data, names)
        cat = _resolve_categorical(categorical, list(cols))
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise DataError(f"columns have different lengths {sorted(lengths)!r}")
        if lengths == {0}:
            raise DataError("cannot profile empty data")
        rng = np.random.default_rng(seed)
        feats: list[Feature] = []
        for name, col in cols.items():
            if name in cat:
                feats.append(_categorical(name, col, max_categories))
            else:
                feats.append(_numeric(name, col, bins, sample_size, rng))
        return cls(tuple(feats))

    def to_dict(self) -> dict[str, Any]:
        """The profile as plain JSON-compatible data.

        Returns:
            A dict of lists, strings and numbers.

        >>> p = ReferenceProfile.from_data({"c": ["a", "b"]}, categorical=["c"])
        >>> p.to_dict()["features"][0]
        {'name': 'c', 'kind': 'categorical', 'categories': ['a', 'b'], 'counts': [1, 1, 0]}
        """
        out: list[dict[str, Any]] = []
        for f in self.features:
            if isinstance(f, NumericFeature):
                out.append(
                    {
                        "name": f.name,
                        "kind": f.kind,
                        "edges": list(f.edges),
                        "counts": list(f.counts),
                        "sample": list(f.sample),
                        "mean": f.mean,
                        "std": f.std,
                    }
                )
            else:
                out.append(
                    {
                        "name": f.name,
                        "kind": f.kind,
                        "categories": list(f.categories),
                        "counts": list(f.counts),
                    }
                )
        return {"format": PROFILE_FORMAT, "features": out}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        """Rebuild a profile from :meth:`to_dict` output.

        Args:
            data: The dict (for instance parsed from JSON).

        Returns:
            The profile.

        Raises:
            DataError: If the data are not a profile of a known format.

        >>> p = ReferenceProfile.from_data({"x": [1.0, 2.0]})
        >>> ReferenceProfile.from_dict(p.to_dict()).names
        ('x',)
        """
        try:
            if data["format"] != PROFILE_FORMAT:
                raise DataError(f"unknown profile format {data['format']!r}")
            feats: list[Feature] = []
            for f in data["features"]:
                if f["kind"] == "numeric":
                    feats.append(
                        NumericFeature(
                            f["name"], f["edges"], f["counts"], f["sample"], f["mean"], f["std"]
                        )
                    )
                elif f["kind"] == "categorical":
                    feats.append(CategoricalFeature(f["name"], f["categories"], f["counts"]))
                else:
                    raise DataError(f"unknown feature kind {f['kind']!r}")
        except (KeyError, TypeError) as e:
            raise DataError(f"not a reference profile: {e!r}") from e
        return cls(tuple(feats))


def _columns(data: Any, names: Sequence[str] | None) -> dict[str, Any]:
    if isinstance(data, Mapping):
        cols: dict[str, Any] = {}
        for k, v in data.items():
            if not isinstance(k, str):
                raise DataError(f"column names must be str, got {k!r}")
            arr = np.asarray(v)
            if arr.ndim != 1:
                raise DataError(f"column {k!r} must be 1-D, got shape {arr.shape!r}")
            cols[k] = arr
        if not cols:
            raise DataError("cannot profile data without columns")
        return cols
    try:
        arr = np.asarray(data)
    except ValueError as e:
        raise DataError(f"data is not a rectangular array: {e}") from e
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataError(f"data must be 2-D (rows, features), got shape {arr.shape!r}")
    if names is None:
        names = [f"x{i}" for i in range(arr.shape[1])]
    names = list(names)
    if len(names) != arr.shape[1] or not all(isinstance(n, str) for n in names):
        raise DataError(f"need {arr.shape[1]!r} str names, got {names!r}")
    return {n: arr[:, i] for i, n in enumerate(names)}


def _resolve_categorical(categorical: Collection[str | int], names: list[str]) -> set[str]:
    if isinstance(categorical, str):
        categorical = [categorical]
    out: set[str] = set()
    for c in categorical:
        if isinstance(c, str) and c in names:
            out.add(c)
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
            out.add(names[c])
        else:
            raise ConfigError(f"categorical column {c!r} is not one of {names!r}")
    return out


def _numeric(
    name: str, col: Any, bins: int, sample_size: int, rng: np.random.Generator
) -> NumericFeature:
    try:
        x = np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(f"numeric column {name!r} holds a non-numeric value: {e}") from e
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise DataError(f"numeric column {name!r} holds {bad!r} non-finite value(s)")
    edges = np.unique(np.quantile(x, np.arange(1, bins) / bins))
    counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=edges.size + 1)
    if x.size > sample_size:
        sample = np.sort(x[rng.choice(x.size, size=sample_size, replace=False)])
    else:
        sample = np.sort(x)
    return NumericFeature(
        name,
        edges=edges.tolist(),
        counts=counts.tolist(),
        sample=sample.tolist(),
        mean=float(np.mean(x)),
        std=float(np.std(x)),
    )


def category_value(v: object) -> Category:
    """Normalize one categorical value to ``str`` or ``int``; raise ``DataError`` otherwise."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str | int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise DataError(f"categorical value {v!r} is not a str or an int")


def _categorical(name: str, col: Any, max_categories: int) -> CategoricalFeature:
    counts: Counter[Category] = Counter()
    for v in col:
        try:
            counts[category_value(v)] += 1
        except DataError as e:
            raise DataError(f"categorical column {name!r}: {e}") from None
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], type(kv[0]).__name__, kv[0]))
    kept = ranked[:max_categories]
    other = sum(c for _, c in ranked[max_categories:])
    return CategoricalFeature(
        name, categories=[k for k, _ in kept], counts=[c for _, c in kept] + [other]
    )


class ProfileBuilder:
    """Capture a reference profile from live rows, e.g. baseline traffic at rollout start.

    Rows are validated as they arrive: malformed ones (wrong width, missing column, a
    non-numeric or non-finite numeric value, a missing category) are counted by reason and
    skipped. Beyond ``capacity`` rows, a seeded reservoir keeps a uniform sample of all the
    rows seen. :meth:`freeze` profiles what was kept.

    Args:
        names: Feature names, in column order.
        categorical: Names or indices of the categorical features.
        capacity: Rows kept at most.
        seed: Seed of the reservoir and of the profile's sample.
        bins: Passed to :meth:`ReferenceProfile.from_data`.
        max_categories: Passed to :meth:`ReferenceProfile.from_data`.
        sample_size: Passed to :meth:`ReferenceProfile.from_data`.

    Raises:
        ConfigError: If an option is invalid.

    >>> b = ProfileBuilder(["x", "color"], categorical=["color"])
    >>> for i in range(10):
    ...     b.add([float(i), "red" if i % 2 else "blue"])
    >>> b.add([float("nan"), "red"])
    >>> b.add({"x": 1.0})
    >>> b.n_rows, dict(b.rejected)
    (10, {'non_finite': 1, 'missing_feature': 1})
    >>> b.freeze().features[1].counts
    (5, 5, 0)
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        categorical: Collection[str | int] = (),
        capacity: int = 100_000,
        seed: int = 0,
        bins: int = 10,
        max_categories: int = 50,
        sample_size: int = 2000,
    ) -> None:
        self._names = tuple(names)
        if not self._names or not all(isinstance(n, str) for n in self._names):
            raise ConfigError(f"names must be a non-empty sequence of str, got {names!r}")
        if len(set(self._names)) != len(self._names):
            raise ConfigError(f"duplicate feature names in {names!r}")
        cat = _resolve_categorical(categorical, list(self._names))
        self._is_cat = tuple(n in cat for n in self._names)
        self._capacity = _check_positive_int("capacity", capacity)
        self._options = {
            "bins": _check_positive_int("bins", bins, 2),
            "max_categories": _check_positive_int("max_categories", max_categories),
            "sample_size": _check_positive_int("sample_size", sample_size, 2),
            "seed": seed,
        }
        self._rows: list[tuple[object, ...]] = []
        self._seen = 0
        self._random = random.Random(seed)
        self.rejected: Counter[str] = Counter()
        """Malformed rows skipped, by reason."""

    @property
    def n_rows(self) -> int:
        """Valid rows seen (kept or not)."""
        return self._seen

    def add(self, row: Sequence[object] | Mapping[str, object]) -> None:
        """Add one row (a sequence in column order, or a mapping of name to value).

        Args:
            row: The row.
        """
        parsed = parse_row(row, self._names, self._is_cat)
        if isinstance(parsed, str):
            self.rejected[parsed] += 1
            return
        self._seen += 1
        if len(self._rows) < self._capacity:
            self._rows.append(parsed)
        else:
            j = self._random.randrange(self._seen)
            if j < self._capacity:
                self._rows[j] = parsed

    def add_batch(self, rows: Iterable[Sequence[object] | Mapping[str, object]]) -> None:
        """Add several rows (a 2-D array or an iterable of rows).

        Args:
            rows: The rows.
        """
        for row in rows:
            self.add(row)

    def freeze(self) -> ReferenceProfile:
        """Profile the rows kept so far.

        Returns:
            The profile.

        Raises:
            DataError: If no valid row was added.
        """
        if not self._rows:
            raise DataError(f"no valid row captured (rejected: {dict(self.rejected)!r})")
        cols = {
            n: np.array([r[i] for r in self._rows], dtype=object if c else np.float64)
            for i, (n, c) in enumerate(zip(self._names, self._is_cat, strict=True))
        }
        cat = [n for n, c in zip(self._names, self._is_cat, strict=True) if c]
        return ReferenceProfile.from_data(
            cols,
            categorical=cat,
            bins=int(self._options["bins"]),
            max_categories=int(self._options["max_categories"]),
            sample_size=int(self._options["sample_size"]),
            seed=int(self._options["seed"]),
        )


def parse_row(
    row: object, names: tuple[str, ...], is_cat: tuple[bool, ...]
) -> tuple[object, ...] | str:
    """Validate one row; return its values in column order, or the reason it is malformed.

    Numeric values become finite ``float``; categorical values become ``str`` or ``int``.
    Reasons: ``wrong_width``, ``missing_feature``, ``not_a_row``, ``non_numeric``,
    ``non_finite``, ``bad_category``.
    """
    if isinstance(row, Mapping):
        try:
            values: Sequence[object] = [row[n] for n in names]
        except KeyError:
            return "missing_feature"
    elif isinstance(row, str | bytes):
        return "not_a_row"
    else:
        try:
            values = list(row)  # type: ignore[call-overload]
        except TypeError:
            return "not_a_row"
        if len(values) != len(names):
            return "wrong_width"
    out: list[object] = []
    for v, cat in zip(values, is_cat, strict=True):
        if cat:
            try:
                out.append(category_value(v))
            except DataError:
                return "bad_category"
        else:
            if isinstance(v, str | bytes):
                return "non_numeric"
            try:
                f = float(v)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return "non_numeric"
            if not math.isfinite(f):
                return "non_finite"
            out.append(f)
    return tuple(out)

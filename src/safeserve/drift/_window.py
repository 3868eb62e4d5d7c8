"""Row encoding and fixed-capacity ring buffers of live rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._profile import CategoricalFeature, ReferenceProfile, parse_row

__all__ = ["Codec", "Ring"]


_PLAIN_NUMBERS = frozenset({float, int})


def _fast_rows(rows: list[Any], width: int) -> NDArray[np.float64] | None:
    """Rows that are all tuples of ``width`` numbers, as one array; ``None`` otherwise."""
    if not all(type(r) is tuple and len(r) == width for r in rows):
        if all(
            type(r) is np.ndarray and r.shape == (width,) and r.dtype.kind in "biuf" for r in rows
        ):
            return np.stack(rows).astype(np.float64, copy=False)
        return None
    if not {*map(type, chain.from_iterable(rows))} <= _PLAIN_NUMBERS:
        return None
    return np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * width).reshape(
        len(rows), width
    )


class Codec:
    """Turns rows into a float matrix of numeric features and an int matrix of category codes.

    Category code ``i`` is ``categories[i]``; ``len(categories)`` is "other" (rare or unseen).
    """

    def __init__(self, profile: ReferenceProfile) -> None:
        self.names = profile.names
        self.width = len(self.names)
        self.is_cat = tuple(isinstance(f, CategoricalFeature) for f in profile.features)
        self.num_pos = [i for i, c in enumerate(self.is_cat) if not c]
        self.cat_pos = [i for i, c in enumerate(self.is_cat) if c]
        self.maps: list[dict[object, int]] = [
            {c: k for k, c in enumerate(f.categories)} for f in profile.categorical
        ]
        self.other = [len(f.categories) for f in profile.categorical]

    def empty(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        return (
            np.zeros((0, len(self.num_pos))),
            np.zeros((0, len(self.cat_pos)), dtype=np.int64),
        )

    def encode(self, rows: Any) -> tuple[NDArray[np.float64], NDArray[np.int64], Counter[str]]:
        """Encode a 2-D array or a sequence of rows; malformed rows are counted by reason."""
        reasons: Counter[str] = Counter()
        if not self.cat_pos and isinstance(rows, list) and rows:
            fast = _fast_rows(rows, self.width)
            if fast is not None:
                rows = fast
        if not self.cat_pos:
            arr: NDArray[Any] | None
            if isinstance(rows, np.ndarray):
                arr = rows
            else:
                try:
                    arr = np.asarray(rows)
                except (ValueError, TypeError):
                    arr = None
            if (
                arr is not None
                and arr.ndim == 2
                and arr.shape[1] == self.width
                and arr.dtype.kind in "biuf"
            ):
                x = np.asarray(arr, dtype=np.float64)
                ok = np.isfinite(x).all(axis=1)
                bad = int(ok.size - np.count_nonzero(ok))
                if bad:
                    reasons["non_finite"] += bad
                    x = x[ok]
                return np.ascontiguousarray(x), np.zeros((len(x), 0), dtype=np.int64), reasons
        num_rows: list[list[float]] = []
        cat_rows: list[list[int]] = []
        for row in rows:
            parsed = parse_row(row, self.names, self.is_cat)
            if isinstance(parsed, str):
                reasons[parsed] += 1
                continue
            num_rows.append([parsed[i] for i in self.num_pos])  # type: ignore[misc]
            cat_rows.append(
                [
                    m.get(parsed[i], o)
                    for i, m, o in zip(self.cat_pos, self.maps, self.other, strict=True)
                ]
            )
        if not num_rows:
            num, cat = self.empty()
            return num, cat, reasons
        num = np.asarray(num_rows, dtype=np.float64).reshape(len(num_rows), len(self.num_pos))
        cat = np.asarray(cat_rows, dtype=np.int64).reshape(len(cat_rows), len(self.cat_pos))
        return num, cat, reasons

    def encode_outputs(
        self, outputs: Sequence[object] | NDArray[Any]
    ) -> tuple[NDArray[np.float64], NDArray[np.int64], Counter[str]]:
        """Encode model outputs: scalars for a one-column profile, else rows."""
        if self.width == 1:
            if isinstance(outputs, np.ndarray) and outputs.ndim == 1:
                outputs = outputs.reshape(-1, 1)
            elif not isinstance(outputs, np.ndarray):
                outputs = [o if isinstance(o, list | tuple | np.ndarray) else (o,) for o in outputs]
        return self.encode(outputs)


class Ring:
    """A fixed-capacity, count-based window of encoded rows (oldest overwritten first)."""

    def __init__(self, capacity: int, n_num: int, n_cat: int) -> None:
        self.capacity = capacity
        self.num = np.zeros((capacity, n_num))
        self.cat = np.zeros((capacity, n_cat), dtype=np.int64)
        self.pos = 0
        self.size = 0
        self.added = 0  # rows ever added (a clear does not undo them)

    def clear(self) -> None:
        self.pos = 0
        self.size = 0

    def extend(self, num: NDArray[np.float64], cat: NDArray[np.int64]) -> None:
        k = num.shape[0]
        if k == 0:
            return
        self.added += k
        if k >= self.capacity:
            num = num[-self.capacity :]
            cat = cat[-self.capacity :]
            self.num[:] = num
            self.cat[:] = cat
            self.pos = 0
            self.size = self.capacity
            return
        end = self.pos + k
        if end <= self.capacity:
            self.num[self.pos : end] = num
            self.cat[self.pos : end] = cat
        else:
            first = self.capacity - self.pos
            self.num[self.pos :] = num[:first]
            self.cat[self.pos :] = cat[:first]
            self.num[: k - first] = num[first:]
            self.cat[: k - first] = cat[first:]
        self.pos = end % self.capacity
        self.size = min(self.size + k, self.capacity)

    def contents(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The rows held, in no particular order (views, not copies)."""
        return self.num[: self.size], self.cat[: self.size]

    def ordered(self) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The rows held, oldest first (copies)."""
        if self.size < self.capacity:
            return self.num[: self.size].copy(), self.cat[: self.size].copy()
        return (
            np.concatenate([self.num[self.pos :], self.num[: self.pos]]),
            np.concatenate([self.cat[self.pos :], self.cat[: self.pos]]),
        )

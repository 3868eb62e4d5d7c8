"""Output validators: decide whether a model's answer may be returned.

A validator is any callable ``validator(output) -> bool`` (``True`` = valid); one that raises
counts as a rejection. For :meth:`Router.predict_batch`, a validator may also carry a
``batch(outputs) -> bool array`` attribute that judges every row of a slice at once; without
it the router calls the validator once per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["has_shape", "is_finite"]


def _finite_rows(outputs: Any) -> NDArray[np.bool_]:
    arr = np.asarray(outputs)
    if arr.dtype.kind not in "biufc":
        if arr.dtype.kind != "O":
            return np.ones(arr.shape[:1] or (1,), dtype=bool)
        return np.fromiter((is_finite(o) for o in arr), dtype=bool, count=len(arr))
    ok = np.asarray(np.isfinite(arr), dtype=bool)
    if ok.ndim > 1:
        return np.asarray(ok.reshape(ok.shape[0], -1).all(axis=1), dtype=bool)
    return ok


class _IsFinite:
    __slots__ = ()

    def __call__(self, output: Any) -> bool:
        if isinstance(output, float):
            return output == output and output not in (float("inf"), float("-inf"))
        if isinstance(output, int | str | bytes):
            return True
        try:
            arr = np.asarray(output)
        except Exception:
            return False
        if arr.dtype.kind in "biufc":
            return bool(np.isfinite(arr).all())
        if arr.dtype.kind == "O" and arr.ndim:
            return all(self(o) for o in arr.ravel())
        return True

    def batch(self, outputs: Any) -> NDArray[np.bool_]:
        return _finite_rows(outputs)

    def __repr__(self) -> str:
        return "safeserve.is_finite"


#: Validator that rejects NaN or infinite numbers anywhere in an output (labels pass).
#:
#: >>> import safeserve as ss
#: >>> ss.is_finite(0.5), ss.is_finite(float("nan")), ss.is_finite([1.0, float("inf")])
#: (True, False, False)
is_finite: Callable[[Any], bool] = _IsFinite()


class _HasShape:
    __slots__ = ("finite", "shape")

    def __init__(self, shape: tuple[int, ...], finite: bool) -> None:
        self.shape = shape
        self.finite = finite

    def __call__(self, output: Any) -> bool:
        arr = np.asarray(output)
        if arr.shape != self.shape:
            return False
        return not self.finite or is_finite(arr)

    def batch(self, outputs: Any) -> NDArray[np.bool_]:
        arr = np.asarray(outputs)
        n = len(outputs)
        if arr.dtype.kind == "O" or arr.shape[1:] != self.shape:
            return np.fromiter((self(o) for o in outputs), dtype=bool, count=n)
        return _finite_rows(arr) if self.finite else np.ones(n, dtype=bool)

    def __repr__(self) -> str:
        return f"safeserve.has_shape({self.shape!r}, finite={self.finite!r})"


def has_shape(*shape: int, finite: bool = True) -> Callable[[Any], bool]:
    """Return a validator that accepts outputs of exactly ``shape`` (and finite, by default).

    Args:
        shape: The expected shape of one output, e.g. ``has_shape(3)`` for three class
            probabilities, ``has_shape()`` for a scalar.
        finite: Also reject NaN and infinite values.

    >>> import safeserve as ss
    >>> check = ss.has_shape(2)
    >>> check([0.3, 0.7]), check([0.3]), check([0.3, float("nan")])
    (True, False, False)
    """
    return _HasShape(tuple(int(s) for s in shape), finite)

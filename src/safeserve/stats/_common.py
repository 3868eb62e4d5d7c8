"""Shared vocabulary of the statistics package: verdicts, directions and input checks."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safeserve._errors import ConfigError, DataError

__all__ = ["Direction", "Verdict"]


class Verdict(enum.StrEnum):
    """The outcome of one check at one look.

    ``FAIL`` means the evidence shows harm (roll back), ``PASS`` means the candidate is shown to be
    non-inferior (may be promoted), ``INCONCLUSIVE`` means keep collecting data. The values are
    plain lower-case strings, so a verdict serializes to JSON as itself.

    >>> from safeserve.stats import Verdict
    >>> Verdict.FAIL.value
    'fail'
    >>> Verdict("pass") is Verdict.PASS
    True
    """

    FAIL = "fail"
    PASS = "pass"
    INCONCLUSIVE = "inconclusive"


class Direction(enum.StrEnum):
    """Which change of a metric is harm.

    ``HIGHER_IS_WORSE`` suits latency and error rates, ``LOWER_IS_WORSE`` suits conversion or
    accuracy, and ``EITHER`` treats a change either way as harm (a two-sided check).

    >>> from safeserve.stats import Direction
    >>> Direction("higher_is_worse") is Direction.HIGHER_IS_WORSE
    True
    >>> [d.value for d in Direction]
    ['higher_is_worse', 'lower_is_worse', 'either']
    """

    HIGHER_IS_WORSE = "higher_is_worse"
    LOWER_IS_WORSE = "lower_is_worse"
    EITHER = "either"


Verdict.__module__ = "safeserve.stats"
Direction.__module__ = "safeserve.stats"


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as a float if it lies strictly between 0 and 1, else raise ConfigError."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating)):
        raise ConfigError(f"{name} must be a number in (0, 1), got {alpha!r}")
    value = float(alpha)
    if not (0.0 < value < 1.0):
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {alpha!r}")
    return value


def check_confidence(confidence: float) -> float:
    """Return ``confidence`` as a float if it lies strictly between 0 and 1."""
    return check_alpha(confidence, "confidence")


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0, else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    out = float(value)
    if not (math.isfinite(out) and out > 0.0):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return out


def check_direction(direction: Any) -> Direction:
    """Coerce a Direction or its string value, raising ConfigError for anything else."""
    try:
        return Direction(direction)
    except ValueError:
        choices = ", ".join(repr(d.value) for d in Direction)
        raise ConfigError(f"direction must be one of {choices}, got {direction!r}") from None


def check_alternative(alternative: str) -> str:
    """Check a scipy-style ``alternative`` argument."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ConfigError(
            f"alternative must be 'two-sided', 'greater' or 'less', got {alternative!r}"
        )
    return alternative


def clean_sample(values: ArrayLike, name: str) -> tuple[NDArray[np.float64], int]:
    """Return the finite-or-infinite values of a 1-D sample with NaN removed, and the NaN count.

    Raises:
        DataError: if the sample is not 1-D numeric, holds an infinity, or is empty once NaN are
            removed.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a 1-D sequence of numbers, got {values!r}") from None
    if arr.ndim != 1:
        raise DataError(f"{name} must be 1-D, got an array of shape {arr.shape!r}")
    nan_mask = np.isnan(arr)
    removed = int(nan_mask.sum())
    arr = arr[~nan_mask]
    if np.isinf(arr).any():
        bad = float(arr[np.isinf(arr)][0])
        raise DataError(f"{name} holds a non-finite value {bad!r}")
    if arr.size == 0:
        if removed:
            raise DataError(f"{name} is empty after removing {removed!r} NaN value(s)")
        raise DataError(f"{name} is empty")
    return arr, removed


def as_float_array(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """Convert sufficient statistics to a float array, rejecting NaN and infinities."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be numeric, got {values!r}") from None
    if not np.isfinite(arr).all():
        bad = float(arr[~np.isfinite(arr)].flat[0])
        raise DataError(f"{name} holds a non-finite value {bad!r}")
    return arr


def as_count_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    """Convert counts to an int64 array, rejecting negatives, fractions and non-finite values."""
    arr = as_float_array(values, name)
    if (arr < 0).any():
        raise DataError(f"{name} must be >= 0, got {values!r}")
    if (arr != np.floor(arr)).any():
        raise DataError(f"{name} must be whole numbers, got {values!r}")
    return arr.astype(np.int64)


def fmt(x: float) -> str:
    """Format a number compactly for a reason string."""
    return f"{x:.4g}"


def join_reasons(parts: Iterable[str]) -> str:
    """Join reason fragments with '; '."""
    return "; ".join(p for p in parts if p)

"""Streaming change detectors for early warning of sustained shifts."""

from __future__ import annotations

import math
import sys
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._errors import ConfigError, DataError

__all__ = ["PageHinkley"]


class PageHinkley:
    """Page-Hinkley test for a change in the mean, run on ``width`` streams at once.

    The update rule and the defaults are river's (``river.drift.PageHinkley``): per stream,
    with ``x̄`` the running mean including ``x``,
    ``S+ = alpha·S+ + (x − x̄) − delta`` and ``S− = alpha·S− + (x − x̄) + delta``; a drift is
    flagged once at least ``min_instances`` values were seen and ``S+ − min S+`` (an increase)
    or ``max S− − S−`` (a decrease) exceeds ``threshold``. A stream that flagged a drift starts
    afresh at its next update. ``delta`` and ``threshold`` are in the units of ``x``, so feed
    standardized values: :class:`DriftMonitor` feeds means of blocks of standardized rows.

    Args:
        width: Number of independent streams (features); 0 for a single scalar stream.
        min_instances: Values needed before a stream may flag a drift.
        delta: Magnitude of changes tolerated.
        threshold: Alarm threshold on the cumulative deviation.
        alpha: Forgetting factor of the cumulative sums.
        mode: ``"up"``, ``"down"`` or ``"both"`` (river's default).

    Raises:
        ConfigError: If an option is invalid.

    >>> ph = PageHinkley()
    >>> hits = []
    >>> for i in range(200):
    ...     ph.update(0.0 if i < 100 else 5.0)
    ...     if ph.drift_detected:
    ...         hits.append(i)
    >>> hits
    [110]
    """

    def __init__(
        self,
        width: int = 0,
        *,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
        mode: Literal["up", "down", "both"] = "both",
    ) -> None:
        if isinstance(width, bool) or not isinstance(width, int) or width < 0:
            raise ConfigError(f"width must be an int >= 0, got {width!r}")
        if isinstance(min_instances, bool) or not isinstance(min_instances, int):
            raise ConfigError(f"min_instances must be an int, got {min_instances!r}")
        if not (math.isfinite(delta) and delta >= 0):
            raise ConfigError(f"delta must be finite and >= 0, got {delta!r}")
        if not (math.isfinite(threshold) and threshold > 0):
            raise ConfigError(f"threshold must be finite and > 0, got {threshold!r}")
        if not 0.0 < alpha <= 1.0:
            raise ConfigError(f"alpha must be in (0, 1], got {alpha!r}")
        if mode not in ("up", "down", "both"):
            raise ConfigError(f"mode must be 'up', 'down' or 'both', got {mode!r}")
        self.width = width
        self.min_instances = min_instances
        self.delta = float(delta)
        self.threshold = float(threshold)
        self.alpha = float(alpha)
        self.mode: Literal["up", "down", "both"] = mode
        shape = (max(width, 1),)
        self._n = np.zeros(shape, dtype=np.int64)
        self._mean = np.zeros(shape)
        self._sum_inc = np.zeros(shape)
        self._sum_dec = np.zeros(shape)
        self._min_inc = np.full(shape, sys.float_info.max)
        self._max_dec = np.full(shape, -sys.float_info.max)
        self._drift = np.zeros(shape, dtype=bool)

    def _reset(self, mask: NDArray[np.bool_]) -> None:
        self._n[mask] = 0
        self._mean[mask] = 0.0
        self._sum_inc[mask] = 0.0
        self._sum_dec[mask] = 0.0
        self._min_inc[mask] = sys.float_info.max
        self._max_dec[mask] = -sys.float_info.max
        self._drift[mask] = False

    def update(self, x: float | ArrayLike) -> None:
        """Feed one value per stream.

        Args:
            x: A float (``width == 0``) or an array of ``width`` floats.

        Raises:
            DataError: If ``x`` has the wrong shape or a non-finite value.
        """
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        if v.shape != self._n.shape:
            raise DataError(f"expected {self._n.size!r} value(s), got {x!r}")
        if not np.all(np.isfinite(v)):
            raise DataError(f"values must be finite, got {x!r}")
        if self._drift.any():
            self._reset(self._drift.copy())
        self._n += 1
        self._mean += (v - self._mean) / self._n
        dev = v - self._mean
        self._sum_inc = self.alpha * self._sum_inc + dev - self.delta
        self._sum_dec = self.alpha * self._sum_dec + dev + self.delta
        np.minimum(self._min_inc, self._sum_inc, out=self._min_inc)
        np.maximum(self._max_dec, self._sum_dec, out=self._max_dec)
        inc = self._sum_inc - self._min_inc > self.threshold
        dec = self._max_dec - self._sum_dec > self.threshold
        hit = inc if self.mode == "up" else dec if self.mode == "down" else inc | dec
        self._drift = hit & (self._n >= self.min_instances)

    def update_many(self, values: ArrayLike) -> NDArray[np.bool_]:
        """Feed several values per stream, oldest first; same result as repeated :meth:`update`.

        The recursion runs vectorized over time (closed forms with cumulative sums), restarting
        only after a step that flagged a drift, so a quiet chunk costs a few array operations.

        Args:
            values: An array ``(steps, width)`` (or ``(steps,)`` for a scalar stream).

        Returns:
            Per stream, whether any of these steps flagged a drift.

        Raises:
            DataError: If ``values`` has the wrong shape or a non-finite value.

        >>> ph = PageHinkley(2)
        >>> x = np.zeros((200, 2))
        >>> x[100:, 1] = 5.0
        >>> ph.update_many(x).tolist()
        [False, True]
        """
        x = np.asarray(values, dtype=np.float64)
        w = self._n.size
        if x.ndim == 1 and self.width == 0:
            x = x.reshape(-1, 1)
        if x.ndim != 2 or x.shape[1] != w:
            raise DataError(f"expected an array (steps, {w!r}), got shape {x.shape!r}")
        if not np.all(np.isfinite(x)):
            raise DataError("values must be finite")
        fired = np.zeros(w, dtype=bool)
        start = 0
        while start < x.shape[0]:
            if self._drift.any():
                self._reset(self._drift.copy())
            chunk = x[start : start + 4096]
            t = chunk.shape[0]
            steps = np.arange(1, t + 1, dtype=np.float64)[:, None]
            n = self._n + steps
            mean = (self._n * self._mean + np.cumsum(chunk, axis=0)) / n
            dev = chunk - mean
            if self.alpha == 1.0:
                s_inc = self._sum_inc + np.cumsum(dev - self.delta, axis=0)
                s_dec = self._sum_dec + np.cumsum(dev + self.delta, axis=0)
            else:
                pw = self.alpha**steps
                s_inc = pw * (self._sum_inc + np.cumsum((dev - self.delta) / pw, axis=0))
                s_dec = pw * (self._sum_dec + np.cumsum((dev + self.delta) / pw, axis=0))
            min_inc = np.minimum(self._min_inc, np.minimum.accumulate(s_inc, axis=0))
            max_dec = np.maximum(self._max_dec, np.maximum.accumulate(s_dec, axis=0))
            inc = s_inc - min_inc > self.threshold
            dec = max_dec - s_dec > self.threshold
            hit = inc if self.mode == "up" else dec if self.mode == "down" else inc | dec
            hit &= n >= self.min_instances
            any_hit = hit.any(axis=1)
            stop = int(np.argmax(any_hit)) + 1 if any_hit.any() else t
            i = stop - 1
            self._n = self._n + stop
            self._mean = mean[i].copy()
            self._sum_inc = s_inc[i].copy()
            self._sum_dec = s_dec[i].copy()
            self._min_inc = min_inc[i].copy()
            self._max_dec = max_dec[i].copy()
            self._drift = hit[i].copy()
            fired |= hit[:stop].any(axis=0)
            start += stop
        return fired

    @property
    def drift_detected(self) -> bool:
        """Whether the last update flagged a drift (in any stream)."""
        return bool(self._drift.any())

    @property
    def drifted(self) -> NDArray[np.bool_]:
        """Per-stream flags of the last update (a copy).

        >>> ph = PageHinkley(2, min_instances=1, threshold=1.0)
        >>> ph.update([0.0, 0.0]); ph.update([0.0, 9.0])
        >>> ph.drifted.tolist()
        [False, True]
        """
        return self._drift.copy()

    @property
    def n(self) -> NDArray[np.int64]:
        """Values seen per stream since its last reset (a copy)."""
        return self._n.copy()

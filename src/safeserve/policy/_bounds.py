"""Anytime-valid bounds on a binomial proportion (Robbins' uniform-prior mixture)."""

from __future__ import annotations

import math

from scipy import special

__all__ = ["binomial_cs"]


def _log_bf(x: int, n: int, p: float) -> float:
    # Mixture (uniform prior) over the point likelihood at p: a test martingale under p.
    ll = 0.0
    if x:
        ll += x * math.log(p) if p > 0 else -math.inf
    if n - x:
        ll += (n - x) * math.log1p(-p) if p < 1 else -math.inf
    return float(special.betaln(x + 1, n - x + 1)) - ll


def binomial_cs(x: int, n: int, alpha: float) -> tuple[float, float]:
    """Return a confidence sequence ``(lower, upper)`` for a proportion after ``x`` of ``n``.

    The set of ``p`` at which the uniform-mixture Bayes factor stays below ``1 / alpha``; by
    Ville's inequality it covers the true ``p`` at every ``n`` at once with probability at
    least ``1 - alpha``, so it may be checked after every batch.

    >>> lo, hi = binomial_cs(0, 10_000, 0.05)
    >>> lo, round(hi, 6)
    (0.0, 0.00122)
    """
    if n <= 0:
        return 0.0, 1.0
    bound = math.log(1.0 / alpha)
    center = x / n

    def inside(p: float) -> bool:
        return _log_bf(x, n, p) < bound

    def edge(inner: float, outer: float) -> float:
        """Bisect between a point inside the set and one outside it; return the inside end."""
        for _ in range(60):
            mid = 0.5 * (inner + outer)
            if inside(mid):
                inner = mid
            else:
                outer = mid
        return inner

    upper = 1.0 if inside(1.0) else edge(center, 1.0)
    lower = 0.0 if inside(0.0) else edge(center, 0.0)
    return lower, upper

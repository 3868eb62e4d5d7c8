"""Anytime-valid bounds on a binomial proportion (Robbins' uniform-prior mixture)."""

from __future__ import annotations

import math

from scipy import special

__all__ = ["binomial_cs"]


def _log_bf(x: int, n: int, p: float, log_beta: float) -> float:
    # Mixture (uniform prior) over the point likelihood at p: a test martingale under p.
    ll = 0.0
    if x:
        ll += x * math.log(p) if p > 0 else -math.inf
    if n - x:
        ll += (n - x) * math.log1p(-p) if p < 1 else -math.inf
    return log_beta - ll


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

    log_beta = float(special.betaln(x + 1, n - x + 1))

    def f(p: float) -> float:
        return _log_bf(x, n, p, log_beta) - bound

    def edge(inner: float, outer: float) -> float:
        """Root of ``f`` between ``inner`` (f < 0) and ``outer`` (f >= 0).

        Newton from a normal-approximation start, with a bisection step whenever Newton would
        leave the bracket; ``f`` is convex with its minimum at ``x / n``, so this converges
        in a handful of steps. Returns the root to within 1e-9 of ``log(1 / alpha)``.
        """
        spread = math.sqrt(max(center * (1 - center), 1.0 / n) * 2 * (bound + math.log(n + 1)) / n)
        p = center + math.copysign(spread, outer - inner)
        for _ in range(100):
            lo, hi = min(inner, outer), max(inner, outer)
            if not lo < p < hi:
                p = 0.5 * (inner + outer)
            fp = f(p)
            if abs(fp) < 1e-9:
                return p  # converged (Newton approaches from one side; the inner end may lag)
            if fp < 0:
                inner = p
            else:
                outer = p
            # Near 0 or 1 the function is steep: the width is judged against the distance to
            # the nearer end, down to float resolution.
            scale = max(1e-300, min(abs(inner), abs(1.0 - inner)))
            if abs(outer - inner) <= max(1e-12 * scale, 4e-16):
                break
            slope = (n - x) / (1 - p) - x / p if 0 < p < 1 else 0.0
            p = p - fp / slope if slope else math.nan
        return inner

    upper = 1.0 if f(1.0) < 0 else edge(center, 1.0)
    lower = 0.0 if f(0.0) < 0 else edge(center, 0.0)
    return lower, upper

"""Anytime-valid bounds on a binomial proportion (Robbins' uniform-prior mixture)."""

from __future__ import annotations

import math

from scipy import special

__all__ = ["binomial_cs", "binomial_cs_side"]


def _log_bf(x: int, n: int, p: float, log_beta: float) -> float:
    # Mixture (uniform prior) over the point likelihood at p: a test martingale under p.
    ll = 0.0
    if x:
        ll += x * math.log(p) if p > 0 else -math.inf
    if n - x:
        ll += (n - x) * math.log1p(-p) if p < 1 else -math.inf
    return log_beta - ll


def _edge(
    x: int, n: int, log_beta: float, bound: float, p: float, inner: float, outer: float
) -> float:
    """Root of ``log BF(p) - bound`` between ``inner`` (below) and ``outer`` (at or above).

    Newton from the start ``p``, with a bisection step whenever Newton would leave the
    bracket; the function is convex with its minimum at ``x / n``, so this converges in a
    handful of steps. Returns the root to within 1e-9 of ``bound``. (:func:`_log_bf` written
    out in the loop: this runs at every evaluation of every latency-quantile check.)
    """
    y = n - x
    log, log1p, inf = math.log, math.log1p, math.inf
    for _ in range(100):
        lo, hi = (outer, inner) if outer < inner else (inner, outer)
        if not lo < p < hi:
            p = 0.5 * (inner + outer)
        ll = 0.0
        if x:
            ll += x * log(p) if p > 0 else -inf
        if y:
            ll += y * log1p(-p) if p < 1 else -inf
        fp = log_beta - ll - bound
        if abs(fp) < 1e-9:
            return p  # converged (Newton approaches from one side; the inner end may lag)
        if fp < 0:
            inner = p
        else:
            outer = p
        # Near 0 or 1 the function is steep: the width is judged against the distance to
        # the nearer end, down to float resolution.
        a, b = abs(inner), abs(1.0 - inner)
        scale = b if b < a else a
        scale = scale if scale > 1e-300 else 1e-300
        tol = 1e-12 * scale
        if abs(outer - inner) <= (tol if tol > 4e-16 else 4e-16):
            break
        slope = y / (1 - p) - x / p if 0 < p < 1 else 0.0
        p = p - fp / slope if slope else math.nan
    return inner


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
    log_beta = float(special.betaln(x + 1, n - x + 1))
    return _end(x, n, bound, log_beta, 0.0), _end(x, n, bound, log_beta, 1.0)


def binomial_cs_side(x: int, n: int, alpha: float, *, upper: bool) -> float:
    """One end of :func:`binomial_cs`, for a caller that needs only that one.

    >>> binomial_cs_side(0, 10_000, 0.05, upper=True) == binomial_cs(0, 10_000, 0.05)[1]
    True
    """
    if n <= 0:
        return 1.0 if upper else 0.0
    bound = math.log(1.0 / alpha)
    log_beta = float(special.betaln(x + 1, n - x + 1))
    return _end(x, n, bound, log_beta, 1.0 if upper else 0.0)


def _end(x: int, n: int, bound: float, log_beta: float, end: float) -> float:
    """The end of the sequence toward ``end`` (0 or 1): ``end`` itself when the Bayes factor
    stays below the bound all the way there, else the root of :func:`_edge`."""
    if _log_bf(x, n, end, log_beta) - bound < 0:
        return end
    center = x / n
    # Newton starts a normal-approximation distance from the center, toward the end.
    spread = math.sqrt(max(center * (1 - center), 1.0 / n) * 2 * (bound + math.log(n + 1)) / n)
    return _edge(x, n, log_beta, bound, center + math.copysign(spread, end - center), center, end)

"""Shadow mirroring: answer with the primary, replay the request on a shadow model off the path.

The router calls :meth:`ShadowMirror.submit` after the primary answered (and
:meth:`ShadowMirror.submit_batch` with the mirrored rows of a batch). ``submit`` takes one
short lock, puts the request on a bounded queue and returns; a small pool of daemon threads
calls the shadow model, compares its output with the primary's on the same request, and keeps
the counts and the paired statistics that :meth:`ShadowMirror.report` returns as plain data.

Python cannot kill a thread, so a shadow call that runs past ``timeout`` is counted as a timeout
and its thread is set aside as *stuck* and replaced by a fresh one, up to ``max_stuck`` stuck
threads; beyond that, mirroring is suspended (every submit is dropped and counted) until stuck
calls return. The queue is bounded and so is the number of threads, so a hanging shadow model
exhausts neither memory nor threads.

Every mirrored request ends in exactly one outcome, which gives the identities that
:class:`ShadowReport` satisfies at every instant:

- ``submitted == mirrored + dropped + suspended + refused``
- ``mirrored == completed + errors + timeouts + discarded + queued + running``
- ``completed == compared + skipped``
"""

from __future__ import annotations

import math
import os
import queue
import reprlib
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
import numpy as np
from numpy.typing import NDArray
from scipy import special

from . import _shadow_process
from ._errors import ConfigError, DataError
from ._shadow_process import ProcessLink
from .metrics import LogHistogram, Moments, SignedLogHistogram
from .metrics._summaries import LIMIT as _LIMIT
from .stats import Verdict, always_valid_p
from .stats._sequential import _halfwidth

__all__ = ["OutputMode", "ShadowMirror", "ShadowPair", "ShadowReport"]

OutputMode = Literal["auto", "label", "numeric"]
_MODES: Final = ("auto", "label", "numeric")
Isolation = Literal["thread", "process"]
_ISOLATIONS: Final = ("thread", "process")

#: Concentration ``c`` of the Beta(c*p0, c*(1-p0)) mixing prior of the disagreement test.
PRIOR_STRENGTH: Final = 10.0
#: N*, the number of pairs at which the paired-difference sequence is tightest.
TUNING: Final = 5000.0
#: Pairs needed before the (asymptotic) paired-difference sequence may decide.
MIN_PAIRS: Final = 100
#: Buffered observations flushed into the moments and histograms at once.
_FLUSH_AT: Final = 512
#: What counts as a score in [0, 1]: float32 rounding may land a hair outside (the difference
#: of such a pair is clipped to [-1, 1], a bias of 1e-6 at most).
_UNIT_LOW: Final = -1e-6
_UNIT_HIGH: Final = 1.0 + 1e-6
_LOG2: Final = math.log(2.0)

# Mirror states.
_IDLE, _RUNNING, _SUSPENDED, _CLOSED = "idle", "running", "suspended", "closed"
# Output kinds of one value.
_LABEL, _NUMERIC, _VECTOR, _OTHER = "label", "numeric", "vector", "other"
_STOP: Final = object()

_LABEL_SCALARS: Final = (str, bool, int, np.str_, np.bool_, np.integer)
_FLOAT_SCALARS: Final = (float, np.floating)


@attrs.frozen(kw_only=True)
class ShadowPair:
    """One mirrored request as both models answered it, handed to the ``sink``.

    Attributes:
        request_id: The id the router gave the request (None if it gave none).
        input: The model input.
        primary_output: What the primary answered (the caller got this).
        shadow_output: What the shadow answered; None when it raised.
        primary_latency: Seconds the primary took.
        shadow_latency: Seconds the shadow took (until now for a timeout, by the mirror's clock).
        error: None for a completed call, else why not: ``"timeout"``, ``"exception: ..."``,
            ``"non_finite"``, ``"too_large"`` or ``"mismatch: ..."``.

    >>> p = ShadowPair(request_id=7, input=[1.0], primary_output="cat", shadow_output="dog",
    ...                primary_latency=0.002, shadow_latency=0.02, error=None)
    >>> p.primary_output == p.shadow_output
    False
    """

    request_id: Any
    input: Any
    primary_output: Any
    shadow_output: Any
    primary_latency: float
    shadow_latency: float
    error: str | None


@attrs.frozen(kw_only=True)
class ShadowReport:
    """Counts, paired statistics and verdicts of a :class:`ShadowMirror`, as plain data.

    Undefined statistics (no pairs yet) are None, so that :meth:`to_dict` is valid JSON.
    ``verdict`` combines the checks that apply: FAIL if any check fails, PASS when the output
    check (disagreement for labels, or the margin test for numbers) and the error check both
    pass, else INCONCLUSIVE. A check that has decided keeps its verdict (each report is a look
    of an always-valid test; FAIL wins over an earlier PASS).

    Identities, true of every report:
    ``submitted == mirrored + dropped + suspended + refused``,
    ``mirrored == completed + errors + timeouts + discarded + queued + running`` and
    ``completed == compared + skipped``.

    Attributes:
        name: The mirror's name.
        state: ``"idle"`` (not started in this process), ``"starting"`` (a worker process is
            starting), ``"running"``, ``"suspended"``, ``"failed"`` (the worker process could
            not start or died; the verdict is then FAIL) or ``"closed"``.
        isolation: ``"thread"`` or ``"process"``: where the shadow model runs.
        sample: The share of requests the router mirrors.
        output_kind: ``"label"``, ``"numeric"`` (scalars), ``"vector"`` (arrays compared by L1
            distance), or None before the first comparable output.
        submitted: Requests submitted: calls of :meth:`ShadowMirror.submit`, and the rows
            of :meth:`ShadowMirror.submit_batch` (every count below counts rows alike).
        mirrored: Requests put on the queue.
        dropped: Requests dropped before they reached the shadow's queue; the sum of
            ``drop_reasons``.
        drop_reasons: ``dropped`` by reason: ``queue_full``; with process isolation also
            ``starting`` (the worker process was not ready yet), ``unpicklable``,
            ``too_large`` (larger than the socket's buffer), ``worker_exited`` and
            ``undecodable`` (could not be unpickled in the worker process).
        suspended: Requests dropped because mirroring was suspended (too many stuck calls).
        refused: Requests dropped because the mirror was closed.
        completed: Shadow calls that returned a usable output in time.
        compared: Completed calls that entered the paired statistics.
        skipped: Completed calls not compared because the primary's output was unusable
            (non-finite, or of another kind than the first one seen).
        errors: Shadow calls that raised or returned an unusable output.
        error_reasons: ``errors`` by reason: ``exception``, ``non_finite``, ``too_large`` (a
            finite output whose difference from the primary's is beyond +-1e100, the limit of
            the summaries), ``mismatch``.
        timeouts: Shadow calls that ran past ``timeout`` (their result is never compared).
        late: Timed-out calls that returned since (a subset of ``timeouts``).
        discarded: Queued requests thrown away unrun (while suspended, at close, after a fork).
        queued: Requests waiting in the queue now.
        running: Shadow calls running now (stuck ones excluded).
        stuck: Threads stuck in a timed-out call now.
        sink_errors: Calls of the sink that raised.
        agreement_rate: Share of compared label pairs that agree.
        disagreements: Compared label pairs that disagree.
        max_disagreement: The disagreement rate the label check tests against.
        p_disagreement: Always-valid p-value against "disagreement <= max_disagreement".
        p_agreement: Always-valid p-value against "disagreement >= max_disagreement".
        label_verdict: The label check (None when outputs are not labels).
        difference_metric: ``"difference"`` (shadow - primary) for scalars, ``"l1_distance"``
            for vectors, None for labels.
        difference_mean: Mean of the paired differences (or distances).
        difference_variance: Their variance (``ddof=1``).
        difference_lower: Lower end of the confidence sequence on the mean (two-sided for
            differences, a one-sided bound for distances). Where the outputs are of two kinds
            (scores with some shadow answers outside [0, 1], probability vectors with some
            that are not), it bounds the mean of all pairs from three sequences (each kind's
            mean, and the share of each kind), and is None while the odd kind has fewer than
            100 pairs.
        difference_upper: Upper end.
        margin: The margin of the numeric check (None: no numeric check).
        p_difference: Always-valid p-value against "the mean lies within the margin" (where
            the outputs are of two kinds: the smallest level at which the check FAILs).
        numeric_verdict: The numeric check (None without a margin or for labels).
        error_rate: ``(errors + timeouts) / (completed + errors + timeouts)``.
        max_error_rate: The error rate the error check tests against (None: no check).
        p_error: Always-valid p-value against "error rate <= max_error_rate" (the smaller of
            the two streams', single requests and batch calls, times two).
        error_verdict: The error check (None when disabled).
        latency_pairs: Pairs with a paired latency difference.
        latency_difference_mean: Mean of shadow - primary latency, seconds.
        latency_difference_variance: Its variance.
        latency_difference_p50: Median of the paired latency differences (1% relative error).
        latency_difference_p95: Their 95th percentile.
        latency_difference_p99: Their 99th percentile.
        primary_latency_p50: Median latency of the primary on mirrored requests.
        primary_latency_p99: Its 99th percentile.
        shadow_latency_p50: Median latency of the shadow on the same requests.
        shadow_latency_p99: Its 99th percentile.
        alpha: Level of each sequential check.
        verdict: The combined verdict.
        reason: A sentence saying why.

    >>> r = ShadowMirror(lambda x: x, name="doc").report()
    >>> r.verdict.value, r.submitted, r.output_kind
    ('inconclusive', 0, None)
    """

    name: str
    state: str
    isolation: str
    sample: float
    output_kind: str | None
    submitted: int
    mirrored: int
    dropped: int
    drop_reasons: dict[str, int]
    suspended: int
    refused: int
    completed: int
    compared: int
    skipped: int
    errors: int
    error_reasons: dict[str, int]
    timeouts: int
    late: int
    discarded: int
    queued: int
    running: int
    stuck: int
    sink_errors: int
    agreement_rate: float | None
    disagreements: int
    max_disagreement: float
    p_disagreement: float
    p_agreement: float
    label_verdict: Verdict | None
    difference_metric: str | None
    difference_mean: float | None
    difference_variance: float | None
    difference_lower: float | None
    difference_upper: float | None
    margin: float | None
    p_difference: float
    numeric_verdict: Verdict | None
    error_rate: float | None
    max_error_rate: float | None
    p_error: float
    error_verdict: Verdict | None
    latency_pairs: int
    latency_difference_mean: float | None
    latency_difference_variance: float | None
    latency_difference_p50: float | None
    latency_difference_p95: float | None
    latency_difference_p99: float | None
    primary_latency_p50: float | None
    primary_latency_p99: float | None
    shadow_latency_p50: float | None
    shadow_latency_p99: float | None
    alpha: float
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serializable dict (verdicts as their string values).

        >>> import json
        >>> d = ShadowMirror(lambda x: x, name="doc").report().to_dict()
        >>> json.loads(json.dumps(d))["verdict"]
        'inconclusive'
        """

        def plain(_inst: Any, _field: Any, value: Any) -> Any:
            return value.value if isinstance(value, Verdict) else value

        return attrs.asdict(self, value_serializer=plain)


# -- statistics --------------------------------------------------------------------------


def disagreement_log_bf(
    disagree: Any, agree: Any, p0: float, *, upper: bool, strength: float = PRIOR_STRENGTH
) -> Any:
    """Log Bayes factor of the one-sided beta-binomial mixture test on a Bernoulli rate.

    ``upper=True`` tests H0 "rate <= p0" against a Beta(c*p0, c*(1-p0)) prior truncated to
    ``[p0, 1]``; ``upper=False`` tests "rate >= p0" with the prior truncated to ``[0, p0]``. For
    every rate in the alternative region the likelihood ratio against ``p0`` is a nonnegative
    supermartingale under the whole composite null, and so is the mixture, so by Ville's
    inequality the factor ever reaches ``1/alpha`` with probability at most ``alpha``.

    ``BF = B(a+s, b+f) T(a+s, b+f) / (B(a, b) T(a, b)) / (p0^s (1-p0)^f)``, ``T`` the prior's
    mass on the alternative side (a regularized incomplete beta function).

    >>> round(float(disagreement_log_bf(20, 80, 0.05, upper=True)), 3)
    12.284
    """
    s = np.asarray(disagree, dtype=np.float64)
    f = np.asarray(agree, dtype=np.float64)
    a, b = strength * p0, strength * (1.0 - p0)
    tail = special.betaincc if upper else special.betainc
    with np.errstate(divide="ignore"):
        num = special.betaln(a + s, b + f) + np.log(tail(a + s, b + f, p0))
        den = special.betaln(a, b) + math.log(float(tail(a, b, p0)))
        return num - den - s * math.log(p0) - f * math.log1p(-p0)


def _p_from_log_bf(log_bf: float) -> float:
    return 1.0 if log_bf <= 0.0 else math.exp(-min(log_bf, 700.0))


def _mix(q: float, a: float, b: float) -> float:
    """``(1 - q) * a + q * b``, for a share ``q`` in [0, 1] (a side with no weight does not
    count, even where it is infinite)."""
    return ((1.0 - q) * a if q < 1.0 else 0.0) + (q * b if q > 0.0 else 0.0)


def _smallest_level(fails: Callable[[float], bool], alpha: float, at_alpha: bool) -> float:
    """The smallest level in (0, 1] at which ``fails`` (monotone: True from some level on)
    holds, found by bisection on its logarithm to 0.1%; 1.0 if it never does. It is at most
    ``alpha`` exactly when ``at_alpha`` (``fails(alpha)``, which the caller has), whatever
    the rounding. (A one-sided normal-mixture half-width widens again as the level nears 1,
    so a result above about 0.25 may be off; never on which side of ``alpha`` it lies.)

    >>> round(_smallest_level(lambda level: level >= 0.01, 0.05, True), 4)
    0.01
    """
    if at_alpha:
        lo, hi = math.log(1e-300), math.log(alpha)
    else:
        if not fails(1.0):
            return 1.0
        lo, hi = math.log(alpha), 0.0
    while hi - lo > 1e-3:
        mid = (lo + hi) / 2.0
        if fails(math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return min(math.exp(hi), alpha) if at_alpha else max(math.exp(hi), math.nextafter(alpha, 1.0))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _opt(x: float) -> float | None:
    return x if math.isfinite(x) else None


# -- a confidence sequence for bounded values ---------------------------------------------


class _BoundedMean:
    """A time-uniform confidence sequence for the mean of values in [0, 1]: the predictable
    plug-in empirical Bernstein sequence of Waudby-Smith & Ramdas ("Estimating means of
    bounded random variables by betting", JRSS B 2024, Theorem 2).

    Valid for any distribution on [0, 1], at every look, with no appeal to the central limit
    theorem: where the normal-mixture sequence relies on the sample variance, which a sample
    of rare large values (a shadow wrong on 2.5% of rows) underestimates, or finds 0, this one
    does not. Updated block by block: each block's bets are fixed by what came before it
    (predictable), which keeps the sequence valid.

    >>> b = _BoundedMean(alpha=0.05)
    >>> b.update(np.zeros(300))  # 300 values of 0: the mean is below 0.0205
    >>> [round(v, 4) for v in b.bounds()]
    [-0.0205, 0.0205]
    """

    __slots__ = ("_log", "n", "s_l", "s_lx", "s_sq", "s_vpsi", "s_x")

    def __init__(self, alpha: float) -> None:
        self._log = math.log(1.0 / alpha)  # one-sided bounds, each at alpha
        self.n = 0
        self.s_x = 0.0  # sum of the values
        self.s_sq = 0.0  # sum of squared deviations from the running mean (the bets' variance)
        self.s_l = 0.0  # sum of the bets
        self.s_lx = 0.0  # sum of bets times values
        self.s_vpsi = 0.0  # sum of v_i psi_E(lambda_i)

    def update(self, x: NDArray[np.float64]) -> None:
        """Add a block of values (each in [0, 1]), value by value as the sequence is defined
        (running sums: each value's bet and plug-in mean use only the values before it)."""
        k = x.size
        if not k:
            return
        t = np.arange(self.n + 1, self.n + k + 1, dtype=np.float64)  # each value's index
        cx = self.s_x + np.cumsum(x)
        mean = (0.5 + cx) / (t + 1.0)  # mu_t, with the value t
        before = np.concatenate(([(0.5 + self.s_x) / (self.n + 1)], mean[:-1]))  # mu_{t-1}
        sq = self.s_sq + np.cumsum((x - mean) ** 2)
        var = (0.25 + np.concatenate(([self.s_sq], sq[:-1]))) / t  # sigma^2_{t-1}
        bets = np.minimum(np.sqrt(2.0 * self._log / (var * t * np.log1p(t))), 0.5)
        psi = (-np.log1p(-bets) - bets) / 4.0
        self.s_l += float(bets.sum())
        self.s_lx += float((bets * x).sum())
        self.s_vpsi += float((4.0 * (x - before) ** 2 * psi).sum())
        self.s_sq = float(sq[-1])
        self.s_x = float(cx[-1])
        self.n += k

    def bounds(self, extra: float = 0.0) -> tuple[float, float]:
        """The lower and the upper bound (each one-sided at ``alpha``; at ``alpha *
        exp(-extra)`` with an ``extra``, of either sign, that keeps it below 1: the bets stay
        as they are, which keeps the sequence valid at any level)."""
        if not self.s_l:
            return -math.inf, math.inf
        center = self.s_lx / self.s_l
        half = (self._log + extra + self.s_vpsi) / self.s_l
        return center - half, center + half

    def log_evidence(self, m: float) -> float:
        """Log of the test supermartingale against "the mean is at most ``m``": above
        ``log(1 / alpha)`` exactly when the lower bound exceeds ``m``."""
        return self.s_lx - m * self.s_l - self.s_vpsi

    def log_evidence_below(self, m: float) -> float:
        """Log of the test supermartingale against "the mean is at least ``m``": above
        ``log(1 / alpha)`` exactly when the upper bound is below ``m``."""
        return m * self.s_l - self.s_lx - self.s_vpsi


# -- output classification -------------------------------------------------------------


def _kind_of(v: Any, mode: str) -> tuple[str, Any]:
    """Return (kind, comparable value) of one output under an output mode; ``_OTHER`` for an
    output that cannot be converted (e.g. an int past float's range)."""
    try:
        return _classify(v, mode)
    except Exception:
        return _OTHER, v


def _classify(v: Any, mode: str) -> tuple[str, Any]:
    if isinstance(v, np.ndarray) or (isinstance(v, list | tuple) and mode != "label"):
        try:
            arr = np.asarray(v)
        except (TypeError, ValueError):
            return _OTHER, v
        if arr.size == 1 and arr.dtype.kind in "biufUS":
            return _classify(arr.reshape(-1)[0].item(), mode)
        if arr.size > 1 and arr.dtype.kind in "biuf" and mode != "label":
            return _VECTOR, arr.astype(np.float64, copy=False).reshape(-1)
        return _OTHER, v
    if mode == "label":
        return (_LABEL, v) if isinstance(v, _LABEL_SCALARS) else (_OTHER, v)
    if isinstance(v, _FLOAT_SCALARS) or (mode == "numeric" and isinstance(v, _LABEL_SCALARS)):
        if isinstance(v, str | np.str_):
            return _OTHER, v
        return _NUMERIC, float(v)
    if isinstance(v, _LABEL_SCALARS):
        return _LABEL, v
    return _OTHER, v


def _is_distribution(v: NDArray[np.float64]) -> bool:
    """Whether a vector output is a probability distribution: entries in [0, 1] summing to 1
    within 1% (a float16 softmax is off by up to a few thousandths). Two of them are at most
    2.02 apart in L1, and their halved distance is clipped at 1 (only distances over 2, of
    nearly disjoint distributions, lose anything, and at most 1%)."""
    if v.size <= 32:  # (a list is quicker for the usual few classes)
        values = v.tolist()
        return min(values) >= 0.0 and max(values) <= 1.0 and abs(math.fsum(values) - 1.0) <= 0.01
    return bool(v.min() >= 0.0 and v.max() <= 1.0 and abs(float(v.sum()) - 1.0) <= 0.01)


def _describe(exc: BaseException) -> str:
    """``"Type: message"`` of an exception, also when its ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = "<the exception's message could not be formatted>"
    return f"{type(exc).__name__}: {text}"


def _finite(kind: str | None, value: Any) -> bool:
    if kind == _NUMERIC:
        return math.isfinite(value)
    if kind == _VECTOR:
        return bool(np.isfinite(value).all())
    return True


def _too_large(kind: str | None, value: Any, pvalue: Any) -> bool:
    """Whether two finite outputs of a kind are farther apart than the summaries take (beyond
    +-1e100, the L1 distance for vectors; an overflow is as far): no usable answer."""
    if kind == _NUMERIC:
        return not abs(value - pvalue) <= _LIMIT
    if kind == _VECTOR:
        with np.errstate(over="ignore", invalid="ignore"):
            return not float(np.abs(value - pvalue).sum()) <= _LIMIT
    return False


def _judge(
    out: Any,
    y: Any,
    kind: str | None,
    value: Any,
    pkind: str | None,
    pvalue: Any,
    expected: str | None,
) -> tuple[str, str | None]:
    """The outcome of one returned request - ``"compared"``, ``"skipped"`` (nothing to compare
    with), ``"non_finite"``, ``"too_large"`` or ``"mismatch"`` - and its error (None unless an
    error), given the kind of output compared so far (``expected``, None before the first
    pair). An answer so far off that its difference is beyond the summaries' limit is an
    error: left out of the comparison in silence, it let a shadow answering 1e150 on 1 row in
    10 PASS."""
    primary_ok = (
        pkind != _OTHER and (expected is None or pkind == expected) and _finite(pkind, pvalue)
    )
    if not primary_ok:
        # Nothing to compare with: judge the shadow's output on its own.
        if kind != _OTHER and not _finite(kind, value):
            return "non_finite", "non_finite"
        return "skipped", None
    if kind != pkind or (kind == _VECTOR and value.shape != pvalue.shape):
        # reprlib: bounded, and safe from a __repr__ that raises.
        why = f"mismatch: shadow output {reprlib.repr(out)} is not comparable to {reprlib.repr(y)}"
        return "mismatch", why
    if not _finite(kind, value):
        return "non_finite", "non_finite"
    if _too_large(kind, value, pvalue):
        return "too_large", "too_large"
    return "compared", None


# -- threads ---------------------------------------------------------------------------


class _Slot:
    """One worker thread's bookkeeping, read by the watchdog under the mirror's lock."""

    __slots__ = ("batch", "rows", "since", "thread", "timed_out")

    def __init__(self) -> None:
        self.since: float | None = None
        self.rows = 1  # requests in the running call (a batch's rows)
        self.batch = 0  # 1 while the running call is a batch's (the error check's stream)
        self.timed_out = False
        self.thread: threading.Thread | None = None


class _Batch:
    """Rows of a batch mirrored together: one shadow call, one outcome per row."""

    __slots__ = ("X", "Y", "ids", "latency", "rows")

    def __init__(self, X: Any, Y: Any, latency: float, ids: Any, rows: int) -> None:
        self.X = X
        self.Y = Y
        self.latency = latency
        self.ids = ids
        self.rows = rows


def _plain(v: Any) -> Any:
    """A value taken from a batch's row as the Python scalar (a numpy scalar's ``item()``),
    as a single request's value would usually be; anything else unchanged."""
    return v.item() if isinstance(v, np.generic) else v


def _rows_of(item: Any) -> int:
    """Requests a queued item holds."""
    return item.rows if type(item) is _Batch else 1


_MIRRORS: weakref.WeakSet[ShadowMirror] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for mirror in list(_MIRRORS):
        mirror._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _check_fraction(value: Any, name: str, *, open_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}")
    v = float(value)
    ok = (0.0 < v < 1.0) if open_low else (0.0 <= v <= 1.0)
    if not (math.isfinite(v) and ok):
        bounds = "(0, 1)" if open_low else "[0, 1]"
        raise ConfigError(f"{name} must lie in {bounds}, got {value!r}")
    return v


def check_options(
    *,
    sample: Any,
    workers: Any,
    queue_size: Any,
    timeout: Any,
    max_stuck: Any,
    sink: Any,
    outputs: Any,
    alpha: Any,
    max_disagreement: Any,
    margin: Any,
    max_error_rate: Any,
    name: Any,
    isolation: Any,
    cpu_share: Any,
) -> dict[str, Any]:
    """Check a :class:`ShadowMirror`'s options (also where a strategy takes them, so that a bad
    one is refused where it is written); return the numeric ones as stored.

    Raises:
        ConfigError: naming the first bad option and its value.
    """
    if isolation not in _ISOLATIONS:
        raise ConfigError(f"isolation must be one of {_ISOLATIONS!r}, got {isolation!r}")
    if sink is not None and not callable(sink):
        raise ConfigError(f"sink must be callable, got {sink!r}")
    if outputs not in _MODES:
        raise ConfigError(f"outputs must be one of {_MODES!r}, got {outputs!r}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty str, got {name!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, int | float):
            raise ConfigError(f"margin must be a number >= 0 or None, got {margin!r}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    return {
        "sample": _check_fraction(sample, "sample", open_low=False),
        "workers": _check_int(workers, "workers", 1),
        "queue_size": _check_int(queue_size, "queue_size", 1),
        "max_stuck": _check_int(max_stuck, "max_stuck", 0),
        "timeout": float(timeout),
        "alpha": _check_fraction(alpha, "alpha", open_low=True),
        "max_disagreement": _check_fraction(max_disagreement, "max_disagreement", open_low=True),
        "margin": None if margin is None else float(margin),
        "max_error_rate": (
            None
            if max_error_rate is None
            else _check_fraction(max_error_rate, "max_error_rate", open_low=True)
        ),
        "cpu_share": check_cpu_share(cpu_share),
    }


def check_cpu_share(value: Any) -> float | None:
    """``value`` as a ``cpu_share`` (None, or a share in (0, 1]); ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"cpu_share must be None or a share in (0, 1], got {value!r}")
    return float(value)


def _check_int(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class ShadowMirror:
    """Replay a share of requests on a shadow model off the request path and compare answers.

    The router checks ``bucket < mirror.mirror_bucket_limit`` (the request's routing bucket, so
    that mirroring is deterministic per user) and then calls :meth:`submit` with the primary's
    answer. ``submit`` never blocks on the shadow and never raises: it puts the request on a
    bounded queue, or drops and counts it. Worker threads, started lazily on the first submit in
    each process (and again after ``os.fork``), call the shadow model, time it with ``clock``,
    and compare its output with the primary's on the same request.

    Comparison, by output kind (``outputs="auto"`` takes the kind of the first primary output:
    str, int and bool are labels, floats and size-1 arrays are numbers, longer numeric arrays are
    vectors):

    - labels: agreement rate, and an exact sequential test (a one-sided beta-binomial mixture)
      that the disagreement rate exceeds ``max_disagreement``: FAIL when it does, PASS when it is
      shown to be below it;
    - numbers: the paired difference ``shadow - primary``; vectors (e.g. class probabilities):
      the L1 distance ``sum(|shadow - primary|)`` (twice the total-variation distance between
      two probability vectors). With a ``margin``, a normal-mixture confidence sequence on the
      mean (for probability vectors, and for scalars while every primary output is in [0, 1],
      one valid for bounded values: see ``_BoundedMean``):
      FAIL when it lies wholly beyond the margin (``|mean| > margin`` for differences),
      PASS when wholly within it, after at least 100 pairs (where some shadow outputs fall
      outside [0, 1], or some vectors are not distributions, the two kinds are judged apart:
      see docs/explanation/shadow.md);
    - always: paired latency (shadow - primary), and a sequential test that the shadow's error
      rate (exceptions, unusable outputs, timeouts) exceeds ``max_error_rate``.

    Args:
        shadow_model: The shadow's callable, called with the request's input.
        sample: Share of requests to mirror, in [0, 1]; sets :attr:`mirror_bucket_limit`.
        clock: A callable returning seconds that times shadow calls and detects timeouts;
            ``time.perf_counter`` by default.
        workers: Worker threads calling the shadow.
        queue_size: Most requests waiting at once; more are dropped and counted.
        timeout: Seconds after which a shadow call counts as a timeout and its thread is
            replaced (for a batch's call, this much per row).
        max_stuck: Most threads left stuck in timed-out calls; beyond, mirroring is suspended.
        sink: ``sink(pair)`` receives every finished :class:`ShadowPair` (completed, error or
            late), on a worker thread; an exception it raises is counted and ignored.
        outputs: ``"auto"``, ``"label"`` or ``"numeric"``.
        alpha: Level of each sequential check, valid at every look.
        max_disagreement: Label check: the largest acceptable disagreement rate, in (0, 1).
        margin: Numeric check: the largest acceptable mean difference (or distance); None
            disables the numeric verdict.
        max_error_rate: The largest acceptable shadow error rate, in (0, 1); None disables it.
        name: A name for reports and thread names.
        cpu_share: None (default) or the largest share of a CPU, in (0, 1], that each worker
            thread may use: after a request that took ``c`` seconds of the thread's CPU time
            (the shadow call, the comparison and the sink), the worker rests
            ``c * (1 / cpu_share - 1)`` seconds before its next one, so the mirror uses at
            most ``workers * cpu_share`` CPUs (calls set aside as stuck, see ``timeout``, do
            not rest until they return). On a small machine a saturated shadow slows
            the primary through the hardware the cores share, even in another process; this
            bounds that, at the cost of fewer mirrored requests (more are dropped, counted).
            A shadow that waits without using the CPU (a remote model) barely rests. Threads
            the model starts itself (BLAS, PyTorch's intra-op pool) are not counted: limit
            them to one (``torch.set_num_threads(1)``, ``OPENBLAS_NUM_THREADS=1``).
        isolation: ``"thread"`` (default): the shadow runs on worker threads of this process.
            ``"process"``: it runs in a worker process (started with ``spawn`` on the first
            submit, or by :meth:`start`), and this process only copies each mirrored request
            into a ring in shared memory (numeric numpy inputs), or encodes it and sends it on
            a Unix datagram socket, without blocking; no thread here takes part, so a shadow
            that holds the GIL cannot slow the primary. The shadow model and the
            sink must be picklable (the sink then runs in the worker process), ``clock`` must
            be left at its default, and the worker process imports the main module the way
            :mod:`multiprocessing`'s ``spawn`` does. See :mod:`safeserve._shadow_process`.

    Raises:
        ConfigError: for an invalid option, or with ``isolation="process"`` a shadow model or
            sink that cannot be pickled, a custom clock, or a platform without Unix sockets.

    >>> mirror = ShadowMirror(lambda x: "cat" if x < 70 else "dog", name="doc")
    >>> mirror.mirror_bucket_limit
    10000
    >>> for i in range(100):
    ...     _ = mirror.submit(i, "cat", 0.001, request_id=i)
    >>> mirror.wait_idle(timeout=30)
    True
    >>> r = mirror.report()
    >>> r.compared, r.disagreements, r.label_verdict.value
    (100, 30, 'fail')
    >>> mirror.close()
    True
    """

    def __init__(
        self,
        shadow_model: Callable[[Any], Any],
        *,
        sample: float = 1.0,
        clock: Callable[[], float] | None = None,
        workers: int = 2,
        queue_size: int = 1000,
        timeout: float = 1.0,
        max_stuck: int = 4,
        sink: Callable[[ShadowPair], None] | None = None,
        outputs: OutputMode = "auto",
        alpha: float = 0.05,
        max_disagreement: float = 0.05,
        margin: float | None = None,
        max_error_rate: float | None = 0.01,
        name: str = "shadow",
        isolation: Isolation = "thread",
        cpu_share: float | None = None,
    ) -> None:
        if not callable(shadow_model):
            raise ConfigError(f"shadow_model must be callable, got {shadow_model!r}")
        if clock is not None and not callable(clock):
            raise ConfigError(f"clock must be a callable returning seconds, got {clock!r}")
        o = check_options(
            sample=sample,
            workers=workers,
            queue_size=queue_size,
            timeout=timeout,
            max_stuck=max_stuck,
            sink=sink,
            outputs=outputs,
            alpha=alpha,
            max_disagreement=max_disagreement,
            margin=margin,
            max_error_rate=max_error_rate,
            name=name,
            isolation=isolation,
            cpu_share=cpu_share,
        )
        self.shadow_model = shadow_model
        self.name = name
        self.sample = o["sample"]
        #: The router mirrors a request when its routing bucket is below this (of 10,000).
        self.mirror_bucket_limit: int = round(self.sample * 10_000)
        self.workers = o["workers"]
        self.queue_size = o["queue_size"]
        self.max_stuck = o["max_stuck"]
        self.timeout = o["timeout"]
        self.sink = sink
        self.outputs: OutputMode = outputs
        self.alpha = o["alpha"]
        self.max_disagreement = o["max_disagreement"]
        self.margin = o["margin"]
        self.max_error_rate = o["max_error_rate"]
        #: Largest share of its time each worker spends in shadow calls (None: no limit).
        self.cpu_share = o["cpu_share"]
        # A worker's rest after a call of t seconds is t times this (see cpu_share).
        self._rest = 0.0 if self.cpu_share is None else 1.0 / self.cpu_share - 1.0
        self._clock: Callable[[], float] = clock or time.perf_counter
        # The watchdog polls in real seconds; the timeout itself is read on ``clock``.
        self._poll = min(max(self.timeout / 4.0, 0.005), 0.25)
        self._init_runtime()
        self._pid = os.getpid()
        # Counters of the identities (under _lock).
        self._submitted = 0
        self._mirrored = 0
        self._dropped = 0
        self._suspended = 0
        self._refused = 0
        self._completed = 0
        self._compared = 0
        self._skipped = 0
        self._errors: dict[str, int] = {
            "exception": 0,
            "non_finite": 0,
            "too_large": 0,
            "mismatch": 0,
        }
        self._timeouts = 0
        self._late = 0
        # The error check's observations, in two streams (see _report_locked): single
        # requests ([0]) and batch calls ([1]), one observation per call, each the share of
        # the call's requests that failed.
        self._err_calls = [0, 0]
        self._err_share = [0.0, 0.0]
        self._discarded = 0
        self._sink_errors = 0
        # Paired statistics (under _stats_lock).
        self._stats_lock = threading.Lock()
        self._kind: str | None = None
        self._disagree = 0
        self._agree = 0
        self._diff = Moments()
        self._diff_buf: list[float] = []
        # L1 distances between probability vectors lie in [0, 2]: halved, they feed a
        # sequence valid for bounded values (see _BoundedMean). Differences of two scalars in
        # [0, 1] (scores, probabilities, 0/1 answers) lie in [-1, 1]: moved to [0, 1], they
        # feed another, two-sided (alpha / 2 a side). Those of other vectors, or of other
        # scalars, feed _other, judged by the normal-mixture sequence (a mirror compares one
        # kind of output, so _other never holds both). _primary_wide counts the scalar pairs
        # whose primary output was outside [0, 1]: the primary, not the shadow under test,
        # decides whether the outputs are scores.
        self._bounded = _BoundedMean(self.alpha)
        self._bounded_buf: list[float] = []
        self._unit = _BoundedMean(self.alpha / 2.0)
        self._unit_buf: list[float] = []
        self._primary_wide = 0
        self._other = Moments()
        self._other_buf: list[float] = []
        # Where the pairs are of both kinds: the share of the other kind, 1 per such pair and
        # 0 per pair of the bounded kind, in the order they came (two-sided, alpha / 6 a side:
        # one of the three sequences that bound the mean of all pairs, see _report_locked).
        self._odd = _BoundedMean(self.alpha / 6.0)
        self._odd_buf: list[float] = []
        self._lat = Moments()
        self._lat_hist = SignedLogHistogram()
        self._lat_buf: list[float] = []
        self._primary_hist = LogHistogram()
        self._shadow_hist = LogHistogram()
        self._primary_buf: list[float] = []
        self._shadow_buf: list[float] = []
        # Latched decisions of the sequential checks.
        self._max_lbf_fail = 0.0
        self._max_lbf_pass = 0.0
        self._max_lbf_err = [0.0, 0.0]  # per stream
        self._max_lbf_err_pass = [0.0, 0.0]
        self._numeric_fail = False
        self._numeric_pass = False
        self._p_difference = 1.0
        self.isolation: Isolation = isolation
        self._link: ProcessLink | None = None
        if isolation == "process":
            self._link = self._process_link(clock)
            # The request path goes straight to the link: a ring slot or one send.
            self.submit = self._link.submit  # type: ignore[method-assign]
            _MIRRORS.add(self)

    def _process_link(self, clock: Callable[[], float] | None) -> ProcessLink:
        if clock not in (None, time.perf_counter):
            raise ConfigError(
                f"isolation='process' times shadow calls in the worker process with "
                f"time.perf_counter; a custom clock cannot follow it there, got {clock!r}"
            )
        if not _shadow_process.supported():
            raise ConfigError("isolation='process' needs Unix domain sockets on this platform")
        try:
            payload = _shadow_process.payload_of(self.shadow_model, self.sink)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc
        options = {
            "sample": self.sample,
            "workers": self.workers,
            "queue_size": self.queue_size,
            "timeout": self.timeout,
            "max_stuck": self.max_stuck,
            "outputs": self.outputs,
            "alpha": self.alpha,
            "max_disagreement": self.max_disagreement,
            "margin": self.margin,
            "max_error_rate": self.max_error_rate,
            "name": self.name,
            "cpu_share": self.cpu_share,
        }
        return ProcessLink(self, payload, options)

    def _init_runtime(self) -> None:
        """Create the lock, queue and thread bookkeeping (again in a forked child)."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._put = self._queue.put
        self._state = _IDLE
        self._pending = 0
        self._sinking = 0
        self._active: set[_Slot] = set()
        self._stuck: set[_Slot] = set()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's threads are gone; start afresh on the next submit."""
        if self._link is not None:
            self._link.reset_after_fork()
            return
        inflight = self._pending + sum(s.rows for s in self._active if s.since is not None)
        self._discarded += inflight
        closed = self._state == _CLOSED
        self._init_runtime()
        self._stats_lock = threading.Lock()
        self._state = _CLOSED if closed else _IDLE
        self._pid = os.getpid()

    # -- the request path ----------------------------------------------------------------

    def submit(
        self, x: Any, primary_output: Any, primary_latency: float, request_id: Any = None
    ) -> bool:
        """Queue one request for the shadow; never blocks on the shadow and never raises.

        Args:
            x: The request's input, passed to the shadow model unchanged.
            primary_output: What the primary answered.
            primary_latency: Seconds the primary took.
            request_id: The router's request id, passed through to the sink.

        Returns:
            True when queued; False when dropped (queue full, suspended, closed), which is
            counted.

        >>> mirror = ShadowMirror(lambda x: x + 1, name="doc")
        >>> mirror.submit(1, 2, 0.001)
        True
        >>> mirror.close()
        True
        >>> mirror.submit(1, 2, 0.001), mirror.report().refused
        (False, 1)
        """
        with self._lock:
            state = self._state
            if state is not _IDLE:
                # Counted under the same lock as its outcome, so that a report never sees a
                # request submitted but not yet mirrored, dropped, suspended or refused.
                self._submitted += 1
            if state is _RUNNING:
                if self._pending < self.queue_size:
                    self._pending += 1
                    self._mirrored += 1
                    self._put((x, primary_output, primary_latency, request_id))
                    return True
                self._dropped += 1
                return False
            if state is _SUSPENDED:
                self._suspended += 1
                return False
            if state is _CLOSED:
                self._refused += 1
                return False
        return self._start_with(x, primary_output, primary_latency, request_id)

    def _start_with(self, x: Any, y: Any, latency: float, rid: Any) -> bool:
        """The first submit in this process: start the workers, then queue the request."""
        if self._pid != os.getpid():
            # A fork that the at-fork hook did not see: the parent's threads are not here.
            self._reset_after_fork()
        start = False
        with self._lock:
            self._submitted += 1
            if self._state is _IDLE:
                self._state = _RUNNING
                start = True
            queued = self._state is _RUNNING and self._pending < self.queue_size
            if queued:
                self._pending += 1
                self._mirrored += 1
                self._put((x, y, latency, rid))
            elif self._state is _RUNNING:
                self._dropped += 1
            elif self._state is _SUSPENDED:
                self._suspended += 1
            else:
                self._refused += 1
            slots = self._new_slots(self.workers) if start else []
        if start:
            self._launch(slots)
        return queued

    def submit_batch(
        self, X: Any, primary_outputs: Any, primary_latency: float, request_ids: Any = None
    ) -> int:
        """Queue the rows of a batch for the shadow; never blocks on the shadow.

        The rows are one shadow call (``shadow_model(X)``, as the router calls models on
        batches) and each row is one request in every count and comparison: a row is compared
        with the primary's output on the same row, and a call that raises, times out or does
        not give one output per row is an error (or a timeout) of each of its rows. A call may
        take ``timeout`` seconds per row. Rows that run together are not independent trials,
        so the statistics count each call once where that matters: the call's time divided
        by its rows is the shadow's latency per row, paired once per call with
        ``primary_latency`` (the primary's seconds per row), and the error check takes the
        share of the call's rows that failed as one observation. The rows take as many places
        of ``queue_size`` as they are: the first rows that fit are queued, the rest are
        dropped and counted. ``X`` is held, not copied, until a worker runs it (the router
        passes a copy).

        Args:
            X: The rows (a numpy array, rows on axis 0, or a list of inputs).
            primary_outputs: The primary's outputs, one per row.
            primary_latency: The primary's seconds per row.
            request_ids: One id per row (passed through to the sink), or None.

        Returns:
            How many rows were queued.

        Raises:
            ValueError: when ``primary_outputs`` or ``request_ids`` do not have one item per
                row (a programming error: nothing is counted).
            TypeError: when ``X`` or ``primary_outputs`` has no length.

        >>> import numpy as np
        >>> mirror = ShadowMirror(lambda X: np.asarray(X) > 2, name="doc")
        >>> mirror.submit_batch(np.arange(6), np.arange(6) > 1, 0.001)
        6
        >>> mirror.wait_idle(timeout=30)
        True
        >>> r = mirror.report()
        >>> r.compared, r.disagreements
        (6, 1)
        >>> mirror.close()
        True
        """
        m = len(X)
        if len(primary_outputs) != m or (request_ids is not None and len(request_ids) != m):
            ids = "" if request_ids is None else f" and {len(request_ids)} request ids"
            raise ValueError(
                f"a mirrored batch needs one output per row: got {m} rows, "
                f"{len(primary_outputs)} outputs{ids}"
            )
        if not m:
            return 0
        if self._link is not None:
            return self._link.submit_batch(X, primary_outputs, primary_latency, request_ids)
        if self._state is _IDLE and self._pid != os.getpid():
            self._reset_after_fork()  # a fork that the at-fork hook did not see
        start = False
        queued = 0
        with self._lock:
            self._submitted += m
            state = self._state
            if state is _IDLE:
                self._state = state = _RUNNING
                start = True
            if state is _RUNNING:
                queued = max(0, min(m, self.queue_size - self._pending))
                if queued:
                    self._pending += queued
                    self._mirrored += queued
                    rids = request_ids
                    if queued < m:
                        X, primary_outputs = X[:queued], primary_outputs[:queued]
                        rids = None if rids is None else rids[:queued]
                    self._put(_Batch(X, primary_outputs, primary_latency, rids, queued))
                self._dropped += m - queued
            elif state is _SUSPENDED:
                self._suspended += m
            else:
                self._refused += m
            slots = self._new_slots(self.workers) if start else []
        if start:
            self._launch(slots)
        return queued

    def _launch(self, slots: list[_Slot]) -> bool:
        try:
            self._start(slots)
        except Exception:  # e.g. "can't start new thread": never raise into the caller
            with self._lock:
                for slot in slots:
                    if slot.thread is None or not slot.thread.is_alive():
                        self._active.discard(slot)
            return False
        return True

    def start(self, timeout: float = 120.0) -> bool:
        """Start the workers now instead of on the first submit; idempotent.

        With ``isolation="process"`` this starts the worker process and waits until it has
        loaded the shadow model (requests submitted before that are dropped and counted as
        ``starting``).

        Args:
            timeout: Most real seconds to wait for a worker process.

        Returns:
            True when the mirror is running (or suspended); False when closed or failed.

        >>> mirror = ShadowMirror(lambda x: x, name="doc")
        >>> mirror.start(), mirror.state
        (True, 'running')
        >>> mirror.close()
        True
        """
        if self._link is not None:
            return self._link.start(timeout)
        if self._pid != os.getpid():
            self._reset_after_fork()
        with self._lock:
            if self._state is not _IDLE:
                return self._state in (_RUNNING, _SUSPENDED)
            self._state = _RUNNING
            slots = self._new_slots(self.workers)
        return self._launch(slots)

    # -- threads -------------------------------------------------------------------------

    def _new_slots(self, k: int) -> list[_Slot]:
        """Register ``k`` worker slots (under _lock); their threads start after the lock."""
        slots = [_Slot() for _ in range(k)]
        self._active.update(slots)
        return slots

    def _start(self, slots: list[_Slot]) -> None:
        _MIRRORS.add(self)
        if self._watchdog is None:
            self._watchdog = threading.Thread(
                target=self._watch, name=f"safeserve-shadow-{self.name}-watchdog", daemon=True
            )
            self._watchdog.start()
        self._spawn(slots)

    def _spawn(self, slots: list[_Slot]) -> None:
        for slot in slots:
            t = threading.Thread(
                target=self._work, args=(slot,), name=f"safeserve-shadow-{self.name}", daemon=True
            )
            slot.thread = t
            t.start()

    def _watch(self) -> None:
        stop = self._stop
        while not stop.wait(self._poll):
            self._check_overdue()

    def _check_overdue(self) -> None:
        """Count overdue calls as timeouts, set their threads aside, replace or suspend."""
        now = self._clock()
        with self._lock:
            fresh = self._overdue_locked(now)
        if fresh:
            self._spawn(fresh)

    def _overdue_locked(self, now: float) -> list[_Slot]:
        fresh: list[_Slot] = []
        for slot in [s for s in self._active if s.since is not None]:
            since = slot.since
            if since is None or now - since <= self.timeout * slot.rows:
                continue
            slot.timed_out = True
            self._active.discard(slot)
            self._stuck.add(slot)
            self._timeouts += slot.rows
            self._err_calls[slot.batch] += 1
            self._err_share[slot.batch] += 1.0
            if len(self._stuck) > self.max_stuck:
                if self._state is _RUNNING:
                    self._state = _SUSPENDED
                    self._purge_locked()
            elif self._state in (_RUNNING, _SUSPENDED):
                fresh.extend(self._new_slots(1))
        if fresh or self._stuck:
            self._idle.notify_all()
        return fresh

    def _purge_locked(self) -> None:
        """Discard every queued request now (on suspension), freeing their memory."""
        get = self._queue.get_nowait
        while self._pending:
            try:
                rows = _rows_of(get())
            except queue.Empty:  # popped by a worker that has not counted it yet
                break
            self._pending -= rows
            self._discarded += rows

    def _work(self, slot: _Slot) -> None:
        get = self._queue.get
        clock = self._clock
        # The cpu_share bound: this thread's own CPU time from a request's taking to the end of
        # its comparison and sink (a shadow that waits GIL-free on a remote model uses little).
        rest, cpu = self._rest, time.thread_time
        while True:
            item = get()
            if item is _STOP:
                return
            c0 = cpu() if rest else 0.0
            rows = _rows_of(item)
            with self._lock:
                self._pending -= rows
                if self._state is not _RUNNING:
                    self._discarded += rows
                    if not self._pending:
                        self._idle.notify_all()
                    continue
                t0 = clock()
                slot.since = t0
                slot.rows = rows
                slot.batch = int(type(item) is _Batch)
            if slot.batch:
                keep = self._run_batch(slot, item, t0)
            else:
                x, y, primary_latency, rid = item
                try:
                    out = self.shadow_model(x)
                    error: str | None = None
                except BaseException as exc:  # a shadow failure never escapes the worker
                    out = None
                    error = f"exception: {_describe(exc)}"
                t1 = clock()
                keep = self._finish(slot, x, y, out, error, primary_latency, t1 - t0, rid, t1)
            if not keep:
                return
            if rest:
                busy = cpu() - c0
                if busy > 0:
                    self._pause(busy * rest)

    def _pause(self, seconds: float) -> None:
        """A worker's rest after a call (see ``cpu_share``); ``close()`` ends it at once."""
        self._stop.wait(seconds)

    def _finish(
        self,
        slot: _Slot,
        x: Any,
        y: Any,
        out: Any,
        error: str | None,
        primary_latency: float,
        latency: float,
        rid: Any,
        now: float,
    ) -> bool:
        """Count one returned call; return False when this thread should exit."""
        kind: str | None = None
        value: Any = None
        pkind: str | None = None
        pvalue: Any = None
        if error is None:
            kind, value = _kind_of(out, self.outputs)
            pkind, pvalue = _kind_of(y, self.outputs)
        with self._lock:
            keep, late = self._returned_locked(slot, latency)
            compare = False
            if late:
                error = "timeout"
            else:
                error, compare = self._judge_locked(error, out, y, kind, value, pkind, pvalue)
                self._err_calls[0] += 1
                self._err_share[0] += error is not None
            fresh = self._overdue_locked(now)
            self._end_call_locked()
        if fresh:
            self._spawn(fresh)
        if compare:
            self._compare(((kind, value, pvalue),), primary_latency, latency)
        if self.sink is not None:
            self._sink(((rid, x, y, out, error),), primary_latency, latency)
        return keep

    def _run_batch(self, slot: _Slot, batch: _Batch, t0: float) -> bool:
        """Call the shadow on a batch's rows and count each row; False: this thread exits."""
        rows = batch.rows
        error: str | None = None
        outs: list[Any] = []
        try:
            result = self.shadow_model(batch.X)
        except BaseException as exc:  # a shadow failure never escapes the worker
            error = f"exception: {_describe(exc)}"
        t1 = self._clock()
        call = t1 - t0
        if error is None:
            # Rows of what the shadow returned, and of what the primary answered: anything
            # that cannot give one per row fails every row of the call (a mismatch).
            try:
                got = len(result)
                if got == rows:
                    outs = [result[i] for i in range(rows)]
            except Exception as exc:
                got = -1
                what = f"{reprlib.repr(result)} ({_describe(exc)})"
            else:
                what = f"{got} outputs"
            if got != rows:
                error = f"mismatch: the shadow returned {what} for a batch of {rows} rows"
        try:
            ys = [batch.Y[i] for i in range(rows)]
        except Exception as exc:
            ys = [None] * rows
            if error is None:
                error = f"mismatch: the primary's outputs have no row each ({_describe(exc)})"
        # Each row judged outside the lock (submit waits on it), against the kind of output
        # compared so far; re-judged under the lock only if another call set that kind since.
        expected = self._kind
        judged = self._judge_rows(outs, ys, expected) if error is None else None
        pairs: list[tuple[str | None, Any, Any]] = []
        with self._lock:
            keep, late = self._returned_locked(slot, call)
            if late:
                errors: list[str | None] = ["timeout"] * rows
            elif error is not None:
                self._errors["mismatch" if error.startswith("mismatch") else "exception"] += rows
                self._err_calls[1] += 1
                self._err_share[1] += 1.0
                errors = [error] * rows
            else:
                if self._kind is not expected or judged is None:
                    judged = self._judge_rows(outs, ys, self._kind)
                errors, pairs, counts, kind = judged
                for name, n in counts.items():
                    if name in self._errors:
                        self._errors[name] += n
                self._completed += counts["compared"] + counts["skipped"]
                self._compared += counts["compared"]
                self._skipped += counts["skipped"]
                if self._kind is None and kind is not None:
                    self._kind = kind
                self._err_calls[1] += 1
                self._err_share[1] += sum(why is not None for why in errors) / rows
            fresh = self._overdue_locked(t1)
            self._end_call_locked()
        if fresh:
            self._spawn(fresh)
        per_row = call / rows
        if pairs:
            self._compare(pairs, batch.latency, per_row)
        if self.sink is not None:
            ids, X = batch.ids, batch.X
            try:
                rids = [None] * rows if ids is None else [_plain(ids[i]) for i in range(rows)]
                xs = [X[i] for i in range(rows)]
            except Exception:  # the sink gets the pairs, without what cannot be had per row
                rids, xs = [None] * rows, [None] * rows
            shadow_outs = [_plain(v) for v in outs] if outs else [None] * rows
            primary_outs = [_plain(v) for v in ys]
            self._sink(
                zip(rids, xs, primary_outs, shadow_outs, errors, strict=True),
                batch.latency,
                per_row,
            )
        return keep

    def _judge_rows(
        self, outs: list[Any], ys: list[Any], expected: str | None
    ) -> tuple[list[str | None], list[tuple[str | None, Any, Any]], dict[str, int], str | None]:
        """Judge a batch's rows as :meth:`_judge_locked` judges a request, counting nothing:
        (error per row, pairs to compare, counts by outcome, the kind of output compared)."""
        mode = self.outputs
        errors: list[str | None] = []
        pairs: list[tuple[str | None, Any, Any]] = []
        counts = dict.fromkeys(("compared", "skipped", "non_finite", "too_large", "mismatch"), 0)
        for out, y in zip(outs, ys, strict=True):
            kind, value = _kind_of(out, mode)
            pkind, pvalue = _kind_of(y, mode)
            outcome, why = _judge(out, y, kind, value, pkind, pvalue, expected)
            counts[outcome] += 1
            errors.append(why)
            if outcome == "compared":
                pairs.append((kind, value, pvalue))
                expected = kind
        return errors, pairs, counts, expected

    def _returned_locked(self, slot: _Slot, call: float) -> tuple[bool, bool]:
        """Book a returned call of ``call`` seconds: (keep this thread, the call was late)."""
        rows = slot.rows
        slot.since = None
        if slot.timed_out:
            # Counted as a timeout when it was noticed; the late result is not compared.
            slot.timed_out = False
            self._late += rows
            self._stuck.discard(slot)
            if self._state is _SUSPENDED and len(self._stuck) <= self.max_stuck:
                self._state = _RUNNING
            keep = self._state is not _CLOSED and len(self._active) < self.workers
            if keep:
                self._active.add(slot)
            return keep, True
        if call > self.timeout * rows:
            self._timeouts += rows
            self._late += rows
            self._err_calls[slot.batch] += 1
            self._err_share[slot.batch] += 1.0
            return True, True
        return True, False

    def _judge_locked(
        self,
        error: str | None,
        out: Any,
        y: Any,
        kind: str | None,
        value: Any,
        pkind: str | None,
        pvalue: Any,
    ) -> tuple[str | None, bool]:
        """Count one request's outcome: (its error or None, whether to compare it)."""
        if error is not None:
            self._errors["exception"] += 1
            return error, False
        outcome, why = _judge(out, y, kind, value, pkind, pvalue, self._kind)
        if outcome == "compared":
            self._completed += 1
            self._compared += 1
            if self._kind is None:
                self._kind = kind
            return None, True
        if outcome == "skipped":
            self._completed += 1
            self._skipped += 1
        else:
            self._errors[outcome] += 1
        return why, False

    def _end_call_locked(self) -> None:
        """After a call is counted: hold ``wait_idle`` for the sink, or wake it when idle."""
        if self.sink is not None:
            self._sinking += 1  # wait_idle also waits for the sink
        elif self._idle_locked():
            self._idle.notify_all()

    def _sink(
        self,
        items: Any,
        primary_latency: float,
        latency: float,
    ) -> None:
        """Hand each (request id, input, primary output, shadow output, error) to the sink."""
        sink = self.sink
        assert sink is not None
        failed = 0
        for rid, x, y, out, error in items:
            pair = ShadowPair(
                request_id=rid,
                input=x,
                primary_output=y,
                shadow_output=out,
                primary_latency=primary_latency,
                shadow_latency=latency,
                error=error,
            )
            try:
                sink(pair)
            except BaseException:
                failed += 1
        with self._lock:
            self._sink_errors += failed
            self._sinking -= 1
            if self._idle_locked():
                self._idle.notify_all()

    def _idle_locked(self) -> bool:
        """No request queued, no shadow call running (stuck ones aside), no sink running."""
        return not (
            self._pending or self._sinking or any(s.since is not None for s in self._active)
        )

    def _compare(self, pairs: Any, primary_latency: float, latency: float) -> None:
        """Add compared (kind, shadow value, primary value) pairs, and one latency pair."""
        diffs: list[float] = []
        within: list[float] = []  # L1 distances of probability vectors
        unit: list[float] = []  # differences of two scalars in [0, 1]
        beyond: list[float] = []  # distances of other vectors, differences of other scalars
        odd: list[float] = []  # 1.0 for a pair in beyond, 0.0 for one in within or unit
        agree = disagree = wide = 0
        for kind, value, pvalue in pairs:
            if kind == _LABEL:
                if value == pvalue:
                    agree += 1
                else:
                    disagree += 1
                continue
            # Within +-1e100 of each other, and finite: _judge lets no other pair through.
            if kind == _VECTOR:
                d = float(np.abs(value - pvalue).sum())
                if _is_distribution(value) and _is_distribution(pvalue):
                    within.append(d)
                    odd.append(0.0)
                else:
                    beyond.append(d)
                    odd.append(1.0)
            else:
                d = value - pvalue
                if not _UNIT_LOW <= pvalue <= _UNIT_HIGH:
                    wide += 1
                    beyond.append(d)
                    odd.append(1.0)
                elif _UNIT_LOW <= value <= _UNIT_HIGH:
                    unit.append(d)
                    odd.append(0.0)
                else:
                    beyond.append(d)
                    odd.append(1.0)
            diffs.append(d)
        with self._stats_lock:
            self._agree += agree
            self._disagree += disagree
            self._diff_buf.extend(diffs)
            self._bounded_buf.extend(within)
            self._unit_buf.extend(unit)
            self._other_buf.extend(beyond)
            self._odd_buf.extend(odd)
            self._primary_wide += wide
            if (
                isinstance(primary_latency, int | float)
                and abs(primary_latency) <= _LIMIT
                and abs(latency - primary_latency) <= _LIMIT
            ):
                pl = float(primary_latency)
                self._lat_buf.append(latency - pl)
                self._primary_buf.append(max(pl, 0.0))
                self._shadow_buf.append(max(latency, 0.0))
            if len(self._lat_buf) >= _FLUSH_AT or len(self._diff_buf) >= _FLUSH_AT:
                self._flush_locked()

    def _flush_locked(self) -> None:
        # The buffers are emptied whatever happens: a value the summaries refuse (which
        # _compare keeps out) must not make every later flush, and report, raise.
        try:
            if self._diff_buf:
                self._diff.update_many(self._diff_buf)
            if self._bounded_buf:
                half = np.asarray(self._bounded_buf, dtype=np.float64) / 2.0
                self._bounded.update(np.minimum(half, 1.0))
            if self._unit_buf:
                moved = (np.asarray(self._unit_buf, dtype=np.float64) + 1.0) / 2.0
                self._unit.update(np.clip(moved, 0.0, 1.0))
            if self._other_buf:
                self._other.update_many(self._other_buf)
            if self._odd_buf:
                self._odd.update(np.asarray(self._odd_buf, dtype=np.float64))
            if self._lat_buf:
                self._lat.update_many(self._lat_buf)
                self._lat_hist.update_many(self._lat_buf)
                self._primary_hist.update_many(self._primary_buf)
                self._shadow_hist.update_many(self._shadow_buf)
        except DataError:
            pass
        finally:
            self._diff_buf.clear()
            self._bounded_buf.clear()
            self._unit_buf.clear()
            self._other_buf.clear()
            self._odd_buf.clear()
            self._lat_buf.clear()
            self._primary_buf.clear()
            self._shadow_buf.clear()

    # -- control -------------------------------------------------------------------------

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and no call or sink runs (stuck calls aside).

        Args:
            timeout: Most real seconds to wait.

        Returns:
            True when idle.

        >>> ShadowMirror(lambda x: x, name="doc").wait_idle(timeout=0.1)
        True
        """
        if self._link is not None:
            return self._link.wait_idle(float(timeout))
        deadline = time.monotonic() + max(0.0, float(timeout))
        with self._lock:
            while not self._idle_locked():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, self._poll))
        return True

    def close(self, timeout: float = 1.0, *, drain: bool = False) -> bool:
        """Stop the workers; idempotent. Later submits are refused and counted.

        Queued requests are discarded (counted) unless ``drain`` is true, which first waits for
        them (within the same ``timeout``). Threads stuck in a hanging call cannot be stopped:
        they are daemon threads and exit when their call returns.

        Args:
            timeout: Most real seconds to wait, in total.
            drain: Run the queued requests before stopping.

        Returns:
            True when every worker that was not stuck has stopped.

        >>> mirror = ShadowMirror(lambda x: x, name="doc")
        >>> mirror.close(), mirror.close()
        (True, True)
        """
        if self._link is not None:
            return self._link.close(float(timeout), drain)
        deadline = time.monotonic() + max(0.0, float(timeout))
        if drain:
            self.wait_idle(timeout)
        with self._lock:
            if self._state is not _CLOSED:
                self._state = _CLOSED
                for _ in range(len(self._active)):
                    self._put(_STOP)
            self._stop.set()
            threads = [s.thread for s in self._active if s.thread is not None]
            self._idle.notify_all()
        if self._watchdog is not None:
            threads.append(self._watchdog)
        me = threading.current_thread()
        for t in threads:
            if t is not me:
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in threads if t is not me)

    def __enter__(self) -> ShadowMirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def state(self) -> str:
        """``"idle"``, ``"starting"``, ``"running"``, ``"suspended"``, ``"failed"`` or
        ``"closed"`` (a process-isolated mirror reports its worker process's link here:
        the worker's own suspension shows in :meth:`report`)."""
        return self._state if self._link is None else self._link.state

    @property
    def pid(self) -> int | None:
        """The worker process's id with ``isolation="process"`` once started, else None."""
        return None if self._link is None else self._link.pid

    def thread_count(self) -> int:
        """Live threads of this mirror in this process: workers, stuck threads, the watchdog.

        Never more than ``workers + max_stuck + 1``; with ``isolation="process"`` at most one
        (while the worker process starts).
        """
        if self._link is not None:
            return self._link.thread_count()
        with self._lock:
            slots = list(self._active | self._stuck)
        n = sum(1 for s in slots if s.thread is not None and s.thread.is_alive())
        return n + int(self._watchdog is not None and self._watchdog.is_alive())

    # -- report --------------------------------------------------------------------------

    def report(self, *, wait: bool = True) -> ShadowReport:
        """Check for overdue calls, then return the counts, statistics and verdicts.

        Each call is a look of the sequential checks; a check that decided keeps its verdict.
        With ``isolation="process"`` the worker process answers (within 5 s, else its last
        answer is used and the reason says so); with ``wait=False`` this never waits: it asks
        the worker for a fresh report, unless an earlier request is still unanswered, and
        uses the latest that has arrived (the router's evaluations on request threads do so).
        """
        if self._link is not None:
            return self._link.report(wait=wait)
        return self._local_report()

    def _local_report(self) -> ShadowReport:
        """The report of this process's own counters and statistics (with process isolation
        they stay at zero: the link merges it with the worker's)."""
        if self._state in (_RUNNING, _SUSPENDED):
            self._check_overdue()
        with self._lock:
            c: dict[str, Any] = {
                "state": self._state,
                "submitted": self._submitted,
                "mirrored": self._mirrored,
                "dropped": self._dropped,
                "suspended": self._suspended,
                "refused": self._refused,
                "completed": self._completed,
                "compared": self._compared,
                "skipped": self._skipped,
                "error_reasons": dict(self._errors),
                "timeouts": self._timeouts,
                "late": self._late,
                "discarded": self._discarded,
                "queued": self._pending,
                "running": sum(s.rows for s in self._active if s.since is not None),
                "stuck": len(self._stuck),
                "sink_errors": self._sink_errors,
                "err_calls": list(self._err_calls),
                "err_share": list(self._err_share),
            }
        errors = sum(c["error_reasons"].values())
        c["errors"] = errors
        with self._stats_lock:
            self._flush_locked()
            return self._report_locked(c)

    def _report_locked(self, c: dict[str, Any]) -> ShadowReport:
        alpha = self.alpha
        kind = self._kind
        reasons: list[str] = []
        # Label check.
        s, f = self._disagree, self._agree
        label_verdict: Verdict | None = None
        if kind == _LABEL:
            p0 = self.max_disagreement
            self._max_lbf_fail = max(
                self._max_lbf_fail, float(disagreement_log_bf(s, f, p0, upper=True))
            )
            self._max_lbf_pass = max(
                self._max_lbf_pass, float(disagreement_log_bf(s, f, p0, upper=False))
            )
            label_verdict = self._latched(self._max_lbf_fail, self._max_lbf_pass)
            rate = s / (s + f) if s + f else math.nan
            reasons.append(
                f"disagreement {_fmt(rate)} on {s + f} pairs vs max {_fmt(p0)}: "
                f"{label_verdict.value}"
            )
        # Numeric check.
        d = self._diff
        metric = {_NUMERIC: "difference", _VECTOR: "l1_distance"}.get(kind or "")
        mean = d.mean if d.n else math.nan
        var = d.variance
        lower = upper = math.nan
        numeric_verdict: Verdict | None = None
        # Probability vectors (or, for differences, scalars in [0, 1]) only so far: the
        # bounded sequence's bounds, which need no sample variance. Vectors of both kinds:
        # PASS when each kind's mean is shown within the margin (the bounded sequence on the
        # probability vectors', the normal one on the others'; the mean of all is then within
        # it too, and a kind whose mean is beyond it passes with probability alpha at most);
        # FAIL when the probability vectors' mean, or the mean of all (bounded from both
        # kinds' and their shares'), is shown beyond it. (The normal sequence on every pair
        # passed the pairs the bounded one held back, on a sample variance of 0, and FAILed
        # them wrongly as often.) Scalars: the same while every primary output is in
        # [0, 1] (pairs whose shadow output is not are the other kind); once a primary output
        # is outside, the normal-mixture sequence alone (a regression model's outputs fall in
        # [0, 1] now and then, and a kind with few pairs would hold PASS back for long).
        two_sided = metric == "difference"
        other = self._other

        def other_within(m: float) -> bool:
            # As many pairs as the normal-mixture sequence needs anywhere: on 2 pairs it
            # passed rare far-off values (an answer of 40 on 0.3% of a score primary's 1.0
            # rows, its mean beyond a 0.05 margin, PASSed in 60% of runs).
            if other.n < MIN_PAIRS:
                return False
            lo, hi = self._difference_bounds(
                other.n, other.mean, other.variance, two_sided=two_sided
            )
            return hi < m and (not two_sided or -m < lo)

        seq = self._unit if two_sided else self._bounded
        # Back from the bounded sequence's [0, 1]: d = 2z - 1 for differences, 2z for distances.
        shift = 1.0 if two_sided else 0.0

        def back(b: tuple[float, float]) -> tuple[float, float]:
            return 2.0 * b[0] - shift, 2.0 * b[1] - shift

        def beyond(lo: float, hi: float, m: float) -> bool:
            return lo > m or (two_sided and hi < -m)

        if two_sided:
            scores = self._primary_wide == 0  # every primary output so far in [0, 1]
            bounded = scores and seq.n == d.n
            mixed = scores and not bounded and seq.n > 0
        else:
            bounded = metric is not None and seq.n == d.n
            mixed = metric is not None and not bounded and seq.n > 0
        m = self.margin

        def mixed_bounds(level: float) -> tuple[float, float, float, float]:
            # Pairs of both kinds, at ``level`` in all: the bounded kind's bounds, and bounds
            # on the mean of all pairs from three sequences at level / 3 each (the bounded
            # kind's; the normal-mixture one on the other kind, once it has MIN_PAIRS pairs,
            # as anywhere; and the share of the other kind, whose every value within its
            # bounds is taken: the mix of the pairs seen is not the traffic's).
            # seq is at alpha a side for vectors, at alpha / 2 a side for scalars (two-sided):
            # at level / 3 in all, that is one and the same extra.
            k_lo, k_hi = back(seq.bounds(math.log(3.0 * alpha / level)))
            o_lo, o_hi = (
                self._difference_bounds(
                    other.n, other.mean, other.variance, two_sided=two_sided, alpha=level / 3
                )
                if other.n >= MIN_PAIRS
                else (-math.inf, math.inf)
            )
            q_lo, q_hi = self._odd.bounds(math.log(alpha / level))
            q_lo, q_hi = min(max(q_lo, 0.0), 1.0), min(max(q_hi, 0.0), 1.0)
            lo = min(_mix(q, k_lo, o_lo) for q in (q_lo, q_hi))
            hi = max(_mix(q, k_hi, o_hi) for q in (q_lo, q_hi))
            return k_lo, k_hi, lo, hi

        def mixed_fail(level: float) -> bool:
            # FAIL: the bounded kind's mean, or the mean of all, shown beyond the margin.
            assert m is not None
            k_lo, k_hi, lo, hi = mixed_bounds(level)
            return beyond(k_lo, k_hi, m) or beyond(lo, hi, m)

        k_lo = k_hi = math.nan  # the in-range pairs' bounds (mixed only)
        if metric is not None and d.n >= 2:
            if bounded:
                lower, upper = back(seq.bounds())
            elif mixed:
                # The bounded kind's values are never judged by the normal-mixture sequence
                # (on every pair, it FAILed 49 of 200 runs of a shadow within the margin, on
                # their rare large values, once a single pair was of the other kind), nor is
                # the other kind alone (on its own rare large values, 143 of 400 such runs).
                k_lo, k_hi, lower, upper = mixed_bounds(alpha)
            else:
                lower, upper = self._difference_bounds(d.n, mean, var, two_sided=two_sided)
            if m is not None and d.n >= MIN_PAIRS:
                if mixed:
                    # FAIL when the bounded kind's mean, or the mean of all, is shown beyond
                    # the margin (alpha in all); PASS when each kind's mean is shown within it
                    # (each at alpha): the bounded kind's by its own sequence, the other's by
                    # the normal-mixture one (with MIN_PAIRS pairs at least).
                    fail = beyond(k_lo, k_hi, m) or beyond(lower, upper, m)  # mixed_fail(alpha)
                    b_lo, b_hi = back(seq.bounds())
                    ok = b_hi < m and (not two_sided or -m < b_lo) and other_within(m)
                    # The smallest level at which the rule FAILs: at most alpha exactly when
                    # it FAILs at alpha.
                    p = _smallest_level(mixed_fail, alpha, fail)
                else:
                    fail = beyond(lower, upper, m)
                    ok = upper < m and (not two_sided or -m < lower)
                    if bounded and two_sided:
                        evidence = max(
                            seq.log_evidence((m + 1.0) / 2.0),
                            seq.log_evidence_below((1.0 - m) / 2.0),
                        )
                        # (exp(-evidence) overflows for a shadow far within the margin.)
                        p = 1.0 if evidence <= _LOG2 else 2.0 * math.exp(-evidence)
                    elif bounded:
                        evidence = seq.log_evidence(m / 2.0)
                        p = math.exp(-evidence) if evidence > 0 else 1.0
                    else:
                        p = self._p_beyond_margin(d.n, mean, var, metric)
                self._numeric_fail |= fail
                self._numeric_pass |= ok
                self._p_difference = min(self._p_difference, p)
        if metric is not None and self.margin is not None:
            numeric_verdict = (
                Verdict.FAIL
                if self._numeric_fail
                else Verdict.PASS
                if self._numeric_pass
                else Verdict.INCONCLUSIVE
            )
            reasons.append(
                f"mean {metric} {_fmt(mean)} in [{_fmt(lower)}, {_fmt(upper)}] on {d.n} pairs "
                f"vs margin {_fmt(self.margin)}: {numeric_verdict.value}"
                + (
                    f" ({other.n} pairs "
                    + (
                        "with a shadow output outside [0, 1]"
                        if two_sided
                        else "not of two distributions"
                    )
                    + " judged apart: FAIL needs the mean of all or of the in-range pairs"
                    " shown beyond the margin, PASS each kind's shown within it)"
                    if mixed
                    else ""
                )
            )
        elif metric is not None:
            reasons.append("no margin: numeric outputs are summarized, not judged")
        # Error check.
        failures = c["errors"] + c["timeouts"]
        trials = c["completed"] + failures
        error_verdict: Verdict | None = None
        if self.max_error_rate is not None:
            p0 = self.max_error_rate
            # Two streams, each a sequential test: single requests, and batch calls. Rows
            # of a batch fail together when its call fails, so they are not independent
            # trials: a batch call is one observation, the share of its rows that failed.
            # For observations in [0, 1] the mixture is still a supermartingale under "mean
            # share <= p0" (each likelihood ratio is convex in the observation, so its mean is
            # at most that of a 0/1 trial with the same mean). Apart, since a mean over calls
            # of both kinds would let many good requests hide failing batches (or the
            # reverse). FAIL when either stream fails at alpha/2 (Bonferroni: the union of
            # two crossings); PASS when every stream with observations passes at alpha (an
            # intersection needs no split).
            calls, share = c["err_calls"], c["err_share"]
            for k in (0, 1):
                f = calls[k] - share[k]
                self._max_lbf_err[k] = max(
                    self._max_lbf_err[k],
                    float(disagreement_log_bf(share[k], f, p0, upper=True)),
                )
                self._max_lbf_err_pass[k] = max(
                    self._max_lbf_err_pass[k],
                    float(disagreement_log_bf(share[k], f, p0, upper=False)),
                )
            fail_at, pass_at = -math.log(alpha / 2.0), -math.log(alpha)
            streams = [k for k in (0, 1) if calls[k]]
            if max(self._max_lbf_err) >= fail_at:
                error_verdict = Verdict.FAIL
            elif (
                streams
                and all(self._max_lbf_err_pass[k] >= pass_at for k in streams)
                # Within the batch stream, many small good calls could still hide a few
                # large failing ones (a mean over calls): never PASS while the rate over
                # requests is above the limit. (A further condition only makes PASS rarer.)
                and failures <= p0 * trials
            ):
                error_verdict = Verdict.PASS
            else:
                error_verdict = Verdict.INCONCLUSIVE
            where = (
                f"{trials} requests ({calls[0]} single, {calls[1]} batch calls)"
                if calls[1]
                else f"{trials} calls"
            )
            reasons.append(
                f"{failures} shadow errors and timeouts in {where} vs max rate {_fmt(p0)}: "
                f"{error_verdict.value}"
            )
        output_verdict = label_verdict if kind == _LABEL else numeric_verdict
        checks = [v for v in (output_verdict, error_verdict) if v is not None]
        if Verdict.FAIL in checks:
            verdict = Verdict.FAIL
        elif output_verdict is Verdict.PASS and error_verdict in (None, Verdict.PASS):
            verdict = Verdict.PASS
        else:
            verdict = Verdict.INCONCLUSIVE
        if kind is None:
            reasons.insert(0, "no compared pairs yet")
        lat = self._lat
        lh = self._lat_hist
        return ShadowReport(
            name=self.name,
            state=c["state"],
            isolation="thread",
            sample=self.sample,
            output_kind=kind,
            submitted=c["submitted"],
            mirrored=c["mirrored"],
            dropped=c["dropped"],
            drop_reasons={"queue_full": c["dropped"]},
            suspended=c["suspended"],
            refused=c["refused"],
            completed=c["completed"],
            compared=c["compared"],
            skipped=c["skipped"],
            errors=c["errors"],
            error_reasons=c["error_reasons"],
            timeouts=c["timeouts"],
            late=c["late"],
            discarded=c["discarded"],
            queued=c["queued"],
            running=c["running"],
            stuck=c["stuck"],
            sink_errors=c["sink_errors"],
            agreement_rate=f / (s + f) if s + f else None,
            disagreements=s,
            max_disagreement=self.max_disagreement,
            p_disagreement=_p_from_log_bf(self._max_lbf_fail),
            p_agreement=_p_from_log_bf(self._max_lbf_pass),
            label_verdict=label_verdict,
            difference_metric=metric,
            difference_mean=_opt(mean),
            difference_variance=_opt(var),
            difference_lower=_opt(lower),
            difference_upper=_opt(upper),
            margin=self.margin,
            p_difference=self._p_difference,
            numeric_verdict=numeric_verdict,
            error_rate=failures / trials if trials else None,
            max_error_rate=self.max_error_rate,
            p_error=min(1.0, 2.0 * _p_from_log_bf(max(self._max_lbf_err))),
            error_verdict=error_verdict,
            latency_pairs=lat.n,
            latency_difference_mean=_opt(lat.get()),
            latency_difference_variance=_opt(lat.variance),
            latency_difference_p50=_opt(lh.quantile(0.5)) if lat.n else None,
            latency_difference_p95=_opt(lh.quantile(0.95)) if lat.n else None,
            latency_difference_p99=_opt(lh.quantile(0.99)) if lat.n else None,
            primary_latency_p50=self._primary_hist.quantile(0.5) if lat.n else None,
            primary_latency_p99=self._primary_hist.quantile(0.99) if lat.n else None,
            shadow_latency_p50=self._shadow_hist.quantile(0.5) if lat.n else None,
            shadow_latency_p99=self._shadow_hist.quantile(0.99) if lat.n else None,
            alpha=alpha,
            verdict=verdict,
            reason="; ".join(reasons),
        )

    def _latched(self, lbf_fail: float, lbf_pass: float) -> Verdict:
        threshold = -math.log(self.alpha)
        if lbf_fail >= threshold:
            return Verdict.FAIL
        if lbf_pass >= threshold:
            return Verdict.PASS
        return Verdict.INCONCLUSIVE

    def _difference_bounds(
        self, n: int, mean: float, var: float, *, two_sided: bool, alpha: float | None = None
    ) -> tuple[float, float]:
        """The normal-mixture sequence's bounds on a mean (at ``alpha``, by default the
        mirror's)."""
        a = self.alpha if alpha is None else alpha
        se = np.array([math.sqrt(var / n)])
        hw = float(_halfwidth(se, np.array([float(n)]), a, TUNING, one_sided=not two_sided)[0])
        return mean - hw, mean + hw

    def _p_beyond_margin(self, n: int, mean: float, var: float, metric: str) -> float:
        """Always-valid p-value against "the mean lies within the margin"."""
        a = self.alpha
        se = math.sqrt(var / n)
        m = float(self.margin or 0.0)
        if metric == "difference":
            null = m if mean >= 0 else -m
            p = always_valid_p(
                mean, se, n, null=null, alternative="two-sided", alpha=a, tuning=TUNING
            )
            return float(p) if abs(mean) > m else 1.0
        p = always_valid_p(mean, se, n, null=m, alternative="greater", alpha=a, tuning=TUNING)
        return float(p)

    def __repr__(self) -> str:
        return (
            f"<safeserve.ShadowMirror {self.name!r} sample={self.sample:g} "
            f"state={self.state} workers={self.workers} isolation={self.isolation}>"
        )


for _cls in (ShadowMirror, ShadowPair, ShadowReport):
    _cls.__module__ = "safeserve"
del _cls

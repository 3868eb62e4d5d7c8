"""The plain-data view of the metric windows that the judge and reports read."""

from __future__ import annotations

import math
from typing import Any

import attrs
from attrs import frozen

from .._errors import ConfigError
from ._summaries import CategoryCounts, LogHistogram, Moments, SignedLogHistogram

__all__ = ["MetricsSnapshot", "VariantMetrics"]

#: Quantile levels reported for latency and numeric outputs, by name.
QUANTILES: dict[str, float] = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "p999": 0.999}


def _num(x: float) -> float | None:
    """A float for JSON: ``None`` instead of ``nan`` or an infinity."""
    return x if math.isfinite(x) else None


def _moments_dict(m: Moments) -> dict[str, Any]:
    return m.to_dict()


@frozen
class VariantMetrics:
    """One variant's window (and its lifetime counters), as plain data.

    The summary fields are independent copies of the window's mergeable summaries, so the judge
    can read ``n``, ``mean``, ``variance`` and quantiles from them, or add them up across
    processes. The window fields exclude requests forced by an override.

    Attributes:
        name: The variant's name.
        requests: Requests in the window.
        ok: Requests whose model call succeeded.
        errors: Failed requests (exceptions, rejected outputs and timeouts).
        errors_by_status: ``{"error": .., "invalid": .., "timeout": ..}`` in the window.
        fallbacks: Requests the baseline answered in place of this variant.
        latency: Latency histogram in seconds (quantiles within 1% by default).
        latency_moments: Moments of the latency in seconds.
        log_latency: Moments of ``log(max(latency, min_latency))``.
        output: Moments of numeric outputs.
        output_histogram: Signed log-bucket histogram of numeric outputs.
        labels: Counts per class label of label outputs.
        custom: Moments per custom metric name.
        outcomes: Moments per outcome name (a 0/1 outcome's mean is a proportion).
        totals: Lifetime counters, overrides included (``overrides`` counts them).
        output_kinds: Lifetime count of outputs by kind (numeric, label, vector, none).
        outcome_results: Lifetime count of joined outcomes by result, for this variant.
        rejected: Lifetime count of rejected inputs by reason (e.g. ``latency:nan``).

    >>> from safeserve.metrics import Recorder
    >>> rec = Recorder(["v1"], clock=lambda: 0.0)
    >>> rec.append((0, 0, 0.25, 0, False, 1.5, False))
    >>> rec.snapshot().variant("v1").latency_moments.mean
    0.25
    """

    name: str
    requests: int
    ok: int
    errors: int
    errors_by_status: dict[str, int]
    fallbacks: int
    latency: LogHistogram
    latency_moments: Moments
    log_latency: Moments
    output: Moments
    output_histogram: SignedLogHistogram
    labels: CategoryCounts
    custom: dict[str, Moments]
    outcomes: dict[str, Moments]
    totals: dict[str, int]
    output_kinds: dict[str, int]
    outcome_results: dict[str, int]
    rejected: dict[str, int]

    @property
    def overrides(self) -> int:
        """Lifetime count of requests forced by an override (kept out of the window)."""
        return self.totals.get("overrides", 0)

    @property
    def error_rate(self) -> float:
        """``errors / requests`` in the window; ``nan`` when there were none."""
        return self.errors / self.requests if self.requests else math.nan

    def latency_quantiles(self) -> dict[str, float]:
        """Return p50, p95, p99 and p99.9 of latency in seconds (``nan`` when empty)."""
        return {k: self.latency.quantile(q) for k, q in QUANTILES.items()}

    def to_dict(self) -> dict[str, Any]:
        """Return everything as JSON-serializable plain data."""
        lat = self.latency
        out = self.output_histogram
        return {
            "name": self.name,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "errors_by_status": dict(self.errors_by_status),
            "fallbacks": self.fallbacks,
            "overrides": self.overrides,
            "latency": {
                **_moments_dict(self.latency_moments),
                "log_mean": _num(self.log_latency.get()),
                "log_variance": _num(self.log_latency.variance),
                **{k: _num(v) for k, v in self.latency_quantiles().items()},
                "underflow": lat.underflow,
                "overflow": lat.overflow,
                "histogram": lat.to_dict(),
            },
            "output": {
                **_moments_dict(self.output),
                **{k: _num(out.quantile(q)) for k, q in QUANTILES.items()},
                "histogram": out.to_dict(),
                "labels": self.labels.to_dict(),
                "labels_other": self.labels.other,
            },
            "custom": {k: _moments_dict(m) for k, m in sorted(self.custom.items())},
            "outcomes": {k: _moments_dict(m) for k, m in sorted(self.outcomes.items())},
            "totals": dict(self.totals),
            "output_kinds": dict(self.output_kinds),
            "outcome_results": dict(self.outcome_results),
            "rejected": dict(self.rejected),
        }


@frozen
class MetricsSnapshot:
    """Every variant's window at one instant of the injected clock, as plain data.

    Attributes:
        time: The clock reading when the snapshot was taken.
        window: The window configuration, as plain data.
        variants: One :class:`VariantMetrics` per variant, in the recorder's order.
        records: Lifetime number of request records ingested.
        outcome_results: Lifetime count of ``record_outcome`` calls by result.
        outcome_reasons: Finer reasons for late and unknown outcomes (e.g. ``late:expired``).
        rejected: Lifetime count of rejected inputs that belong to no variant, by reason.

    >>> from safeserve.metrics import Recorder
    >>> rec = Recorder(["v1", "v2"], clock=lambda: 0.0)
    >>> rec.append((0, 1, 0.01, 1, True, None, False))
    >>> snap = rec.snapshot()
    >>> snap.variant("v2").errors, snap.to_dict()["variants"][1]["fallbacks"]
    (1, 1)
    """

    time: float
    window: dict[str, Any]
    variants: tuple[VariantMetrics, ...]
    records: int
    outcome_results: dict[str, int]
    outcome_reasons: dict[str, int]
    rejected: dict[str, int]
    _by_name: dict[str, VariantMetrics] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {v.name: v for v in self.variants})

    def variant(self, name: str) -> VariantMetrics:
        """Return the metrics of the variant called ``name``.

        Raises:
            ConfigError: for an unknown variant name.
        """
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown variant {name!r}; known: {list(self._by_name)!r}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-serializable plain data."""
        return {
            "time": self.time,
            "window": dict(self.window),
            "records": self.records,
            "outcome_results": dict(self.outcome_results),
            "outcome_reasons": dict(self.outcome_reasons),
            "rejected": dict(self.rejected),
            "variants": [v.to_dict() for v in self.variants],
        }


VariantMetrics.__module__ = "safeserve.metrics"
MetricsSnapshot.__module__ = "safeserve.metrics"

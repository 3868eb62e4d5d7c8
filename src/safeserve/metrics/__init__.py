"""Mergeable metric windows: counts, moments, log-bucket histograms, outcomes, the recorder.

Every summary adds (``+=``) and subtracts (``-=``) exactly, so a window slides by subtracting
the slice that expires and several processes can add their figures together. The
:class:`Recorder` is what the router feeds: one ``list.append`` per request, a vectorized
:meth:`Recorder.flush`, and a plain-data :class:`MetricsSnapshot` for the judge.

>>> from safeserve.metrics import Moments
>>> a, b = Moments().update_many([1.0, 2.0]), Moments().update_many([3.0])
>>> (a + b).mean
2.0
"""

from __future__ import annotations

from ._outcomes import OutcomeResult
from ._recorder import OutputKind, Recorder, Status, record_code
from ._snapshot import MetricsSnapshot, VariantMetrics
from ._summaries import CategoryCounts, Counts, LogHistogram, Moments, SignedLogHistogram
from ._window import CountWindow, SlidingWindow, TimeWindow, WindowSpec

__all__ = [
    "CategoryCounts",
    "CountWindow",
    "Counts",
    "LogHistogram",
    "MetricsSnapshot",
    "Moments",
    "OutcomeResult",
    "OutputKind",
    "Recorder",
    "SignedLogHistogram",
    "SlidingWindow",
    "Status",
    "TimeWindow",
    "VariantMetrics",
    "WindowSpec",
    "record_code",
]

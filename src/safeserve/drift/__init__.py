"""Drift monitoring: reference profiles, per-feature drift tests and streaming detectors.

A :class:`ReferenceProfile` describes the training data (or the baseline's traffic at rollout
start). A :class:`DriftMonitor` samples live rows per traffic arm on the request path, and its
:meth:`~DriftMonitor.evaluate` returns a :class:`DriftReport` that names the drifted features,
their statistics, and whether the drift is shared by the baseline's traffic ("the traffic
changed") or specific to the candidate's. The statistics are also available as functions.

>>> import safeserve.drift as drift
>>> round(drift.js_distance([1, 1], [1, 3]), 4)
0.2209
"""

from __future__ import annotations

from ._detectors import PageHinkley
from ._monitor import DriftMonitor, DriftReport, DriftScope, FeatureDrift, FeatureStats
from ._profile import CategoricalFeature, NumericFeature, ProfileBuilder, ReferenceProfile
from ._stats import (
    benjamini_hochberg,
    chi2_homogeneity,
    js_distance,
    ks_test,
    normalized_wasserstein,
    psi,
    psi_pvalue,
    psi_threshold,
)

__all__ = [
    "CategoricalFeature",
    "DriftMonitor",
    "DriftReport",
    "DriftScope",
    "FeatureDrift",
    "FeatureStats",
    "NumericFeature",
    "PageHinkley",
    "ProfileBuilder",
    "ReferenceProfile",
    "benjamini_hochberg",
    "chi2_homogeneity",
    "js_distance",
    "ks_test",
    "normalized_wasserstein",
    "psi",
    "psi_pvalue",
    "psi_threshold",
]

for _cls in (
    CategoricalFeature,
    DriftMonitor,
    DriftReport,
    DriftScope,
    FeatureDrift,
    FeatureStats,
    NumericFeature,
    PageHinkley,
    ProfileBuilder,
    ReferenceProfile,
):
    _cls.__module__ = __name__
for _fn in (
    benjamini_hochberg,
    chi2_homogeneity,
    js_distance,
    ks_test,
    normalized_wasserstein,
    psi,
    psi_pvalue,
    psi_threshold,
):
    _fn.__module__ = __name__
del _cls, _fn

"""Statistics that stay valid when the metrics are checked after every batch.

Sequential tests (safe at every look): normal-mixture confidence sequences for differences of
means and proportions, the exact rare-error test and the sequential sample-ratio-mismatch test.
Fixed-horizon tests (one planned look, for reports): Welch, Mann-Whitney with the Hodges-Lehmann
interval and a Kayenta-compatible judge, two proportions, a quantile difference, chi-square SRM.
Family-wise control across checks: Bonferroni and Holm.

>>> from safeserve import stats
>>> stats.proportion_difference_cs(20000, 400, 20000, 200).verdict
<Verdict.FAIL: 'fail'>
"""

from __future__ import annotations

from safeserve.stats._common import Direction, Verdict
from safeserve.stats._fixed import (
    KayentaResult,
    MannWhitneyResult,
    ProportionTestResult,
    QuantileDifferenceResult,
    WelchResult,
    kayenta_judge,
    mann_whitney_test,
    quantile_difference_ci,
    two_proportion_test,
    welch_test,
)
from safeserve.stats._multiple import MultipleTestResult, bonferroni, holm
from safeserve.stats._rare import RareErrorResult, RareErrorTest, beta_binomial_bf
from safeserve.stats._sequential import (
    SequenceResult,
    SequenceResults,
    always_valid_p,
    mean_difference_cs,
    mean_difference_cs_many,
    proportion_difference_cs,
    proportion_difference_cs_many,
)
from safeserve.stats._srm import SequentialSRM, SRMResult, srm_chisquare

__all__ = [
    "Direction",
    "KayentaResult",
    "MannWhitneyResult",
    "MultipleTestResult",
    "ProportionTestResult",
    "QuantileDifferenceResult",
    "RareErrorResult",
    "RareErrorTest",
    "SRMResult",
    "SequenceResult",
    "SequenceResults",
    "SequentialSRM",
    "Verdict",
    "WelchResult",
    "always_valid_p",
    "beta_binomial_bf",
    "bonferroni",
    "holm",
    "kayenta_judge",
    "mann_whitney_test",
    "mean_difference_cs",
    "mean_difference_cs_many",
    "proportion_difference_cs",
    "proportion_difference_cs_many",
    "quantile_difference_ci",
    "srm_chisquare",
    "two_proportion_test",
    "welch_test",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name

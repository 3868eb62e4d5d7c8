"""DriftMonitor: sampling, malformed rows, statistics, detection, attribution, false alarms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

import safeserve.drift as drift
from safeserve._errors import ConfigError, DataError

N_FEATURES = 20


def normal_profile(seed: int = 0, rows: int = 20_000) -> drift.ReferenceProfile:
    rng = np.random.default_rng(seed)
    return drift.ReferenceProfile.from_data(rng.normal(size=(rows, N_FEATURES)))


def mixed_profile() -> drift.ReferenceProfile:
    rng = np.random.default_rng(1)
    return drift.ReferenceProfile.from_data(
        {
            "x": rng.normal(size=5000),
            "color": rng.choice(["red", "green", "blue"], size=5000, p=[0.5, 0.3, 0.2]),
        },
        categorical=["color"],
    )


def test_sampling_rate_is_kept_and_deterministic() -> None:
    """At 10% sampling about 10% of rows are kept, the same rows for the same seed."""
    profile = normal_profile()
    x = [0.0] * N_FEATURES
    counts = []
    for _ in range(2):
        m = drift.DriftMonitor(profile, sample_rate=0.1, window=50_000, seed=5)
        for i in range(100_000):
            m.observe(x, i % 2)
        m.flush()
        counts.append(m.sampled)
    assert counts[0] == counts[1]
    # Binomial(100000, 0.1): sd ~ 95.
    assert abs(counts[0] - 10_000) < 500


def test_batch_and_single_observe_share_the_countdown() -> None:
    """observe_batch keeps the sampling rate across batches of any size."""
    m = drift.DriftMonitor(normal_profile(), sample_rate=0.25, window=50_000, seed=2)
    rng = np.random.default_rng(3)
    total = 0
    for size in [1, 7, 100, 3, 1000, 5000, 13] * 5:
        m.observe_batch(rng.normal(size=(size, N_FEATURES)), 0)
        total += size
    assert abs(m.sampled - total * 0.25) < 5 * np.sqrt(total * 0.25 * 0.75)
    assert m.window_size("baseline") == m.sampled


def test_malformed_rows_are_counted_and_skipped() -> None:
    """Wrong width, non-numeric, NaN, bad category and unknown variant are counted by reason."""
    m = drift.DriftMonitor(mixed_profile(), sample_rate=1.0, min_samples=2, window=100)
    m.observe([0.1, "red"], 0)
    m.observe([0.1], 0)
    m.observe(["a", "red"], 0)
    m.observe([float("nan"), "red"], 1)
    m.observe([0.2, None], 1)
    m.observe({"x": 0.3, "color": "blue"}, 1)
    m.observe({"color": "blue"}, 1)
    m.observe([0.4, "red"], 7)
    m.flush()
    assert dict(m.rejected) == {
        "wrong_width": 1,
        "non_numeric": 1,
        "non_finite": 1,
        "bad_category": 1,
        "missing_feature": 1,
        "unknown_variant": 1,
    }
    assert m.window("baseline")["x"].tolist() == [0.1]
    assert m.window("candidate")["x"].tolist() == [0.3]


def test_non_finite_rows_in_a_batch_are_counted() -> None:
    """A 2-D batch with NaN/inf rows records the finite rows and counts the others."""
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0)
    X = np.zeros((10, N_FEATURES))
    X[2, 3] = np.nan
    X[5, 0] = np.inf
    m.observe_batch(X, 0)
    assert m.window_size("baseline") == 8
    assert m.rejected["non_finite"] == 2


def test_window_is_bounded_and_keeps_newest_rows() -> None:
    """The window holds at most `window` rows, the newest, oldest first."""
    profile = drift.ReferenceProfile.from_data({"x": np.arange(100.0)})
    m = drift.DriftMonitor(profile, sample_rate=1.0, window=50, min_samples=10)
    for i in range(130):
        m.observe([float(i)], 0)
    assert m.window("baseline")["x"].tolist() == [float(i) for i in range(80, 130)]


def test_observed_row_is_copied() -> None:
    """Mutating an array after observe does not change the recorded row."""
    profile = drift.ReferenceProfile.from_data({"x": np.arange(100.0)})
    m = drift.DriftMonitor(profile, sample_rate=1.0, min_samples=2)
    buf = np.array([1.0])
    m.observe(buf, 0)
    buf[0] = 99.0
    assert m.window("baseline")["x"].tolist() == [1.0]


def test_report_statistics_match_scipy_on_the_window() -> None:
    """Each arm's statistics equal scipy's on that arm's window and the profile."""
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(3000, 2))
    profile = drift.ReferenceProfile.from_data(ref, names=["a", "b"], sample_size=1000)
    m = drift.DriftMonitor(profile, sample_rate=1.0, window=800)
    X = rng.normal(size=(1000, 2))
    X[:, 1] = np.round(X[:, 1] * 1.3 + 0.2, 1)  # shifted, with ties
    m.observe_batch(X, rng.integers(0, 2, 1000))
    report = m.evaluate()
    all_p = []
    for feat, prof in zip(report.features, profile.numeric, strict=True):
        for arm, s in (("baseline", feat.baseline), ("candidate", feat.candidate)):
            assert s is not None
            cur = m.window(arm)[feat.name]
            sample = np.asarray(prof.sample)
            ks = stats.ks_2samp(sample, cur, method="asymp")
            assert s.statistic == pytest.approx(ks.statistic, rel=1e-9)
            en = len(sample) * len(cur) / (len(sample) + len(cur))
            assert s.p_value == pytest.approx(
                stats.kstwobign.sf(np.sqrt(en) * ks.statistic), rel=1e-9, abs=1e-300
            )
            # Kolmogorov's limit is slightly conservative against Smirnov's finite-n law.
            assert s.p_value >= ks.pvalue * 0.999
            w = stats.wasserstein_distance(sample, cur) / max(prof.std, 0.001)
            assert s.wasserstein == pytest.approx(w, rel=1e-9)
            edges = np.concatenate([[-np.inf], prof.edges, [np.inf]])
            cur_counts, _ = np.histogram(cur, bins=edges)
            e = np.maximum(np.asarray(prof.counts) / prof.n_rows, 1e-4)
            a = np.maximum(cur_counts / len(cur), 1e-4)
            assert s.psi == pytest.approx(stats.entropy(a, e) + stats.entropy(e, a), rel=1e-9)
            assert s.js_distance == pytest.approx(
                jensenshannon(prof.counts, cur_counts, base=2), rel=1e-9
            )
            assert s.psi_threshold == pytest.approx(
                (1 / prof.n_rows + 1 / len(cur)) * stats.chi2.ppf(0.95, 9), rel=1e-12
            )
            all_p.append((s.p_value, s.q_value))
        assert feat.between is not None
        between = stats.ks_2samp(m.window("baseline")[feat.name], m.window("candidate")[feat.name])
        assert feat.between.statistic == pytest.approx(between.statistic, rel=1e-9)
        all_p.append((feat.between.p_value, feat.between.q_value))
    ps, qs = np.array(all_p).T
    np.testing.assert_allclose(qs, stats.false_discovery_control(ps, method="bh"), rtol=1e-12)


def test_categorical_statistics_match_chi2_contingency() -> None:
    """Categorical statistics equal chi2_contingency on [reference counts, window counts]."""
    profile = mixed_profile()
    cat = profile.features[1]
    assert isinstance(cat, drift.CategoricalFeature)
    m = drift.DriftMonitor(profile, sample_rate=1.0, window=1000)
    rng = np.random.default_rng(6)
    colors = rng.choice(["red", "green", "blue"], size=600, p=[0.4, 0.3, 0.3])
    for c in colors:
        m.observe([0.0, str(c)], 0)
    s = m.evaluate().features[1].baseline
    assert s is not None
    codes = m.window("baseline")["color"]
    cur = np.bincount(codes, minlength=cat.n_bins)
    table = np.vstack([cat.counts, cur])
    table = table[:, table.sum(axis=0) > 0]
    res = stats.chi2_contingency(table, correction=False)
    assert s.test == "chi2"
    assert s.statistic == pytest.approx(res.statistic, rel=1e-9)
    assert s.p_value == pytest.approx(res.pvalue, rel=1e-9)
    assert s.wasserstein is None


def test_new_category_is_detected() -> None:
    """A category absent from the reference (10% of live rows) is flagged as drift."""
    m = drift.DriftMonitor(mixed_profile(), sample_rate=1.0, window=1000)
    rng = np.random.default_rng(7)
    for _i in range(1000):
        color = (
            "purple"
            if rng.random() < 0.1
            else str(rng.choice(["red", "green", "blue"], p=[0.5, 0.3, 0.2]))
        )
        m.observe([float(rng.normal()), color], int(rng.integers(0, 2)))
    report = m.evaluate()
    color = report.features[1]
    assert color.drifted
    assert color.scope is drift.DriftScope.TRAFFIC
    assert color.baseline is not None
    assert color.baseline.psi > color.baseline.psi_threshold
    assert not report.features[0].drifted


def shifted_rows(rng: np.random.Generator, n: int, shift: float, feature: int = 7) -> np.ndarray:
    X = rng.normal(size=(n, N_FEATURES))
    X[:, feature] += shift
    return X


def test_traffic_change_is_not_blamed_on_candidate() -> None:
    """The same shift in both arms is reported as TRAFFIC, not as candidate drift."""
    rng = np.random.default_rng(8)
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0, window=2000)
    m.observe_batch(shifted_rows(rng, 4000, 0.5), rng.integers(0, 2, 4000))
    report = m.evaluate()
    assert [f.name for f in report.drifted_features] == ["x7"]
    assert report.scope is drift.DriftScope.TRAFFIC
    assert report.traffic_changed
    assert report.candidate_only == ()


def test_candidate_only_drift_is_attributed_to_candidate() -> None:
    """A shift in the candidate arm alone is reported as CANDIDATE."""
    rng = np.random.default_rng(9)
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0, window=2000)
    m.observe_batch(shifted_rows(rng, 2000, 0.0), 0)
    m.observe_batch(shifted_rows(rng, 2000, 0.5), 1)
    report = m.evaluate()
    assert report.scope is drift.DriftScope.CANDIDATE
    assert report.candidate_only == ("x7",)
    assert not report.traffic_changed
    x7 = report.drifted_features[0]
    assert x7.baseline is not None
    assert not x7.baseline.drifted
    assert x7.between is not None
    assert x7.between.drifted


def test_report_evidence_is_json_ready() -> None:
    """to_dict names the drifted features with their statistics, as plain data."""
    import json

    rng = np.random.default_rng(10)
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0, window=2000)
    m.observe_batch(shifted_rows(rng, 4000, 1.0), rng.integers(0, 2, 4000))
    d = json.loads(json.dumps(m.evaluate().to_dict()))
    assert d["scope"] == "traffic"
    assert [f["name"] for f in d["drifted"]] == ["x7"]
    assert d["drifted"][0]["baseline"]["test"] == "ks"


def test_arm_below_min_samples_is_not_compared() -> None:
    """An arm with fewer than min_samples rows has no statistics and no arm comparison."""
    rng = np.random.default_rng(11)
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0, min_samples=200)
    m.observe_batch(rng.normal(size=(300, N_FEATURES)), 0)
    m.observe_batch(rng.normal(size=(50, N_FEATURES)), 1)
    f = m.evaluate().features[0]
    assert f.baseline is not None
    assert f.candidate is None
    assert f.between is None


def test_output_drift_is_reported() -> None:
    """Baseline outputs that move away from the output profile are flagged as output drift."""
    rng = np.random.default_rng(12)
    outputs = drift.ReferenceProfile.from_data({"score": rng.beta(2, 5, 5000)})
    m = drift.DriftMonitor(normal_profile(), output_profile=outputs, sample_rate=1.0)
    X = rng.normal(size=(1000, N_FEATURES))
    m.observe_batch(X, 0, Y=rng.beta(3, 4, 1000))
    report = m.evaluate()
    assert [f.name for f in report.drifted_features] == ["output:score"]
    assert report.drifted_features[0].scope is drift.DriftScope.TRAFFIC


def test_psi_as_decision_test() -> None:
    """numeric_test='psi' decides by the calibrated PSI threshold."""
    rng = np.random.default_rng(13)
    m = drift.DriftMonitor(normal_profile(), sample_rate=1.0, numeric_test="psi", window=2000)
    m.observe_batch(shifted_rows(rng, 4000, 0.5), rng.integers(0, 2, 4000))
    report = m.evaluate()
    x7 = report.features[7].baseline
    assert x7 is not None
    assert x7.test == "psi"
    assert x7.drifted
    assert x7.psi > x7.psi_threshold


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample_rate": 0.0},
        {"sample_rate": 1.5},
        {"alpha": 1.0},
        {"window": 1},
        {"min_samples": 500, "window": 100},
        {"baseline_index": 1, "candidate_index": 1},
        {"numeric_test": "t"},
    ],
)
def test_bad_options_raise_config_error(kwargs: dict) -> None:
    """Invalid options raise ConfigError."""
    with pytest.raises(ConfigError):
        drift.DriftMonitor(normal_profile(), **kwargs)


def test_batch_shape_mismatch_raises() -> None:
    """A variant index array of the wrong length raises DataError."""
    m = drift.DriftMonitor(normal_profile())
    with pytest.raises(DataError):
        m.observe_batch(np.zeros((3, N_FEATURES)), [0, 1])


def requests_to_detect(seed: int) -> int:
    """Requests after a 0.5 sigma shift of one feature in 20 until evaluate() flags that feature.

    Setup: 10% sampling, window 1000 per arm, a 50/50 split, evaluate every 500 requests,
    after 20,000 stationary requests.
    """
    rng = np.random.default_rng(seed)
    profile = normal_profile(seed)
    m = drift.DriftMonitor(profile, sample_rate=0.1, window=1000, seed=seed)
    step = 500
    for _ in range(20_000 // step):
        m.observe_batch(shifted_rows(rng, step, 0.0), rng.integers(0, 2, step))
    assert not m.evaluate().drifted
    for k in range(1, 200):
        m.observe_batch(shifted_rows(rng, step, 0.5), rng.integers(0, 2, step))
        if m.evaluate().features[7].drifted:
            return k * step
    return 10**9


# Bound: with the setup above a 0.5 sigma shift is flagged within 10,000 requests
# (1,000 sampled rows, 500 per arm). Over 12 seeds: mean 4,800, range 2,000-6,500.
DETECTION_BOUND = 10_000


def test_half_sigma_shift_detected_within_bound() -> None:
    """A 0.5 sigma shift in one of 20 features is flagged within 10,000 requests."""
    delays = [requests_to_detect(seed) for seed in range(3)]
    assert max(delays) <= DETECTION_BOUND


def false_alarm_rate(reps: int, window: int, seed: int) -> float:
    """Share of stationary evaluations (both arms full, 20 features) that flag any drift."""
    rng = np.random.default_rng(seed)
    profile = normal_profile(seed)
    alarms = 0
    for r in range(reps):
        m = drift.DriftMonitor(profile, sample_rate=1.0, window=window, seed=r)
        m.observe_batch(rng.normal(size=(2 * window, N_FEATURES)), rng.integers(0, 2, 2 * window))
        alarms += m.evaluate().drifted
    return alarms / reps


def test_false_alarm_rate_fast() -> None:
    """Stationary streams: at most alpha=5% of evaluations flag drift (200 runs, 3.2 SE)."""
    assert false_alarm_rate(200, 300, seed=21) <= 0.05 + 3.2 * np.sqrt(0.05 * 0.95 / 200)


@pytest.mark.slow
def test_false_alarm_rate_slow() -> None:
    """Stationary streams: at most alpha=5% of evaluations flag drift (2000 runs, 2.5 SE)."""
    assert false_alarm_rate(2000, 1000, seed=22) <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 2000)

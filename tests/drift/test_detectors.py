"""Page-Hinkley: river's update rule, vectorized over streams and over time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import safeserve.drift as drift


def test_defaults_are_rivers() -> None:
    """The defaults are river's: min_instances 30, delta 0.005, threshold 50, alpha 0.9999."""
    ph = drift.PageHinkley()
    assert (ph.min_instances, ph.delta, ph.threshold, ph.alpha, ph.mode) == (
        30,
        0.005,
        50.0,
        1 - 0.0001,
        "both",
    )


def test_flags_a_step_in_either_direction() -> None:
    """A step of +5 or -5 after 100 zeros is flagged within 15 values, not before the step."""
    for sign in (1.0, -1.0):
        ph = drift.PageHinkley()
        hits = []
        for i in range(200):
            ph.update(0.0 if i < 100 else sign * 5.0)
            if ph.drift_detected:
                hits.append(i)
        assert hits
        assert 100 <= hits[0] <= 115


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 300), st.just(3)), elements=st.floats(-20, 20)),
    st.sampled_from(["up", "down", "both"]),
    st.floats(1.0, 30.0),
)
def test_update_many_equals_repeated_update(x: np.ndarray, mode: str, threshold: float) -> None:
    """update_many gives the same flags and state as one update per row, resets included."""
    seq = drift.PageHinkley(3, min_instances=5, threshold=threshold, mode=mode)  # type: ignore[arg-type]
    vec = drift.PageHinkley(3, min_instances=5, threshold=threshold, mode=mode)  # type: ignore[arg-type]
    fired = np.zeros(3, dtype=bool)
    for row in x:
        seq.update(row)
        fired |= seq.drifted
    assert vec.update_many(x).tolist() == fired.tolist()
    assert vec.drifted.tolist() == seq.drifted.tolist()
    assert vec.n.tolist() == seq.n.tolist()


def test_monitor_settings_quiet_on_null_block_means() -> None:
    """The monitor's detector settings raise no alarm on 20,000 null block means x 20 streams."""
    from safeserve.drift._monitor import EARLY_WARNING_DETECTOR as T

    rng = np.random.default_rng(7)
    ph = drift.PageHinkley(
        20, min_instances=T.min_instances, delta=T.delta, threshold=T.threshold, alpha=T.alpha
    )
    assert not ph.update_many(rng.normal(0, 0.25, size=(20_000, 20))).any()


def test_monitor_settings_flag_half_sigma_shift_within_30_blocks() -> None:
    """With those settings a 0.5 shift in block means (sd 0.25) is flagged within 30 blocks."""
    from safeserve.drift._monitor import EARLY_WARNING_DETECTOR as T

    rng = np.random.default_rng(8)
    delays = []
    for _ in range(20):
        ph = drift.PageHinkley(
            min_instances=T.min_instances, delta=T.delta, threshold=T.threshold, alpha=T.alpha
        )
        x = rng.normal(0, 0.25, size=600)
        x[500:] += 0.5
        hits = []
        for i, v in enumerate(x):
            ph.update(v)
            if ph.drift_detected:
                hits.append(i)
        delays.append(hits[0] - 500)
    assert min(delays) >= 0
    assert max(delays) <= 30

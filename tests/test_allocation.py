"""Allocation: fixed lanes, monotonic growth, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import safeserve as ss

from .strategies import salts, weights

KEYS = np.arange(100_000, dtype=np.int64)


def assignment(alloc: ss.Allocation, salt: str, keys: np.ndarray = KEYS) -> np.ndarray:
    return alloc.index_of_buckets(ss.buckets_of(keys, salt=salt))


@settings(max_examples=60, deadline=None)
@given(p1=weights, p2=weights, salt=salts)
def test_growth_only_adds_keys(p1: float, p2: float, salt: str) -> None:
    """For p1 <= p2, every key on the candidate at p1 is still on it at p2."""
    lo, hi = sorted((p1, p2))
    a = assignment(ss.Allocation("b", ("c",), {"c": lo}), salt, KEYS[:20_000])
    b = assignment(ss.Allocation("b", ("c",), {"c": hi}), salt, KEYS[:20_000])
    assert not np.any((a == 1) & (b != 1))


@settings(max_examples=40, deadline=None)
@given(
    w=st.lists(weights, min_size=2, max_size=4).filter(lambda ws: sum(ws) <= 100),
    which=st.integers(min_value=0, max_value=3),
    delta=weights,
    salt=salts,
)
def test_changing_one_candidate_never_moves_another(
    w: list[float], which: int, delta: float, salt: str
) -> None:
    """Raising or lowering one candidate only trades keys with the baseline."""
    names = tuple(f"c{i}" for i in range(len(w)))
    which %= len(w)
    try:
        before = ss.Allocation("b", names, dict(zip(names, w, strict=True)))
        after = before.with_weights({names[which]: delta})
    except ss.ConfigError:
        return  # lanes would overlap: rejected, covered by its own test
    a, b = assignment(before, salt, KEYS[:20_000]), assignment(after, salt, KEYS[:20_000])
    moved = a != b
    # Every moved key goes between the changed candidate and the baseline.
    assert set(np.unique(a[moved])) | set(np.unique(b[moved])) <= {0, which + 1}
    if delta >= w[which]:
        assert not np.any((a == which + 1) & (b != which + 1))
    else:
        assert not np.any((b == which + 1) & (a != which + 1))


@settings(max_examples=40, deadline=None)
@given(w=st.lists(weights, min_size=1, max_size=5).filter(lambda ws: sum(ws) <= 100), salt=salts)
def test_every_key_in_exactly_one_variant(w: list[float], salt: str) -> None:
    """The lanes partition the buckets; weight-0 variants get nothing."""
    names = tuple(f"c{i}" for i in range(len(w)))
    try:
        alloc = ss.Allocation("b", names, dict(zip(names, w, strict=True)))
    except ss.ConfigError:
        return
    counts = np.bincount(alloc.array, minlength=len(names) + 1)
    assert counts.sum() == ss.BUCKETS
    for i, wi in enumerate(w, start=1):
        assert counts[i] == round(wi * 100)
        if wi == 0:
            assert not np.any(assignment(alloc, salt, KEYS[:5000]) == i)


def test_two_candidates_up_to_half_each() -> None:
    """With k candidates, each can reach 100/k percent at the same time."""
    alloc = ss.Allocation("b", ("c1", "c2"), {"c1": 50, "c2": 50})
    assert alloc.weights == {"b": 0.0, "c1": 50.0, "c2": 50.0}
    solo = ss.Allocation("b", ("c1", "c2"), {"c1": 100})
    assert solo.weights["c1"] == 100.0


@pytest.mark.parametrize("salt", ["checkout", "fraud-v7", ""])
@pytest.mark.parametrize("weight", [0.5, 5, 25, 50, 95])
def test_observed_share_within_binomial_interval(salt: str, weight: float) -> None:
    """On 100k keys the observed share lies in the 99.9% binomial interval."""
    alloc = ss.Allocation("b", ("c",), {"c": weight})
    for keys in (KEYS, [f"user-{i}" for i in range(100_000)]):
        observed = int(np.sum(alloc.index_of_buckets(ss.buckets_of(keys, salt=salt)) == 1))
        lo, hi = stats.binom.interval(0.999, len(keys), weight / 100)
        assert lo <= observed <= hi


def test_two_salts_give_independent_assignments() -> None:
    """Membership under salt A tells nothing about salt B: chi-square independence holds."""
    alloc = ss.Allocation("b", ("c",), {"c": 50})
    a = assignment(alloc, "rollout-a")
    b = assignment(alloc, "rollout-b")
    table = np.array([[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])
    p = stats.chi2_contingency(table, correction=False).pvalue
    assert p > 0.001
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ({"c": -1}, "-1"),
        ({"c": 100.5}, "100.5"),
        ({"c": math.nan}, "nan"),
        ({"c": "5"}, "'5'"),
        ({"c": True}, "True"),
        ({"zzz": 5}, "'zzz'"),
    ],
)
def test_bad_weights_raise_config_error(weights: dict[str, object], match: str) -> None:
    """Negative, over-100, NaN, non-numeric and unknown weights name the bad value."""
    with pytest.raises(ss.ConfigError, match=match):
        ss.Allocation("b", ("c",), weights)  # type: ignore[arg-type]


def test_sum_over_100_rejected() -> None:
    """Weights that add up to more than 100% are rejected."""
    with pytest.raises(ss.ConfigError, match="over 100%"):
        ss.Allocation("b", ("c1", "c2"), {"c1": 60, "c2": 50})


def test_overlapping_lanes_rejected() -> None:
    """A candidate may not grow into another's lane; the error names both."""
    with pytest.raises(ss.ConfigError, match=r"'c1'.*'c2'|'c2'.*'c1'"):
        ss.Allocation("b", ("c1", "c2"), {"c1": 60, "c2": 10})


def test_inconsistent_baseline_weight_rejected() -> None:
    """An explicit baseline weight must be the rest."""
    assert ss.Allocation("b", ("c",), {"b": 90, "c": 10}).weights["b"] == 90.0
    with pytest.raises(ss.ConfigError, match="baseline weight 80"):
        ss.Allocation("b", ("c",), {"b": 80, "c": 10})


def test_duplicate_and_empty_names_rejected() -> None:
    """Variant names must be distinct non-empty strings."""
    with pytest.raises(ss.ConfigError, match="duplicate"):
        ss.Allocation("b", ("b",), {})
    with pytest.raises(ss.ConfigError):
        ss.Allocation("", ("c",), {})

"""Mergeable, subtractable summaries checked against numpy oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from safeserve._errors import ConfigError, DataError
from safeserve.metrics import (
    CategoryCounts,
    Counts,
    LogHistogram,
    Moments,
    SignedLogHistogram,
)

QS = (0.0, 0.5, 0.95, 0.99, 0.999, 1.0)


def _close(ours: float, exact: float, rtol: float, atol: float = 0.0) -> bool:
    return abs(ours - exact) <= rtol * abs(exact) + atol


@st.composite
def shifted_samples(draw: st.DrawFn) -> tuple[np.ndarray, float]:
    """Values ``offset + scale * u``, ``u`` in [-1, 1], offsets up to 1000 spreads (1e6 µs).

    Latency in microseconds has an offset around 1e5..1e6 and a spread of 1e3 or more; a
    spread a million times smaller than the offset is beyond any float64 summary.
    """
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    offset = scale * draw(st.sampled_from([0.0, 10.0, 1e3, -1e3]))
    u = draw(st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=64), min_size=4, max_size=200))
    return offset + scale * np.array(u), scale


@settings(max_examples=150, deadline=None)
@given(shifted_samples(), st.data())
def test_moments_merge_agrees_with_numpy(sample: tuple[np.ndarray, float], data: st.DataObject):
    """Merging two Moments gives numpy's mean and var(ddof=1) of the union, to 1e-9."""
    x, scale = sample
    i = data.draw(st.integers(0, x.size))
    a, b = Moments().update_many(x[:i]), Moments()
    for v in x[i:]:
        b.update(float(v))
    m = a + b
    assert m.n == x.size
    assert _close(m.mean, float(np.mean(x)), 1e-9, 1e-12 * scale)
    assert _close(m.variance, float(np.var(x, ddof=1)), 1e-9, 1e-12 * scale**2)


@settings(max_examples=150, deadline=None)
@given(shifted_samples(), st.data())
def test_moments_subtract_agrees_with_numpy(sample: tuple[np.ndarray, float], data: st.DataObject):
    """Subtracting a part's Moments from the whole leaves numpy's figures of the rest.

    Subtraction cancels: its rounding error scales with the whole window's spread, not the
    remainder's (a remainder of two equal values has variance 0, which no float64 difference
    of large M2 terms hits to 1e-9 of itself). So the variance is held to 1e-9 relative plus
    1e-9 of the whole's variance (and the same tiny absolute floor as the merge test).
    """
    x, scale = sample
    i = data.draw(st.integers(2, x.size))
    rest = Moments().update_many(x) - Moments().update_many(x[i:])
    assert rest.n == i
    assert _close(rest.mean, float(np.mean(x[:i])), 1e-9, 1e-12 * scale)
    whole = float(np.var(x, ddof=1))
    assert _close(
        rest.variance, float(np.var(x[:i], ddof=1)), 1e-9, 1e-9 * whole + 1e-12 * scale**2
    )


def test_moments_large_offset_latency_in_microseconds():
    """Latency in microseconds (offset ~1e6) keeps 1e-9 relative accuracy through += and -=."""
    rng = np.random.default_rng(3)
    x = 1e6 + rng.lognormal(3.0, 1.0, 50_000)
    parts = np.array_split(x, 7)
    total = Moments()
    for p in parts:
        total += Moments().update_many(p)
    total -= Moments().update_many(parts[0])
    rest = np.concatenate(parts[1:])
    assert _close(total.mean, float(np.mean(rest)), 1e-12)
    assert _close(total.variance, float(np.var(rest, ddof=1)), 1e-9)


def test_moments_update_and_revert_roundtrip():
    """revert undoes update (river's API) down to an empty summary."""
    m = Moments().update(3.0).update(5.0).update(10.0)
    m.revert(10.0).revert(3.0)
    assert (m.n, m.mean, m.m2) == (1, 5.0, 0.0)
    m.revert(5.0)
    assert m == Moments()
    assert math.isnan(m.get())


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, "1.0", None, True, 1e200, -1e101, 10**400]
)
def test_moments_rejects_bad_values(bad: object):
    """A non-finite or non-numeric value, or one too large to square and sum (beyond
    +-1e100), raises DataError and leaves the summary as it was."""
    m = Moments().update_many([1.0, 2.0])
    with pytest.raises(DataError, match=r"finite|real|within"):
        m.update(bad)  # type: ignore[arg-type]
    if not isinstance(bad, bool):  # a 0/1 array is fine in bulk
        with pytest.raises(DataError):
            m.update_many([1.0, bad])  # type: ignore[list-item]
    assert (m.n, m.mean) == (2, 1.5)


def test_moments_cannot_subtract_more_than_it_holds():
    """Subtracting a bigger summary is a DataError, not a negative count."""
    with pytest.raises(DataError, match="subtract"):
        Moments().update(1.0) - Moments().update_many([1.0, 2.0])


def test_counts_add_subtract_and_reject():
    """Counts add and subtract as vectors; unknown names and negative counts are rejected."""
    a = Counts(("ok", "err")).update("ok", 5).update("err", 2)
    b = Counts(("ok", "err")).update("ok", 1)
    assert (a + b).to_dict() == {"ok": 6, "err": 2}
    assert (a - b).to_dict() == {"ok": 4, "err": 2}
    with pytest.raises(DataError, match="'nope'"):
        a.update("nope")
    with pytest.raises(DataError, match="-1"):
        a.update("ok", -1)
    with pytest.raises(DataError):
        b - a
    with pytest.raises(DataError):
        a + Counts(("x",))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(1e-6, 1e4, allow_nan=False, allow_infinity=False), min_size=1, max_size=300)
)
def test_log_histogram_quantiles_within_one_percent(xs: list[float]):
    """Every quantile is within 1% of np.quantile(x, q, method='lower')."""
    x = np.array(xs)
    h = LogHistogram().update_many(x)
    for q in QS:
        exact = float(np.quantile(x, q, method="lower"))
        assert _close(h.quantile(q), exact, 0.01 * (1 + 1e-9)), (q, h.quantile(q), exact)


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.lognormal(-4.0, 1.0, 200_000),
        lambda r: 0.002 * (1.0 + r.pareto(1.5, 200_000)),
        lambda r: r.exponential(0.05, 200_000) + 1e-5,
    ],
    ids=["lognormal", "pareto", "exponential"],
)
def test_log_histogram_latency_distributions(draw):
    """p50/p95/p99/p99.9 of 200k latencies are within 1% (lognormal, Pareto, exponential)."""
    x = draw(np.random.default_rng(11))
    h = LogHistogram().update_many(x)
    for q in (0.5, 0.95, 0.99, 0.999):
        exact = float(np.quantile(x, q, method="lower"))
        assert _close(h.quantile(q), exact, 0.01 * (1 + 1e-9))


def test_log_histogram_scalar_and_vector_updates_agree():
    """update one by one and update_many fill the same buckets."""
    x = np.random.default_rng(5).lognormal(-3, 2, 2_000)
    a = LogHistogram().update_many(x)
    b = LogHistogram()
    for v in x:
        b.update(float(v))
    assert a == b


def test_log_histogram_merge_and_subtract():
    """a + b holds the quantiles of the union; (a + b) - b is exactly a."""
    rng = np.random.default_rng(7)
    x, y = rng.lognormal(-3, 1, 5_000), rng.lognormal(-2, 1, 7_000)
    a, b = LogHistogram().update_many(x), LogHistogram().update_many(y)
    both = np.concatenate([x, y])
    for q in (0.5, 0.99):
        exact = float(np.quantile(both, q, method="lower"))
        assert _close((a + b).quantile(q), exact, 0.0100001)
    assert (a + b) - b == a
    with pytest.raises(DataError):
        a - (a + b)
    with pytest.raises(DataError):
        a + LogHistogram(relative_accuracy=0.02)


def test_log_histogram_underflow_overflow_and_fixed_size():
    """Zero and tiny values underflow to 0.0, huge ones overflow to max_value; size is fixed."""
    h = LogHistogram(min_value=1e-3, max_value=10.0)
    size = h.counts.size
    h.update_many([0.0, 1e-9, 5e-4, 1.0, 50.0, 1e9])
    assert (h.underflow, h.overflow, h.n) == (3, 2, 6)
    assert h.quantile(0.0) == 0.0
    assert h.quantile(1.0) == 10.0
    assert h.counts.size == size
    assert math.isnan(LogHistogram().quantile(0.5))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "x"])
def test_log_histogram_rejects_bad_values(bad: object):
    """Negative, non-finite and non-numeric values raise DataError; nothing is counted."""
    h = LogHistogram().update(1.0)
    with pytest.raises(DataError):
        h.update(bad)  # type: ignore[arg-type]
    with pytest.raises(DataError):
        h.update_many([0.5, bad])  # type: ignore[list-item]
    assert h.n == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"relative_accuracy": 0.0},
        {"relative_accuracy": 1.0},
        {"min_value": 0.0},
        {"min_value": 10.0, "max_value": 1.0},
        {"max_value": math.inf},
    ],
)
def test_log_histogram_rejects_bad_config(kwargs):
    """A bad accuracy or range is a ConfigError."""
    with pytest.raises(ConfigError):
        LogHistogram(**kwargs)


def test_log_histogram_quantile_level_checked():
    """A quantile level outside [0, 1] is a DataError naming it."""
    with pytest.raises(DataError, match=r"1\.5"):
        LogHistogram().update(1.0).quantile(1.5)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.floats(1e-6, 1e8).flatmap(lambda v: st.sampled_from([v, -v])),
        min_size=1,
        max_size=300,
    )
)
def test_signed_histogram_quantiles_within_one_percent(xs: list[float]):
    """Signed values: every quantile is within 1% of numpy's 'lower' quantile."""
    x = np.array(xs)
    h = SignedLogHistogram().update_many(x)
    for q in QS:
        exact = float(np.quantile(x, q, method="lower"))
        assert _close(h.quantile(q), exact, 0.01 * (1 + 1e-9)), (q, h.quantile(q), exact)


def test_signed_histogram_merge_subtract_and_zero():
    """Signed histograms add and subtract exactly; zero reports as 0.0."""
    a = SignedLogHistogram().update_many([-3.0, 0.0, 2.0])
    b = SignedLogHistogram().update_many([-1.0, 5.0])
    assert ((a + b) - b) == a
    assert a.quantile(0.5) == 0.0
    with pytest.raises(DataError):
        a.update(math.nan)


def test_category_counts_other_bucket_is_counted():
    """Past max_labels, new labels go to 'other'; the total still counts them all."""
    c = CategoryCounts(max_labels=3).update_many(["a", "b", "c", "d", "e", "a", 1, True])
    assert c.to_dict() == {"a": 2, "b": 1, "c": 1}
    assert c.other == 4
    assert c.n == 8


def test_category_counts_ints_and_strings_are_one_label():
    """Class labels are strings: 1, np.int64(1) and '1' are the same class."""
    c = CategoryCounts().update_many([1, np.int64(1), "1", np.str_("x"), False])
    assert c.to_dict() == {"1": 3, "x": 1, "False": 1}


def test_category_counts_merge_and_subtract_across_vocabularies():
    """Summaries with their own label slots combine label by label, exactly."""
    a = CategoryCounts().update_many(["x", "y", "y"])
    b = CategoryCounts().update_many(["y", "z"])
    s = a + b
    assert s.to_dict() == {"x": 1, "y": 3, "z": 1}
    assert (s - b) == a
    with pytest.raises(DataError):
        b - a


def test_category_counts_shared_slots_subtract_exactly():
    """Slices made with empty_like share slots, so a window can subtract them exactly."""
    total = CategoryCounts(max_labels=2)
    s1, s2 = total.empty_like(), total.empty_like()
    s1.update_many(["a", "b", "c"])
    s2.update_many(["c", "a"])
    total += s1
    total += s2
    total -= s1
    assert total.to_dict() == {"a": 1}
    assert total.other == 1  # "c" found no slot


def test_category_counts_rejects_bad_labels():
    """A label that is not a str, int or bool raises DataError; nothing is counted."""
    c = CategoryCounts()
    with pytest.raises(DataError, match=r"1\.5"):
        c.update_many(["a", 1.5])
    assert c.n == 0


def _formula_index(h: LogHistogram, x: np.ndarray) -> np.ndarray:
    """The DDSketch key by its definition (log, scale, ceil, clip), one log per value."""
    return h.index_of_log_scale(x)


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.002, 0.3),
    lo=st.floats(1e-9, 1.0),
    span=st.floats(2.0, 1e12),
    xs=st.lists(st.floats(0.0, 1e15, allow_nan=False, allow_infinity=False), max_size=200),
)
def test_bit_lookup_equals_the_log_formula(a: float, lo: float, span: float, xs: list[float]):
    """The bucket read from a value's bits equals ceil(log_gamma(x)) bucket for bucket:
    random values, values at every bucket boundary, one ulp either side, and their scalars."""
    h = LogHistogram(relative_accuracy=a, min_value=lo, max_value=lo * span)
    bits = h._bits
    x = np.array([0.0, -0.0, 5e-324, lo, lo / 2, lo * span, *xs], dtype=np.float64)
    if bits is not None:
        edges = bits.bounds[bits.bounds != np.iinfo(np.int64).max]
        near = np.concatenate([edges - 1, edges, edges + 1, edges + 2]).view(np.float64)
        x = np.concatenate([x, near])
    assert np.array_equal(h.index_of(x), _formula_index(h, np.abs(x)))
    sample = x[:: max(1, x.size // 300)]
    assert [h._index_scalar(float(v)) for v in sample] == _formula_index(h, np.abs(sample)).tolist()


def test_default_layout_uses_the_bit_lookup_at_every_boundary():
    """At the default resolution the lookup exists and agrees at every boundary ± 2 ulps."""
    h = LogHistogram()
    assert h._bits is not None
    edges = h._bits.bounds[h._bits.bounds != np.iinfo(np.int64).max]
    assert edges.size == h.counts.size - 1  # one boundary per bucket after the underflow
    x = np.concatenate([edges + d for d in range(-2, 4)]).view(np.float64)
    assert np.array_equal(h.index_of(x), _formula_index(h, x))


def test_fine_layouts_fall_back_to_the_log_formula():
    """A layout too fine for small tables keeps the formula (and the same buckets)."""
    h = LogHistogram(relative_accuracy=1e-4)
    assert h._bits is None
    x = np.random.default_rng(2).lognormal(0.0, 3.0, 1000)
    h.update_many(x)
    assert np.array_equal(h.counts, np.bincount(_formula_index(h, x), minlength=h.counts.size))
    assert h._index_scalar(float(x[0])) == int(_formula_index(h, x[:1])[0])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False), min_size=1, max_size=200
    )
)
def test_signed_bit_lookup_equals_the_two_sided_formula(xs: list[float]):
    """Signed buckets: negative values mirror |x|'s bucket, the rest (-0.0 included) take
    the positive side, exactly as the formula on |x| places them; scalars agree."""
    h = SignedLogHistogram()
    x = np.array([*xs, 0.0, -0.0, -1e-9, 1e-9, -5e-324], dtype=np.float64)
    half = h.counts.size // 2
    k = _formula_index(h._side, np.abs(x))
    expected = np.where(x < 0, half - 1 - k, half + k)
    assert np.array_equal(h.index_of(x), expected)
    assert [h._index_scalar(float(v)) for v in x] == expected.tolist()


def test_bucket_counts_over_many_blocks_equal_one_bincount():
    """Counting a long array block by block gives numpy's bincount of the bucket indices."""
    rng = np.random.default_rng(21)
    x = rng.lognormal(-3.0, 2.0, 100_000)
    y = rng.normal(0.0, 5.0, 100_000)
    a, s = LogHistogram(), SignedLogHistogram()
    assert np.array_equal(a.bucket_counts(x), np.bincount(a.index_of(x), minlength=a.counts.size))
    assert np.array_equal(s.bucket_counts(y), np.bincount(s.index_of(y), minlength=s.counts.size))
    assert a.update_many(x).n == x.size
    assert s.update_many(y).n == y.size

"""Reference profiles: bins, categories, samples, serialization, live capture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import safeserve.drift as drift
from safeserve._errors import ConfigError, DataError


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, st.integers(5, 300), elements=st.floats(-1e6, 1e6)),
    st.integers(2, 20),
)
def test_bins_are_reference_quantiles(x: np.ndarray, bins: int) -> None:
    """Edges are the distinct reference quantiles; counts match np.histogram on those edges."""
    f = drift.ReferenceProfile.from_data(x[:, None], bins=bins).features[0]
    assert isinstance(f, drift.NumericFeature)
    expected_edges = np.unique(np.quantile(x, np.arange(1, bins) / bins))
    np.testing.assert_array_equal(f.edges, expected_edges)
    hist, _ = np.histogram(x, bins=np.concatenate([[-np.inf], expected_edges, [np.inf]]))
    assert list(f.counts) == hist.tolist()
    assert f.mean == pytest.approx(np.mean(x), rel=1e-12, abs=1e-6)
    assert f.std == pytest.approx(np.std(x), rel=1e-9, abs=1e-6)


def test_deciles_by_default() -> None:
    """Ten equal-mass bins by default on continuous data."""
    x = np.random.default_rng(0).normal(size=10_000)
    f = drift.ReferenceProfile.from_data({"x": x}).features[0]
    assert f.counts == (1000,) * 10


def test_sample_is_bounded_sorted_subset() -> None:
    """The kept sample has sample_size sorted values, all drawn from the reference."""
    x = np.random.default_rng(1).normal(size=5000)
    f = drift.ReferenceProfile.from_data({"x": x}, sample_size=300).features[0]
    assert isinstance(f, drift.NumericFeature)
    assert len(f.sample) == 300
    assert list(f.sample) == sorted(f.sample)
    assert set(f.sample) <= set(x.tolist())


def test_categories_keep_most_frequent_and_lump_the_rest() -> None:
    """max_categories most frequent categories are kept; the rest go to the other bucket."""
    col = ["a"] * 5 + ["b"] * 3 + ["c"] * 1 + ["d"] * 1
    f = drift.ReferenceProfile.from_data({"c": col}, categorical=["c"], max_categories=2).features[
        0
    ]
    assert isinstance(f, drift.CategoricalFeature)
    assert f.categories == ("a", "b")
    assert f.counts == (5, 3, 2)


def test_array_with_named_and_indexed_categorical_columns() -> None:
    """A 2-D object array takes names and categorical columns by name or index."""
    X = np.array([[1.0, "x", 3], [2.0, "y", 3], [3.0, "x", 4]], dtype=object)
    p = drift.ReferenceProfile.from_data(X, names=["n", "s", "k"], categorical=["s", 2])
    assert [f.kind for f in p.features] == ["numeric", "categorical", "categorical"]
    assert p.features[2].categories == (3, 4)  # type: ignore[union-attr]


def test_json_round_trip() -> None:
    """to_dict is plain JSON and from_dict rebuilds an equal profile."""
    rng = np.random.default_rng(2)
    p = drift.ReferenceProfile.from_data(
        {"x": rng.normal(size=500), "c": rng.choice(["u", "v"], 500)}, categorical=["c"]
    )
    assert drift.ReferenceProfile.from_dict(json.loads(json.dumps(p.to_dict()))) == p


@pytest.mark.parametrize(
    ("data", "kwargs", "error"),
    [
        (np.array([[1.0, np.nan]]), {}, DataError),
        ({"x": []}, {}, DataError),
        ({"x": [1.0], "y": [1.0, 2.0]}, {}, DataError),
        ({"x": ["a", "b"]}, {}, DataError),
        ({"c": ["a", None]}, {"categorical": ["c"]}, DataError),
        ({"x": [1.0, 2.0]}, {"categorical": ["nope"]}, ConfigError),
        ({"x": [1.0, 2.0]}, {"bins": 1}, ConfigError),
    ],
)
def test_bad_data_raises_typed_errors(data: object, kwargs: dict, error: type) -> None:
    """Non-finite, empty, ragged, non-numeric data and bad options raise typed errors."""
    with pytest.raises(error):
        drift.ReferenceProfile.from_data(data, **kwargs)


def test_from_dict_rejects_garbage() -> None:
    """from_dict raises DataError for a dict that is not a profile."""
    with pytest.raises(DataError):
        drift.ReferenceProfile.from_dict({"format": 1, "features": [{"kind": "numeric"}]})


def test_builder_counts_malformed_rows_and_freezes() -> None:
    """The builder skips malformed rows with a reason and profiles the valid ones."""
    b = drift.ProfileBuilder(["x", "c"], categorical=["c"])
    rng = np.random.default_rng(3)
    for v in rng.normal(size=100):
        b.add([float(v), "k"])
    b.add([1.0])
    b.add(["oops", "k"])
    b.add([float("inf"), "k"])
    b.add([1.0, None])
    b.add({"x": 1.0, "c": "k"})
    assert b.n_rows == 101
    assert dict(b.rejected) == {
        "wrong_width": 1,
        "non_numeric": 1,
        "non_finite": 1,
        "bad_category": 1,
    }
    p = b.freeze()
    assert p.n_rows == 101


def test_builder_reservoir_is_bounded_and_uniform() -> None:
    """Past capacity the builder keeps a uniform sample of every row seen."""
    b = drift.ProfileBuilder(["x"], capacity=2000, seed=4)
    for i in range(20_000):
        b.add([float(i)])
    f = b.freeze().features[0]
    assert f.n_rows == 2000
    assert isinstance(f, drift.NumericFeature)
    # A uniform sample of 0..19999 has its mean near 10,000 (sd of the mean ~ 130).
    assert abs(f.mean - 9999.5) < 600

"""Output validators: is_finite and has_shape, on single outputs and on batches."""

from __future__ import annotations

import numpy as np
import pytest

import safeserve as ss


@pytest.mark.parametrize(
    ("output", "ok"),
    [
        (0.5, True),
        (3, True),
        ("fraud", True),
        (float("nan"), False),
        (float("-inf"), False),
        (np.float32("nan"), False),
        ([0.1, 0.9], True),
        (np.array([[0.1, np.inf]]), False),
        (np.array(["a", "b"]), True),
        (object(), True),
    ],
)
def test_is_finite_single(output: object, ok: bool) -> None:
    """is_finite rejects NaN/inf anywhere and accepts labels."""
    assert ss.is_finite(output) is ok


def test_is_finite_batch_is_per_row() -> None:
    """The batch form judges each row of a 2-D output on its own."""
    out = np.array([[0.1, 0.9], [np.nan, 0.5], [0.3, 0.7]])
    assert ss.is_finite.batch(out).tolist() == [True, False, True]  # type: ignore[attr-defined]
    assert ss.is_finite.batch(np.array([1.0, np.nan])).tolist() == [True, False]  # type: ignore[attr-defined]


def test_has_shape() -> None:
    """has_shape checks the shape of one output, and finiteness unless told not to."""
    check = ss.has_shape(3)
    assert check([1, 2, 3])
    assert not check([1, 2])
    assert not check([1, 2, np.nan])
    assert ss.has_shape(3, finite=False)([1, 2, np.nan])
    assert ss.has_shape()(1.0)
    batch = check.batch(np.array([[1, 2, 3], [1, np.nan, 3]]))  # type: ignore[attr-defined]
    assert batch.tolist() == [True, False]
    assert repr(check) == "safeserve.has_shape((3,), finite=True)"

"""Allocation: which variant owns each of the 10,000 buckets.

Every candidate owns a fixed *lane*: a circular run of buckets that starts at a fixed offset
(candidate ``i`` of ``k`` starts at ``i * 10_000 // k``) and has a length of
``weight * 10_000`` buckets. The baseline owns every bucket no candidate owns. So raising a
candidate's weight only adds buckets to it (taken from the baseline), lowering it only gives
buckets back to the baseline, and the other candidates are never touched. With one candidate
(the usual canary) its lane starts at bucket 0 and can grow to the whole space.

The allocation is built once per weight change; the request path only indexes a tuple.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import attrs
import numpy as np
from numpy.typing import NDArray

from ._errors import ConfigError
from ._hashing import BUCKETS

__all__ = ["Allocation", "validate_variant_names"]


def validate_variant_names(names: Sequence[str]) -> tuple[str, ...]:
    """Check that variant names are distinct non-empty strings and return them as a tuple."""
    out = tuple(names)
    if not out:
        raise ConfigError("at least one variant is needed")
    for name in out:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"variant names must be non-empty str, got {name!r}")
    dupes = sorted({n for n in out if out.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate variant name(s) {dupes!r}")
    return out


def percent_buckets(percent: float) -> int:
    """Buckets of a share in percent (a resolution of 0.01%: one bucket of 10,000)."""
    return round(percent * BUCKETS / 100.0)


def _weight_buckets(name: str, weight: object) -> int:
    if isinstance(weight, bool) or not isinstance(weight, int | float | np.integer | np.floating):
        raise ConfigError(f"weight of {name!r} must be a number in [0, 100], got {weight!r}")
    w = float(weight)
    if not math.isfinite(w) or w < 0.0 or w > 100.0:
        raise ConfigError(f"weight of {name!r} must be a number in [0, 100], got {weight!r}")
    buckets = percent_buckets(w)
    if w > 0.0 and buckets == 0:
        raise ConfigError(
            f"weight of {name!r} rounds to no bucket (one is 0.01%): the model would get no "
            f"traffic; use 0 or at least 0.005, got {weight!r}"
        )
    return buckets


@attrs.frozen(eq=False, repr=False)
class Allocation:
    """A frozen split of the 10,000 buckets between a baseline and its candidates.

    Args:
        baseline: The name of the stable variant; it gets every bucket no candidate owns.
        candidates: The candidate names, in lane order (the order fixes each lane's offset,
            so keep it stable for the life of a rollout).
        weights: Percent of traffic per candidate, each in ``[0, 100]`` (missing -> 0). A weight
            for the baseline may be given too; it must then equal 100 minus the others.

    Raises:
        ConfigError: for a negative, non-finite or over-100 weight, weights summing over 100, an
            unknown variant, or two candidates whose lanes would overlap.

    >>> a = Allocation("v1", ("v2",), {"v2": 5})
    >>> a.weights
    {'v1': 95.0, 'v2': 5.0}
    >>> a.variant_of_bucket(0), a.variant_of_bucket(499), a.variant_of_bucket(500)
    ('v2', 'v2', 'v1')
    """

    baseline: str
    candidates: tuple[str, ...]
    _requested: Mapping[str, float] = attrs.field(alias="weights")
    variants: tuple[str, ...] = attrs.field(init=False)
    counts: tuple[int, ...] = attrs.field(init=False)
    offsets: tuple[int, ...] = attrs.field(init=False)
    table: tuple[int, ...] = attrs.field(init=False)
    array: NDArray[np.int16] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        variants = validate_variant_names((self.baseline, *self.candidates))
        if not isinstance(self._requested, Mapping):
            raise ConfigError(
                f"weights must be a mapping of variant -> percent, got {self._requested!r}"
            )
        for name in self._requested:
            if name not in variants:
                raise ConfigError(f"unknown variant {name!r} in weights; known: {list(variants)!r}")
        k = len(self.candidates)
        counts = [0] * len(variants)
        for i, name in enumerate(self.candidates, start=1):
            counts[i] = _weight_buckets(name, self._requested.get(name, 0.0))
        total = sum(counts)
        if total > BUCKETS:
            raise ConfigError(
                f"candidate weights sum to {total * 100 / BUCKETS:g}% (over 100%): "
                f"{ {n: self._requested.get(n, 0.0) for n in self.candidates}!r}"
            )
        counts[0] = BUCKETS - total
        if self.baseline in self._requested:
            given = _weight_buckets(self.baseline, self._requested[self.baseline])
            if given != counts[0]:
                raise ConfigError(
                    f"baseline weight {self._requested[self.baseline]!r} does not equal 100 "
                    f"minus the candidates' weights ({counts[0] * 100 / BUCKETS:g})"
                )
        offsets = tuple(i * BUCKETS // k for i in range(k)) if k else ()
        owner = np.zeros(BUCKETS, dtype=np.int16)  # 0 = baseline
        for i, (off, count) in enumerate(zip(offsets, counts[1:], strict=True), start=1):
            lane = (off + np.arange(count)) % BUCKETS
            clash = owner[lane]
            if clash.any():
                other = variants[int(clash[clash != 0][0])]
                raise ConfigError(
                    f"lanes overlap: {variants[i]!r} at {count * 100 / BUCKETS:g}% would take "
                    f"buckets of {other!r}; lower one of them first"
                )
            owner[lane] = i
        owner.flags.writeable = False
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "counts", tuple(counts))
        object.__setattr__(self, "offsets", offsets)
        object.__setattr__(self, "table", tuple(owner.tolist()))
        object.__setattr__(self, "array", owner)

    @property
    def weights(self) -> dict[str, float]:
        """Percent of buckets per variant, baseline first."""
        return {n: c * 100 / BUCKETS for n, c in zip(self.variants, self.counts, strict=True)}

    def with_weights(self, weights: Mapping[str, float]) -> Allocation:
        """Return a new allocation with some candidates' weights changed (others kept)."""
        merged = {
            n: c * 100 / BUCKETS for n, c in zip(self.candidates, self.counts[1:], strict=True)
        }
        for name in weights:
            if name not in self.variants:
                raise ConfigError(f"unknown variant {name!r}; known: {list(self.variants)!r}")
        merged.update({n: w for n, w in weights.items() if n != self.baseline})
        if self.baseline in weights:
            merged[self.baseline] = weights[self.baseline]
        return Allocation(self.baseline, self.candidates, merged)

    def variant_of_bucket(self, bucket: int) -> str:
        """Return the name of the variant that owns ``bucket``."""
        return self.variants[self.table[bucket]]

    def index_of_buckets(self, buckets: NDArray[np.int64]) -> NDArray[np.int16]:
        """Return the variant index (0 = baseline) of each bucket, vectorized."""
        return self.array[buckets]

    def __repr__(self) -> str:
        shares = ", ".join(f"{n!r}: {w:g}" for n, w in self.weights.items())
        return f"Allocation(baseline={self.baseline!r}, weights={{{shares}}})"


Allocation.__module__ = "safeserve"

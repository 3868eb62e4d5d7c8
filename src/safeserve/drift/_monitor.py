"""DriftMonitor: sample live rows per traffic arm and test them against a reference profile."""

from __future__ import annotations

import enum
import math
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import attrs
import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError, DataError
from .._lazy import LazyModule
from ._detectors import PageHinkley
from ._profile import NumericFeature, ReferenceProfile
from ._stats import (
    PSI_EPS,
    WASSERSTEIN_MIN_SCALE,
    _psi_rows,
    benjamini_hochberg,
    chi2_rows,
    js_rows,
    ks_pvalue_limit,
    numeric_distances,
    psi_pvalue,
)
from ._window import Codec, Ring

_sps = LazyModule("scipy.stats")

__all__ = ["DriftMonitor", "DriftReport", "DriftScope", "FeatureDrift", "FeatureStats"]

Arm = Literal["baseline", "candidate"]

EARLY_WARNING_DETECTOR = PageHinkley(min_instances=30, delta=0.1, threshold=5.0, alpha=1.0)
"""Default early-warning settings, for means of 16 standardized rows (sd 0.25 without drift).

River's defaults (``delta=0.005, threshold=50, alpha=0.9999``) suit raw streams of larger
scale: on unit-free block means the forgetting factor holds the cumulative sum near
``-delta / (1 - alpha) = -50`` with a standard deviation of ``0.25 / sqrt(1 - alpha**2) ≈ 18``,
so swings of 50 happen without any drift. Without forgetting (``alpha=1``) the test is a
two-sided CUSUM; with ``delta=0.1`` and ``threshold=5`` Siegmund's approximation puts the
average run to a false alarm above 10 million blocks per stream and direction, and a
0.5 sigma shift raises the sum by about 0.4 per block, so it is flagged after about
13 blocks (about 200 sampled rows).
"""
_ARMS: tuple[Arm, Arm] = ("baseline", "candidate")


class DriftScope(enum.Enum):
    """Where a drift was seen, which tells a rollout whom to blame.

    - ``NONE``: no drift.
    - ``TRAFFIC``: the baseline's own traffic drifted from the reference and the candidate's
      traffic does not differ from the baseline's: the traffic changed, not the model.
    - ``CANDIDATE``: the candidate's traffic differs from the baseline's while the baseline's
      matches the reference: drift only in the candidate's traffic.
    - ``TRAFFIC_AND_CANDIDATE``: both of the above at once.
    - ``UNATTRIBUTED``: the candidate's traffic drifted from the reference, but neither a
      baseline drift nor an arm difference is significant (for instance too few baseline rows).

    >>> DriftScope.TRAFFIC.value
    'traffic'
    """

    NONE = "none"
    TRAFFIC = "traffic"
    CANDIDATE = "candidate"
    TRAFFIC_AND_CANDIDATE = "traffic_and_candidate"
    UNATTRIBUTED = "unattributed"


@attrs.frozen
class FeatureStats:
    """One feature's drift statistics for one comparison (an arm vs the reference, or arms).

    Args:
        test: The test behind ``p_value``: ``"ks"``, ``"chi2"`` or ``"psi"``.
        statistic: Its statistic (KS ``D``, chi-square, or PSI).
        p_value: Its p-value.
        q_value: The Benjamini-Hochberg adjusted p-value over every test of the evaluation.
        psi: PSI on the reference bins.
        psi_threshold: The sample-size-calibrated PSI threshold at the monitor's ``alpha``.
        js_distance: Jensen-Shannon distance (base 2) on the reference bins.
        wasserstein: W1 over ``max(reference std, 0.001)``; ``None`` for a categorical feature.
        n_reference: Rows on the reference side (profile rows, or baseline window rows).
        n_current: Rows on the current side.
        drifted: ``q_value <= alpha``.

    >>> s = FeatureStats("ks", 0.2, 0.001, 0.01, 0.15, 0.05, 0.2, 0.5, 1000, 500, True)
    >>> s.to_dict()["q_value"]
    0.01
    """

    test: str
    statistic: float
    p_value: float
    q_value: float
    psi: float
    psi_threshold: float
    js_distance: float
    wasserstein: float | None
    n_reference: int
    n_current: int
    drifted: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data (infinite thresholds become ``None``)."""
        d = attrs.asdict(self)
        if not math.isfinite(self.psi_threshold):
            d["psi_threshold"] = None
        return d


@attrs.frozen
class FeatureDrift:
    """One feature's verdict across the comparisons of an evaluation.

    Args:
        name: Feature name (outputs are prefixed ``"output:"``).
        kind: ``"numeric"`` or ``"categorical"``.
        scope: Where the drift was seen (see :class:`DriftScope`).
        baseline: Baseline arm vs reference, or ``None`` when not evaluated.
        candidate: Candidate arm vs reference, or ``None``.
        between: Candidate arm vs baseline arm, or ``None`` (never for outputs).

    >>> FeatureDrift("x", "numeric", DriftScope.NONE, None, None, None).drifted
    False
    """

    name: str
    kind: str
    scope: DriftScope
    baseline: FeatureStats | None
    candidate: FeatureStats | None
    between: FeatureStats | None

    @property
    def drifted(self) -> bool:
        """Whether any comparison flagged this feature."""
        return self.scope is not DriftScope.NONE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data."""
        return {
            "name": self.name,
            "kind": self.kind,
            "scope": self.scope.value,
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "candidate": None if self.candidate is None else self.candidate.to_dict(),
            "between": None if self.between is None else self.between.to_dict(),
        }


def _sorted_counts(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


@attrs.frozen
class DriftReport:
    """The result of :meth:`DriftMonitor.evaluate`.

    Args:
        features: One :class:`FeatureDrift` per input feature, then per output column.
        alpha: The false discovery rate the evaluation was run at.
        n_baseline: Rows in the baseline arm's input window.
        n_candidate: Rows in the candidate arm's input window.
        early_warning: Features whose Page-Hinkley detector fired since the previous
            evaluation, as ``(arm, feature)`` pairs.
        rejected: Malformed rows counted since the monitor was created, by reason.

    >>> r = DriftReport((), 0.05, 0, 0, (), {})
    >>> r.drifted, r.scope
    (False, <DriftScope.NONE: 'none'>)
    """

    features: tuple[FeatureDrift, ...]
    alpha: float
    n_baseline: int
    n_candidate: int
    early_warning: tuple[tuple[str, str], ...]
    rejected: Mapping[str, int] = attrs.field(converter=_sorted_counts)

    @property
    def drifted(self) -> bool:
        """Whether any feature drifted (the rollout should pause)."""
        return any(f.drifted for f in self.features)

    @property
    def drifted_features(self) -> tuple[FeatureDrift, ...]:
        """The features that drifted, in column order."""
        return tuple(f for f in self.features if f.drifted)

    @property
    def traffic_changed(self) -> bool:
        """Whether the baseline's own traffic drifted (a change of traffic, not of model)."""
        return any(
            f.scope in (DriftScope.TRAFFIC, DriftScope.TRAFFIC_AND_CANDIDATE) for f in self.features
        )

    @property
    def candidate_only(self) -> tuple[str, ...]:
        """Features whose drift is specific to the candidate's traffic."""
        return tuple(
            f.name
            for f in self.features
            if f.scope in (DriftScope.CANDIDATE, DriftScope.TRAFFIC_AND_CANDIDATE)
        )

    @property
    def scope(self) -> DriftScope:
        """The overall scope: the union of the features' scopes.

        ``TRAFFIC_AND_CANDIDATE`` when some drift is shared and some candidate-specific,
        ``UNATTRIBUTED`` only when every drifted feature is unattributed.
        """
        traffic = self.traffic_changed
        cand = bool(self.candidate_only)
        if traffic and cand:
            return DriftScope.TRAFFIC_AND_CANDIDATE
        if cand:
            return DriftScope.CANDIDATE
        if traffic:
            return DriftScope.TRAFFIC
        if self.drifted:
            return DriftScope.UNATTRIBUTED
        return DriftScope.NONE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible evidence for a decision: the drifted features only."""
        return {
            "scope": self.scope.value,
            "alpha": self.alpha,
            "n_baseline": self.n_baseline,
            "n_candidate": self.n_candidate,
            "drifted": [f.to_dict() for f in self.drifted_features],
            "early_warning": [list(w) for w in self.early_warning],
            "rejected": dict(self.rejected),
        }


@attrs.frozen
class _Side:
    """One side of a comparison: bin counts and raw numeric values of every feature."""

    num_counts: list[NDArray[np.float64]]
    cat_counts: list[NDArray[np.float64]]
    values: NDArray[np.float64]  # (n_numeric, rows)
    n: int  # rows behind the bin counts
    n_values: int  # rows behind ``values``


class _ProfileState:
    """Per-profile constants used by every evaluation."""

    def __init__(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        self.codec = Codec(profile)
        num = profile.numeric
        self.edges = [np.asarray(f.edges) for f in num]
        self.n_cat_bins = [f.n_bins for f in profile.categorical]
        sizes = {len(f.sample) for f in num}
        if len(sizes) > 1:
            raise ConfigError(f"numeric features of one profile need one sample size: {sizes!r}")
        self.mean = np.array([f.mean for f in num])
        self.scale = np.maximum(np.array([f.std for f in num]), WASSERSTEIN_MIN_SCALE)
        self.reference = _Side(
            num_counts=[np.asarray(f.counts, dtype=np.float64) for f in num],
            cat_counts=[np.asarray(f.counts, dtype=np.float64) for f in profile.categorical],
            values=np.array([f.sample for f in num]).reshape(len(num), -1),
            n=profile.n_rows,
            n_values=len(num[0].sample) if num else 0,
        )

    def side(self, ring: Ring) -> _Side:
        num, cat = ring.contents()
        values = np.sort(num.T, axis=1)
        n = values.shape[1]
        num_counts = [
            np.diff(np.searchsorted(v, e, side="left"), prepend=0, append=n).astype(np.float64)
            for e, v in zip(self.edges, values, strict=True)
        ]
        cat_counts = [
            np.bincount(cat[:, j], minlength=k).astype(np.float64)
            for j, k in enumerate(self.n_cat_bins)
        ]
        return _Side(num_counts, cat_counts, values, ring.size, ring.size)


@attrs.frozen
class _Raw:
    """Statistics of one comparison before the multiple-testing correction."""

    tests: list[str]
    stat: NDArray[np.float64]
    p: NDArray[np.float64]
    psi: NDArray[np.float64]
    thr: NDArray[np.float64]
    js: NDArray[np.float64]
    w: list[float | None]
    n_ref: list[int]
    n_cur: list[int]


class DriftMonitor:
    """Records sampled live rows per traffic arm and tests them for drift.

    The request path calls :meth:`observe` (one row) or :meth:`observe_batch`; a seeded
    geometric countdown picks the rows to keep, so a request that is not sampled costs one
    integer decrement. Sampled rows are staged, then validated and encoded in bulk into one
    count-based window per arm (``baseline_index`` and ``candidate_index`` are the variant
    indices of the two arms). Malformed rows are counted by reason in :attr:`rejected`.

    :meth:`evaluate` compares each arm's window with the reference profile, and the candidate's
    window with the baseline's, feature by feature: PSI on the reference bins with a calibrated
    threshold, KS (numeric) or chi-square (categorical), Jensen-Shannon distance and normalized
    Wasserstein; Benjamini-Hochberg across all the tests of the evaluation at level ``alpha``.
    When nothing drifted, the chance that an evaluation flags any drift is at most about
    ``alpha``. A Page-Hinkley detector on means of blocks of standardized numeric values gives
    an early warning of sustained shifts between evaluations.

    Args:
        profile: The reference profile of the inputs.
        output_profile: Optional reference profile of the baseline model's outputs; the
            baseline arm's outputs are compared with it.
        candidate_output_profile: Optional reference of the candidate model's outputs (e.g.
            captured in shadow mode); the candidate arm's outputs are compared with it.
        window: Rows kept per arm (the newest).
        sample_rate: Share of observed rows recorded, in ``(0, 1]``.
        min_samples: Rows an arm needs before it is compared.
        alpha: False discovery rate of one evaluation.
        numeric_test: ``"ks"`` or ``"psi"``: the p-value that decides for numeric features.
        categorical_test: ``"chi2"`` or ``"psi"``: the same for categorical features.
        baseline_index: Variant index of the baseline arm.
        candidate_index: Variant index of the candidate arm.
        block_size: Sampled rows per block fed to the Page-Hinkley detectors.
        detector: A :class:`PageHinkley` whose settings the per-arm detectors copy; by
            default :data:`EARLY_WARNING_DETECTOR` (tuned for standardized block means).
        early_warning: Run the Page-Hinkley detectors at all.
        flush_every: Staged rows that trigger a bulk flush.
        seed: Seed of the sampler.

    Raises:
        ConfigError: If an option is invalid.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> profile = ReferenceProfile.from_data(rng.normal(size=(5000, 3)))
    >>> monitor = DriftMonitor(profile, sample_rate=1.0, window=2000)
    >>> X = rng.normal(size=(4000, 3))
    >>> X[:, 2] += 1.0                                  # feature x2 shifts by one sigma
    >>> monitor.observe_batch(X, np.arange(4000) % 2)   # half baseline, half candidate
    >>> report = monitor.evaluate()
    >>> report.scope, [f.name for f in report.drifted_features]
    (<DriftScope.TRAFFIC: 'traffic'>, ['x2'])
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        *,
        output_profile: ReferenceProfile | None = None,
        candidate_output_profile: ReferenceProfile | None = None,
        window: int = 10_000,
        sample_rate: float = 0.1,
        min_samples: int = 200,
        alpha: float = 0.05,
        numeric_test: Literal["ks", "psi"] = "ks",
        categorical_test: Literal["chi2", "psi"] = "chi2",
        baseline_index: int = 0,
        candidate_index: int = 1,
        block_size: int = 16,
        detector: PageHinkley | None = None,
        early_warning: bool = True,
        flush_every: int = 256,
        seed: int = 0,
    ) -> None:
        if not isinstance(profile, ReferenceProfile):
            raise ConfigError(f"profile must be a ReferenceProfile, got {profile!r}")
        for name, p in (
            ("output_profile", output_profile),
            ("candidate_output_profile", candidate_output_profile),
        ):
            if p is not None and not isinstance(p, ReferenceProfile):
                raise ConfigError(f"{name} must be a ReferenceProfile or None, got {p!r}")
        for name, v, lo in (
            ("window", window, 2),
            ("min_samples", min_samples, 2),
            ("block_size", block_size, 1),
            ("flush_every", flush_every, 1),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an int >= {lo}, got {v!r}")
        if min_samples > window:
            raise ConfigError(f"min_samples {min_samples!r} exceeds window {window!r}")
        if not (isinstance(sample_rate, float | int) and 0.0 < sample_rate <= 1.0):
            raise ConfigError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        if not (isinstance(alpha, float) and 0.0 < alpha < 1.0):
            raise ConfigError(f"alpha must be a float in (0, 1), got {alpha!r}")
        if numeric_test not in ("ks", "psi"):
            raise ConfigError(f"numeric_test must be 'ks' or 'psi', got {numeric_test!r}")
        if categorical_test not in ("chi2", "psi"):
            raise ConfigError(f"categorical_test must be 'chi2' or 'psi', got {categorical_test!r}")
        if baseline_index == candidate_index:
            raise ConfigError(
                f"candidate_index {candidate_index!r} must differ from "
                f"baseline_index {baseline_index!r}"
            )
        self.alpha = alpha
        self.sample_rate = float(sample_rate)
        self.min_samples = min_samples
        self.numeric_test = numeric_test
        self.categorical_test = categorical_test
        self.block_size = block_size
        self._flush_every = flush_every
        self._inputs = _ProfileState(profile)
        self._outputs = (
            None if output_profile is None else _ProfileState(output_profile),
            None if candidate_output_profile is None else _ProfileState(candidate_output_profile),
        )
        self._slot = {baseline_index: 0, candidate_index: 1}
        n_num = len(self._inputs.codec.num_pos)
        n_cat = len(self._inputs.codec.cat_pos)
        self._rings = (Ring(window, n_num, n_cat), Ring(window, n_num, n_cat))
        self.window_rows = window
        """Rows kept per arm."""
        self._out_rings = tuple(
            None if st is None else Ring(window, len(st.codec.num_pos), len(st.codec.cat_pos))
            for st in self._outputs
        )
        template = EARLY_WARNING_DETECTOR if detector is None else detector
        if not isinstance(template, PageHinkley):
            raise ConfigError(f"detector must be a PageHinkley or None, got {detector!r}")
        self._template = template
        self.early_warning = bool(early_warning)
        self._detectors = (self._new_detector(n_num), self._new_detector(n_num))
        self._block_sum = [np.zeros(n_num), np.zeros(n_num)]
        self._block_n = [0, 0]
        self._warned = [np.zeros(n_num, dtype=bool), np.zeros(n_num, dtype=bool)]
        self._np_random = np.random.default_rng(seed)
        self._gaps: list[int] = []
        self._countdown = self._gap()
        self._staged: list[tuple[Any, Any, Any]] = []
        self._lock = threading.Lock()
        self.sampled = 0
        """Rows picked by the sampler (valid or not)."""
        self.rejected: Counter[str] = Counter()
        """Malformed sampled rows, by reason (``output:`` prefix for outputs)."""

    def _new_detector(self, width: int) -> PageHinkley:
        t = self._template
        return PageHinkley(
            max(width, 1),
            min_instances=t.min_instances,
            delta=t.delta,
            threshold=t.threshold,
            alpha=t.alpha,
            mode=t.mode,
        )

    # -- request path -------------------------------------------------------------------

    def _gap(self) -> int:
        gaps = self._gaps
        if not gaps:
            if self.sample_rate >= 1.0:
                return 1
            gaps.extend(self._np_random.geometric(self.sample_rate, size=1024).tolist())
        return gaps.pop()

    def observe(self, x: Any, variant_index: int, y: Any = None) -> None:
        """Offer one request's input row (and optionally its output) to the sampler.

        Args:
            x: The input row: a sequence in column order, a 1-D array, or a mapping of
                feature name to value. It is copied if sampled.
            variant_index: The variant that served the request.
            y: The model output (a scalar, or a row for multi-output profiles).
        """
        n = self._countdown - 1
        if n:
            self._countdown = n
            return
        self._take(x, variant_index, y)

    def _take(self, x: Any, variant_index: Any, y: Any) -> None:
        self._countdown = self._gap()
        t = type(x)
        if t is np.ndarray:
            x = x.copy()
        elif t is list:
            x = tuple(x)
        elif t is dict:
            x = dict(x)
        if type(y) is np.ndarray:
            y = y.copy()
        elif type(y) is list:
            y = tuple(y)
        self._staged.append((x, variant_index, y))
        if len(self._staged) >= self._flush_every:
            self.flush()

    def observe_batch(self, X: Any, variant_index: Any, Y: Any = None) -> None:
        """Offer a batch of rows to the sampler (vectorized for 2-D numeric arrays).

        The batch consumes the same sampling countdown as :meth:`observe`, so mixing the two
        keeps the sampling rate.

        Args:
            X: A 2-D array ``(rows, features)`` or a sequence of rows.
            variant_index: One variant index per row, or a single index for the whole batch.
            Y: Optional outputs, one per row.

        Raises:
            DataError: If ``variant_index`` or ``Y`` does not match the number of rows.
        """
        n = len(X)
        if n == 0:
            return
        v = np.asarray(variant_index)
        if v.ndim not in (0, 1) or (v.ndim == 1 and v.shape[0] != n):
            raise DataError(f"need one variant index per row ({n!r}), got shape {v.shape!r}")
        if Y is not None and len(Y) != n:
            raise DataError(f"need one output per row ({n!r}), got {len(Y)!r}")
        pos = self._positions(n)
        if pos.size == 0:
            return
        arms = np.broadcast_to(v, (n,))[pos] if v.ndim == 0 else v[pos]
        with self._lock:
            self._flush_locked()
            self.sampled += int(pos.size)
            rows = X[pos] if isinstance(X, np.ndarray) else [X[i] for i in pos.tolist()]
            ys = None
            if Y is not None:
                ys = Y[pos] if isinstance(Y, np.ndarray) else [Y[i] for i in pos.tolist()]
            known = np.zeros(pos.size, dtype=bool)
            for index, slot in self._slot.items():
                try:
                    mask = arms == index
                except (TypeError, ValueError):
                    continue
                mask = np.asarray(mask, dtype=bool).reshape(pos.size)
                if not mask.any():
                    continue
                known |= mask
                sel = np.flatnonzero(mask)
                part = rows[sel] if isinstance(rows, np.ndarray) else [rows[i] for i in sel]
                ypart = None
                if ys is not None:
                    ypart = ys[sel] if isinstance(ys, np.ndarray) else [ys[i] for i in sel]
                self._ingest(slot, part, ypart, int(sel.size))
            unknown = int(pos.size - np.count_nonzero(known))
            if unknown:
                self.rejected["unknown_variant"] += unknown

    def _positions(self, n: int) -> NDArray[np.intp]:
        """Indices in a batch of ``n`` picked by the countdown; advances the countdown."""
        first = self._countdown - 1
        if first >= n:
            self._countdown -= n
            return np.zeros(0, dtype=np.intp)
        if self.sample_rate >= 1.0:
            self._countdown = 1
            return np.arange(first, n, dtype=np.intp)
        chunks = [np.array([first], dtype=np.intp)]
        last = first
        while True:
            size = int((n - last) * self.sample_rate * 1.2) + 16
            gaps = self._np_random.geometric(self.sample_rate, size=size)
            nxt = last + np.cumsum(gaps)
            chunks.append(nxt.astype(np.intp))
            last = int(nxt[-1])
            if last >= n:
                break
        allpos = np.concatenate(chunks)
        inside = allpos[allpos < n]
        self._countdown = int(allpos[inside.size]) - n + 1
        return inside

    # -- ingestion ------------------------------------------------------------------------

    def flush(self) -> None:
        """Encode the staged rows into the windows (done by :meth:`evaluate` as well)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        staged = self._staged
        if not staged:
            return
        self._staged = []
        self.sampled += len(staged)
        groups: tuple[list[Any], list[Any]] = ([], [])
        outs: tuple[list[Any], list[Any]] = ([], [])
        unknown = 0
        for x, v, y in staged:
            try:
                slot = self._slot.get(v)
            except TypeError:
                slot = None
            if slot is None:
                unknown += 1
                continue
            groups[slot].append(x)
            outs[slot].append(y)
        if unknown:
            self.rejected["unknown_variant"] += unknown
        for slot in (0, 1):
            if groups[slot]:
                self._ingest(slot, groups[slot], outs[slot], len(groups[slot]))

    def _ingest(self, slot: int, rows: Any, ys: Any, k: int) -> None:
        num, cat, reasons = self._inputs.codec.encode(rows)
        self.rejected.update(reasons)
        self._rings[slot].extend(num, cat)
        if self.early_warning and num.shape[0] and num.shape[1]:
            self._feed_detector(slot, num)
        state = self._outputs[slot]
        ring = self._out_rings[slot]
        if state is None or ring is None:
            return
        if ys is None:
            self.rejected["output:missing"] += k
            return
        present = [y for y in ys if y is not None]
        if len(present) < k:
            self.rejected["output:missing"] += k - len(present)
        if not present:
            return
        onum, ocat, oreasons = state.codec.encode_outputs(
            ys[[y is not None for y in ys]] if isinstance(ys, np.ndarray) else present
        )
        self.rejected.update({f"output:{r}": c for r, c in oreasons.items()})
        ring.extend(onum, ocat)

    def _feed_detector(self, slot: int, num: NDArray[np.float64]) -> None:
        z = (num - self._inputs.mean) / self._inputs.scale
        b = self.block_size
        need = b - self._block_n[slot]
        if z.shape[0] < need:
            self._block_sum[slot] += z.sum(axis=0)
            self._block_n[slot] += z.shape[0]
            return
        first = (self._block_sum[slot] + z[:need].sum(axis=0)) / b
        rest = z[need:]
        full = rest.shape[0] // b
        blocks = rest[: full * b].reshape(full, b, z.shape[1]).mean(axis=1)
        tail = rest[full * b :]
        self._block_sum[slot] = tail.sum(axis=0)
        self._block_n[slot] = tail.shape[0]
        fired = self._detectors[slot].update_many(np.vstack([first[None, :], blocks]))
        self._warned[slot] |= fired

    # -- evaluation -----------------------------------------------------------------------

    def window_size(self, arm: Arm) -> int:
        """Rows currently in an arm's input window.

        Args:
            arm: ``"baseline"`` or ``"candidate"``.

        Returns:
            The row count (after flushing staged rows).
        """
        self.flush()
        return self._rings[self._arm_slot(arm)].size

    def rows_added(self) -> tuple[int, int]:
        """Rows ever added to the baseline's and the candidate's input windows (after
        flushing staged rows): two evaluations judged wholly different rows of an arm when
        its count grew by ``window`` or more between them.

        >>> import numpy as np
        >>> from safeserve.drift import DriftMonitor, ReferenceProfile
        >>> profile = ReferenceProfile.from_data(np.arange(100.0).reshape(-1, 1))
        >>> monitor = DriftMonitor(profile, sample_rate=1.0, window=10, min_samples=5)
        >>> monitor.observe_batch(np.ones((30, 1)), np.array([0] * 20 + [1] * 10))
        >>> monitor.rows_added()
        (20, 10)
        """
        self.flush()
        return self._rings[0].added, self._rings[1].added

    def window(self, arm: Arm, *, outputs: bool = False) -> dict[str, NDArray[Any]]:
        """The rows of an arm's window, oldest first, one array per feature.

        Numeric features are float arrays; categorical ones are int codes (``i`` is the
        profile's ``categories[i]``, ``len(categories)`` is "other").

        Args:
            arm: ``"baseline"`` or ``"candidate"``.
            outputs: Return the output window instead of the input window.

        Returns:
            A dict of feature name to 1-D array (copies).

        Raises:
            ConfigError: If ``arm`` is unknown or the arm records no outputs.
        """
        self.flush()
        slot = self._arm_slot(arm)
        if outputs:
            state, ring = self._outputs[slot], self._out_rings[slot]
            if state is None or ring is None:
                raise ConfigError(f"arm {arm!r} records no outputs")
        else:
            state, ring = self._inputs, self._rings[slot]
        num, cat = ring.ordered()
        codec = state.codec
        out: dict[str, NDArray[Any]] = {}
        for j, i in enumerate(codec.num_pos):
            out[codec.names[i]] = num[:, j]
        for j, i in enumerate(codec.cat_pos):
            out[codec.names[i]] = cat[:, j]
        return {n: out[n] for n in codec.names}

    @staticmethod
    def _arm_slot(arm: str) -> int:
        if arm not in _ARMS:
            raise ConfigError(f"arm must be 'baseline' or 'candidate', got {arm!r}")
        return 0 if arm == "baseline" else 1

    def clear(self) -> None:
        """Empty every window, staged row and detector (e.g. after re-baselining)."""
        with self._lock:
            self._staged = []
            for ring in (*self._rings, *self._out_rings):
                if ring is not None:
                    ring.clear()
            n = self._inputs.mean.size
            self._detectors = (self._new_detector(n), self._new_detector(n))
            self._block_sum = [np.zeros(n), np.zeros(n)]
            self._block_n = [0, 0]
            self._warned = [np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)]

    def _compare(self, state: _ProfileState, ref: _Side, cur: _Side) -> _Raw:
        """Every feature of ``state`` compared between two sides, in column order."""
        codec = state.codec
        n_num = len(codec.num_pos)
        out_num: dict[str, Any] = {}
        if n_num:
            d, w1 = numeric_distances(ref.values, cur.values, presorted=True)
            ks_p = ks_pvalue_limit(d, float(ref.n_values), float(cur.n_values))
            psi_v, thr, js, psi_p = self._binned(ref.num_counts, cur.num_counts, ref.n, cur.n)
            use_psi = self.numeric_test == "psi"
            out_num = {
                "test": "psi" if use_psi else "ks",
                "stat": psi_v if use_psi else d,
                "p": psi_p if use_psi else ks_p,
                "psi": psi_v,
                "thr": thr,
                "js": js,
                "w": (w1 / state.scale).tolist(),
            }
        out_cat: dict[str, Any] = {}
        if codec.cat_pos:
            psi_v, thr, js, psi_p = self._binned(ref.cat_counts, cur.cat_counts, ref.n, cur.n)
            stat = np.empty(len(codec.cat_pos))
            p = np.empty(len(codec.cat_pos))
            for j, (r, c) in enumerate(zip(ref.cat_counts, cur.cat_counts, strict=True)):
                s, pv, _ = chi2_rows(r[None, :], c[None, :])
                stat[j], p[j] = s[0], pv[0]
            use_psi = self.categorical_test == "psi"
            out_cat = {
                "test": "psi" if use_psi else "chi2",
                "stat": psi_v if use_psi else stat,
                "p": psi_p if use_psi else p,
                "psi": psi_v,
                "thr": thr,
                "js": js,
            }
        tests: list[str] = []
        cols: dict[str, list[float]] = {k: [] for k in ("stat", "p", "psi", "thr", "js")}
        w: list[float | None] = []
        jn = jc = 0
        for is_cat in codec.is_cat:
            src, j = (out_cat, jc) if is_cat else (out_num, jn)
            tests.append(src["test"])
            for k in cols:
                cols[k].append(float(src[k][j]))
            w.append(None if is_cat else float(out_num["w"][j]))
            if is_cat:
                jc += 1
            else:
                jn += 1
        width = len(codec.is_cat)
        return _Raw(
            tests,
            np.asarray(cols["stat"]),
            np.asarray(cols["p"]),
            np.asarray(cols["psi"]),
            np.asarray(cols["thr"]),
            np.asarray(cols["js"]),
            w,
            [
                ref.n_values if (not c and tests[i] == "ks") else ref.n
                for i, c in enumerate(codec.is_cat)
            ],
            [cur.n] * width,
        )

    def _binned(
        self, ref: list[NDArray[np.float64]], cur: list[NDArray[np.float64]], m: int, n: int
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """PSI, its threshold, JS distance and the PSI p-value per feature (grouped by bins)."""
        k = len(ref)
        psi_v = np.empty(k)
        js = np.empty(k)
        used = np.empty(k)
        groups: dict[int, list[int]] = {}
        for j, r in enumerate(ref):
            groups.setdefault(r.size, []).append(j)
        for idx in groups.values():
            r = np.stack([ref[j] for j in idx])
            c = np.stack([cur[j] for j in idx])
            psi_v[idx] = _psi_rows(r, c, PSI_EPS)
            js[idx] = js_rows(r, c)
            used[idx] = np.count_nonzero((r + c) > 0, axis=1)
        df = np.maximum(used - 1.0, 1.0)
        thr = np.where(used > 1, (1.0 / m + 1.0 / n) * _sps.chi2.ppf(1.0 - self.alpha, df), np.inf)
        return psi_v, thr, js, psi_pvalue(psi_v, m, n, used)

    def evaluate(self) -> DriftReport:
        """Test both arms against the reference and against each other.

        An arm with fewer than ``min_samples`` rows is skipped (its statistics are ``None``);
        the arm comparison needs both arms. Every p-value of the evaluation enters one
        Benjamini-Hochberg correction at level ``alpha``. Early warnings are reported once
        and then cleared.

        Returns:
            The :class:`DriftReport`.
        """
        with self._lock:
            self._flush_locked()
            return self._evaluate_locked()

    def _evaluate_locked(self) -> DriftReport:
        inputs = self._inputs
        ready = [ring.size >= self.min_samples for ring in self._rings]
        sides = [inputs.side(r) if ok else None for r, ok in zip(self._rings, ready, strict=True)]
        # (feature block, comparison label) -> raw stats
        raws: list[tuple[str, str, _Raw]] = []
        for slot, arm in enumerate(_ARMS):
            side = sides[slot]
            if side is not None:
                raws.append(("in", arm, self._compare(inputs, inputs.reference, side)))
        base, cand = sides
        if base is not None and cand is not None:
            raws.append(("in", "between", self._compare(inputs, base, cand)))
        for slot, arm in enumerate(_ARMS):
            state, ring = self._outputs[slot], self._out_rings[slot]
            if state is not None and ring is not None and ring.size >= self.min_samples:
                raws.append(
                    (f"out{slot}", arm, self._compare(state, state.reference, state.side(ring)))
                )
        all_p = np.concatenate([r.p for _, _, r in raws]) if raws else np.zeros(0)
        q_all = benjamini_hochberg(np.clip(all_p, 0.0, 1.0))
        stats: dict[tuple[str, str], list[FeatureStats]] = {}
        at = 0
        for block, label, r in raws:
            k = r.p.size
            q = q_all[at : at + k]
            at += k
            stats[(block, label)] = [
                FeatureStats(
                    test=r.tests[j],
                    statistic=float(r.stat[j]),
                    p_value=float(r.p[j]),
                    q_value=float(q[j]),
                    psi=float(r.psi[j]),
                    psi_threshold=float(r.thr[j]),
                    js_distance=float(r.js[j]),
                    wasserstein=r.w[j],
                    n_reference=r.n_ref[j],
                    n_current=r.n_cur[j],
                    drifted=bool(q[j] <= self.alpha),
                )
                for j in range(k)
            ]
        features: list[FeatureDrift] = []
        blocks: list[tuple[str, str, _ProfileState]] = [("in", "", inputs)]
        for slot, state in enumerate(self._outputs):
            if state is not None:
                blocks.append((f"out{slot}", ("output:", "candidate_output:")[slot], state))
        for block, prefix, state in blocks:
            for j, f in enumerate(state.profile.features):

                def get(label: str, block: str = block, j: int = j) -> FeatureStats | None:
                    got = stats.get((block, label))
                    return None if got is None else got[j]

                b, c, bt = get("baseline"), get("candidate"), get("between")
                scope = _scope(b, c, bt)
                if block == "out1" and scope is DriftScope.UNATTRIBUTED:
                    # The candidate's outputs against the candidate's own reference.
                    scope = DriftScope.CANDIDATE
                kind = "numeric" if isinstance(f, NumericFeature) else "categorical"
                features.append(FeatureDrift(prefix + f.name, kind, scope, b, c, bt))
        warnings: list[tuple[str, str]] = []
        num_names = [inputs.codec.names[i] for i in inputs.codec.num_pos]
        for slot, arm in enumerate(_ARMS):
            for j in np.flatnonzero(self._warned[slot]).tolist():
                warnings.append((arm, num_names[j]))
            self._warned[slot][:] = False
        return DriftReport(
            features=tuple(features),
            alpha=self.alpha,
            n_baseline=self._rings[0].size,
            n_candidate=self._rings[1].size,
            early_warning=tuple(warnings),
            rejected=dict(self.rejected),
        )


def _scope(
    base: FeatureStats | None, cand: FeatureStats | None, between: FeatureStats | None
) -> DriftScope:
    b = base is not None and base.drifted
    c = cand is not None and cand.drifted
    d = between is not None and between.drifted
    if d and b:
        return DriftScope.TRAFFIC_AND_CANDIDATE
    if d:
        return DriftScope.CANDIDATE
    if b:
        return DriftScope.TRAFFIC
    if c:
        return DriftScope.UNATTRIBUTED
    return DriftScope.NONE

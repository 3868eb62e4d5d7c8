"""Drift monitoring costs: recording inputs on the request path, and one drift evaluation.

Run ``python benchmarks/bench_drift.py`` (add ``--quick`` for a short run). Prints one table:

- per-request cost of recording a 20-feature row at 10% sampling: ``DriftMonitor.observe``
  against no recording at all and against a naive ``random() < 0.1`` plus ``list.append``;
- one drift evaluation of 20 numeric features over a 10k-row window against a 2,000-value
  reference sample: safeserve's vectorized path against a naive per-feature scipy loop
  (``ks_2samp``, ``wasserstein_distance``, ``np.histogram`` + PSI + ``jensenshannon``), and the
  monitor's full two-arm evaluation (baseline, candidate, and candidate vs baseline).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

import safeserve.drift as drift

FEATURES = 20
WINDOW = 10_000


def per_call_ns(fn: Callable[[list[float], int], None], rows: list[list[float]], n: int) -> float:
    """Best of 3 of the mean wall time per call over ``n`` calls, in nanoseconds."""
    best = float("inf")
    k = len(rows)
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(n):
            fn(rows[i % k], i & 1)
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e9


def best_ms(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def naive_evaluation(profile: drift.ReferenceProfile, window: np.ndarray) -> list[tuple]:
    out = []
    for j, f in enumerate(profile.numeric):
        col = window[:, j]
        sample = np.asarray(f.sample)
        ks = stats.ks_2samp(sample, col)
        w = stats.wasserstein_distance(sample, col) / max(f.std, 0.001)
        cur, _ = np.histogram(col, bins=np.concatenate([[-np.inf], f.edges, [np.inf]]))
        e = np.maximum(np.asarray(f.counts) / f.n_rows, 1e-4)
        a = np.maximum(cur / cur.sum(), 1e-4)
        psi = stats.entropy(a, e) + stats.entropy(e, a)
        js = jensenshannon(f.counts, cur, base=2)
        thr = drift.psi_threshold(f.n_rows, len(col), f.n_bins)
        out.append((ks.statistic, ks.pvalue, w, psi, js, thr))
    stats.false_discovery_control([o[1] for o in out], method="bh")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    calls = 100_000 if args.quick else 1_000_000
    repeat = 3 if args.quick else 15

    rng = np.random.default_rng(0)
    profile = drift.ReferenceProfile.from_data(rng.normal(size=(100_000, FEATURES)))
    rows = rng.normal(size=(1000, FEATURES)).tolist()

    def nothing(x: list[float], v: int) -> None:
        return None

    kept: list[tuple[list[float], int]] = []
    rand = random.Random(0).random

    def naive(x: list[float], v: int) -> None:
        if rand() < 0.1:
            kept.append((list(x), v))
            if len(kept) > WINDOW:
                del kept[: len(kept) - WINDOW]

    monitor = drift.DriftMonitor(profile, sample_rate=0.1, window=WINDOW)
    loop_ns = per_call_ns(nothing, rows, calls)
    naive_ns = per_call_ns(naive, rows, calls)
    observe_ns = per_call_ns(monitor.observe, rows, calls)
    monitor.flush()

    full = drift.DriftMonitor(profile, sample_rate=1.0, window=WINDOW)
    full.observe_batch(rng.normal(size=(2 * WINDOW, FEATURES)), np.arange(2 * WINDOW) % 2)
    state = full._inputs
    ring = full._rings[0]
    window = ring.contents()[0].copy()

    def one_window() -> object:
        return full._compare(state, state.reference, state.side(ring))

    ours_ms = best_ms(one_window, repeat)
    naive_ms = best_ms(lambda: naive_evaluation(profile, window), max(2, repeat // 5))
    two_arm_ms = best_ms(full.evaluate, repeat)

    print(f"{'measurement':<62} {'safeserve':>12} {'comparison':>12}  comparison is")
    print("-" * 110)
    print(
        f"{'record a 20-feature row at 10% sampling, per request (ns)':<62} "
        f"{observe_ns - loop_ns:>12.0f} {naive_ns - loop_ns:>12.0f}  random()<0.1 + list append"
    )
    print(
        f"{'  same, including the benchmark loop itself (ns)':<62} "
        f"{observe_ns:>12.0f} {loop_ns:>12.0f}  no recording (empty call)"
    )
    print(
        f"{'drift evaluation, 20 features, one 10k-row window (ms)':<62} "
        f"{ours_ms:>12.2f} {naive_ms:>12.2f}  per-feature scipy loop"
    )
    print(
        f"{'DriftMonitor.evaluate, two 10k-row arms + arm comparison (ms)':<62} "
        f"{two_arm_ms:>12.2f} {'':>12}"
    )
    print()
    print(
        f"targets: recording <= 1000 ns/request, one-window evaluation <= 20 ms; "
        f"calls={calls}, repeats={repeat}; rows sampled={monitor.sampled}"
    )


if __name__ == "__main__":
    main()

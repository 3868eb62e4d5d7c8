"""Routing overhead: safeserve beside the direct call, a naive split and GrowthBook.

Run: ``python benchmarks/bench_routing.py`` (``--quick`` for a short run).
Needs the ``bench`` extra (``pip install -e ".[bench]"``) for the GrowthBook row.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys

import numpy as np
import xxhash

import safeserve as ss

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _table import once_s, per_call_ns, print_table


def trivial_model(x: float) -> float:
    return x


def trivial_candidate(x: float) -> float:
    return x


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer calls, smaller batches")
    args = parser.parse_args()
    calls = 20_000 if args.quick else 200_000
    batch = 100_000 if args.quick else 1_000_000

    router = ss.Router(
        {"v1": trivial_model, "v2": trivial_candidate},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=5),
        name="bench",
    )
    str_ids = [f"user-{i}" for i in range(calls)]
    int_ids = list(range(calls))
    it_s = itertools.cycle(str_ids)
    it_i = itertools.cycle(int_ids)
    rnd = random.random

    def direct() -> object:
        return trivial_model(1.0)

    def naive() -> object:
        return trivial_candidate(1.0) if rnd() < 0.05 else trivial_model(1.0)

    def predict_str() -> object:
        return router.predict(1.0, key=next(it_s))

    def predict_int() -> object:
        return router.predict(1.0, key=next(it_i))

    def route_str() -> object:
        return router.route(1.0, key=next(it_s))

    rows: list[list[object]] = []
    t_direct = per_call_ns(direct, calls=calls)
    t_cycle = per_call_ns(lambda: next(it_s), calls=calls)  # cost of drawing the key
    rows.append(["direct model call", f"{t_direct:,.0f}", "-", "-"])
    t_naive = per_call_ns(naive, calls=calls)
    rows.append(["naive random() split", f"{t_naive:,.0f}", f"{t_naive - t_direct:,.0f}", "-"])
    results = {}
    for label, fn in [
        ("router.predict (str key)", predict_str),
        ("router.predict (int key)", predict_int),
        ("router.route (str key)", route_str),
    ]:
        t = per_call_ns(fn, calls=calls) - t_cycle
        results[label] = t
        rows.append([label, f"{t:,.0f}", f"{t - t_direct:,.0f}", ""])
    try:
        from growthbook import Experiment, GrowthBook
    except ImportError:
        t_gb = float("nan")
        rows.append(["GrowthBook run() (not installed)", "-", "-", "-"])
    else:
        gb = GrowthBook(attributes={"id": "u"})
        exp = Experiment(key="bench", variations=[0, 1], weights=[0.95, 0.05])

        def growthbook_run() -> object:
            gb.set_attributes({"id": next(it_s)})
            return trivial_model(1.0) if gb.run(exp).value == 0 else trivial_candidate(1.0)

        t_gb = per_call_ns(growthbook_run, calls=max(calls // 10, 2000)) - t_cycle
        rows.append(
            ["GrowthBook run() two arms", f"{t_gb:,.0f}", f"{t_gb - t_direct:,.0f}", "1.00"]
        )
    for row in rows:
        if row[3] == "":
            row[3] = f"{(float(str(row[1]).replace(',', '')) - t_direct) / (t_gb - t_direct):.2f}"
    print_table(
        f"Per-call cost, trivial model, canary at 5% ({calls:,} calls, median of 5 runs)",
        ["path", "ns/call", "added ns", "added / GrowthBook's"],
        rows,
    )

    # Batch routing throughput.
    seed = ss.salt_seed("bench")
    alloc = router._snapshot.allocation
    int_keys = np.random.default_rng(1).integers(-(2**62), 2**62, size=batch)
    str_keys = [f"user-{i}" for i in range(batch)]
    X = np.zeros((batch, 1))

    def batch_route(keys: object) -> object:
        return alloc.index_of_buckets(ss.buckets_of(keys, seed=seed))  # type: ignore[arg-type]

    def loop_scalar(keys: list[object]) -> object:
        return [alloc.table[ss.bucket_of(k, seed=seed)] for k in keys]  # type: ignore[arg-type]

    def loop_xxhash(keys: list[str]) -> object:
        h = xxhash.xxh3_64_intdigest
        return [alloc.table[h(k.encode(), seed) % 10_000] for k in keys]

    int_list = int_keys.tolist()
    brows = []
    for label, fn, n in [
        ("buckets_of + lanes, int64 array", lambda: batch_route(int_keys), batch),
        ("buckets_of + lanes, list of str", lambda: batch_route(str_keys), batch),
        (
            "predict_batch, int64 keys, numpy X",
            lambda: router.predict_batch(X, keys=int_keys),
            batch,
        ),
        ("predict_batch, str keys, numpy X", lambda: router.predict_batch(X, keys=str_keys), batch),
        ("Python loop over bucket_of, int", lambda: loop_scalar(int_list), batch),
        ("Python loop over bucket_of, str", lambda: loop_scalar(str_keys), batch),
        ("Python loop, xxhash inline, str", lambda: loop_xxhash(str_keys), batch),
    ]:
        t = once_s(fn, repeats=3)
        brows.append([label, f"{t * 1e3:,.1f}", f"{n / t / 1e6:,.2f}"])
    print_table(
        f"Batch routing of {batch:,} keys (median of 3 runs)", ["path", "ms", "M keys/s"], brows
    )


if __name__ == "__main__":
    main()

"""Benchmark the metric recorder: record cost, flush throughput, quantile accuracy, memory.

Run ``python benchmarks/bench_metrics.py`` (``--quick`` for a short run). Prints one table:
each figure beside its target.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from _table import per_call_ns
from safeserve.metrics import Recorder, record_code
from safeserve.metrics._recorder import _BLOCK, _columns_fast, _columns_marshal, _to_columns

try:
    import resource

    def page_faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

except ImportError:  # no resource module (Windows): the row reads 0

    def page_faults() -> int:
        return 0


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_append(n: int, repeat: int) -> dict[str, float]:
    """ns per request: the router's record (a tuple built from locals, its fields put in the
    flat buffer), the public append of the tuple, and their baseline loops."""
    rec = Recorder(["v1", "v2"], clock=time.monotonic)
    app = rec.append
    ext = rec._extend

    def loop_extend() -> None:
        # As the router does: the code of an OK record is variant << 4 | override, and a
        # predict record's id is -1.
        lat, out, vi, override = 0.0123, 0.5, 1, False
        for _ in range(n):
            ext((-1, vi << 4 | override, lat, out))

    def loop_append() -> None:
        lat, out, vi, override = 0.0123, 0.5, 1, False
        for rid in range(n):
            app((rid, vi << 4 | override, lat, out))

    def loop_tuple_only() -> None:
        lat, out, vi, override = 0.0123, 0.5, 1, False
        for rid in range(n):
            (rid, vi << 4 | override, lat, out)

    def loop_prebuilt() -> None:
        row = (1, 16, 0.0123, 0.5)
        for _ in range(n):
            app(row)

    out = {}
    for name, fn in (
        ("router (tuple built + flat list.extend)", loop_extend),
        ("append (tuple built + list.append)", loop_append),
        ("loop building the tuple only", loop_tuple_only),
        ("list.append of a prebuilt tuple", loop_prebuilt),
    ):
        times = []
        for _ in range(repeat):
            rec._buf.clear()
            rec._flat.clear()
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = min(times) / n * 1e9
    rec._buf.clear()
    rec._flat.clear()
    return out


def make_rows(n: int, seed: int = 0, first_id: int = 1) -> list[tuple[Any, ...]]:
    """The router's records, 1% of them errors, with ids ``first_id, first_id + 1, ...``
    (the router's ids only grow, and the outcome map is built for that)."""
    rng = np.random.default_rng(seed)
    lat = rng.lognormal(-4.0, 1.0, n).tolist()
    vi = rng.integers(0, 2, n).tolist()
    err = (rng.random(n) < 0.01).tolist()
    out = rng.normal(size=n).tolist()
    ok, error = (record_code(0), record_code(1)), (record_code(0, 1), record_code(1, 1))
    return [
        (first_id + i, error[vi[i]] if err[i] else ok[vi[i]], lat[i], 0.0 if err[i] else out[i])
        for i in range(n)
    ]


def without_ids(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same records as ``router.predict`` makes them: its caller never sees a request
    id, so the record carries -1 and the outcome map keeps nothing."""
    return [(-1, c, lat, out) for _, c, lat, out in rows]


def readable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The same records as readable 7-tuples (variant, status, fallback, override apart)."""
    return [(r, c >> 4, t, (c >> 2) & 3, bool(c & 2), y, bool(c & 1)) for r, c, t, y in rows]


def bench_flush(n: int, repeat: int) -> dict[str, float]:
    """Flush cost per record: tuple->columns conversion, vectorized ingest, and batches."""
    rows = make_rows(n)
    rec = Recorder(["v1", "v2"], clock=lambda: 0.0)
    conv = best_of(lambda: _columns_fast(rows), repeat)

    flat_rows = [f for r in rows for f in r]

    def flush_conversion() -> None:
        # The conversion the flush runs on the router's flat buffer: block by block.
        for start in range(0, 4 * n, 4 * _BLOCK):
            _columns_marshal(flat_rows[start : start + 4 * _BLOCK], flat=True)

    conv_flush = best_of(flush_conversion, repeat)

    next_id = [n + 1]

    def full(
        form: Callable[[list[tuple[Any, ...]]], list[tuple[Any, ...]]], router: bool = True
    ) -> float:
        # Fresh ids each time, as live traffic has: a repeat of the same ids would be counted
        # as duplicates by the outcome map and take its slow path.
        best = float("inf")
        faults[0] = 0
        for _ in range(repeat):
            fresh = form(make_rows(n, first_id=next_id[0]))
            if router:  # as the router buffers them: each record's fields into a flat list
                for r in fresh:
                    rec._extend(r)
            else:  # as tuples, through the public append
                rec._buf.extend(fresh)
            del fresh
            next_id[0] += n
            f0 = page_faults()
            t0 = time.perf_counter()
            rec.flush()
            best = min(best, time.perf_counter() - t0)
            faults[0] += page_faults() - f0
        return best

    faults = [0]
    flush_t = full(list)
    route_faults = faults[0] / repeat
    predict_t = full(without_ids)
    tuples_t = full(list, router=False)
    readable_t = full(readable, router=False)
    cols = _columns_marshal(flat_rows, flat=True) if n <= _BLOCK else _to_columns(rows)
    assert cols is not None

    def ingest() -> None:
        rec._ingest(cols, 0.0)

    ingest_t = best_of(ingest, repeat)
    rng = np.random.default_rng(1)
    ids = np.arange(n, dtype=np.int64)
    vi = rng.integers(0, 2, n)
    lat = rng.lognormal(-4.0, 1.0, n)
    st = np.zeros(n, np.int8)
    fb = np.zeros(n, np.bool_)
    outs = rng.normal(size=n)

    def batch() -> None:
        rec.append_batch(ids, vi, lat, st, fb, outs, fb)
        rec.flush()

    batch_t = best_of(batch, repeat)
    return {
        "conversion (marshal path) ns/rec": conv_flush / n * 1e9,
        "conversion (itemgetter path) ns/rec": conv / n * 1e9,
        "ingest ns/rec": ingest_t / n * 1e9,
        "flush (route records, with ids) ns/rec": flush_t / n * 1e9,
        "flush (route records, with ids) rec/s": n / flush_t,
        "flush (route records): page faults per flush": route_faults,
        "flush (predict records, no ids) ns/rec": predict_t / n * 1e9,
        "flush (predict records, no ids) rec/s": n / predict_t,
        "ingest only rec/s": n / ingest_t,
        "flush (4-tuples through append) rec/s": n / tuples_t,
        "flush (readable 7-tuples) rec/s": n / readable_t,
        "flush (append_batch) rec/s": n / batch_t,
    }


def bench_quantiles(n: int) -> list[tuple[str, str, float, float, float]]:
    """Histogram quantiles against numpy's exact 'lower' quantiles."""
    from safeserve.metrics import LogHistogram

    rng = np.random.default_rng(42)
    dists = {
        "lognormal(-4, 1) s": rng.lognormal(-4.0, 1.0, n),
        "Pareto(a=1.5) x 2 ms": 0.002 * (1.0 + rng.pareto(1.5, n)),
    }
    rows = []
    for name, x in dists.items():
        h = LogHistogram().update_many(x)
        for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("p99.9", 0.999)):
            exact = float(np.quantile(x, q, method="lower"))
            est = h.quantile(q)
            rows.append((name, label, exact, est, abs(est / exact - 1)))
    return rows


def bench_memory(n: int, chunk: int) -> tuple[dict[str, int], int, int]:
    """Bytes held per variant and metric after ``n`` observations, and the whole recorder."""
    clock = [0.0]
    tracemalloc.start()
    rec = Recorder(["v1", "v2"], clock=lambda: clock[0], outcome_capacity=100_000)
    rng = np.random.default_rng(3)
    labels = np.array(["a", "b", "c"])
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        rec.append_batch(
            np.arange(start, start + m),
            rng.integers(0, 2, m),
            rng.lognormal(-4.0, 1.0, m),
            np.zeros(m, np.int8),
            np.zeros(m, np.bool_),
            rng.normal(size=m) if start % (2 * chunk) else list(labels[rng.integers(0, 3, m)]),
            np.zeros(m, np.bool_),
        )
        rec.flush()
        clock[0] += 3.0
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ring = rec._rings[0]
    slices = [*ring._slices, ring._closed]
    per_metric = {
        "latency histogram": sum(s.latency.counts.nbytes for s in slices),
        "latency + log-latency moments": 2 * len(slices) * 3 * 8,
        "output signed histogram": sum(s.output_hist.counts.nbytes for s in slices),
        "output class counts": sum(s.labels.counts.nbytes for s in slices),
        "request counters": sum(s.counts.counts.nbytes for s in slices),
    }
    o = rec._ring
    ring_bytes = o.ids.nbytes + o.variant.nbytes + o.override.nbytes + o.time.nbytes
    return per_metric, current, ring_bytes


def settle_allocator() -> None:
    """Put the C allocator in the state of a serving process (see docs/explanation/metrics.md).

    With glibc, a process that has not yet freed a large block trims its heap after every
    flush and takes ~150 page faults on the next one; freeing one block of about 1 MiB or
    more (as loading or calling a model does) raises glibc's dynamic thresholds for good. A
    bare benchmark process has not done that yet: do it once, here, so that the figures are
    a serving process's.
    """
    if sys.platform.startswith("linux"):
        np.ones(1 << 18)  # 2 MiB, made and freed at once


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run")
    args = ap.parse_args()
    q = args.quick
    n_app = 200_000 if q else 2_000_000
    n_flush = 100_000 if q else 1_000_000
    n_mem = 1_000_000 if q else 10_000_000
    n_q = 200_000 if q else 2_000_000
    repeat = 3 if q else 7
    settle_allocator()

    # The router's 4,096-record flush is measured in three rounds spread over the run (before,
    # between and after the other sections), and each figure is its best round: the machine
    # this runs on can slow down by half for tens of seconds, and a best-of within one round
    # does not get out of such a phase. Every round is printed, with an empty call's cost as
    # the machine's speed at that moment.
    rounds: list[dict[str, float]] = []

    def round_4k() -> None:
        d = bench_flush(4096, repeat * 5)
        d["reference: an empty call ns"] = per_call_ns(lambda: None, calls=200_000)
        rounds.append(d)

    round_4k()
    app = bench_append(n_app, repeat)
    fl = bench_flush(n_flush, repeat)
    round_4k()
    qrows = bench_quantiles(n_q)
    round_4k()
    fl4k = {
        k: (max if "rec/s" in k or "faults" in k else min)(r[k] for r in rounds)
        for k in rounds[0]
        if not k.startswith("reference")
    }
    mem, traced, ring_bytes = bench_memory(n_mem, 100_000)

    w = 44
    print(f"{'measure':<{w}} {'value':>14}   target")
    print("-" * (w + 30))
    for k, v in app.items():
        tgt = "<= 300 ns" if k.startswith(("router", "append")) else ""
        print(f"{'record: ' + k:<{w}} {v:>11.1f} ns   {tgt}")
    for label, d in ((f"flush {n_flush:,} tuples", fl), ("flush 4,096 tuples", fl4k)):
        for k, v in d.items():
            unit = "" if "rec/s" in k or "faults" in k else " ns"
            val = f"{v / 1e6:>10.2f} M/s" if "rec/s" in k else f"{v:>11.1f}{unit}"
            tgt = ">= 5 M/s" if "records, " in k and "rec/s" in k else ""
            print(f"{label + ': ' + k:<{w}} {val:>14}   {tgt}")
    print("flush 4,096 tuples, best of 3 rounds; each round (route, predict M/s; empty call ns):")
    for r in rounds:
        print(
            f"  {r['flush (route records, with ids) rec/s'] / 1e6:.2f}, "
            f"{r['flush (predict records, no ids) rec/s'] / 1e6:.2f}; "
            f"{r['reference: an empty call ns']:.0f} ns"
        )
    print("-" * (w + 30))
    print(f"{'quantile accuracy':<{w}} {'rel. error':>14}   <= 1%")
    for name, label, exact, est, err in qrows:
        text = f"{name} {label} ({exact:.4g} vs {est:.4g})"
        print(f"{text:<{w}} {err * 100:>13.3f}%")
    print("-" * (w + 30))
    print(f"memory after {n_mem:,} observations (one variant, whole window)")
    for k, v in mem.items():
        print(f"{'  ' + k:<{w}} {v / 1024:>11.1f} KB   <= 1024 KB")
    print(f"{'  outcome ring (100k ids, all variants)':<{w}} {ring_bytes / 1024:>11.1f} KB")
    print(f"{'  whole recorder, traced (2 variants)':<{w}} {traced / 1024:>11.1f} KB")


if __name__ == "__main__":
    main()

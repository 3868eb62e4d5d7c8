"""Shared helpers for the benchmark scripts: timing and a plain-text table."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence


def per_call_ns(fn: Callable[[], object], *, calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean wall time per call of ``fn`` in nanoseconds."""
    fn()  # warm up
    results = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            results.append((time.perf_counter_ns() - t0) / calls)
    finally:
        if gc_was:
            gc.enable()
    return statistics.median(results)


def once_s(fn: Callable[[], object], *, repeats: int = 5) -> float:
    """Median wall time of one call of ``fn`` in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print an aligned table with a title."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    line = "  ".join("-" * w for w in widths)
    for k, row in enumerate(cells):
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if k == 0:
            print(line)

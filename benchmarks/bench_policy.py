"""Judge cost: a policy of 20 checks over 2 variants, and routing with evaluation amortized.

Run: ``python benchmarks/bench_policy.py`` (``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time

import numpy as np
import structlog

import safeserve as ss
from safeserve.policy import Judge

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _table import per_call_ns, print_table


def twenty_checks() -> list[ss.policy.Check]:
    checks: list[ss.policy.Check] = [
        ss.ErrorRate(),
        ss.Latency(),
        ss.LatencyQuantile(q=0.99),
        ss.LatencyQuantile(q=0.95),
        ss.LatencyQuantile(q=0.5),
        ss.Guardrail(metric="error_rate", above=0.2),
        ss.Guardrail(metric="latency_p99", above=2.0),
        ss.Guardrail(metric="latency_mean", above=1.0),
        ss.SRM(),
        ss.MetricCheck(metric="converted", kind="proportion"),
    ]
    checks += [
        ss.MetricCheck(metric=f"m{i}", source="custom", kind="mean", direction="higher_is_worse")
        for i in range(10)
    ]
    return checks


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def main() -> None:
    # An application logs decisions at info and above; routine looks are debug events.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    calls = 50_000 if args.quick else 300_000
    rng = np.random.default_rng(0)

    # A router with traffic in both arms, custom metrics and outcomes.
    clock = Clock()
    policy = ss.Policy(twenty_checks())
    router = ss.Router(
        {"v1": lambda x: 0.3, "v2": lambda x: 0.3},
        strategy=ss.Canary("v1", "v2", weight=50),
        policy=policy,
        clock=clock,
    )
    for i in range(20_000):
        clock.t += 0.01
        r = router.route(None, key=i)
        router.record_outcome(r.request_id, "converted", float(rng.random() < 0.3))
        if i % 10 == 0:
            for m in range(10):
                router.record(r.variant, f"m{m}", float(rng.normal()))
    snap = router.recorder.snapshot()
    judge = Judge(policy, baseline="v1", candidate="v2", comparative_steps=3)
    weights = {"v1": 50.0, "v2": 50.0}
    t_judge = per_call_ns(lambda: judge.evaluate(snap, weights=weights), calls=200) / 1e3
    t_snap = per_call_ns(router.recorder.snapshot, calls=200) / 1e3
    t_eval = per_call_ns(router.evaluate, calls=200) / 1e3
    print_table(
        "Judging a policy of 20 checks over 2 variants (median of 5 runs)",
        ["step", "us per evaluation"],
        [
            ["judge only (20 checks)", f"{t_judge:,.0f}"],
            ["metrics snapshot", f"{t_snap:,.0f}"],
            ["router.evaluate() (flush + snapshot + judge + log)", f"{t_eval:,.0f}"],
        ],
    )

    # Routing overhead with evaluations amortized in.
    def trivial(x: float) -> float:
        return x

    def trivial2(x: float) -> float:
        return x

    keys = [f"user-{i}" for i in range(calls)]
    it = itertools.cycle(keys)
    rows = []
    t_direct = per_call_ns(lambda: trivial(1.0), calls=calls)
    t_key = per_call_ns(lambda: next(it), calls=calls)
    rows.append(["direct model call", f"{t_direct:,.0f}", "-"])
    for label, strategy in [
        ("router.predict, no rollout", None),
        (
            "router.predict, canary, evaluate every 1,000",
            ss.Canary("v1", "v2", evaluate_every=1000),
        ),
        (
            "router.predict, canary, evaluate every 10,000",
            ss.Canary("v1", "v2", evaluate_every=10_000),
        ),
    ]:
        r2 = ss.Router(
            {"v1": trivial, "v2": trivial2},
            strategy=strategy if strategy is not None else ss.FixedSplit("v1", {"v2": 5}),
            policy=ss.Policy(twenty_checks()) if strategy is not None else None,
        )
        t0 = time.perf_counter()
        t = per_call_ns(lambda r2=r2: r2.predict(1.0, key=next(it)), calls=calls) - t_key
        evals = len(r2.status().decisions)
        rows.append([label, f"{t:,.0f}", f"{t - t_direct:,.0f}", f"{evals}"])
        del t0
    print_table(
        f"Routing with evaluation amortized in ({calls:,} calls x 5 runs, 20-check policy)",
        ["path", "ns/call", "added ns", "evaluations"],
        [r if len(r) == 4 else [*r, "-"] for r in rows],
    )


if __name__ == "__main__":
    main()

"""Sequential statistics under peeking: false alarms, power and samples to a decision.

Run: ``python benchmarks/bench_stats.py`` (``--quick`` for a short run).

(a) A/A: a look after every batch of 100 per arm up to 20,000 per arm; the rate of runs that
    ever FAIL, for safeserve's sequences beside a naive z test and a Kayenta-style Mann-Whitney
    repeated at the same looks.
(b) Power: detection rate and median samples per arm to a FAIL, beside a fixed-horizon one-sided
    z test planned for 80% power at alpha 0.05.
(c) The rare-error test at a baseline error rate of 0.1%, with the canary share stepping
    5% -> 25% -> 50%.

Simulations are vectorized across runs: per-batch sums (and sums of squares) are drawn for all
runs at once and accumulated, so each look costs one vectorized call.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
from scipy import stats

from safeserve.stats import (
    RareErrorTest,
    SequentialSRM,
    Verdict,
    mean_difference_cs_many,
    proportion_difference_cs_many,
)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _table import print_table

BATCH = 100
ALPHAS = (0.05, 0.01)
Z_80 = stats.norm.isf(0.20)


def lognormal_moments(
    rng: np.random.Generator, runs: int, looks: int, *, sigma: float = 1.0, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n, running mean and running variance (ddof=1) per look, shape (runs, looks)."""
    sums = np.empty((runs, looks))
    squares = np.empty((runs, looks))
    for k in range(looks):
        x = scale * rng.lognormal(0.0, sigma, size=(runs, BATCH))
        sums[:, k] = x.sum(axis=1)
        squares[:, k] = np.einsum("ij,ij->i", x, x)
    n = np.broadcast_to(np.arange(1, looks + 1) * float(BATCH), (runs, looks))
    s, s2 = np.cumsum(sums, axis=1), np.cumsum(squares, axis=1)
    mean = s / n
    return n, mean, (s2 - s * mean) / (n - 1)


def binomial_counts(rng: np.random.Generator, runs: int, looks: int, p: float) -> np.ndarray:
    """Cumulative event counts per look, shape (runs, looks)."""
    return np.cumsum(rng.binomial(BATCH, p, size=(runs, looks)), axis=1)


def first_fail(codes: np.ndarray, runs: int, looks: int) -> np.ndarray:
    """Index of the first FAIL look per run, or -1."""
    fails = (codes == 2).reshape(runs, looks)
    return np.where(fails.any(axis=1), fails.argmax(axis=1), -1)


def sim_upper(alpha: float, runs: int) -> float:
    return float(stats.binom.ppf(0.975, runs, alpha)) / runs


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


# ----------------------------------------------------------------------------- (a) A/A


def aa_table(runs: int, looks: int, mwu_runs: int, mwu_every: int, srm_runs: int) -> None:
    rng = np.random.default_rng(2024)
    n, mc, vc = lognormal_moments(rng, runs, looks)
    _, mb, vb = lognormal_moments(rng, runs, looks)
    ec = binomial_counts(rng, runs, looks, 0.01)
    eb = binomial_counts(rng, runs, looks, 0.01)
    flat = {k: v.ravel() for k, v in {"n": n, "mc": mc, "vc": vc, "mb": mb, "vb": vb}.items()}
    rows: list[list[object]] = []

    def seq_row(label: str, fn) -> None:  # type: ignore[no-untyped-def]
        rates = [float((first_fail(fn(a), runs, looks) >= 0).mean()) for a in ALPHAS]
        rows.append([label, runs, looks, *map(pct, rates), _ok(rates, runs)])

    seq_row(
        "CS mean latency, one-sided (harm)",
        lambda a: (
            mean_difference_cs_many(
                flat["n"], flat["mc"], flat["vc"], flat["n"], flat["mb"], flat["vb"], alpha=a
            ).verdict_code
        ),
    )
    seq_row(
        "CS mean latency, two-sided, relative",
        lambda a: (
            mean_difference_cs_many(
                flat["n"],
                flat["mc"],
                flat["vc"],
                flat["n"],
                flat["mb"],
                flat["vb"],
                alpha=a,
                direction="either",
                relative=True,
            ).verdict_code
        ),
    )
    seq_row(
        "CS error rate 1%, one-sided",
        lambda a: (
            proportion_difference_cs_many(
                flat["n"], ec.ravel(), flat["n"], eb.ravel(), alpha=a
            ).verdict_code
        ),
    )
    z = (mc - mb) / np.sqrt(vc / n + vb / n)
    naive = [float((z > stats.norm.isf(a)).any(axis=1).mean()) for a in ALPHAS]
    rows.append(["naive z every look, one-sided", runs, looks, *map(pct, naive), _ok(naive, runs)])
    naive2 = [float((np.abs(z) > stats.norm.isf(a / 2)).any(axis=1).mean()) for a in ALPHAS]
    rows.append(
        ["naive z every look, two-sided", runs, looks, *map(pct, naive2), _ok(naive2, runs)]
    )
    final = [float((z[:, -1] > stats.norm.isf(a)).mean()) for a in ALPHAS]
    rows.append(["z at the last look only (fixed)", runs, 1, *map(pct, final), _ok(final, runs)])

    # Kayenta-style: two-sided Mann-Whitney on all data so far, repeated (raw data needed).
    mwu_looks = (looks * BATCH) // mwu_every
    x = rng.lognormal(0.0, 1.0, size=(mwu_runs, looks * BATCH))
    y = rng.lognormal(0.0, 1.0, size=(mwu_runs, looks * BATCH))
    pmin = np.ones(mwu_runs)
    for k in range(1, mwu_looks + 1):
        m = k * mwu_every
        p = stats.mannwhitneyu(x[:, :m], y[:, :m], axis=1, method="asymptotic").pvalue
        pmin = np.minimum(pmin, p)
    kay = [float((pmin < a).mean()) for a in ALPHAS]
    rows.append(
        [
            f"Kayenta-style MWU every {mwu_every}/arm",
            mwu_runs,
            mwu_looks,
            *map(pct, kay),
            _ok(kay, mwu_runs),
        ]
    )

    # Sequential SRM on a 50/50 split, 200 units per batch.
    srm_fail = dict.fromkeys(ALPHAS, 0)
    for _ in range(srm_runs):
        tests = {a: SequentialSRM([0.5, 0.5], alpha=a) for a in ALPHAS}
        for _ in range(looks):
            batch = rng.multinomial(2 * BATCH, [0.5, 0.5])
            for t in tests.values():
                t.update(batch)
        for a, t in tests.items():
            srm_fail[a] += t.result().mismatch
    srm = [srm_fail[a] / srm_runs for a in ALPHAS]
    rows.append(["sequential SRM (50/50)", srm_runs, looks, *map(pct, srm), _ok(srm, srm_runs)])
    print_table(
        f"(a) A/A: look after every {BATCH} per arm up to {looks * BATCH:,} per arm "
        "(rate of runs that ever FAIL; 'ok' = within the 95% simulation interval of alpha)",
        ["test", "runs", "looks", "FPR a=0.05", "FPR a=0.01", "ok"],
        rows,
    )


def _ok(rates: list[float], runs: int) -> str:
    return "/".join(
        "yes" if r <= sim_upper(a, runs) else "NO" for r, a in zip(rates, ALPHAS, strict=True)
    )


# ----------------------------------------------------------------------------- (b) power


def plan_n(delta: float, var_c: float, var_b: float, alpha: float = 0.05) -> int:
    """Per-arm n for a one-sided z test with 80% power, rounded up to a batch."""
    n = (stats.norm.isf(alpha) + Z_80) ** 2 * (var_c + var_b) / delta**2
    return int(math.ceil(n / BATCH) * BATCH)


def power_row(
    label: str, codes: np.ndarray, runs: int, looks: int, plan: int, fixed_power: float
) -> list[object]:
    idx = first_fail(codes, runs, looks)
    detected = idx >= 0
    n_at = np.where(detected, (idx + 1) * BATCH, np.inf)
    median_all = float(np.median(n_at))
    median_txt = f"{median_all:,.0f}" if math.isfinite(median_all) else f"> {looks * BATCH:,}"
    ratio = f"{median_all / plan:.2f}" if math.isfinite(median_all) else "-"
    return [
        label,
        f"{looks * BATCH:,}",
        pct(float(detected.mean())),
        median_txt,
        f"{plan:,}",
        pct(fixed_power),
        ratio,
    ]


def power_table(runs: int) -> None:
    rng = np.random.default_rng(7)
    rows: list[list[object]] = []
    horizon = 20_000

    def proportions(label: str, p_b: float, p_c: float, direction: str, relative: bool) -> None:
        plan = plan_n(abs(p_c - p_b), p_c * (1 - p_c), p_b * (1 - p_b))
        looks = max(horizon, 4 * plan) // BATCH
        ec = binomial_counts(rng, runs, looks, p_c)
        eb = binomial_counts(rng, runs, looks, p_b)
        n = np.broadcast_to(np.arange(1, looks + 1) * float(BATCH), (runs, looks))
        codes = proportion_difference_cs_many(
            n.ravel(), ec.ravel(), n.ravel(), eb.ravel(), direction=direction, relative=relative
        ).verdict_code
        k = plan // BATCH - 1
        pc, pb = ec[:, k] / plan, eb[:, k] / plan
        z = (pc - pb) / np.sqrt(pc * (1 - pc) / plan + pb * (1 - pb) / plan)
        z = z if direction == "higher_is_worse" else -z
        fixed = float((z > stats.norm.isf(0.05)).mean())
        rows.append(power_row(label, codes, runs, looks, plan, fixed))

    def latency(label: str, sigma_c: float, scale_c: float) -> None:
        var_b = (math.exp(1) - 1) * math.exp(1)
        mean_b = math.exp(0.5)
        mean_c = scale_c * math.exp(sigma_c**2 / 2)
        var_c = scale_c**2 * (math.exp(sigma_c**2) - 1) * math.exp(sigma_c**2)
        plan = plan_n(mean_c - mean_b, var_c, var_b)
        looks = max(horizon, 4 * plan) // BATCH
        n, mc, vc = lognormal_moments(rng, runs, looks, sigma=sigma_c, scale=scale_c)
        _, mb, vb = lognormal_moments(rng, runs, looks)
        codes = mean_difference_cs_many(
            n.ravel(), mc.ravel(), vc.ravel(), n.ravel(), mb.ravel(), vb.ravel(), relative=True
        ).verdict_code
        k = plan // BATCH - 1
        z = (mc[:, k] - mb[:, k]) / np.sqrt(vc[:, k] / plan + vb[:, k] / plan)
        fixed = float((z > stats.norm.isf(0.05)).mean())
        rows.append(power_row(label, codes, runs, looks, plan, fixed))

    proportions("error rate 1% -> 2%", 0.01, 0.02, "higher_is_worse", False)
    proportions("error rate 1% -> 1.5%", 0.01, 0.015, "higher_is_worse", False)
    latency("mean latency +10% (lognormal s=1)", 1.0, 1.1)
    latency("mean latency +20% (lognormal s=1)", 1.0, 1.2)
    # p99 +25% with the median unchanged: sigma grows so that exp(2.326 sigma) rises by 25%;
    # judged as the share of requests above the baseline's p99 (1% -> p_c).
    z99 = stats.norm.isf(0.01)
    sigma_c = 1.0 + math.log(1.25) / z99
    p_c = float(stats.norm.sf(z99 / sigma_c))
    proportions(
        f"p99 latency +25% (share over p99: 1% -> {100 * p_c:.2f}%)",
        0.01,
        p_c,
        "higher_is_worse",
        False,
    )
    proportions("conversion 5% -> 4.75% (-5% rel.)", 0.05, 0.0475, "lower_is_worse", True)
    print_table(
        f"(b) Power, {runs} runs, one-sided sequences at alpha 0.05, look every {BATCH} per arm; "
        "fixed plan = one-sided z at alpha 0.05 with 80% power",
        [
            "scenario",
            "horizon/arm",
            "detected",
            "median n/arm",
            "fixed plan n/arm",
            "fixed power",
            "median/plan",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- (c) rare errors


def rare_table(runs: int) -> None:
    rng = np.random.default_rng(11)
    base_rate = 0.001
    per_batch = 2000
    schedule = [0.05] * 30 + [0.25] * 30 + [0.5] * 40
    rows: list[list[object]] = []
    for ratio in (1.0, 2.0, 3.0):
        results: dict[float, list[tuple[bool, int, int]]] = {a: [] for a in ALPHAS}
        for _ in range(runs):
            tests = {a: RareErrorTest(alpha=a) for a in ALPHAS}
            decided: dict[float, tuple[bool, int, int]] = {}
            requests = errors = 0
            for share in schedule:
                n_c = rng.binomial(per_batch, share)
                s = rng.binomial(n_c, base_rate * ratio)
                f = rng.binomial(per_batch - n_c, base_rate)
                requests += per_batch
                errors += s + f
                for a, t in tests.items():
                    if (
                        a not in decided
                        and t.update(s, f, candidate_share=share).verdict is Verdict.FAIL
                    ):
                        decided[a] = (True, requests, errors)
            for a in ALPHAS:
                results[a].append(decided.get(a, (False, 0, 0)))
        row: list[object] = [f"candidate rate {ratio:g}x baseline", runs]
        for a in ALPHAS:
            hits = [r for r in results[a] if r[0]]
            row.append(pct(len(hits) / runs))
        hits = [r for r in results[0.05] if r[0]]
        if hits and ratio > 1:
            row += [
                f"{np.median([h[1] for h in hits]):,.0f}",
                f"{np.median([h[2] for h in hits]):.0f}",
            ]
        else:
            row += ["-", "-"]
        if ratio == 1.0:
            row.append(_ok([len([r for r in results[a] if r[0]]) / runs for a in ALPHAS], runs))
        else:
            row.append("")
        rows.append(row)
    print_table(
        f"(c) Rare errors: baseline 0.1%, {per_batch} requests per look, candidate share "
        f"5% -> 25% -> 50% ({len(schedule) * per_batch:,} requests); "
        "FAIL rate at alpha 0.05 / 0.01; medians over detected runs at alpha 0.05",
        [
            "scenario",
            "runs",
            "FAIL a=0.05",
            "FAIL a=0.01",
            "median requests",
            "median errors",
            "A/A ok",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    args = parser.parse_args()
    t0 = time.perf_counter()
    if args.quick:
        aa_table(runs=400, looks=200, mwu_runs=50, mwu_every=1000, srm_runs=100)
        power_table(runs=200)
        rare_table(runs=100)
    else:
        aa_table(runs=2000, looks=200, mwu_runs=200, mwu_every=500, srm_runs=500)
        power_table(runs=1000)
        rare_table(runs=1000)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()

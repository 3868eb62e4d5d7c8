"""The demo behind ``python -m safeserve demo``: two canaries of real models, in simulated time.

A fraud-scoring service (the data are generated here with numpy; nothing is downloaded):

- v1, a logistic regression on the raw transaction fields, is in production;
- v2, retrained on engineered features (log amount, a night flag...), is canaried against v1
  and should be promoted through every step;
- v3 is v2 behind a refactored feature pipeline that reads the hour in UTC instead of local
  time (a timezone bug: night-time fraud looks like daytime traffic) and runs 15% slower. It
  raises no error and returns valid scores; only the delayed fraud labels (chargebacks) show
  that it catches less fraud. It is canaried against v2 and must be rolled back on its own.

Both rollouts run through :func:`safeserve.testing.run_drill` under a fake clock, so a
simulated hour takes a few seconds. The models are trained with scikit-learn and served as
the numpy function their coefficients define (checked against ``predict_proba``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

from ._router import Router
from .policy import ErrorRate, Guardrail, Latency, MetricCheck, Policy
from .strategies import Canary
from .testing import Drill, DrillFault, DrillReport, Scenario, SimulationTick, Traffic

__all__ = ["run_demo"]

FIELDS = ("amount", "hour", "distance_km", "merchant_risk", "txn_24h", "card_age_days", "foreign")
#: A transaction is flagged (blocked for review) when its fraud score reaches this.
THRESHOLD = 0.2
STEPS = (5.0, 25.0, 50.0, 100.0)
OUTCOME = "fraud_caught"
INSTALL_HINT = 'pip install -e ".[demo]"'

Array = NDArray[np.float64]


# -- the data -------------------------------------------------------------------------------


def transactions(rng: np.random.Generator, n: int) -> Array:
    """``n`` synthetic card transactions, one row each, columns as in :data:`FIELDS`."""
    return np.column_stack(
        [
            rng.lognormal(3.6, 1.1, n),  # amount in dollars
            rng.uniform(0.0, 24.0, n),  # local hour of day
            rng.lognormal(2.0, 1.3, n),  # distance from home in km
            rng.beta(2.0, 6.0, n),  # merchant risk score
            rng.poisson(3.0, n).astype(np.float64),  # transactions in the last 24 h
            rng.exponential(700.0, n),  # card age in days
            (rng.random(n) < 0.08).astype(np.float64),  # foreign merchant
        ]
    )


def _night(hour: Array) -> Array:
    return ((hour < 6.0) | (hour >= 22.0)).astype(np.float64)


def fraud_probability(X: Array) -> Array:
    """The true chance that each transaction is fraud (the world the models try to learn)."""
    amount, hour, dist, risk, txn, age, foreign = X.T
    logit = (
        -8.6
        + 0.6 * np.log(amount)
        + 2.2 * _night(hour)
        + 0.5 * np.log1p(dist)
        + 6.0 * risk
        + 0.25 * txn
        - 0.4 * np.log1p(age / 30.0)
        + 1.8 * foreign
    )
    out: Array = 1.0 / (1.0 + np.exp(-logit))
    return out


def raw_features(X: Array) -> Array:
    """v1's features: the raw fields."""
    return X


def engineered_features(X: Array) -> Array:
    """v2's features: log amount, a night flag, log distance, log card age."""
    amount, hour, dist, risk, txn, age, foreign = X.T
    return np.column_stack(
        [np.log(amount), _night(hour), np.log1p(dist), risk, txn, np.log1p(age / 30.0), foreign]
    )


def utc_features(X: Array) -> Array:
    """v3's refactored pipeline: v2's features, but it reads the hour in UTC (local + 5 h)."""
    shifted = X.copy()
    shifted[:, 1] = (shifted[:, 1] + 5.0) % 24.0
    return engineered_features(shifted)


# -- the models -----------------------------------------------------------------------------


class Scorer:
    """A fitted scikit-learn pipeline (scaler + logistic regression) served as numpy.

    ``predict_proba`` carries a fixed per-call cost that dwarfs the arithmetic for one row;
    the coefficients fold into one weight vector and a bias, which is what a service would
    export. :meth:`check` verifies the export against ``predict_proba``.
    """

    def __init__(self, pipeline: Any, features: Callable[[Array], Array]) -> None:
        scaler, logreg = pipeline[0], pipeline[-1]
        coef = logreg.coef_[0] / scaler.scale_
        self.w: Array = np.asarray(coef, dtype=np.float64)
        self.b = float(logreg.intercept_[0] - np.dot(scaler.mean_, coef))
        self.pipeline = pipeline
        self.features = features

    def __call__(self, x: Array) -> float:
        """The fraud score of one transaction."""
        z = float(self.features(x[None, :])[0] @ self.w) + self.b
        return 1.0 / (1.0 + math.exp(-z))

    def scores(self, X: Array) -> Array:
        """The fraud scores of many transactions."""
        out: Array = 1.0 / (1.0 + np.exp(-(self.features(X) @ self.w + self.b)))
        return out

    def check(self, X: Array) -> float:
        """Largest gap between the exported scores and ``predict_proba`` on ``X``."""
        sk = self.pipeline.predict_proba(self.features(X))[:, 1]
        return float(np.max(np.abs(sk - self.scores(X))))


def train(seed: int, n: int) -> tuple[Scorer, Scorer, Array, Array]:
    """Train v1 and v2 on generated history; return them and a held-out set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    X = transactions(rng, n)
    y = rng.random(n) < fraud_probability(X)
    half = n // 2
    # v1 was trained on last quarter's data, v2 on this quarter's, with better features.
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    v1.fit(raw_features(X[:half]), y[:half])
    v2 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    v2.fit(engineered_features(X[half:]), y[half:])
    X_test = transactions(rng, 50_000)
    y_test = (rng.random(50_000) < fraud_probability(X_test)).astype(np.float64)
    return Scorer(v1, raw_features), Scorer(v2, engineered_features), X_test, y_test


def recall(scores: Array, y: Array) -> float:
    """Share of the fraud that the scores flag."""
    return float(np.mean(scores[y == 1] >= THRESHOLD))


def chargeback(x: Any, y: Any, variant: str, rng: np.random.Generator) -> float | None:
    """The delayed label: for a fraudulent transaction, 1.0 if it was flagged, else 0.0.

    Legitimate transactions produce no label, so the outcome's mean is the fraud recall.
    """
    p = 1.0 / (1.0 + math.exp(-_logit_one(x)))
    if rng.random() >= p:
        return None
    return 1.0 if float(y) >= THRESHOLD else 0.0


def _logit_one(x: Any) -> float:
    amount, hour, dist, risk, txn, age, foreign = (float(v) for v in x)
    night = 1.0 if hour < 6.0 or hour >= 22.0 else 0.0
    return (
        -8.6
        + 0.6 * math.log(amount)
        + 2.2 * night
        + 0.5 * math.log1p(dist)
        + 6.0 * risk
        + 0.25 * txn
        - 0.4 * math.log1p(age / 30.0)
        + 1.8 * foreign
    )


def policy() -> Policy:
    """The demo's policy: errors, latency, fraud recall from delayed labels, a guardrail."""
    return Policy(
        [
            ErrorRate(margin=0.005),
            # A slower candidate holds the rollout (no promotion); only a >25% slowdown fails.
            Latency(margin=0.10, harm=0.25),
            MetricCheck(
                metric=OUTCOME,
                name="fraud_recall",
                kind="proportion",
                direction="lower_is_worse",
                margin=0.10,
            ),
            Guardrail(metric="error_rate", above=0.2, min_requests=20),
        ]
    )


# -- the runs -------------------------------------------------------------------------------


class _Progress:
    """Prints a line per simulated minute and every decision that changes something."""

    def __init__(self, drill: Drill, out: TextIO, every: float) -> None:
        self.drill = drill
        self.out = out
        self.every = every
        self.next_line = 0.0
        self.seen = 0
        b, c = drill.baseline, drill.candidate
        out.write(
            f"  {'t (s)':>6} {c + ' share':>9} {'requests':>9} {'errors ' + b + '/' + c:>15} "
            f"{'p50 ms ' + b + '/' + c:>15} {'recall ' + b + '/' + c + ' (labels)':>28}\n"
        )

    def __call__(self, tick: SimulationTick) -> None:
        decisions = self.drill.decisions
        new = [d for d in decisions[self.seen :] if d.action.value != "continue"]
        self.seen = len(decisions)
        if tick.time >= self.next_line and not new:
            self.line(tick)
            self.next_line = (tick.time // self.every + 1) * self.every
        for d in new:
            before = d.weights_before[self.drill.candidate]
            after = d.weights_after[self.drill.candidate]
            self.out.write(
                f"  >>> t={d.time:,.0f}s {d.action.value.upper()} {before:g}% -> {after:g}%: "
                f"{d.reason}\n"
            )
        self.out.flush()

    def line(self, tick: SimulationTick) -> None:
        b, c = self.drill.baseline, self.drill.candidate
        m = self.drill.router.status().metrics
        mb, mc = m.variant(b), m.variant(c)

        def p50(v: Any) -> str:
            return f"{v.latency.quantile(0.5) * 1000:.2f}" if v.latency.n else "-"

        def rec(v: Any) -> tuple[str, int]:
            o = v.outcomes.get(OUTCOME)
            return (f"{o.mean:.2f}", o.n) if o is not None and o.n else ("-", 0)

        def err(v: Any) -> str:
            return f"{v.error_rate:.2%}" if v.requests else "-"

        (rb, nb), (rc, nc) = rec(mb), rec(mc)
        self.out.write(
            f"  {tick.time:>6,.0f} {tick.weights.get(c, 0.0):>8g}% {tick.requests:>9,} "
            f"{err(mb):>7}/{err(mc):<7} {p50(mb):>7}/{p50(mc):<7} "
            f"{rb:>9}/{rc:<5} ({nb}/{nc})\n"
        )


def _scenario(
    name: str,
    models: dict[str, Any],
    *,
    users: int,
    seed: int,
    fault: DrillFault | None,
    quick: bool,
) -> Scenario:
    baseline, candidate = list(models)

    def features(rng: np.random.Generator, n: int) -> Array:
        return transactions(rng, n)

    return Scenario(
        models=models,
        strategy=Canary(
            baseline,
            candidate,
            steps=STEPS,  # type: ignore[arg-type]  # attrs converter=tuple types as Iterable[_T_co]
            min_duration=30.0 if quick else 60.0,
            min_samples=500,
            deadline=3600.0,
            evaluate_every=1000,
        ),
        policy=policy(),
        fault=fault,
        traffic=Traffic(
            users=users,
            rate=200.0,
            features=features,
            outcome=chargeback,
            outcome_delay=60.0,
            outcome_name=OUTCOME,
            seed=seed,
        ),
        base_latency=0.002,
        max_requests=1_500_000,
        name=name,
    )


def _run(
    title: str, scenario: Scenario, out: TextIO, log: list[dict[str, Any]]
) -> tuple[DrillReport, Drill, float]:
    out.write(f"\n{title}\n")
    drill = Drill(scenario)
    t0 = time.perf_counter()
    report = drill.run(on_tick=_Progress(drill, out, every=60.0))
    wall = time.perf_counter() - t0
    for d in report.decisions:
        log.append({"run": scenario.name, **d})
    return report, drill, wall


def _cohorts_hold(name: str, users: int) -> bool:
    """The hash contract on this rollout's salt: each step's cohort contains the last one."""
    router = Router(
        {"a": abs, "b": abs}, strategy=Canary(baseline="a", candidate="b", weight=0), name=name
    )
    keys = np.arange(users, dtype=np.int64)
    previous: NDArray[np.bool_] | None = None
    for step in STEPS:
        router.set_weights({"b": step})
        on = np.asarray(router.route_batch(np.zeros(users), keys=keys).variants) == "b"
        if previous is not None and np.any(previous & ~on):
            return False
        previous = on
    return True


def run_demo(
    *,
    users: int = 20_000,
    seed: int = 7,
    out: TextIO,
    log_path: Path | str = "safeserve-demo-decisions.jsonl",
    quick: bool = False,
) -> int:
    """Train two fraud models, then canary a good candidate and a subtly broken one.

    Args:
        users: Simulated card holders.
        seed: Seed of the data, the training and the traffic.
        out: Where to print.
        log_path: Where to write the decision log (JSON lines).
        quick: Shorter bake times (30 s instead of 60 s per step).

    Returns:
        0 when the good candidate was promoted and the broken one rolled back, 1 when not,
        2 when scikit-learn is missing.
    """
    try:
        import sklearn  # noqa: F401
    except ImportError:
        out.write(
            "The demo trains scikit-learn models, and scikit-learn is not installed.\n"
            f"Install the demo's extras and run it again:\n\n    {INSTALL_HINT}\n"
        )
        return 2
    started = time.perf_counter()
    out.write("safeserve demo: canary rollouts of fraud models, judged on live metrics\n\n")
    t0 = time.perf_counter()
    v1, v2, X_test, y_test = train(seed, 40_000)
    v3 = Scorer(v2.pipeline, utc_features)
    gap = max(s.check(X_test[:2000]) for s in (v1, v2, v3))
    recalls = {n: recall(s.scores(X_test), y_test) for n, s in (("v1", v1), ("v2", v2), ("v3", v3))}
    out.write(
        f"Trained v1 (logistic regression, raw fields) and v2 (retrained, engineered features)\n"
        f"on 40,000 generated transactions in {time.perf_counter() - t0:.1f} s; "
        f"{float(y_test.mean()):.1%} are fraud.\n"
        f"v3 = v2 behind a new feature pipeline with a timezone bug, and 15% slower.\n"
        f"Held-out fraud recall at score >= {THRESHOLD}: "
        + ", ".join(f"{n} {r:.1%}" for n, r in recalls.items())
        + f"\n(the served numpy scorers match predict_proba within {gap:.1e}).\n"
        f"Policy: error rate, latency, fraud recall from chargebacks (delayed ~60 s), "
        f"error guardrail. Traffic: {users:,} card holders, 200 transactions/s.\n"
    )
    log: list[dict[str, Any]] = []
    good, good_drill, wall_a = _run(
        "(a) canary of v2 against v1 -- should promote through 5, 25, 50, 100%",
        _scenario(
            "fraud-v2", {"v1": v1, "v2": v2}, users=users, seed=seed, fault=None, quick=quick
        ),
        out,
        log,
    )
    bad, bad_drill, wall_b = _run(
        "(b) canary of v3 against v2 -- has to be rolled back on its own",
        _scenario(
            "fraud-v3",
            {"v2": v2, "v3": v3},
            users=users,
            seed=seed + 1,
            fault=DrillFault(kind="latency", factor=1.15),
            quick=quick,
        ),
        out,
        log,
    )
    path = Path(log_path)
    with path.open("w", encoding="utf-8") as fh:
        for entry in log:
            fh.write(json.dumps(entry) + "\n")
    ok_a = good.phase == "promoted"
    ok_b = bad.rolled_back and bad.final_weights.get("v3", 1.0) == 0.0
    cohorts = _cohorts_hold("fraud-v2", users)

    out.write("\nSummary\n")
    header = (
        f"  {'run':<10} {'outcome':<12} {'steps taken':<22} {'requests':>10} "
        f"{'sim time':>9} {'wall':>6}  {'candidate now':>13}  failing checks"
    )
    out.write(header + "\n  " + "-" * (len(header) + 6) + "\n")
    for label, rep, drill, wall in (
        ("(a) v2", good, good_drill, wall_a),
        ("(b) v3", bad, bad_drill, wall_b),
    ):
        path_taken = [f"{STEPS[0]:g}"] + [
            f"{d['weights_after'][drill.candidate]:g}"
            for d in rep.transitions
            if d["weights_after"][drill.candidate] != d["weights_before"][drill.candidate]
        ]
        out.write(
            f"  {label:<10} {rep.phase.replace('_', ' '):<12} {' -> '.join(path_taken) + '%':<22} "
            f"{rep.requests:>10,} {rep.seconds:>8,.0f}s {wall:>5.1f}s  "
            f"{rep.final_weights[drill.candidate]:>12g}%  {', '.join(rep.failing_checks) or '-'}\n"
        )
    if bad.rolled_back:
        rollback = next(d for d in reversed(bad.decisions) if d["action"] == "rollback")
        out.write(f"\n(b) was rolled back at t={rollback['time']:,.0f}s: {rollback['reason']}\n")
        for c in rollback["checks"]:
            est = c["estimate"]
            shown = "-" if est is None else f"{est:+.1%}"
            out.write(f"    {c['name']:<22} {c['verdict']:<13} change {shown:>8}  {c['reason']}\n")
        out.write(
            f"  {bad.exposed_users:,} card holders met v3 before the rollback; "
            f"v3 now serves 0% of the traffic.\n"
        )
    out.write(
        "\nHash contract: every user who saw the candidate at a lower weight still sees it at "
        "every higher one (5% within 25% within 50% within 100%).\n"
        if cohorts
        else "\nERROR: some users left the candidate while its weight grew.\n"
    )
    out.write(
        f"Decision log ({len(log)} decisions, JSON lines): {path}\n"
        f"Done in {time.perf_counter() - started:.1f} s: "
        f"(a) {'promoted' if ok_a else 'NOT promoted'}, "
        f"(b) {'rolled back' if ok_b else 'NOT rolled back'}.\n"
    )
    return 0 if ok_a and ok_b and cohorts else 1

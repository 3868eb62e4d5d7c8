"""Rollback drills: run a canary against simulated traffic, break the candidate, measure."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
import numpy as np
from numpy.typing import NDArray

from .._errors import ConfigError
from .._rollout import Phase
from .._router import Router
from ..policy import Action, Decision, Policy
from ..strategies import Canary
from ._clock import FakeClock
from ._faults import (
    Fault,
    InjectedError,
    add_latency,
    corrupt_outputs,
    drop_accuracy,
    hang,
    inject_errors,
)
from ._traffic import Outcome, SimulationTick, TrafficSimulator

__all__ = [
    "Drill",
    "DrillConfig",
    "DrillFault",
    "DrillReport",
    "Scenario",
    "Traffic",
    "run_drill",
    "synthetic_models",
    "synthetic_outcome",
]

Model = Callable[[Any], Any]
Validator = Callable[[Any], bool]
Models = Mapping[str, Model] | Callable[[FakeClock], Mapping[str, Model]]
FaultKind = Literal["errors", "latency", "corrupt", "accuracy", "hang"]
FAULT_KINDS: tuple[str, ...] = ("errors", "latency", "corrupt", "accuracy", "hang")

#: Weights of the built-in synthetic model: fraud probability = sigmoid(x @ W + B).
_W = np.array([1.5, -1.0, 0.5, 0.0])
_B = -0.5


def _sigmoid(z: Any) -> Any:
    return 1.0 / (1.0 + np.exp(-z))


def _synthetic_one(x: Any) -> float:
    """The synthetic model on one feature row: a probability in (0, 1)."""
    z = 1.5 * x[0] - x[1] + 0.5 * x[2] + _B
    return float(1.0 / (1.0 + math.exp(-z)))


def _synthetic_batch(X: Any) -> NDArray[np.float64]:
    """The synthetic model on a batch of rows."""
    out: NDArray[np.float64] = _sigmoid(np.asarray(X)[:, :4] @ _W + _B)
    return out


def synthetic_models(*, batch: bool = False) -> dict[str, Model]:
    """The two built-in models of a drill: a baseline and an identical candidate.

    Both score a request of (at least) 4 standard-normal features as a probability
    ``sigmoid(1.5*x0 - x1 + 0.5*x2 - 0.5)``, the same formula the true label is drawn from in
    :func:`synthetic_outcome`, so they are calibrated and equally good. A drill breaks the
    candidate with a :class:`DrillFault`. They are what a TOML drill runs
    (``python -m safeserve drill``), since a TOML file cannot hold a model.

    Args:
        batch: Return models that take a 2-D array of rows (for ``Traffic(batch=...)``).

    Returns:
        ``{"baseline": model, "candidate": model}``.

    >>> from safeserve.testing import synthetic_models
    >>> models = synthetic_models()
    >>> round(models["baseline"]([0.0, 0.0, 0.0, 0.0]), 4), sorted(models)
    (0.3775, ['baseline', 'candidate'])
    """
    model = _synthetic_batch if batch else _synthetic_one

    def baseline(x: Any) -> Any:
        return model(x)

    def candidate(x: Any) -> Any:
        return model(x)

    return {"baseline": baseline, "candidate": candidate}


def _correct(x: Any, y: Any, rng: np.random.Generator) -> float:
    p = _synthetic_one(x)
    label = rng.random() < p
    try:
        flagged = float(y) >= 0.5
    except (TypeError, ValueError):
        return 0.0
    return 1.0 if flagged == label else 0.0


def _synthetic_outcome(x: Any, y: Any, variant: str, rng: np.random.Generator) -> float | None:
    return _correct(x, y, rng)


def _synthetic_outcome_batch(
    X: Any, Y: Any, variants: Any, rng: np.random.Generator
) -> NDArray[np.float64]:
    p = _synthetic_batch(X)
    label = rng.random(len(p)) < p
    y = np.asarray(Y, dtype=np.float64)
    flagged = np.nan_to_num(y, nan=0.0) >= 0.5
    out: NDArray[np.float64] = (flagged == label).astype(np.float64)
    return out


_synthetic_outcome.batch = _synthetic_outcome_batch  # type: ignore[attr-defined]

#: ``outcome(x, y, variant, rng)`` for the synthetic models: 1.0 when the answer was right.
#:
#: The true label of a request is drawn as ``rng.random() < sigmoid(1.5*x0 - x1 + 0.5*x2 -
#: 0.5)``; the outcome is 1.0 when the model's answer (flagged when ``y >= 0.5``) matches it,
#: else 0.0. Both synthetic models are right about 73% of the time; a
#: ``DrillFault("accuracy", ...)`` lowers the candidate's share. It has a ``batch`` form for
#: batch-mode traffic.
#:
#: >>> import numpy as np
#: >>> from safeserve.testing import synthetic_outcome
#: >>> synthetic_outcome([3.0, 0.0, 0.0, 0.0], 0.9, "candidate", np.random.default_rng(0))
#: 1.0
synthetic_outcome: Outcome = _synthetic_outcome


# -- configuration ------------------------------------------------------------------------


def _number(name: str, value: object, *, low: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    ok = v > low if strict else v >= low
    if not (math.isfinite(v) and ok):
        raise ConfigError(
            f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}"
        )
    return v


def _int(name: str, value: object, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    return value


@attrs.frozen(kw_only=True)
class DrillFault:
    """The fault a drill injects into the candidate, and when it appears.

    The fault is switched on at the first request after ``start`` simulated seconds, once the
    rollout has reached step ``at_step`` (when given; step 0 is the first canary step). From
    then on a seeded share ``rate`` of the candidate's requests is hit:

    - ``"errors"``: the request raises (:func:`inject_errors`);
    - ``"latency"``: the request takes ``seconds`` longer and/or ``factor`` times as long
      (:func:`add_latency`);
    - ``"corrupt"``: the output is replaced by ``value`` (NaN by default,
      :func:`corrupt_outputs`); give the router a validator such as ``ss.is_finite`` so that
      it counts as an error;
    - ``"accuracy"``: the answer is wrong but valid (:func:`drop_accuracy`, with ``labels`` or
      ``shift``); only delayed outcomes reveal it;
    - ``"hang"``: the request stalls ``seconds`` (:func:`hang`).

    Args:
        kind: One of the kinds above.
        rate: Share of the candidate's requests hit while the fault is on.
        seconds: Extra seconds (``latency``) or the stall (``hang``).
        factor: Latency multiplier (``latency``), at least 1.
        value: What a corrupted output becomes (``corrupt``).
        labels: The class labels (``accuracy``), when not 0/1 or bools.
        shift: Added to a hit score instead of ``1 - score`` (``accuracy``).
        start: Simulated seconds after the drill starts before the fault may appear.
        at_step: Rollout step index the canary must have reached first (None: any step).
        seed: Seed of the draws that pick the requests hit.

    Raises:
        ConfigError: for an unknown kind or an option the injector rejects.

    >>> from safeserve.testing import DrillFault
    >>> DrillFault(kind="errors", rate=0.05, at_step=1).describe()
    'errors rate=0.05 from step 1'
    """

    kind: FaultKind
    rate: float = 1.0
    seconds: float | None = None
    factor: float | None = None
    value: Any = math.nan
    labels: tuple[Any, ...] | None = None
    shift: float | None = None
    start: float = 0.0
    at_step: int | None = None
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ConfigError(f"fault kind must be one of {list(FAULT_KINDS)!r}, got {self.kind!r}")
        _number("start", self.start)
        if self.at_step is not None:
            _int("at_step", self.at_step, low=0)
        if self.kind == "hang" and self.seconds is None:
            raise ConfigError("a 'hang' fault needs seconds=")
        for name, value in (("seconds", self.seconds), ("factor", self.factor)):
            if value is not None and self.kind not in ("latency", "hang"):
                raise ConfigError(f"{name}={value!r} applies to 'latency' or 'hang' faults only")
        self.wrap(lambda x: x, clock=FakeClock())  # the injector validates the rest

    def wrap(self, model: Model, *, clock: FakeClock, batch: bool = False) -> Fault:
        """Wrap ``model`` with this fault, switched off until :meth:`Fault.activate`.

        Args:
            model: The candidate model.
            clock: The drill's clock.
            batch: Whether the model is called with batches of rows.

        Returns:
            The wrapped model.
        """
        common: dict[str, Any] = {
            "rate": self.rate,
            "clock": clock,
            "seed": self.seed,
            "batch": batch,
            "active": False,
        }
        if self.kind == "errors":
            return inject_errors(model, **common)
        if self.kind == "latency":
            return add_latency(model, self.seconds, factor=self.factor, **common)
        if self.kind == "corrupt":
            return corrupt_outputs(model, value=self.value, **common)
        if self.kind == "accuracy":
            return drop_accuracy(model, labels=self.labels, shift=self.shift, **common)
        return hang(model, self.seconds, **common)  # type: ignore[arg-type]

    def describe(self) -> str:
        """A short description, e.g. ``'latency seconds=0.02 rate=1 from t=60s'``."""
        parts: list[str] = [self.kind]
        if self.seconds is not None:
            parts.append(f"seconds={self.seconds:g}")
        if self.factor is not None:
            parts.append(f"factor={self.factor:g}")
        parts.append(f"rate={self.rate:g}")
        if self.start:
            parts.append(f"from t={self.start:g}s")
        if self.at_step is not None:
            parts.append(f"from step {self.at_step}")
        return " ".join(parts)


@attrs.frozen(kw_only=True)
class Traffic:
    """The simulated traffic of a drill: the options of :class:`TrafficSimulator`.

    Args:
        users: Distinct users (Zipf repeat visits by default).
        rate: Mean requests per simulated second.
        repeat_visits: ``"zipf"`` or ``"uniform"``.
        exponent: The Zipf exponent.
        features: Standard-normal features per request, or ``features(rng, n)``.
        outcome: ``outcome(x, y, variant, rng) -> float | None``, the delayed outcome of a
            request (e.g. :func:`synthetic_outcome`), or None for no outcomes.
        outcome_delay: Mean seconds until an outcome arrives (exponential), or
            ``delay(rng) -> seconds``.
        outcome_name: The name outcomes are recorded under (what a ``MetricCheck`` names).
        seed: Seed of the arrivals, users, features and outcomes.
        batch: Serve in batches of this size with ``route_batch`` (models then take 2-D
            arrays), or None to serve one request at a time.

    >>> from safeserve.testing import Traffic
    >>> Traffic(rate=50.0).users
    10000
    """

    users: int = 10_000
    rate: float = 100.0
    repeat_visits: Literal["zipf", "uniform"] = "zipf"
    exponent: float = 0.6
    features: Any = 4
    outcome: Outcome | None = None
    outcome_delay: Any = 30.0
    outcome_name: str = "correct"
    seed: int = 0
    batch: int | None = None

    def __attrs_post_init__(self) -> None:
        self.simulator(_Inert(), FakeClock())  # the simulator validates every option

    def simulator(self, router: Any, clock: FakeClock) -> TrafficSimulator:
        """Build the :class:`TrafficSimulator` for ``router`` (validates every option)."""
        return TrafficSimulator(
            router,
            clock=clock,
            users=self.users,
            repeat_visits=self.repeat_visits,
            exponent=self.exponent,
            features=self.features,
            rate=self.rate,
            outcome=self.outcome,
            outcome_delay=self.outcome_delay,
            outcome_name=self.outcome_name,
            seed=self.seed,
            batch=self.batch,
        )


class _Inert:
    """Stands in for a router while a :class:`Traffic` checks its options."""

    def route(self, x: Any, *, key: Any = None) -> Any:
        raise TypeError("not a router")


def _models(value: Any) -> Any:
    if value is None or callable(value) or isinstance(value, Mapping):
        return value
    raise ConfigError(f"models must be a mapping of name -> model or a factory, got {value!r}")


@attrs.frozen(kw_only=True)
class Scenario:
    """Everything a rollback drill needs: models, rollout, policy, fault, traffic and bounds.

    Args:
        models: Variant name -> model, or ``factory(clock) -> mapping`` when the models need
            the drill's :class:`FakeClock`; None: :func:`synthetic_models`.
        strategy: The canary; by default ``ss.Canary(first, second)`` over the first two
            models, with the library's default steps and bake times.
        policy: The rollout policy; None: the library's default checks.
        fault: What breaks in the candidate, and when; None: nothing (the candidate as
            given is what the drill judges, from the start).
        traffic: The simulated traffic.
        validators: Variant name -> output validator, as for :class:`safeserve.Router`.
        base_latency: Median seconds every model takes under the fake clock (log-normal,
            sigma 0.25, drawn per request), so that latency checks have something to
            compare; None: the models' own use of the clock only.
        base_error_rate: Share of requests every model fails, fault or not (a background of
            errors, so that error checks compare two non-zero rates). A baseline's error
            reaches the simulator, which counts it as ``raised``, as a service returns a 500.
        max_requests: Stop after this many requests (None: no bound).
        max_seconds: Stop after this many simulated seconds (None: no bound).
        tick_every: Requests between the drill's looks (an evaluation, the stop test and the
            ``on_tick`` hook); None: the strategy's ``evaluate_every``.
        name: The rollout's name.

    Raises:
        ConfigError: for a bad option, or when neither bound is given.

    >>> from safeserve.testing import DrillFault, Scenario
    >>> s = Scenario(fault=DrillFault(kind="errors", rate=0.05), max_requests=50_000)
    >>> s.variants()
    ('baseline', 'candidate')
    """

    models: Models | None = attrs.field(default=None, converter=_models)
    strategy: Canary | None = None
    policy: Policy | None = None
    fault: DrillFault | None = None
    traffic: Traffic = attrs.field(factory=Traffic)
    validators: Mapping[str, Validator] | None = None
    base_latency: float | None = 0.005
    base_error_rate: float = 0.0
    max_requests: int | None = 100_000
    max_seconds: float | None = None
    tick_every: int | None = None
    name: str = "drill"

    def __attrs_post_init__(self) -> None:
        if self.strategy is not None and not isinstance(self.strategy, Canary):
            raise ConfigError(f"strategy must be a safeserve.Canary, got {self.strategy!r}")
        if self.policy is not None and not isinstance(self.policy, Policy):
            raise ConfigError(f"policy must be a safeserve.Policy, got {self.policy!r}")
        if self.fault is not None and not isinstance(self.fault, DrillFault):
            raise ConfigError(f"fault must be a DrillFault, got {self.fault!r}")
        if not isinstance(self.traffic, Traffic):
            raise ConfigError(f"traffic must be a Traffic, got {self.traffic!r}")
        if self.base_latency is not None:
            _number("base_latency", self.base_latency, strict=True)
        if (
            isinstance(self.base_error_rate, bool)
            or not isinstance(self.base_error_rate, int | float)
            or not 0.0 <= self.base_error_rate < 1.0
        ):
            raise ConfigError(f"base_error_rate must be in [0, 1), got {self.base_error_rate!r}")
        if self.max_requests is None and self.max_seconds is None:
            raise ConfigError("a drill needs max_requests= or max_seconds= to bound it")
        if self.max_requests is not None:
            _int("max_requests", self.max_requests, low=1)
        if self.max_seconds is not None:
            _number("max_seconds", self.max_seconds, strict=True)
        if self.tick_every is not None:
            _int("tick_every", self.tick_every, low=1)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"name must be a non-empty str, got {self.name!r}")
        if self.strategy is None and isinstance(self.models, Mapping) and len(self.models) < 2:
            raise ConfigError(f"a drill needs two models, got {list(self.models)!r}")

    def variants(self) -> tuple[str, str]:
        """The baseline's and the candidate's names."""
        if self.strategy is not None:
            return self.strategy.baseline, self.strategy.candidate
        if isinstance(self.models, Mapping):
            first, second = list(self.models)[:2]
            return first, second
        return "baseline", "candidate"


# -- the report ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DrillReport:
    """What a rollback drill measured, as plain data (``to_dict`` is JSON-ready).

    Times are simulated seconds on the drill's clock, which starts at 0.

    Attributes:
        name: The rollout's name.
        fault: The fault's description, or None for a drill without a fault.
        rolled_back: Whether the rollout ended rolled back (or aborted).
        phase: The final phase (``"rolled_back"``, ``"promoted"``, ``"progressing"``...).
        stop_reason: Why the drill stopped: ``"rolled_back"``, ``"promoted"``,
            ``"max_requests"`` or ``"max_seconds"``.
        fault_started: Whether the fault was switched on (a drill without a fault counts as
            started at time 0).
        fault_started_at: When it was switched on (None if never).
        rolled_back_at: When the rollback decision was taken (None if none).
        seconds_to_rollback: From the fault's start to the rollback (None: no rollback after
            the fault started).
        requests_to_rollback: Requests of all variants served from the fault's start until
            the rollback took effect.
        exposed_users: Distinct users routed to the candidate while the fault was on.
        faulty_requests: Requests routed to the candidate while the fault was on.
        faults: Requests the fault actually hit.
        requests: Requests sent in the whole drill.
        seconds: Simulated seconds the drill spanned.
        final_weights: Percent of traffic per variant at the end.
        rollback_reason: The rollback decision's reason.
        failing_checks: The checks that failed in the rollback decision.
        decisions: Every decision of the rollout (``Decision.to_dict``), oldest first.

    >>> from safeserve.testing import DrillFault, Scenario, run_drill
    >>> report = run_drill(Scenario(fault=DrillFault(kind="errors", rate=0.3), max_requests=5000))
    >>> report.rolled_back, report.failing_checks
    (True, ('error_rate', 'error_rate_guardrail'))
    >>> report.assert_rolled_back(within_requests=2000)
    """

    name: str
    fault: str | None
    rolled_back: bool
    phase: str
    stop_reason: str
    fault_started: bool
    fault_started_at: float | None
    rolled_back_at: float | None
    seconds_to_rollback: float | None
    requests_to_rollback: int | None
    exposed_users: int
    faulty_requests: int
    faults: int
    requests: int
    seconds: float
    final_weights: dict[str, float]
    rollback_reason: str | None
    failing_checks: tuple[str, ...]
    decisions: tuple[dict[str, Any], ...]

    @property
    def transitions(self) -> tuple[dict[str, Any], ...]:
        """The decisions that changed something (every action but ``continue``)."""
        return tuple(d for d in self.decisions if d["action"] != "continue")

    @property
    def rolled_back_before_fault(self) -> bool:
        """True when the rollout rolled back before the fault started (a false alarm)."""
        return self.rolled_back and self.requests_to_rollback is None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serializable data."""
        out = attrs.asdict(self, recurse=False)
        out["failing_checks"] = list(self.failing_checks)
        out["decisions"] = list(self.decisions)
        out["final_weights"] = dict(self.final_weights)
        return out

    def to_json(self, **kw: Any) -> str:
        """The report as a JSON document (keyword arguments go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kw)

    def summary(self) -> str:
        """A few lines a person can read."""
        lines = [
            f"drill {self.name!r}: fault {self.fault or 'none'}",
            f"  outcome: {self.phase} ({self.stop_reason}) after {self.requests:,} requests "
            f"and {self.seconds:,.1f} simulated seconds",
        ]
        if self.fault_started_at is not None:
            lines.append(f"  fault on at t={self.fault_started_at:,.1f}s")
        if self.rolled_back_before_fault:
            lines.append(f"  ROLLED BACK BEFORE THE FAULT STARTED: {self.rollback_reason}")
        elif self.rolled_back:
            lines.append(
                f"  rolled back at t={self.rolled_back_at:,.1f}s: "
                f"{self.seconds_to_rollback:,.1f} s and {self.requests_to_rollback:,} requests "
                f"after the fault started"
            )
            lines.append(f"  failing checks: {', '.join(self.failing_checks) or '-'}")
            lines.append(f"  reason: {self.rollback_reason}")
        if self.fault is None:
            lines.append(
                f"  served by the candidate: {self.exposed_users:,} users, "
                f"{self.faulty_requests:,} requests"
            )
        else:
            lines.append(
                f"  exposed to the faulty candidate: {self.exposed_users:,} users, "
                f"{self.faulty_requests:,} requests ({self.faults:,} hit by the fault)"
            )
        return "\n".join(lines)

    def _fail(self, what: str) -> None:
        recent = [
            f"t={d['time']:.1f}s {d['action']}: {d['reason']}" for d in self.transitions[-3:]
        ] or ["(no transition)"]
        raise AssertionError(f"{what}\n{self.summary()}\n  last transitions: " + "; ".join(recent))

    def assert_rolled_back(
        self,
        *,
        within_requests: int | None = None,
        within_seconds: float | None = None,
        max_exposed_users: int | None = None,
    ) -> None:
        """Assert the rollout rolled back after the fault started, within the bounds given.

        Args:
            within_requests: At most this many requests from the fault's start to the rollback.
            within_seconds: At most this many simulated seconds from the fault's start.
            max_exposed_users: At most this many distinct users routed to the faulty candidate.

        Raises:
            AssertionError: naming the bound missed, with the drill's summary.
        """
        if not self.rolled_back:
            if not self.fault_started:
                self._fail(f"the fault never started, and the rollout ended {self.phase!r}")
            self._fail(f"the rollout did not roll back: it ended {self.phase!r}")
        if self.rolled_back_before_fault:
            self._fail("the rollout rolled back before the fault started (a false rollback)")
        assert self.requests_to_rollback is not None
        assert self.seconds_to_rollback is not None
        if within_requests is not None and self.requests_to_rollback > within_requests:
            self._fail(
                f"the rollback took {self.requests_to_rollback:,} requests after the fault "
                f"started, more than the bound {within_requests:,}"
            )
        if within_seconds is not None and self.seconds_to_rollback > within_seconds:
            self._fail(
                f"the rollback took {self.seconds_to_rollback:,.1f} simulated seconds after the "
                f"fault started, more than the bound {within_seconds:,}"
            )
        if max_exposed_users is not None and self.exposed_users > max_exposed_users:
            self._fail(
                f"{self.exposed_users:,} users met the faulty candidate, more than the bound "
                f"{max_exposed_users:,}"
            )

    def assert_promoted(self) -> None:
        """Assert the candidate was promoted to 100% and became the stable version.

        Raises:
            AssertionError: with the drill's summary.
        """
        if self.phase != Phase.PROMOTED.value:
            self._fail(f"the candidate was not promoted: the rollout ended {self.phase!r}")

    def assert_not_rolled_back(self) -> None:
        """Assert the rollout never rolled back (it promoted, or is still progressing).

        Raises:
            AssertionError: with the rollback's reason.
        """
        if self.rolled_back or any(d["action"] == "rollback" for d in self.decisions):
            self._fail("the rollout rolled back")


# -- running a drill ----------------------------------------------------------------------


class _Flaky:
    """A model that fails a share of its requests *after* doing the work (and taking the time).

    Background errors in a drill: unlike :func:`inject_errors`, whose requests fail before the
    model runs, these take the model's latency, so that they do not pull a variant's latency
    down.
    """

    def __init__(self, model: Model, rate: float, *, seed: int, batch: bool) -> None:
        self.model = model
        self.rate = rate
        self.batch = batch
        self._rng = np.random.default_rng(seed)

    def __call__(self, x: Any) -> Any:
        y = self.model(x)
        n = len(x) if self.batch else 1
        if (self._rng.random(n) < self.rate).any():
            raise InjectedError(f"background error (rate={self.rate:g})")
        return y


class _Watch:
    """Stands between the simulator and the router: switches the fault on, measures.

    It sees every request, so it switches the fault on at the first request that meets the
    fault's time and step conditions, counts the requests and users the faulty candidate
    served, and notes the request count at which a rollback took effect.
    """

    def __init__(self, drill: Drill) -> None:
        self._drill = drill
        self._router = drill.router
        self._clock = drill.clock
        self._candidate = drill.candidate
        spec = drill.scenario.fault
        self._fault = drill.fault
        self._start = spec.start if spec is not None else 0.0
        self._at_step = spec.at_step if spec is not None else None
        self._step: int | None = 0
        self._version = self._router.version
        self.pending = self._fault is not None
        self.on = not self.pending
        self.started_at: float | None = None if self.pending else self._clock()
        self.requests = 0
        self.start_requests = 0
        self.faulty = 0
        self.exposed = np.zeros(drill.scenario.traffic.users, dtype=np.bool_)
        self.rollback_requests: int | None = None
        self.done = False
        self.decisions: list[Decision] = []
        self._route = self._router.route
        self._route_batch = self._router.route_batch

    # What the simulator reads from a router.
    @property
    def weights(self) -> dict[str, float]:
        return self._router.weights

    @property
    def version(self) -> int:
        return self._router.version

    def record_outcome(self, request_id: int, name: str, value: float) -> Any:
        return self._router.record_outcome(request_id, name, value)

    def evaluate(self) -> Decision:
        decision = self._router.evaluate()
        self._changed()
        self.poll()
        return decision

    def _arm(self) -> None:
        if self._clock() < self._start:
            return
        if self._at_step is not None and (self._step is None or self._step < self._at_step):
            return
        if self.done:  # rolled back or promoted before the fault could start
            self.pending = False
            return
        assert self._fault is not None
        self._fault.activate()
        self.pending = False
        self.on = True
        self.started_at = self._clock()
        self.start_requests = self.requests

    def route(self, x: Any, *, key: Any = None) -> Any:
        if self.pending:
            self._arm()
        self.requests += 1
        on = self.on
        try:
            r = self._route(x, key=key)
        finally:
            if self._router.version != self._version:
                self._changed()
        if on and r.variant == self._candidate:
            self.faulty += 1
            self.exposed[key] = True
        return r

    def route_batch(self, X: Any, *, keys: Any = None) -> Any:
        if self.pending:
            self._arm()
        self.requests += len(X)
        on = self.on
        try:
            rb = self._route_batch(X, keys=keys)
        finally:
            if self._router.version != self._version:
                self._changed()
        if on:
            hit = np.asarray(rb.variants) == self._candidate
            self.faulty += int(hit.sum())
            self.exposed[np.asarray(keys)[hit]] = True
        return rb

    def _changed(self) -> None:
        """The routing table changed (or an evaluation ran): read the rollout's state."""
        self._version = self._router.version
        st = self._router.status()
        self._step = st.step
        if st.phase in (Phase.ROLLED_BACK, Phase.ABORTED):
            if self.rollback_requests is None and self.on:
                self.rollback_requests = self.requests - self.start_requests
            self.on = False
            self.pending = False
            self.done = True
        elif st.phase is Phase.PROMOTED:
            self.done = True
        self._merge(st.decisions)

    def poll(self) -> None:
        """Collect the decisions taken since the last poll."""
        self._merge(self._router.status().decisions)

    def _merge(self, history: tuple[Any, ...]) -> None:
        if not history:
            return
        known = self.decisions
        if known:
            last = known[-1]
            for i in range(len(history) - 1, -1, -1):
                if history[i] is last:
                    known.extend(history[i + 1 :])
                    return
        known.extend(history)


class Drill:
    """A rollback drill, built and ready to run: the clock, the models, the router, the traffic.

    Build it from a :class:`Scenario`, look at (or adjust) :attr:`router` and
    :attr:`simulator`, then :meth:`run` it. :func:`run_drill` does both at once.

    Attributes:
        scenario: The scenario.
        clock: The drill's :class:`FakeClock` (starts at 0).
        router: The :class:`safeserve.Router` under test.
        simulator: The :class:`TrafficSimulator` that drives it.
        fault: The injector wrapped around the candidate, or None.
        baseline: The baseline's name.
        candidate: The candidate's name.

    Raises:
        ConfigError: when the models, the strategy and the validators do not fit together.

    >>> from safeserve.testing import Drill, Scenario
    >>> drill = Drill(Scenario(max_requests=3000))
    >>> drill.router.weights
    {'baseline': 95.0, 'candidate': 5.0}
    >>> drill.run().stop_reason
    'max_requests'
    """

    def __init__(self, scenario: Scenario) -> None:
        if not isinstance(scenario, Scenario):
            raise ConfigError(f"a drill runs a Scenario, got {scenario!r}")
        self.scenario = scenario
        self.clock = FakeClock()
        batch = scenario.traffic.batch is not None
        models = scenario.models
        if models is None:
            models = synthetic_models(batch=batch)
        elif not isinstance(models, Mapping):
            models = models(self.clock)
            if not isinstance(models, Mapping):
                raise ConfigError(f"the models factory must return a mapping, got {models!r}")
        models = dict(models)
        if scenario.strategy is None:
            if len(models) < 2:
                raise ConfigError(f"a drill needs two models, got {list(models)!r}")
            first, second = list(models)[:2]
            strategy = Canary(first, second)
        else:
            strategy = scenario.strategy
        self.baseline, self.candidate = strategy.baseline, strategy.candidate
        for role, vname in (("baseline", self.baseline), ("candidate", self.candidate)):
            if vname not in models:
                raise ConfigError(f"{role} {vname!r} is not one of the models {list(models)!r}")
        if scenario.base_latency is not None:
            seeds = np.random.SeedSequence([scenario.traffic.seed, 7]).generate_state(len(models))
            median = math.log(scenario.base_latency)

            def draw(rng: np.random.Generator) -> float:
                return float(rng.lognormal(median, 0.25))

            models = {
                n: add_latency(m, draw, clock=self.clock, seed=int(s), batch=batch)
                for (n, m), s in zip(models.items(), seeds, strict=True)
            }
        if scenario.base_error_rate > 0.0:
            seeds = np.random.SeedSequence([scenario.traffic.seed, 11]).generate_state(len(models))
            models = {
                n: _Flaky(m, scenario.base_error_rate, seed=int(s), batch=batch)
                for (n, m), s in zip(models.items(), seeds, strict=True)
            }
        self.fault: Fault | None = None
        if scenario.fault is not None:
            self.fault = scenario.fault.wrap(models[self.candidate], clock=self.clock, batch=batch)
            models[self.candidate] = self.fault
        self.router = Router(
            models,
            strategy=strategy,
            policy=scenario.policy,
            clock=self.clock,
            name=scenario.name,
            validators=scenario.validators,
        )
        self._watch = _Watch(self)
        self.simulator = scenario.traffic.simulator(self._watch, self.clock)
        self.tick_every = scenario.tick_every or min(strategy.evaluate_every, 1000)
        self._report: DrillReport | None = None

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The rollout's decisions collected so far, oldest first (updated at every look)."""
        return tuple(self._watch.decisions)

    def run(self, *, on_tick: Callable[[SimulationTick], None] | None = None) -> DrillReport:
        """Send the traffic until the rollout ends (rolled back or promoted) or a bound is hit.

        Args:
            on_tick: Called with the simulator's :class:`SimulationTick` at every look, after
                the evaluation (e.g. to print progress; :attr:`decisions` is up to date).

        Returns:
            The :class:`DrillReport`.

        Raises:
            ConfigError: when the drill has already run.
        """
        if self._report is not None:
            raise ConfigError("this drill has already run; build a new Drill to run again")
        s = self.scenario
        watch = self._watch
        result = self.simulator.run(
            s.max_requests,
            seconds=s.max_seconds,
            until=lambda _: watch.done,
            on_tick=on_tick,
            tick_every=self.tick_every,
        )
        watch.poll()
        self._report = self._build_report(result.stop_reason, result.requests, result.seconds)
        return self._report

    def _build_report(self, stop: str, requests: int, seconds: float) -> DrillReport:
        watch = self._watch
        st = self.router.status()
        rolled_back = st.phase in (Phase.ROLLED_BACK, Phase.ABORTED)
        rollback: Decision | None = None
        for d in reversed(watch.decisions):
            if d.action in (Action.ROLLBACK, Action.ABORT):
                rollback = d
                break
        if stop == "until":
            stop = "rolled_back" if rolled_back else st.phase.value
        else:
            stop = f"max_{stop}"
        started = watch.started_at
        after_fault = rollback is not None and watch.rollback_requests is not None
        failing = (
            tuple(
                c.name
                for c in rollback.checks
                if c.verdict.value == "fail" and c.critical and not c.dry_run
            )
            if rollback is not None
            else ()
        )
        return DrillReport(
            name=self.scenario.name,
            fault=self.scenario.fault.describe() if self.scenario.fault is not None else None,
            rolled_back=rolled_back,
            phase=st.phase.value,
            stop_reason=stop,
            fault_started=started is not None,
            fault_started_at=started,
            rolled_back_at=rollback.time if rollback is not None else None,
            seconds_to_rollback=(
                rollback.time - started
                if after_fault and rollback is not None and started is not None
                else None
            ),
            requests_to_rollback=watch.rollback_requests if after_fault else None,
            exposed_users=int(watch.exposed.sum()),
            faulty_requests=watch.faulty,
            faults=self.fault.faults if self.fault is not None else 0,
            requests=requests,
            seconds=seconds,
            final_weights=dict(st.weights),
            rollback_reason=rollback.reason if rollback is not None else None,
            failing_checks=failing,
            decisions=tuple(d.to_dict() for d in watch.decisions),
        )


def run_drill(
    scenario: Scenario, *, on_tick: Callable[[SimulationTick], None] | None = None
) -> DrillReport:
    """Run a rollback drill: build the :class:`Drill` of ``scenario`` and run it.

    The drill builds a :class:`FakeClock`, the models (with ``base_latency``), wraps the
    candidate in the scenario's fault (switched off), builds the router with the canary and
    the policy, and sends simulated traffic until the rollout rolls back or promotes, or a
    bound is hit. The fault is switched on at the first request that meets its ``start`` and
    ``at_step`` conditions; the report measures from that moment.

    Args:
        scenario: What to run.
        on_tick: Called at every look with the :class:`SimulationTick`.

    Returns:
        The :class:`DrillReport`.

    >>> from safeserve.testing import DrillFault, Scenario, run_drill
    >>> report = run_drill(Scenario(fault=DrillFault(kind="latency", seconds=0.005, start=60)))
    >>> report.rolled_back, report.failing_checks, report.requests_to_rollback
    (True, ('latency',), 930)
    """
    return Drill(scenario).run(on_tick=on_tick)


for _cls in (Drill, DrillFault, DrillReport, Scenario, Traffic):
    _cls.__module__ = "safeserve.testing"
del _cls


# -- drills from a configuration file ---------------------------------------------------------

_SECTIONS = (
    "name",
    "models",
    "canary",
    "policy",
    "fault",
    "traffic",
    "validators",
    "limits",
    "expect",
)
_MODEL_KEYS = ("baseline", "candidate", "base_latency", "base_error_rate")
_CANARY_KEYS = (
    "steps",
    "min_duration",
    "min_samples",
    "deadline",
    "on_deadline",
    "evaluate_every",
    "evaluate_interval",
)
_POLICY_KEYS = ("checks", "alpha", "failure_limit", "consecutive", "correction", "tuning")
_FAULT_KEYS = (
    "kind",
    "rate",
    "seconds",
    "factor",
    "value",
    "labels",
    "shift",
    "start",
    "at_step",
    "seed",
)
_TRAFFIC_KEYS = (
    "users",
    "rate",
    "repeat_visits",
    "exponent",
    "features",
    "outcome",
    "outcome_delay",
    "outcome_name",
    "seed",
    "batch",
)
_LIMIT_KEYS = ("max_requests", "max_seconds", "tick_every")
_EXPECT_KEYS = ("rollback", "within_requests", "within_seconds", "max_exposed_users")


def _table(config: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    value = config.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{key}] must be a table, got {value!r}")
    for k in value:
        if k not in allowed:
            raise ConfigError(f"unknown key {key}.{k} (known: {', '.join(allowed)})")
    return dict(value)


def _import(where: str, spec: object) -> Any:
    import importlib

    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(f'{where} must be "synthetic" or "package.module:name", got {spec!r}')
    module, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where} = {spec!r} cannot be imported: {e}") from None
    if not callable(obj):
        raise ConfigError(f"{where} = {spec!r} is not callable")
    return obj


def _check_from(i: int, entry: object) -> Any:
    from .. import policy as p

    kinds: dict[str, Any] = {
        "error_rate": p.ErrorRate,
        "latency": p.Latency,
        "latency_quantile": p.LatencyQuantile,
        "metric": p.MetricCheck,
        "guardrail": p.Guardrail,
        "srm": p.SRM,
    }
    where = f"policy.checks[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table, got {entry!r}")
    options = dict(entry)
    kind = options.pop("check", None)
    if kind not in kinds:
        raise ConfigError(f"{where}.check must be one of {sorted(kinds)!r}, got {kind!r}")
    cls = kinds[kind]
    known = {a.name for a in attrs.fields(cls)}
    for k in options:
        if k not in known:
            raise ConfigError(
                f"unknown key {where}.{k} for check {kind!r} (known: {', '.join(sorted(known))})"
            )
    try:
        return cls(**options)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _section(where: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except ConfigError as e:
        raise ConfigError(f"[{where}] {e}") from None
    except TypeError as e:  # a value of the wrong type deep inside a constructor
        raise ConfigError(f"[{where}] {e}") from None


@attrs.frozen(kw_only=True)
class DrillConfig:
    """A drill read from a configuration file: the scenario and what is expected of it.

    Build it with :meth:`from_dict` (a parsed TOML document); ``python -m safeserve drill
    CONFIG.toml`` does so. See ``examples/drill.toml`` for every key.

    Attributes:
        scenario: The :class:`Scenario` to run.
        expect_rollback: Whether the drill must end in a rollback (True) or must not (False).
        within_requests: Bound on the requests from the fault's start to the rollback.
        within_seconds: Bound on the simulated seconds from the fault's start to the rollback.
        max_exposed_users: Bound on the users routed to the faulty candidate.

    >>> from safeserve.testing import DrillConfig, run_drill
    >>> config = DrillConfig.from_dict({
    ...     "fault": {"kind": "errors", "rate": 0.3},
    ...     "expect": {"within_requests": 3000},
    ... })
    >>> config.scenario.fault.describe(), config.within_requests
    ('errors rate=0.3', 3000)
    >>> config.check(run_drill(config.scenario)) is None
    True
    """

    scenario: Scenario
    expect_rollback: bool = True
    within_requests: int | None = None
    within_seconds: float | None = None
    max_exposed_users: int | None = None

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> DrillConfig:
        """Build a drill from a parsed configuration (a TOML document as a dict).

        Raises:
            ConfigError: naming the bad key or value.
        """
        if not isinstance(config, Mapping):
            raise ConfigError(f"a drill configuration is a table, got {config!r}")
        for k in config:
            if k not in _SECTIONS:
                raise ConfigError(f"unknown section or key {k!r} (known: {', '.join(_SECTIONS)})")
        name = config.get("name", "drill")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty string, got {name!r}")
        models_cfg = _table(config, "models", _MODEL_KEYS)
        canary_cfg = _table(config, "canary", _CANARY_KEYS)
        policy_cfg = _table(config, "policy", _POLICY_KEYS)
        fault_cfg = _table(config, "fault", _FAULT_KEYS)
        traffic_cfg = _table(config, "traffic", _TRAFFIC_KEYS)
        validators_cfg = _table(config, "validators", ("baseline", "candidate"))
        limits_cfg = _table(config, "limits", _LIMIT_KEYS)
        expect_cfg = _table(config, "expect", _EXPECT_KEYS)

        batch = traffic_cfg.get("batch") is not None
        builtin = synthetic_models(batch=batch)
        models: dict[str, Model] = {}
        for role in ("baseline", "candidate"):
            spec = models_cfg.get(role, "synthetic")
            models[role] = builtin[role] if spec == "synthetic" else _import(f"models.{role}", spec)
        base_latency = models_cfg.get("base_latency", 0.005)
        base_error_rate = models_cfg.get("base_error_rate", 0.0)

        strategy = _section("canary", lambda: Canary("baseline", "candidate", **canary_cfg))
        policy = None
        if policy_cfg:
            checks_cfg = policy_cfg.pop("checks", None)
            if checks_cfg is not None and not isinstance(checks_cfg, list):
                raise ConfigError(f"policy.checks must be an array of tables, got {checks_cfg!r}")
            checks = (
                None
                if checks_cfg is None
                else [_check_from(i, c) for i, c in enumerate(checks_cfg)]
            )
            policy = _section("policy", lambda: Policy(checks, **policy_cfg))
        fault = None
        if fault_cfg:
            if "kind" not in fault_cfg:
                raise ConfigError(f"fault.kind is required, one of {list(FAULT_KINDS)!r}")
            if "labels" in fault_cfg and isinstance(fault_cfg["labels"], list):
                fault_cfg["labels"] = tuple(fault_cfg["labels"])
            if isinstance(fault_cfg.get("value"), str) and fault_cfg["value"].lower() == "nan":
                fault_cfg["value"] = math.nan
            fault = _section("fault", lambda: DrillFault(**fault_cfg))
        outcome = traffic_cfg.pop("outcome", None)
        if outcome == "synthetic":
            traffic_cfg["outcome"] = synthetic_outcome
        elif outcome not in (None, "none"):
            traffic_cfg["outcome"] = _import("traffic.outcome", outcome)
        traffic = _section("traffic", lambda: Traffic(**traffic_cfg))
        validators: dict[str, Validator] = {}
        for role, spec in validators_cfg.items():
            if spec == "is_finite":
                from .._validators import is_finite

                validators[role] = is_finite
            else:
                validators[role] = _import(f"validators.{role}", spec)
        scenario = _section(
            "models/limits",
            lambda: Scenario(
                models=models,
                strategy=strategy,
                policy=policy,
                fault=fault,
                traffic=traffic,
                validators=validators or None,
                base_latency=base_latency,
                base_error_rate=base_error_rate,
                name=name,
                **limits_cfg,
            ),
        )
        rollback = expect_cfg.get("rollback", True)
        if not isinstance(rollback, bool):
            raise ConfigError(f"expect.rollback must be true or false, got {rollback!r}")
        within_requests = expect_cfg.get("within_requests")
        if within_requests is not None:
            within_requests = _int("expect.within_requests", within_requests, low=1)
        within_seconds = expect_cfg.get("within_seconds")
        if within_seconds is not None:
            within_seconds = _number("expect.within_seconds", within_seconds, strict=True)
        exposed = expect_cfg.get("max_exposed_users")
        if exposed is not None:
            exposed = _int("expect.max_exposed_users", exposed, low=0)
        if not rollback and (within_requests or within_seconds or exposed is not None):
            raise ConfigError("expect.rollback = false takes no within_* or max_exposed_users")
        return cls(
            scenario=scenario,
            expect_rollback=rollback,
            within_requests=within_requests,
            within_seconds=within_seconds,
            max_exposed_users=exposed,
        )

    def check(self, report: DrillReport) -> str | None:
        """Return None when ``report`` meets the expectations, else the failure message."""
        try:
            if self.expect_rollback:
                report.assert_rolled_back(
                    within_requests=self.within_requests,
                    within_seconds=self.within_seconds,
                    max_exposed_users=self.max_exposed_users,
                )
            else:
                report.assert_not_rolled_back()
        except AssertionError as e:
            return str(e)
        return None


DrillConfig.__module__ = "safeserve.testing"

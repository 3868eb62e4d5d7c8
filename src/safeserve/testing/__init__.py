"""Test doubles and simulation tools: drive a real router in simulated time.

- :class:`FakeClock`: inject it as the router's ``clock`` so time moves only when told to.
- Fault injectors (:func:`inject_errors`, :func:`add_latency`, :func:`corrupt_outputs`,
  :func:`drop_accuracy`, :func:`hang`): wrap a model so it fails in a seeded, switchable way.
- :class:`TrafficSimulator`: Poisson arrivals from users with Zipf repeat visits, feature rows
  and delayed outcomes, sent through the router; it tracks who was exposed to which variant.

>>> import safeserve as ss
>>> from safeserve.testing import FakeClock, TrafficSimulator, inject_errors
>>> clock = FakeClock()
>>> flaky = inject_errors(lambda x: 0.0, 0.2, start=10.0, clock=clock)
>>> router = ss.Router(
...     {"v1": lambda x: 0.0, "v2": flaky},
...     strategy=ss.Canary(baseline="v1", candidate="v2", weight=25),
...     clock=clock,
... )
>>> result = TrafficSimulator(router, clock=clock, rate=100.0).run(4000)
>>> v2 = router.status().metrics.variant("v2")
>>> result.per_variant["v2"] == v2.requests == flaky.calls, v2.errors == flaky.faults
(True, True)
"""

from __future__ import annotations

from ._clock import FakeClock
from ._drill import (
    Drill,
    DrillConfig,
    DrillFault,
    DrillReport,
    Scenario,
    Traffic,
    run_drill,
    synthetic_models,
    synthetic_outcome,
)
from ._faults import (
    Fault,
    InjectedError,
    add_latency,
    corrupt_outputs,
    drop_accuracy,
    hang,
    inject_errors,
)
from ._traffic import SimulationResult, SimulationTick, TrafficSimulator

__all__ = [
    "Drill",
    "DrillConfig",
    "DrillFault",
    "DrillReport",
    "FakeClock",
    "Fault",
    "InjectedError",
    "Scenario",
    "SimulationResult",
    "SimulationTick",
    "Traffic",
    "TrafficSimulator",
    "add_latency",
    "corrupt_outputs",
    "drop_accuracy",
    "hang",
    "inject_errors",
    "run_drill",
    "synthetic_models",
    "synthetic_outcome",
]

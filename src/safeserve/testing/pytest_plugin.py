"""pytest fixtures for testing rollout policies (registered as the ``safeserve`` plugin).

Installing safeserve registers this module through the ``pytest11`` entry point, so the
fixtures are available in every test without an import:

- ``fake_clock``: a fresh :class:`~safeserve.testing.FakeClock` at 0;
- ``safeserve_traffic``: ``safeserve_traffic(router, **options)`` builds a
  :class:`~safeserve.testing.TrafficSimulator` on ``fake_clock``;
- ``safeserve_drill``: ``safeserve_drill(scenario=None, **fields)`` runs a rollback drill and
  returns its :class:`~safeserve.testing.DrillReport`; ``fields`` are those of
  :class:`~safeserve.testing.Scenario` (synthetic models, the default canary and policy,
  100,000 requests at most), so ``safeserve_drill(fault=DrillFault(kind="errors", rate=0.05))``
  is a complete drill.

Importing this module defines the fixtures and does nothing else. Without the entry point
(a source checkout that is not installed), load it with
``pytest -p safeserve.testing.pytest_plugin``, or with
``pytest_plugins = ["safeserve.testing.pytest_plugin"]`` in the top-level ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from ._clock import FakeClock
from ._drill import DrillReport, Scenario, run_drill
from ._traffic import TrafficSimulator

__all__ = ["fake_clock", "safeserve_drill", "safeserve_traffic"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A :class:`~safeserve.testing.FakeClock` starting at 0 simulated seconds."""
    return FakeClock()


@pytest.fixture
def safeserve_traffic(fake_clock: FakeClock) -> Callable[..., TrafficSimulator]:
    """A factory: ``safeserve_traffic(router, **options)`` -> a TrafficSimulator on fake_clock.

    Build the router with ``clock=fake_clock``; ``options`` are those of
    :class:`~safeserve.testing.TrafficSimulator` (``users``, ``rate``, ``outcome``, ``seed``...).
    """

    def make(router: Any, **options: Any) -> TrafficSimulator:
        return TrafficSimulator(router, clock=fake_clock, **options)

    return make


@pytest.fixture
def safeserve_drill() -> Callable[..., DrillReport]:
    """A callable that runs a rollback drill: ``safeserve_drill(scenario=None, **fields)``.

    With a :class:`~safeserve.testing.Scenario`, ``fields`` replace some of its fields; without
    one, they build it (every field has a default). Returns the
    :class:`~safeserve.testing.DrillReport`.
    """

    def drill(scenario: Scenario | None = None, /, **fields: Any) -> DrillReport:
        s = Scenario(**fields) if scenario is None else attrs.evolve(scenario, **fields)
        return run_drill(s)

    return drill

"""The pytest plugin: its fixtures work in a fresh pytest run, and the how-to's example passes."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# Imported here, before any pytester run: an in-process run restores sys.modules afterwards,
# and numpy cannot be imported twice in one process.
import safeserve.testing.pytest_plugin as plugin

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "howto" / "unit-test-a-policy.md"
PLUGIN = "safeserve.testing.pytest_plugin"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1, "the how-to has exactly one example test file"
    return str(blocks[0])


def _plugin_args() -> list[str]:
    """Load the plugin by hand unless the installed package already registers it."""
    installed = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", PLUGIN]


def _run(pytester: pytest.Pytester, code: str) -> pytest.RunResult:
    pytester.makepyfile(test_policy=code)
    return pytester.runpytest(*_plugin_args(), "-p", "no:cacheprovider", "-q")


def test_the_howto_example_passes(pytester: pytest.Pytester) -> None:
    """The example test file in docs/howto/unit-test-a-policy.md runs and all its tests pass."""
    code = _example()
    tests = len(re.findall(r"^def test_", code, flags=re.M))
    assert tests >= 3
    result = _run(pytester, code)
    result.assert_outcomes(passed=tests)


def test_a_failing_drill_fails_the_test_with_the_summary(pytester: pytest.Pytester) -> None:
    """A bound the policy cannot meet fails the user's test, and pytest shows why."""
    result = _run(
        pytester,
        "from safeserve.testing import DrillFault\n\n"
        "def test_too_strict(safeserve_drill):\n"
        "    report = safeserve_drill(fault=DrillFault(kind='errors', rate=0.3))\n"
        "    report.assert_rolled_back(within_requests=5)\n",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*more than the bound 5*", "*failing checks: error_rate*"])


def test_fixtures_are_fresh_and_bound_together(pytester: pytest.Pytester) -> None:
    """fake_clock starts at 0 in every test, and safeserve_traffic drives it."""
    result = _run(
        pytester,
        "import safeserve as ss\n\n"
        "def test_one(fake_clock, safeserve_traffic):\n"
        "    assert fake_clock() == 0.0\n"
        "    router = ss.Router({'v1': abs}, clock=fake_clock)\n"
        "    sim = safeserve_traffic(router, rate=10.0)\n"
        "    assert sim.clock is fake_clock\n"
        "    sim.run(seconds=30.0)\n"
        "    assert fake_clock() == 30.0\n\n"
        "def test_two(fake_clock):\n"
        "    assert fake_clock() == 0.0\n",
    )
    result.assert_outcomes(passed=2)


def test_safeserve_drill_takes_a_scenario_and_overrides(pytester: pytest.Pytester) -> None:
    """safeserve_drill(scenario, field=...) replaces fields of the given scenario."""
    result = _run(
        pytester,
        "from safeserve.testing import Scenario\n\n"
        "def test_it(safeserve_drill):\n"
        "    report = safeserve_drill(Scenario(name='a'), name='b', max_requests=2000)\n"
        "    assert report.name == 'b'\n"
        "    assert report.requests == 2000\n",
    )
    result.assert_outcomes(passed=1)


def test_the_entry_point_names_the_plugin_module() -> None:
    """pyproject.toml registers this very module under pytest11, and it imports cleanly."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["entry-points"]["pytest11"] == {"safeserve": PLUGIN}
    assert plugin.__name__ == PLUGIN
    assert sorted(plugin.__all__) == ["fake_clock", "safeserve_drill", "safeserve_traffic"]

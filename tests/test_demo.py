"""The command line: `python -m safeserve demo` and `python -m safeserve drill CONFIG.toml`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeserve.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "drill.toml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command line configures structlog for itself; put the suite's setup back."""
    yield
    import conftest

    conftest.quiet_structlog()


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m safeserve ARGS`` in a fresh interpreter on this source tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "safeserve", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env=env,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]], Path]:
    """One run of the demo in a subprocess: its process result, its decision log, its cwd."""
    pytest.importorskip("sklearn")
    cwd = tmp_path_factory.mktemp("demo")
    out = _cli("demo", "--users", "5000", cwd=cwd)
    log = cwd / "safeserve-demo-decisions.jsonl"
    entries = (
        [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        if log.exists()
        else []
    )
    return out, entries, log


def _transitions(entries: list[dict[str, Any]], run: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["run"] == run and e["action"] != "continue"]


def test_demo_runs_in_a_subprocess(demo: tuple[Any, Any, Path]) -> None:
    """The README's first command exits 0 and prints the split at each step."""
    out, _, _ = demo
    assert out.returncode == 0, out.stdout + out.stderr
    for step in ("5%", "25%", "50%", "100%"):
        assert step in out.stdout
    assert "still sees it" in out.stdout


def test_demo_good_candidate_promotes_through_every_step(demo: tuple[Any, Any, Path]) -> None:
    """Run (a) moves v2 5 -> 25 -> 50 -> 100% and then makes it the stable version."""
    _, entries, _ = demo
    moves = [(e["action"], e["weights_after"]["v2"]) for e in _transitions(entries, "fraud-v2")]
    assert moves == [("promote", 25.0), ("promote", 50.0), ("promote", 100.0), ("promote", 100.0)]
    assert entries[0]["run"] == "fraud-v2"


def test_demo_faulty_candidate_ends_with_no_traffic(demo: tuple[Any, Any, Path]) -> None:
    """Run (b) is rolled back on its own, on the fraud recall seen through delayed labels,
    and ends with 0% of the traffic on v3."""
    out, entries, _ = demo
    moves = _transitions(entries, "fraud-v3")
    assert [m["action"] for m in moves] == ["rollback"]
    rollback = moves[0]
    assert not rollback["manual"]
    assert rollback["weights_after"] == {"v2": 100.0, "v3": 0.0}
    failing = [c["name"] for c in rollback["checks"] if c["verdict"] == "fail"]
    assert failing == ["fraud_recall"]
    last = [e for e in entries if e["run"] == "fraud-v3"][-1]
    assert last["weights_after"]["v3"] == 0.0
    assert "v3 now serves 0% of the traffic" in out.stdout


def test_demo_reports_where_the_log_is(demo: tuple[Any, Any, Path]) -> None:
    """The decision log is written (one JSON object per line) and its path is printed."""
    out, entries, log = demo
    assert log.name in out.stdout
    assert len(entries) >= 5
    assert {"run", "action", "reason", "checks", "weights_after", "time"} <= set(entries[0])


def test_demo_without_scikit_learn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without scikit-learn the demo prints the install command and exits 2."""
    from safeserve._demo import run_demo

    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    buf = io.StringIO()
    assert run_demo(out=buf) == 2
    assert 'pip install -e ".[demo]"' in buf.getvalue()


def test_demo_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-positive user count is a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as info:
        main(["demo", "--users", "0"])
    assert info.value.code == 2
    assert "--users" in capsys.readouterr().err


# -- python -m safeserve drill ----------------------------------------------------------------


def test_drill_example_passes_in_a_subprocess() -> None:
    """examples/drill.toml rolls back within its bounds: exit code 0."""
    out = _cli("drill", str(EXAMPLE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "PASS: rolled back within" in out.stdout
    assert "failing checks: error_rate" in out.stdout


def test_drill_that_misses_exits_1_in_a_subprocess(tmp_path: Path) -> None:
    """A fault the policy cannot see (wrong answers, no label check) is not rolled back: 1."""
    config = tmp_path / "blind.toml"
    config.write_text(
        '[fault]\nkind = "accuracy"\nrate = 0.5\n\n'
        '[policy]\n[[policy.checks]]\ncheck = "error_rate"\n\n'
        "[limits]\nmax_requests = 20000\n\n"
        "[expect]\nwithin_requests = 10000\n",
        encoding="utf-8",
    )
    out = _cli("drill", str(config))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL: the rollout did not roll back" in out.stdout


def test_drill_bad_config_exits_2_in_a_subprocess(tmp_path: Path) -> None:
    """An unknown key is a configuration error (exit 2) whose message names it."""
    config = tmp_path / "typo.toml"
    config.write_text('[fault]\nkind = "errors"\nrat = 0.05\n', encoding="utf-8")
    out = _cli("drill", str(config))
    assert out.returncode == 2
    assert "fault.rat" in out.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[fault\nkind = 1", "is not valid TOML"),
        ('[traffic]\nrate = "fast"\n', "rate must be a positive number, got 'fast'"),
        ("[expect]\nrollback = false\nwithin_requests = 5\n", "takes no within_*"),
    ],
)
def test_drill_config_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """Invalid TOML and invalid values exit 2 with a message naming the problem."""
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["drill", str(config)]) == 2
    assert message in capsys.readouterr().err


def test_drill_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist is a configuration error too."""
    assert main(["drill", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_drill_expecting_no_rollback_and_writing_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """expect.rollback = false passes on a fault-free drill; --report writes the JSON report."""
    config = tmp_path / "calm.toml"
    config.write_text("[limits]\nmax_requests = 5000\n\n[expect]\nrollback = false\n")
    report = tmp_path / "report.json"
    assert main(["drill", str(config), "--report", str(report)]) == 0
    assert "PASS: did not roll back" in capsys.readouterr().out
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["rolled_back"] is False
    assert data["requests"] == 5000

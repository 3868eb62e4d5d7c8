"""The command line: `python -m safeserve demo` runs and shows a monotonic split."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from safeserve.__main__ import main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The command line configures structlog for itself; put the suite's setup back."""
    yield
    import conftest

    conftest.quiet_structlog()


def test_demo_runs_in_a_subprocess() -> None:
    """The README's first command exits 0 and prints the split at each step."""
    out = subprocess.run(
        [sys.executable, "-m", "safeserve", "demo", "--users", "5000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for step in ("5%", "25%", "50%", "100%"):
        assert step in out.stdout
    assert "still sees it" in out.stdout


def test_demo_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-positive user count is a usage error (exit code 2)."""
    with pytest.raises(SystemExit) as info:
        main(["demo", "--users", "0"])
    assert info.value.code == 2
    assert "--users" in capsys.readouterr().err

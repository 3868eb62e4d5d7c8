"""The how-to page's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "howto" / "simulate-traffic.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_the_page_has_examples() -> None:
    """The page holds Python examples (so the test below cannot pass vacuously)."""
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_runs(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    """One example runs without error and prints the output shown after it on the page."""
    with capture_logs():  # keep the router's log lines out of the printed output
        exec(compile(code, str(PAGE), "exec"), {"__name__": "howto"})
    printed = capsys.readouterr().out.strip()
    text = PAGE.read_text(encoding="utf-8")
    after = text[text.index(code) + len(code) + len("```") :]  # past the closing fence
    shown = re.search(r"^```\n(.*?)^```", after, flags=re.S | re.M)
    assert shown is not None
    assert printed == shown.group(1).strip()

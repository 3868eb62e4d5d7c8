"""The tutorial and the shadow-then-canary how-to run as written and print what they show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [DOCS / "tutorial.md", DOCS / "howto" / "shadow-then-canary.md"]


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """The page's Python blocks, each with the output block that follows it (if any)."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"```python\n(.*?)```\n(?:\n```\n(.*?)```)?", text, flags=re.S):
        out.append((m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs_and_prints_what_it_shows(page: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every block runs in one namespace, in order; printed output matches the page."""
    found = blocks(page)
    assert found, f"{page} has no Python example"
    namespace: dict[str, object] = {"__name__": "docs"}
    with capture_logs():
        for code, shown in found:
            exec(compile(code, str(page), "exec"), namespace)
            printed = capsys.readouterr().out.strip()
            if shown is not None:
                assert printed == shown.strip()

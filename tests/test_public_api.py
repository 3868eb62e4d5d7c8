"""The public surface: __all__ is hand-written, sorted and complete."""

from __future__ import annotations

import subprocess
import sys

import pytest

import safeserve as ss


def test_all_is_sorted_and_matches_public_names() -> None:
    """__all__ lists exactly the public names of the package, sorted."""
    public = {
        n
        for n in dir(ss)
        if not n.startswith(("_", "@"))  # "@py_builtins": pytest's assertion-rewrite helpers
        and not isinstance(getattr(ss, n), type(ss))  # submodules are reached by import
    }

    # isort-style order (constants, classes, functions), as ruff's RUF022 keeps it.
    def order(n: str) -> tuple[int, str]:
        return (0 if n.isupper() else 1 if n[0].isupper() else 2, n)

    assert sorted(ss.__all__, key=order) == ss.__all__
    assert set(ss.__all__) == public


@pytest.mark.parametrize("name", [n for n in ss.__all__ if isinstance(getattr(ss, n), type)])
def test_exported_classes_say_safeserve(name: str) -> None:
    """Exported classes carry __module__ == 'safeserve' so reprs and docs say safeserve.X."""
    assert getattr(ss, name).__module__ == "safeserve"


def test_core_imports_no_framework() -> None:
    """Importing safeserve (and its public modules) loads no web or ML framework."""
    code = (
        "import sys, safeserve, safeserve.metrics;"
        "print(sorted(m for m in ('flask', 'django', 'sklearn', 'torch', 'pandas')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

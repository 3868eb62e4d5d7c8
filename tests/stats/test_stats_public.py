"""The public surface of safeserve.stats."""

from __future__ import annotations

import inspect

import safeserve.stats as stats_mod


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and lists exactly the public names of the module."""
    public = {
        name
        for name, obj in vars(stats_mod).items()
        # "@py_builtins" and the like are pytest's assertion-rewrite helpers.
        if not name.startswith(("_", "@")) and not inspect.ismodule(obj) and name != "annotations"
    }
    assert list(stats_mod.__all__) == sorted(stats_mod.__all__)
    assert set(stats_mod.__all__) == public


def test_exports_claim_the_public_module_and_have_examples() -> None:
    """Every export says it lives in safeserve.stats and has a docstring with an example."""
    for name in stats_mod.__all__:
        obj = getattr(stats_mod, name)
        assert obj.__module__ == "safeserve.stats", name
        assert ">>>" in (obj.__doc__ or ""), name

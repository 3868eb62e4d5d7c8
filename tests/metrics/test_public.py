"""The public surface of safeserve.metrics."""

from __future__ import annotations

import safeserve.metrics as metrics


def test_all_is_sorted_and_lists_every_public_name():
    """__all__ is sorted and equals the module's public names."""
    # "@py_builtins" and the like are pytest's assertion-rewriting helpers, not public names.
    public = {n for n in vars(metrics) if not n.startswith(("_", "@")) and n != "annotations"}
    assert metrics.__all__ == sorted(metrics.__all__)
    assert set(metrics.__all__) == public


def test_exported_classes_name_the_public_module():
    """Exported classes report safeserve.metrics as their module (reprs and docs)."""
    for name in metrics.__all__:
        obj = getattr(metrics, name)
        if isinstance(obj, type):
            assert obj.__module__ == "safeserve.metrics", name

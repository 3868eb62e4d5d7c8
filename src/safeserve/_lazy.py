"""Deferred imports: heavy modules load on first use, not when safeserve is imported.

``scipy.stats`` alone takes about half a second to import; a service (or a pytest run with
the safeserve plugin) that never calls a fixed-horizon test or a drift test should not pay
for it at start-up.
"""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
    """Stands for a module and imports it on the first attribute access.

    >>> stats = LazyModule("scipy.stats")
    >>> float(stats.norm.cdf(0.0))
    0.5
    """

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"

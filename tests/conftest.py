"""Fixtures shared by the test modules."""

from tests.shadow_support import cleanup

__all__ = ["cleanup"]

"""Rollout strategies: how traffic is split between the versions of a model."""

from __future__ import annotations

from ._canary import Canary, FixedSplit, Strategy
from ._shadow import BlueGreen, Pipeline, Shadow

__all__ = ["BlueGreen", "Canary", "FixedSplit", "Pipeline", "Shadow", "Strategy"]

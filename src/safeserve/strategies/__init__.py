"""Rollout strategies: how traffic is split between the versions of a model."""

from __future__ import annotations

from ._canary import Canary, FixedSplit, Strategy

__all__ = ["Canary", "FixedSplit", "Strategy"]

"""Rollout phases."""

from __future__ import annotations

import enum

__all__ = ["Phase"]


class Phase(enum.StrEnum):
    """The phase of a rollout.

    >>> import safeserve as ss
    >>> ss.Phase.PROGRESSING
    <Phase.PROGRESSING: 'progressing'>
    """

    PENDING = "pending"
    SHADOW = "shadow"
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


Phase.__module__ = "safeserve"

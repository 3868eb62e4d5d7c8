"""Declarative rollout policies: checks, the judge, verdicts and decisions with reasons."""

from __future__ import annotations

from ._checks import SRM, Check, ErrorRate, Guardrail, Latency, LatencyQuantile, MetricCheck
from ._decision import Action, CheckResult, Decision
from ._policy import Judge, Judgement, Policy, default_checks

__all__ = [
    "SRM",
    "Action",
    "Check",
    "CheckResult",
    "Decision",
    "ErrorRate",
    "Guardrail",
    "Judge",
    "Judgement",
    "Latency",
    "LatencyQuantile",
    "MetricCheck",
    "Policy",
    "default_checks",
]

for _name in (
    "SRM",
    "Check",
    "ErrorRate",
    "Guardrail",
    "Latency",
    "LatencyQuantile",
    "MetricCheck",
):
    globals()[_name].__module__ = "safeserve"
del _name

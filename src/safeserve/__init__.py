"""safeserve: release a new version of a model safely, from inside your service.

Wrap the predict functions of two (or more) model versions in a :class:`Router`; a strategy
such as :class:`Canary` decides per request, by a deterministic hash of the user's key, which
version answers.

>>> import safeserve as ss
>>> router = ss.Router(
...     {"stable": lambda x: x + 1, "candidate": lambda x: x + 1},
...     strategy=ss.Canary(baseline="stable", candidate="candidate"),
... )
>>> router.weights
{'stable': 95.0, 'candidate': 5.0}
"""

from importlib import metadata as _metadata

from ._allocation import Allocation
from ._errors import (
    ConfigError,
    DataError,
    InvalidKeyError,
    InvalidOutputError,
    SafeserveError,
    TransitionError,
)
from ._hashing import BUCKETS, HASH_VERSION, bucket_of, buckets_of, salt_seed
from ._rollout import Phase
from ._router import Routed, RoutedBatch, Router, Status
from ._shadow import ShadowMirror, ShadowPair, ShadowReport
from ._validators import has_shape, is_finite
from .policy import (
    SRM,
    Action,
    CheckResult,
    Decision,
    ErrorRate,
    Guardrail,
    Latency,
    LatencyQuantile,
    MetricCheck,
    Policy,
)
from .strategies import BlueGreen, Canary, FixedSplit, Pipeline, Shadow

try:
    __version__ = _metadata.version("safeserve")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = [
    "BUCKETS",
    "HASH_VERSION",
    "SRM",
    "Action",
    "Allocation",
    "BlueGreen",
    "Canary",
    "CheckResult",
    "ConfigError",
    "DataError",
    "Decision",
    "ErrorRate",
    "FixedSplit",
    "Guardrail",
    "InvalidKeyError",
    "InvalidOutputError",
    "Latency",
    "LatencyQuantile",
    "MetricCheck",
    "Phase",
    "Pipeline",
    "Policy",
    "Routed",
    "RoutedBatch",
    "Router",
    "SafeserveError",
    "Shadow",
    "ShadowMirror",
    "ShadowPair",
    "ShadowReport",
    "Status",
    "TransitionError",
    "bucket_of",
    "buckets_of",
    "has_shape",
    "is_finite",
    "salt_seed",
]

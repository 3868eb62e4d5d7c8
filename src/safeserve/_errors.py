"""The typed errors safeserve raises.

Every error names the bad value with ``!r`` so that a log line alone tells what went wrong.
Each one also derives from the built-in exception a caller would expect (``ValueError`` for a
bad value, ``TypeError`` for a bad type), so existing ``except ValueError`` blocks keep working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InvalidKeyError",
    "InvalidOutputError",
    "SafeserveError",
    "TransitionError",
]


class SafeserveError(Exception):
    """Base class of every error safeserve raises on purpose.

    >>> import safeserve as ss
    >>> issubclass(ss.ConfigError, ss.SafeserveError)
    True
    """


class ConfigError(SafeserveError, ValueError):
    """A configuration value is invalid: a weight, a variant name, a policy option...

    >>> import safeserve as ss
    >>> try:
    ...     ss.Canary(baseline="v1", candidate="v1")
    ... except ss.ConfigError as e:
    ...     print(e)
    candidate 'v1' must differ from baseline 'v1'
    """


class InvalidKeyError(SafeserveError, TypeError, ValueError):
    """A routing key has an unsupported type or an int outside the signed 64-bit range.

    Keys are ``str`` (hashed as UTF-8), ``bytes`` or ``int`` (hashed as 8-byte little-endian
    signed). Anything else is rejected rather than silently converted, because a silent
    ``str(key)`` would reshuffle users the day a caller switches from ``int`` to ``str`` ids.

    >>> import safeserve as ss
    >>> try:
    ...     ss.bucket_of(1.5, salt="demo")
    ... except ss.InvalidKeyError as e:
    ...     print(e)
    unsupported key type float (1.5): use str, bytes or int
    """


class InvalidOutputError(SafeserveError, ValueError):
    """A candidate's output failed its validator and ``fallback`` is off.

    With ``fallback=True`` (the default) the baseline answers instead and nothing is raised;
    either way the bad output is counted as an error of that variant.

    >>> import safeserve as ss
    >>> issubclass(ss.InvalidOutputError, ValueError)
    True
    """


class DataError(SafeserveError, ValueError):
    """Input data cannot be used: empty where values are needed, wrong shape, non-finite...

    >>> import safeserve as ss
    >>> issubclass(ss.DataError, ValueError)
    True
    """


class TransitionError(SafeserveError, RuntimeError):
    """A rollout control was called in a phase where it is not allowed.

    >>> import safeserve as ss
    >>> issubclass(ss.TransitionError, RuntimeError)
    True
    """


for _cls in (
    SafeserveError,
    ConfigError,
    InvalidKeyError,
    InvalidOutputError,
    DataError,
    TransitionError,
):
    _cls.__module__ = "safeserve"
del _cls

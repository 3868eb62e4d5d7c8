"""Shadow, blue/green and pipelines of phases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .._errors import ConfigError
from .._shadow import check_options
from ._canary import Canary, _check_name, _check_phase, _count, _positive

__all__ = ["BlueGreen", "Pipeline", "Shadow"]


def _share(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise ConfigError(f"sample must be a share in (0, 1], got {value!r}")
    if round(value * 10_000) == 0:
        # Requests are mirrored by bucket, 10,000 of them: this share would mirror none.
        raise ConfigError(f"sample must be at least 0.00005 (one bucket in 10,000), got {value!r}")


@attrs.frozen
class Shadow:
    """Mirror live requests to a shadow model off the request path; compare, never return.

    The primary answers every request. A deterministic, hash-sampled share of requests (by
    the user's key, so a user is mirrored always or never) is copied to the shadow on a bounded
    worker pool; a full queue drops the mirror and counts it, so the caller is never slowed.
    Each pair is compared: agreement for class labels, paired differences for numbers, paired
    latency, shadow errors and timeouts. The phase passes when every comparison is
    non-inferior after ``min_pairs`` pairs and ``min_duration`` seconds, and fails (rolled
    back: mirroring stops) the moment one is worse beyond its threshold.

    Args:
        primary: The model that answers (the stable version).
        shadow: The model under test.
        sample: Share of requests mirrored, in (0, 1].
        workers: Threads calling the shadow.
        queue_size: Mirrored requests waiting at most (a batch's rows count one each);
            more are dropped and counted.
        timeout: Seconds after which a shadow call counts as a timeout (a batch's call: this
            much per row).
        max_stuck: Hung shadow threads tolerated before mirroring is suspended.
        max_disagreement: Largest acceptable share of differing labels.
        margin: Largest acceptable mean absolute difference of numeric outputs (None: not
            judged).
        max_error_rate: Largest acceptable share of shadow errors and timeouts.
        alpha: Level of the sequential tests.
        min_pairs: Compared pairs needed before the phase may pass.
        min_duration: Seconds the phase lasts at least.
        deadline: Seconds after which a phase without a verdict takes ``on_deadline``.
        on_deadline: ``"rollback"`` (default) or ``"pause"`` (after ``resume()`` the
            deadline counts afresh).
        sink: Called with every mirrored :class:`~safeserve.ShadowPair` (from a worker
            thread), e.g. to store pairs for offline comparison.
        isolation: ``"thread"`` (default) runs the shadow on worker threads of this process;
            ``"process"`` runs it in a worker process, so that a shadow holding the GIL cannot
            slow the primary (the shadow model and sink must then be picklable, and the sink
            runs in the worker process). See :class:`~safeserve.ShadowMirror`.
        evaluate_every: Requests between two automatic evaluations (rows of batches
            count one each).
        evaluate_interval: Seconds between two automatic evaluations.
        cpu_share: None (default) or the largest share of a CPU, in (0, 1], that each
            shadow worker thread may use (by its own CPU time; it rests in between): bounds
            what a saturated shadow costs the primary on a small machine, at the cost of fewer
            mirrored requests. See :class:`~safeserve.ShadowMirror`.

    >>> import safeserve as ss
    >>> ss.Shadow(primary="v1", shadow="v2", sample=0.1).candidates
    ('v2',)
    """

    primary: str
    shadow: str
    sample: float = attrs.field(default=1.0, kw_only=True)
    workers: int = attrs.field(default=2, kw_only=True)
    queue_size: int = attrs.field(default=1000, kw_only=True)
    timeout: float = attrs.field(default=1.0, kw_only=True)
    max_stuck: int = attrs.field(default=4, kw_only=True)
    max_disagreement: float = attrs.field(default=0.05, kw_only=True)
    margin: float | None = attrs.field(default=None, kw_only=True)
    max_error_rate: float | None = attrs.field(default=0.01, kw_only=True)
    alpha: float = attrs.field(default=0.05, kw_only=True)
    min_pairs: int = attrs.field(default=500, kw_only=True)
    min_duration: float = attrs.field(default=60.0, kw_only=True)
    deadline: float | None = attrs.field(default=3600.0, kw_only=True)
    on_deadline: str = attrs.field(default="rollback", kw_only=True)
    sink: Callable[[Any], None] | None = attrs.field(default=None, kw_only=True)
    isolation: str = attrs.field(default="thread", kw_only=True)
    evaluate_every: int = attrs.field(default=10_000, kw_only=True)
    evaluate_interval: float = attrs.field(default=10.0, kw_only=True)
    cpu_share: float | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_name("primary", self.primary)
        _check_name("shadow", self.shadow)
        if self.primary == self.shadow:
            raise ConfigError(f"shadow {self.shadow!r} must differ from primary {self.primary!r}")
        _share(self.sample)
        _count("min_pairs", self.min_pairs, 1)
        _check_phase(
            min_duration=self.min_duration,
            deadline=self.deadline,
            on_deadline=self.on_deadline,
            evaluate_every=self.evaluate_every,
            evaluate_interval=self.evaluate_interval,
        )
        # The mirror's own options, refused here rather than when a router is made.
        check_options(outputs="auto", **self.mirror_options())

    @property
    def baseline(self) -> str:
        """The primary (the router's baseline)."""
        return self.primary

    @property
    def candidates(self) -> tuple[str, ...]:
        """The shadow, as a one-element tuple."""
        return (self.shadow,)

    def initial_weights(self) -> dict[str, float]:
        """The shadow gets no traffic of its own."""
        return {self.shadow: 0.0}

    def mirror_options(self) -> dict[str, Any]:
        """The keyword arguments of the :class:`~safeserve.ShadowMirror` this phase runs."""
        return {
            "sample": self.sample,
            "workers": self.workers,
            "queue_size": self.queue_size,
            "timeout": self.timeout,
            "max_stuck": self.max_stuck,
            "max_disagreement": self.max_disagreement,
            "margin": self.margin,
            "max_error_rate": self.max_error_rate,
            "alpha": self.alpha,
            "sink": self.sink,
            "name": self.shadow,
            "isolation": self.isolation,
            "cpu_share": self.cpu_share,
        }


Shadow.__module__ = "safeserve"

Validation = Callable[[Callable[[Any], Any]], object]


def _phases(value: Any) -> tuple[Any, ...]:
    if isinstance(value, Shadow | Canary | BlueGreen | str):
        raise ConfigError(
            f"a Pipeline takes a list of phases, e.g. [ss.Shadow(...), ss.Canary(...)], "
            f"got {value!r}"
        )
    try:
        return tuple(value)
    except TypeError:
        raise ConfigError(f"a Pipeline takes a list of phases, got {value!r}") from None


@attrs.frozen
class BlueGreen:
    """Two full versions, one active: validate the preview, switch 100% at once, watch, and
    switch back at once on failure.

    Before the switch the preview is validated by shadow traffic (``shadow=ss.Shadow(...)``
    judged like a shadow phase), by ``validation(preview_model)``, a callable that runs the
    model on synthetic requests and returns true (or raises / returns something false or
    without a truth value to fail), or by both: the callable then runs once the shadow phase
    passed. The router's automatic evaluations (run by requests) start the validation on a
    thread of its own and take its result at a later evaluation, so that no request waits for
    it; :meth:`Router.evaluate` and :meth:`Router.promote` run it on a thread too (in a copy
    of the caller's context variables) and wait for it. A validation still running after
    ``validation_timeout`` seconds (wall clock) has failed, and the rollout rolls back: a hung
    one no longer holds it for good. ``validation_timeout=None``: no limit, and those two run
    it on the calling thread (for a validation that needs objects bound to it). Then all traffic
    moves to the preview in one snapshot swap (automatically, or on
    :meth:`Router.promote` with ``auto_promote=False``, which validates first too). For
    ``watch`` seconds afterwards the policy judges the preview against the active version's
    metrics from *before* the switch: a non-concurrent comparison, so a change of traffic
    during the watch is blamed on the preview; guardrails judge absolute limits (alone, when
    the active version served fewer than ``min_samples`` requests before a switch made by
    hand: there is nothing to compare with). That window never grows: a comparison it holds
    too few samples for (the default p99 check needs 1,000 requests a side; an outcome check
    its outcomes) is not comparable, and does not hold the watch back. Any failure
    switches back at once. The old version stays loaded for ``keep_old`` seconds after the
    watch ends, so :meth:`Router.rollback` can switch back instantly (None: as long as the
    router lives). Once it is released nothing falls back to it: the new version's exceptions
    reach the caller, and its outputs that a validator rejects raise
    :class:`~safeserve.InvalidOutputError`, as with ``fallback=False``.

    >>> import safeserve as ss
    >>> ss.BlueGreen(active="blue", preview="green", watch=120).candidates
    ('green',)
    """

    active: str
    preview: str
    validation: Validation | None = attrs.field(default=None, kw_only=True)
    shadow: Shadow | None = attrs.field(default=None, kw_only=True)
    auto_promote: bool = attrs.field(default=True, kw_only=True)
    watch: float = attrs.field(default=300.0, kw_only=True)
    min_samples: int = attrs.field(default=500, kw_only=True)
    keep_old: float | None = attrs.field(default=None, kw_only=True)
    validation_timeout: float | None = attrs.field(default=600.0, kw_only=True)
    evaluate_every: int = attrs.field(default=10_000, kw_only=True)
    evaluate_interval: float = attrs.field(default=10.0, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_name("active", self.active)
        _check_name("preview", self.preview)
        if self.active == self.preview:
            raise ConfigError(f"preview {self.preview!r} must differ from active {self.active!r}")
        if self.validation is not None and not callable(self.validation):
            raise ConfigError(f"validation must be callable, got {self.validation!r}")
        if self.shadow is not None:
            if not isinstance(self.shadow, Shadow):
                raise ConfigError(f"shadow must be a safeserve.Shadow, got {self.shadow!r}")
            if (self.shadow.primary, self.shadow.shadow) != (self.active, self.preview):
                raise ConfigError(
                    f"the shadow phase must mirror {self.active!r} to {self.preview!r}, "
                    f"got {self.shadow.primary!r} -> {self.shadow.shadow!r}"
                )
        if not isinstance(self.auto_promote, bool):
            raise ConfigError(f"auto_promote must be a bool, got {self.auto_promote!r}")
        _positive("watch", self.watch, allow_zero=True)
        _count("min_samples", self.min_samples, 0)
        if self.keep_old is not None:
            _positive("keep_old", self.keep_old, allow_zero=True)
        if self.validation_timeout is not None:
            _positive("validation_timeout", self.validation_timeout)
        _check_phase(
            min_duration=self.watch,
            deadline=None,
            on_deadline="rollback",
            evaluate_every=self.evaluate_every,
            evaluate_interval=self.evaluate_interval,
        )

    @property
    def baseline(self) -> str:
        """The active version (the router's baseline)."""
        return self.active

    @property
    def candidates(self) -> tuple[str, ...]:
        """The preview, as a one-element tuple."""
        return (self.preview,)

    def initial_weights(self) -> dict[str, float]:
        """The preview gets no traffic until the switch."""
        return {self.preview: 0.0}


BlueGreen.__module__ = "safeserve"


@attrs.frozen
class Pipeline:
    """Phases in order, each with its own exit criteria: e.g. shadow first, then a canary.

    A failure in any phase ends the rollout rolled back; the candidate never reaches a user
    when the shadow phase fails.

    >>> import safeserve as ss
    >>> p = ss.Pipeline([ss.Shadow("v1", "v2"), ss.Canary("v1", "v2")])
    >>> p.baseline, p.candidates
    ('v1', ('v2',))
    """

    phases: tuple[Shadow | Canary | BlueGreen, ...] = attrs.field(converter=_phases)

    def __attrs_post_init__(self) -> None:
        phases = self.phases
        kinds = [type(p).__name__ for p in phases]
        if len(phases) != 2 or not isinstance(phases[0], Shadow) or isinstance(phases[1], Shadow):
            raise ConfigError(
                "a Pipeline is a Shadow phase followed by a Canary or a BlueGreen phase, "
                f"got {kinds!r}"
            )
        first, second = phases
        assert isinstance(first, Shadow)
        if not isinstance(second, Canary | BlueGreen):
            raise ConfigError(f"unknown phase {second!r}")
        if (first.baseline, first.candidates) != (second.baseline, second.candidates):
            raise ConfigError(
                f"every phase must compare the same two versions: shadow "
                f"{first.baseline!r} -> {first.shadow!r}, then {second.baseline!r} -> "
                f"{second.candidates[0]!r}"
            )
        if isinstance(second, BlueGreen) and second.shadow is not None:
            raise ConfigError("give the shadow phase either in the Pipeline or in BlueGreen")

    @property
    def baseline(self) -> str:
        """The stable version."""
        return self.phases[0].baseline

    @property
    def candidates(self) -> tuple[str, ...]:
        """The candidate, as a one-element tuple."""
        return self.phases[0].candidates

    def initial_weights(self) -> dict[str, float]:
        """No traffic for the candidate while the shadow phase runs."""
        return self.phases[0].initial_weights()


Pipeline.__module__ = "safeserve"

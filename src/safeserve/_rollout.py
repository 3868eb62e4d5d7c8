"""The rollout state machine: phases, steps, transitions, and the decision log."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import enum
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Concatenate, ParamSpec

import attrs
import structlog

from ._errors import TransitionError
from ._shadow import ShadowMirror
from .drift import DriftMonitor, DriftReport, DriftScope
from .metrics import MetricsSnapshot, VariantMetrics
from .policy._decision import Action, CheckResult, Decision
from .policy._policy import Judge, Policy
from .stats import Verdict
from .strategies import BlueGreen, Shadow

__all__ = ["Phase", "Rollout"]

_log = structlog.get_logger("safeserve")


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

_ACTIVE = (Phase.PROGRESSING, Phase.PAUSED, Phase.SHADOW, Phase.PENDING)
_STOPPED = (Phase.ROLLED_BACK, Phase.ABORTED)


def _start_validation(
    validate: Callable[[], str | None],
) -> tuple[threading.Thread, list[str | None]]:
    """Run ``validate`` on a daemon thread, in a copy of the caller's context variables; its
    result (why it failed, or None) lands in the returned list."""
    box: list[str | None] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box.append(context.run(validate))
        except Exception as exc:  # the router's validate catches; this is a backstop
            box.append(f"validation raised {type(exc).__name__}: {exc}")

    thread = threading.Thread(target=run, name="safeserve-validation", daemon=True)
    thread.start()
    return thread, box


_P = ParamSpec("_P")


def _changes_state(
    method: Callable[Concatenate[Rollout, _P], Decision],
) -> Callable[Concatenate[Rollout, _P], Decision]:
    """Run a method that changes what status() reads under the lock, marked as a change."""

    def marked(self: Rollout, /, *args: _P.args, **kw: _P.kwargs) -> Decision:
        with self.lock, self.changing():
            return method(self, *args, **kw)

    return functools.update_wrapper(marked, method)


#: Phases in which the candidate serves nobody, overridden keys included.
_ENDED = (Phase.ROLLED_BACK, Phase.ABORTED)


class Rollout:
    """The state of one canary rollout and its transitions (driven by a Router).

    Every transition, automatic or manual, is a :class:`Decision`: logged as a structlog
    ``safeserve.decision`` event and kept in a bounded history. Invalid transitions raise
    :class:`TransitionError`. State is plain data (:meth:`to_dict`).
    """

    def __init__(
        self,
        *,
        name: str,
        baseline: str,
        candidate: str,
        steps: tuple[float, ...],
        policy: Policy,
        clock: Callable[[], float],
        apply: Callable[[dict[str, float]], None],
        reset_windows: Callable[..., Mapping[str, Mapping[str, int]] | None],
        min_duration: float,
        min_samples: int,
        deadline: float | None,
        on_deadline: str,
        auto: bool,
        start_weight: float,
        canary_weight: float | None = None,
        history: int = 200,
        drift: DriftMonitor | None = None,
        drift_confirmations: int = 2,
        drift_resume_after: float | None = 600.0,
        shadow: Shadow | None = None,
        start_mirror: Callable[[Shadow | None], ShadowMirror | None] | None = None,
        blue_green: BlueGreen | None = None,
        validate: Callable[[], str | None] | None = None,
        snapshot: Callable[[], MetricsSnapshot] | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.baseline = baseline
        self.candidate = candidate
        self.steps = steps
        self.policy = policy
        self._clock = clock
        self._apply = apply
        self._reset_windows = reset_windows
        self.min_duration = min_duration
        self.min_samples = min_samples
        self.deadline = deadline
        self.on_deadline = on_deadline
        # Whether the canary's steps act by themselves (a shadow phase always does: see auto).
        self._auto = auto
        # A pinned canary's weight, where a canary after a shadow phase starts (None: step 0).
        self._canary_weight = canary_weight
        comparative = sum(1 for s in steps if s < 100.0)
        self.judge = Judge(
            policy, baseline=baseline, candidate=candidate, comparative_steps=comparative
        )
        self.lock = threading.RLock()
        # Odd while the state is being changed (see changing()): status() reads the phase,
        # step, stable version, decisions and routing table between two equal even values,
        # without the lock, which long evaluations and validations hold.
        self.changes = 0
        self._changing_depth = 0
        self.history: collections.deque[Decision] = collections.deque(maxlen=history)
        self.phase = Phase.PROGRESSING
        self.version = 1
        self.failures = 0
        self.consecutive = 0
        self.evaluations = 0
        now = clock()
        self.started_at = now
        self.step_started_at = now
        self._resumed_at = -math.inf  # the last resume (see _since_deadline)
        self.step: int | None = self._step_of(start_weight)
        self.weight = float(start_weight)
        self.stable = baseline
        self.drift = drift
        self.drift_confirmations = drift_confirmations
        self.drift_resume_after = drift_resume_after
        # Consecutive confirmations of a drift in the baseline's rows (the traffic) and in the
        # candidate's, and each arm's rows_added() at its last confirmation.
        self._drift_streak = [0, 0]
        self._drift_mark = [0, 0]
        self._drift_clear_since: float | None = None
        self.paused_by: str | None = None
        self._paused_from = Phase.PROGRESSING
        # Shadow and blue/green stages.
        self.shadow = shadow
        self._start_mirror = start_mirror
        self.mirror: ShadowMirror | None = None
        self.blue_green = blue_green
        self._validate = validate
        self._snapshot = snapshot
        self._release = release
        self.frozen_baseline: VariantMetrics | None = None
        self._validated = False
        # The validation running on its thread: the thread, its result, when it started.
        self._validation_job: tuple[threading.Thread, list[str | None], float] | None = None
        self.release_at: float | None = None
        self.released = False
        self._enter_first_stage(now)

    def _after_fork(self) -> None:
        """In a forked child: a fresh lock, and no change under way (the thread making it
        is not here; status() would wait for it)."""
        self.lock = threading.RLock()
        self._changing_depth = 0
        if self.changes % 2:
            self.changes += 1
        # A validation running on a thread of the parent has no thread here: the child
        # starts its own at its next evaluation (it rolled back, "ended without a result").
        self._validation_job = None

    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Mark a change of the state that status() reads (under the lock; re-entrant)."""
        self._changing_depth += 1
        if self._changing_depth == 1:
            self.changes += 1
        try:
            yield
        finally:
            self._changing_depth -= 1
            if self._changing_depth == 0:
                self.changes += 1

    @property
    def auto(self) -> bool:
        """Whether evaluations run by themselves and act on their verdicts now.

        A shadow phase always does (it has its own exit criteria and no traffic to pin); the
        canary's steps as the canary says (a pinned canary, ``Canary(weight=...)``, is judged
        and moved only by hand).
        """
        if self.phase is Phase.SHADOW or (
            self.phase is Phase.PAUSED and self._paused_from is Phase.SHADOW
        ):
            return True
        return self._auto

    # -- stages ----------------------------------------------------------------------------

    def _enter_first_stage(self, now: float) -> None:
        """Start in the shadow phase, the blue/green pre-switch phase, or the first step."""
        if self.shadow is not None:
            self.phase, self.weight, self.step = Phase.SHADOW, 0.0, None
            if self._start_mirror is not None:
                self.mirror = self._start_mirror(self.shadow)
        elif self.blue_green is not None:
            self.phase, self.weight, self.step = Phase.PENDING, 0.0, None
        self.step_started_at = now

    def _stop_mirror(self) -> None:
        if self.mirror is not None and self._start_mirror is not None:
            self._start_mirror(None)
        self.mirror = None

    def _shadow_result(self, wait: bool = True) -> CheckResult:
        assert self.mirror is not None
        r = self.mirror.report(wait=wait)
        verdict = {"fail": Verdict.FAIL, "pass": Verdict.PASS}.get(
            str(getattr(r.verdict, "value", r.verdict)), Verdict.INCONCLUSIVE
        )
        estimate = r.agreement_rate if r.output_kind == "label" else r.difference_mean
        p = [v for v in (r.p_disagreement, r.p_difference, r.p_error) if v is not None]
        return CheckResult(
            name="shadow",
            kind="shadow",
            verdict=verdict,
            estimate=estimate,
            p_value=min(p) if p else None,
            reason=f"{r.reason} ({r.compared} pairs compared, {r.dropped} dropped, "
            f"{r.errors} errors, {r.timeouts} timeouts)",
            n_candidate=r.compared,
            n_baseline=r.compared,
            action=Action.ROLLBACK if verdict is Verdict.FAIL else Action.CONTINUE,
        )

    @_changes_state
    def _leave_shadow(
        self, now: float, reason: str, *, manual: bool, checks: tuple[CheckResult, ...] = ()
    ) -> Decision:
        """The shadow phase passed: stop mirroring and start the next phase."""
        self._stop_mirror()
        step: int | None = 0
        phase, weight = Phase.PROGRESSING, self.steps[0] if self.steps else 0.0
        if self._canary_weight is not None and self.blue_green is None:
            # A pinned canary starts at its own weight.
            weight = self._canary_weight
            step = self._step_of(weight)
        if self.blue_green is not None:
            # The blue/green validation callable, if any, still runs before the switch.
            phase, weight, step = Phase.PENDING, 0.0, None
        elif not self.steps:
            # A shadow-only rollout: passing is the end; traffic never moved.
            phase, step = Phase.PROMOTED, None
        else:
            reason = f"{reason}: starting the canary at {weight:g}%"
        return self._transition(
            Action.PROMOTE,
            reason,
            phase=phase,
            weight=weight,
            step=step,
            manual=manual,
            now=now,
            checks=checks,
        )

    @_changes_state
    def _switch(
        self, now: float, reason: str, *, manual: bool, checks: tuple[CheckResult, ...] = ()
    ) -> Decision:
        """Blue/green: move 100% to the preview in one swap and start the watch."""
        if self._snapshot is not None:
            self.frozen_baseline = self._snapshot().variant(self.baseline)
            n = self.frozen_baseline.requests
            if n < self.min_samples:
                reason = (
                    f"{reason} (the active version served {n} requests before the switch, "
                    f"fewer than min_samples={self.min_samples}: the watch judges the "
                    "guardrails alone)"
                )
        return self._transition(
            Action.PROMOTE,
            reason,
            phase=Phase.PROGRESSING,
            weight=100.0,
            step=0,
            manual=manual,
            now=now,
            checks=checks,
        )

    def _validation(self, wait: bool = True) -> tuple[str | None, tuple[CheckResult, ...]] | None:
        """Blue/green: validate the preview unless it already passed; (why it failed, check).

        The validation, which may run a model on many synthetic requests, runs on a thread of
        its own (in a copy of the caller's context variables). ``wait=False`` (an evaluation
        on a request's thread): this returns None until it is done; the evaluation after that
        takes its result. ``wait=True`` waits for it. Either way, one still running after the
        blue/green ``validation_timeout`` (wall-clock seconds) has failed: it is left to finish
        unheard, and a hung validation no longer holds the rollout (and every ``evaluate()``,
        ``promote()`` and ``rollback()``) for good. With no timeout, ``wait=True`` runs it on
        the calling thread, as before.
        """
        if self._validated:
            return None, ()
        job = self._validation_job
        limit = self.blue_green.validation_timeout if self.blue_green is not None else None
        if job is None and self._validate is not None and (limit is not None or not wait):
            job = self._validation_job = (*_start_validation(self._validate), time.monotonic())
            if not wait:
                return None  # a later evaluation takes its result
        if job is None:
            # No timeout, and waited for: on the calling thread (objects bound to it work).
            failure = None if self._validate is None else self._validate()
        else:
            thread, box, started = job
            if thread.is_alive():
                left = None if limit is None else max(0.0, started + limit - time.monotonic())
                if not wait and (left is None or left > 0):
                    return None
                thread.join(left)
            self._validation_job = None
            if thread.is_alive():
                failure = (
                    f"validation timed out after {limit:g}s (left running; its result will be "
                    "ignored)"
                )
            else:
                failure = box[0] if box else "the validation thread ended without a result"
        verdict = Verdict.FAIL if failure else Verdict.PASS
        check = CheckResult(
            name="validation",
            kind="validation",
            verdict=verdict,
            reason=failure or "the preview passed its validation",
            action=Action.ROLLBACK if failure else Action.CONTINUE,
        )
        if not failure:
            self._validated = True
        return failure, (check,)

    def _evaluate_pending(self, now: float, wait: bool) -> Decision:
        """Blue/green before the switch: validate, then switch (or wait for promote())."""
        got = self._validation(wait)
        if got is None:
            return self._stay(
                "validating the preview (on a thread of its own: an evaluation on a request's "
                "thread does not wait for it)",
                now,
            )
        failure, checks = got
        if failure:
            return self.rollback(f"validation failed: {failure}", manual=False, checks=checks)
        # The validation may have taken a while: the switch (and its watch) starts now.
        now = self._clock()
        assert self.blue_green is not None
        seen = self._snapshot().variant(self.baseline).requests if self._snapshot else 0
        if self.blue_green.auto_promote and seen < self.min_samples:
            return self._stay(
                f"preview validated: collecting the active version's baseline window "
                f"({seen} of {self.min_samples} requests) before the switch",
                now,
                checks=checks,
            )
        if self.blue_green.auto_promote:
            return self._switch(
                now, "preview validated: switching all traffic", manual=False, checks=checks
            )
        return self._stay(
            "preview validated: waiting for promote()",
            now,
            checks=checks,
        )

    def _evaluate_shadow(self, now: float, wait: bool) -> Decision:
        assert self.shadow is not None
        result = self._shadow_result(wait)
        checks = (result,)
        elapsed = now - self.step_started_at
        keep = {"phase": self.phase, "weight": self.weight, "step": self.step}
        if result.verdict is Verdict.FAIL:
            return self.rollback(f"shadow failed: {result.reason}", manual=False, checks=checks)
        if (
            result.verdict is Verdict.PASS
            and result.n_candidate >= self.shadow.min_pairs
            and elapsed >= self.shadow.min_duration
        ):
            return self._leave_shadow(
                now, f"shadow passed: {result.reason}", manual=False, checks=checks
            )
        if self.shadow.deadline is not None and self._since_deadline(now) > self.shadow.deadline:
            why = (
                f"shadow phase ran past its deadline of {self.shadow.deadline:g}s without a verdict"
            )
            if self.shadow.on_deadline == "pause":
                return self.pause(why, manual=False, checks=checks)
            return self.rollback(why, manual=False, checks=checks)
        return self._transition(
            Action.CONTINUE,
            f"shadowing: {result.n_candidate} of {self.shadow.min_pairs} pairs, "
            f"{elapsed:g}s of {self.shadow.min_duration:g}s",
            checks=checks,
            manual=False,
            now=now,
            **keep,  # type: ignore[arg-type]
        )

    # -- helpers ---------------------------------------------------------------------------

    def _step_of(self, weight: float) -> int | None:
        for i, s in enumerate(self.steps):
            if math.isclose(s, weight):
                return i
        return None

    def weights(self) -> dict[str, float]:
        """Percent of traffic per variant in this state."""
        return {self.baseline: 100.0 - self.weight, self.candidate: self.weight}

    def to_dict(self) -> dict[str, Any]:
        """The state as plain, JSON-serializable data."""
        return {
            "name": self.name,
            "phase": self.phase.value,
            "step": self.step,
            "steps": list(self.steps),
            "weights": self.weights(),
            "version": self.version,
            "stable": self.stable,
            "failures": self.failures,
            "consecutive_failures": self.consecutive,
            "evaluations": self.evaluations,
            "started_at": self.started_at,
            "step_started_at": self.step_started_at,
            "auto": self.auto,
        }

    @_changes_state
    def _transition(
        self,
        action: Action,
        reason: str,
        *,
        phase: Phase,
        weight: float,
        step: int | None,
        checks: tuple[CheckResult, ...] = (),
        manual: bool,
        now: float,
    ) -> Decision:
        before_phase, before_step, before_w = self.phase, self.step, self.weights()
        moved = not math.isclose(weight, self.weight) or step != self.step
        self.phase, self.weight, self.step = phase, float(weight), step
        if action is not Action.CONTINUE:
            self.version += 1
        if moved:
            self._apply(self.weights())
            self.step_started_at = now
            self.failures = self.consecutive = 0
            # At the end of an attempt, outcomes still to come for its requests stay out of
            # every later window (a retry's first look judged the failed attempt's late
            # conversions); from step to step within an attempt they join the current one.
            self._new_windows(end=phase in _ENDED and before_phase not in _ENDED)
        elif (phase in _ENDED) != (before_phase in _ENDED):
            # The same weights, but the forced keys change: a rolled-back candidate serves
            # nobody (also when its weight was already 0), and a retry lets them back.
            self._apply(self.weights())
        decision = Decision(
            rollout=self.name,
            action=action,
            reason=reason,
            phase_before=before_phase.value,
            phase_after=phase.value,
            step_before=before_step,
            step_after=step,
            weights_before=before_w,
            weights_after=self.weights(),
            checks=checks,
            time=now,
            version=self.version,
            manual=manual,
        )
        self._record(decision)
        return decision

    def _record(self, decision: Decision) -> None:
        self.history.append(decision)
        event: dict[str, Any] = {
            "rollout": decision.rollout,
            "phase": decision.phase_after,
            "step": decision.step_after,
            "action": decision.action.value,
            "reason": decision.reason,
            "weights": decision.weights_after,
            "manual": decision.manual,
            "version": decision.version,
        }
        if decision.action is Action.CONTINUE:
            # Routine looks: a compact verdict per check (the full evidence is in history).
            event["verdicts"] = {c.name: c.verdict.value for c in decision.checks}
            _log.debug("safeserve.decision", **event)
            return
        event["checks"] = [c.to_dict() for c in decision.checks]
        if decision.action in (Action.ROLLBACK, Action.ABORT, Action.PAUSE):
            _log.warning("safeserve.decision", **event)
        else:
            _log.info("safeserve.decision", **event)

    def _require(self, action: str, allowed: tuple[Phase, ...]) -> None:
        if self.phase not in allowed:
            names = ", ".join(p.value for p in allowed)
            raise TransitionError(
                f"cannot {action} rollout {self.name!r} in phase {self.phase.value!r} "
                f"(allowed in: {names})"
            )

    def require_canary_step(self, action: str) -> None:
        """Raise unless the rollout is at a canary step (running or paused), where weights
        may be set by hand: not in a shadow phase, a blue/green rollout or an ended one."""
        self._require(action, (Phase.PROGRESSING, Phase.PAUSED))
        if self.blue_green is not None or (
            self.phase is Phase.PAUSED and self._paused_from is Phase.SHADOW
        ):
            stage = "blue/green" if self.blue_green is not None else "shadow phase"
            raise TransitionError(
                f"cannot {action} rollout {self.name!r} in its {stage}: weights are set by "
                "hand only at canary steps (use promote() or rollback())"
            )

    def _stay(self, reason: str, now: float, checks: tuple[CheckResult, ...] = ()) -> Decision:
        """An automatic look that changes nothing (its decision is still recorded, except the
        same look with nothing judged again: after the end, or while a validation runs, such
        looks pushed the decisions that mattered out of the bounded history)."""
        last = self.history[-1] if self.history else None
        if (
            not checks
            and last is not None
            and last.action is Action.CONTINUE
            and last.reason == reason
            and last.phase_after == self.phase.value
        ):
            # The same entry, at the time of this look.
            self.history[-1] = last = attrs.evolve(last, time=now)
            return last
        return self._transition(
            Action.CONTINUE,
            reason,
            phase=self.phase,
            weight=self.weight,
            step=self.step,
            manual=False,
            now=now,
            checks=checks,
        )

    def _new_windows(self, *, end: bool = False) -> None:
        """New weights: clear the metric windows, and start the judge's count of requests and
        errors there (those served at the old weights since the last evaluation are not judged
        at the new ones: a retry's first evaluation replayed the failed attempt's errors, and a
        weight lowered by hand charged errors served at 50% to a 5% share). ``end``: the
        attempt ended, and outcomes of the requests it served are not judged any more."""
        totals = self._reset_windows(end=True) if end else self._reset_windows()
        if totals is not None:
            self.judge.skip(totals)

    def _since_deadline(self, now: float) -> float:
        """Seconds counted against the deadline: since the step (or phase) started, or since
        the last resume if later, so that a step paused at its deadline and resumed gets its
        full deadline again instead of pausing at once."""
        return now - max(self.step_started_at, self._resumed_at)

    def _next(self) -> tuple[int | None, float]:
        """The step after the current weight (the first step above it)."""
        for i, s in enumerate(self.steps):
            if s > self.weight + 1e-9:
                return i, s
        return len(self.steps) - 1, self.steps[-1]

    # -- manual controls ---------------------------------------------------------------------

    @_changes_state
    def set_weight(self, weight: float) -> Decision:
        """Record a weight the router was set to by hand; the rollout continues from it."""
        with self.lock:
            now = self._clock()
            before_phase, before_step, before_w = self.phase, self.step, self.weights()
            self.weight = float(weight)
            self.step = self._step_of(weight)
            self.step_started_at = now
            self.failures = self.consecutive = 0
            self._new_windows()
            decision = Decision(
                rollout=self.name,
                action=Action.CONTINUE,
                reason=f"weights set by hand: candidate at {weight:g}%",
                phase_before=before_phase.value,
                phase_after=self.phase.value,
                step_before=before_step,
                step_after=self.step,
                weights_before=before_w,
                weights_after=self.weights(),
                time=now,
                version=self.version,
                manual=True,
            )
            self._record(decision)
            return decision

    def promote(self, *, full: bool = False, reason: str | None = None) -> Decision:
        with self.lock:
            self._require("promote", _ACTIVE)
            now = self._clock()
            if self.phase is Phase.SHADOW or (
                self.phase is Phase.PAUSED and self._paused_from is Phase.SHADOW
            ):
                return self._leave_shadow(now, reason or "shadow phase ended by hand", manual=True)
            if self.phase is Phase.PENDING:
                # The preview is validated before any switch, by hand too.
                got = self._validation(wait=True)
                assert got is not None
                failure, checks = got
                if failure:
                    return self.rollback(
                        f"validation failed: {failure}", manual=True, checks=checks
                    )
                # The watch starts at the switch, after the validation, however long it took.
                now = self._clock()
                return self._switch(now, reason or "switched by hand", manual=True, checks=checks)
            if self.blue_green is not None and not full:
                # Already switched (a switch made on its own just before this call, say):
                # ending the watch too must be asked for, not be a side effect.
                raise TransitionError(
                    f"rollout {self.name!r} has switched to {self.candidate!r} and is watching "
                    f"it (phase {self.phase.value!r}): promote(full=True) ends the watch and "
                    "keeps it, rollback() switches back"
                )
            if full or self.weight >= 100.0:
                return self._finish(now, reason or "promoted by hand", manual=True)
            step, weight = self._next()
            return self._transition(
                Action.PROMOTE,
                reason or f"promoted by hand to {weight:g}%",
                phase=Phase.PROGRESSING,
                weight=weight,
                step=step,
                manual=True,
                now=now,
            )

    @_changes_state
    def _finish(
        self, now: float, reason: str, *, manual: bool, checks: tuple[CheckResult, ...] = ()
    ) -> Decision:
        self.stable = self.candidate
        if self.blue_green is not None and self.blue_green.keep_old is not None:
            self.release_at = now + self.blue_green.keep_old
        return self._transition(
            Action.PROMOTE,
            reason,
            phase=Phase.PROMOTED,
            weight=100.0,
            step=len(self.steps) - 1,
            manual=manual,
            now=now,
            checks=checks,
        )

    @_changes_state
    def rollback(
        self, reason: str, *, manual: bool = True, checks: tuple[CheckResult, ...] = ()
    ) -> Decision:
        with self.lock:
            self._require("roll back", (*_ACTIVE, Phase.PROMOTED))
            if self.released:
                raise TransitionError(
                    f"cannot roll back rollout {self.name!r}: the old version "
                    f"{self.baseline!r} was released after keep_old"
                )
            self._stop_mirror()
            self.stable = self.baseline
            return self._transition(
                Action.ROLLBACK,
                reason,
                phase=Phase.ROLLED_BACK,
                weight=0.0,
                step=None,
                manual=manual,
                now=self._clock(),
                checks=checks,
            )

    def pause(
        self, reason: str, *, manual: bool = True, checks: tuple[CheckResult, ...] = ()
    ) -> Decision:
        with self.lock:
            self._require("pause", (Phase.PROGRESSING, Phase.SHADOW))
            self._paused_from = self.phase
            return self._transition(
                Action.PAUSE,
                reason,
                phase=Phase.PAUSED,
                weight=self.weight,
                step=self.step,
                manual=manual,
                now=self._clock(),
                checks=checks,
            )

    def resume(self, reason: str = "resumed by hand", *, manual: bool = True) -> Decision:
        with self.lock:
            self._require("resume", (Phase.PAUSED,))
            self.judge.reset_srm()
            self.paused_by = None
            self._drift_streak = [0, 0]
            self._resumed_at = self._clock()  # a full deadline again (see _since_deadline)
            return self._transition(
                Action.RESUME,
                reason,
                phase=self._paused_from,
                weight=self.weight,
                step=self.step,
                manual=manual,
                now=self._clock(),
            )

    # -- drift ---------------------------------------------------------------------------

    def _judge_drift(
        self, now: float, results: tuple[CheckResult, ...]
    ) -> tuple[CheckResult, Decision | None]:
        """Pause on confirmed input drift; resume once it has cleared long enough."""
        assert self.drift is not None
        report = self.drift.evaluate()
        result = _drift_result(report)
        # Confirmed apart for each arm a drift is seen in (the baseline's rows: the traffic
        # changed; the candidate's: they differ from the baseline's or, unattributed, from the
        # reference), each only on rows its last confirmation did not judge (a window of new
        # rows of that arm): consecutive evaluations of overlapping windows agree by
        # construction (a third of drift-free runs paused with two confirmations), and new
        # baseline rows do not confirm a drift of the candidate's (a 5% canary adds 19 to
        # each of the candidate's).
        seen = (report.traffic_changed, report.drifted and report.scope is not DriftScope.TRAFFIC)
        added = self.drift.rows_added() if report.drifted else (0, 0)
        for arm in (0, 1):
            if not seen[arm]:
                self._drift_streak[arm] = 0
            elif (
                self._drift_streak[arm] == 0
                or added[arm] - self._drift_mark[arm] >= self.drift.window_rows
            ):
                self._drift_streak[arm] += 1
                self._drift_mark[arm] = added[arm]
        if report.drifted:
            self._drift_clear_since = None
        elif self._drift_clear_since is None:
            self._drift_clear_since = now
        checks = (*results, result)
        if (
            self.phase is Phase.PROGRESSING
            and report.drifted
            and max(self._drift_streak) >= self.drift_confirmations
        ):
            decision = self.pause(f"input drift: {result.reason}", manual=False, checks=checks)
            self.paused_by = "drift"
            return result, decision
        if (
            self.phase is Phase.PAUSED
            and self.paused_by == "drift"
            and not report.drifted
            and self.drift_resume_after is not None
            and self._drift_clear_since is not None
            and now - self._drift_clear_since >= self.drift_resume_after
        ):
            why = f"drift cleared for {now - self._drift_clear_since:g}s: resuming"
            return result, self.resume(why, manual=False)
        return result, None

    @_changes_state
    def abort(self, reason: str) -> Decision:
        with self.lock:
            self._require("abort", _ACTIVE)
            self._stop_mirror()
            return self._transition(
                Action.ABORT,
                reason,
                phase=Phase.ABORTED,
                weight=0.0,
                step=None,
                manual=True,
                now=self._clock(),
            )

    @_changes_state
    def retry(self, reason: str = "retried by hand") -> Decision:
        with self.lock:
            self._require("retry", _STOPPED)
            self.judge.restart()
            # Drift confirmations start again too (a retried rollout paused at its first
            # drifted look on the old streak).
            self._drift_streak = [0, 0]
            self.paused_by = None
            self.stable = self.baseline
            self.frozen_baseline = None
            self._validated = False
            self._validation_job = None  # one still running finishes unheard
            now = self._clock()
            if self.shadow is not None or self.blue_green is not None:
                phase = Phase.SHADOW if self.shadow is not None else Phase.PENDING
                d = self._transition(
                    Action.RETRY, reason, phase=phase, weight=0.0, step=None, manual=True, now=now
                )
                try:
                    self._enter_first_stage(now)
                except Exception as exc:
                    # (The mirror's threads or process could not start.) Not left in a shadow
                    # phase with no shadow, which no evaluation could ever end.
                    self._transition(
                        Action.ROLLBACK,
                        f"the retry could not start its first phase: {type(exc).__name__}: {exc}",
                        phase=Phase.ROLLED_BACK,
                        weight=0.0,
                        step=None,
                        manual=True,
                        now=now,
                    )
                    raise
                return d
            return self._transition(
                Action.RETRY,
                reason,
                phase=Phase.PROGRESSING,
                weight=self.steps[0],
                step=0,
                manual=True,
                now=now,
            )

    # -- automatic evaluation ----------------------------------------------------------------

    def evaluate(self, snap: MetricsSnapshot, *, wait: bool = True) -> Decision:
        """Judge the checks on ``snap`` and act on the verdicts; return the decision.

        ``wait=False`` (an evaluation on a request's thread): a process-isolated shadow's
        figures are those the worker has already sent, never waited for.
        """
        with self.lock:
            now = self._clock()
            self.evaluations += 1
            if (
                self.phase is Phase.PROMOTED
                and self.release_at is not None
                and not self.released
                and now >= self.release_at
                and self._release is not None
            ):
                self._release()
                self.released = True
            if self.phase is Phase.SHADOW:
                return self._evaluate_shadow(now, wait)
            if self.phase is Phase.PENDING:
                return self._evaluate_pending(now, wait)
            if self.phase is Phase.PAUSED and self._paused_from is Phase.SHADOW:
                return self._stay(
                    "paused in the shadow phase",
                    now,
                    checks=(self._shadow_result(wait),) if self.mirror is not None else (),
                )
            if self.phase not in _ACTIVE:
                return self._stay(
                    f"nothing to judge in phase {self.phase.value!r}",
                    now,
                )
            frozen = self.frozen_baseline
            if frozen is not None and frozen.requests < self.min_samples:
                # Too few requests before the switch to compare with (a switch by hand early
                # on): the watch judges the guardrails alone, as at a step where one arm gets
                # no traffic, rather than waiting for ever on comparisons that cannot conclude.
                frozen = None
            j = self.judge.evaluate(snap, weights=self.weights(), frozen_baseline=frozen)
            keep = {"phase": self.phase, "weight": self.weight, "step": self.step}
            results = j.results
            # Drift flagged but not confirmed yet: no promotion meanwhile (a fast rollout went
            # to 100% on drifted traffic while the confirmation waited for new rows).
            drift_flagged = False
            if self.drift is not None and self.auto:
                drift_result, decision = self._judge_drift(now, results)
                if decision is not None:
                    return decision
                drift_flagged = drift_result.verdict is Verdict.FAIL
                results = (*results, drift_result)
                j = attrs.evolve(j, results=results)
            if not self.auto:
                return self._transition(
                    Action.CONTINUE,
                    "manual mode: judged, not acted on",
                    checks=j.results,
                    manual=False,
                    now=now,
                    **keep,  # type: ignore[arg-type]
                )
            failing = [
                r for r in j.results if r.verdict.value == "fail" and not r.dry_run and r.critical
            ]
            # A guardrail is an absolute limit: it acts in every phase judged here, paused
            # ones included (by hand, by a sample-ratio mismatch, at a deadline, by drift).
            if j.guardrail_breached:
                why = "; ".join(f"{r.name}: {r.reason}" for r in failing if r.kind == "guardrail")
                return self.rollback(f"guardrail breached: {why}", manual=False, checks=j.results)
            if self.phase is Phase.PAUSED:
                # Comparisons are not acted on while paused (by drift: they may reflect the
                # traffic rather than the model).
                by = " by input drift" if self.paused_by == "drift" else ""
                return self._transition(
                    Action.CONTINUE,
                    f"paused{by}: guardrails hold; comparisons judged, not acted on",
                    checks=j.results,
                    manual=False,
                    now=now,
                    **keep,  # type: ignore[arg-type]
                )
            if j.failed:
                self.failures += 1
                self.consecutive += 1
            else:
                self.consecutive = 0
            count = self.consecutive if self.policy.consecutive else self.failures
            if j.failed and count > self.policy.failure_limit:
                why = "; ".join(f"{r.name}: {r.reason}" for r in failing if r.kind != "srm")
                return self.rollback(
                    f"failed at {self.weight:g}%: {why}", manual=False, checks=j.results
                )
            if j.srm_mismatch:
                why = next(r.reason for r in failing if r.kind == "srm")
                return self.pause(f"sample ratio mismatch: {why}", manual=False, checks=j.results)
            elapsed = now - self.step_started_at
            c = snap.variant(self.candidate).requests
            b = snap.variant(self.baseline).requests
            samples_ok = c >= self.min_samples and (self.weight >= 100.0 or b >= self.min_samples)
            baked = elapsed >= self.min_duration and samples_ok
            if baked and j.all_pass and not j.failed and not drift_flagged:
                if self.weight >= 100.0:
                    return self._finish(
                        now,
                        f"baked {elapsed:g}s at 100% with every guardrail holding",
                        manual=False,
                        checks=j.results,
                    )
                step, weight = self._next()
                return self._transition(
                    Action.PROMOTE,
                    f"every critical check passed after {elapsed:g}s and {c} candidate requests "
                    f"at {self.weight:g}%: moving to {weight:g}%",
                    phase=Phase.PROGRESSING,
                    weight=weight,
                    step=step,
                    checks=j.results,
                    manual=False,
                    now=now,
                )
            if self.deadline is not None and self._since_deadline(now) > self.deadline:
                pending = [r.name for r in j.results if r.verdict.value != "pass" and r.critical]
                why = (
                    f"step at {self.weight:g}% ran past its deadline of {self.deadline:g}s "
                    f"without a verdict (still open: {', '.join(pending) or 'bake time/samples'})"
                )
                if self.on_deadline == "pause":
                    return self.pause(why, manual=False, checks=j.results)
                return self.rollback(why, manual=False, checks=j.results)
            open_checks = [
                r.name
                for r in j.results
                if r.verdict.value != "pass" and r.critical and not r.dry_run
            ]
            why = (
                f"baking: {elapsed:g}s of {self.min_duration:g}s, {c} candidate / {b} baseline "
                f"requests of {self.min_samples}"
                if not baked
                else f"waiting on {', '.join(open_checks)}"
            )
            return self._transition(
                Action.CONTINUE,
                why,
                checks=j.results,
                manual=False,
                now=now,
                **keep,  # type: ignore[arg-type]
            )


def _drift_result(report: DriftReport) -> CheckResult:
    """One check result summarizing a drift report (the evidence names every feature)."""
    if not report.drifted:
        return CheckResult(
            name="drift",
            kind="drift",
            verdict=Verdict.PASS,
            reason=f"no drift ({report.n_baseline} baseline, {report.n_candidate} candidate rows)",
            n_candidate=report.n_candidate,
            n_baseline=report.n_baseline,
        )
    parts = []
    q_values = []
    for f in report.drifted_features:
        stats = next(s for s in (f.baseline, f.between, f.candidate) if s is not None and s.drifted)
        q_values.append(stats.q_value)
        parts.append(f"{f.name} ({stats.test} p={stats.p_value:.2g}, PSI {stats.psi:.3g})")
    if report.traffic_changed and not report.candidate_only:
        blame = "the traffic changed (seen alike in the baseline's traffic), not the candidate"
    elif report.candidate_only and not report.traffic_changed:
        blame = "seen in the candidate's traffic only"
    elif report.candidate_only:
        blame = "the traffic changed, and some features differ in the candidate's traffic"
    else:
        blame = "not attributable yet"
    return CheckResult(
        name="drift",
        kind="drift",
        verdict=Verdict.FAIL,
        estimate=float(len(parts)),
        p_value=min(q_values) if q_values else None,
        reason=f"{', '.join(parts)}: {blame}",
        n_candidate=report.n_candidate,
        n_baseline=report.n_baseline,
        action=Action.PAUSE,
    )

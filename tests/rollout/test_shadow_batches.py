"""Batches in a shadow phase: rows are mirrored like single requests, and batches alone drive a
rollout's automatic evaluations."""

from __future__ import annotations

from typing import Any

import numpy as np

import safeserve as ss

from .conftest import Clock


def classes(shift: float = 0.0) -> Any:
    """A vectorized classifier on one number per row: class 1 above 0.5 (+ shift)."""

    def model(X: Any) -> Any:
        return (np.asarray(X).reshape(len(X), -1)[:, 0] > 0.5 + shift).astype(np.int64)

    return model


def drained(router: ss.Router) -> None:
    """Wait (bounded) until the shadow has run every queued row and the sink has had every
    pair (the report's counts reach zero before the last pair's sink call ends)."""
    mirror = router._mirror
    if mirror is not None:
        assert mirror.wait_idle(30.0)


def test_batch_rows_are_mirrored_for_the_same_users_as_single_requests() -> None:
    """With sample=0.3, route_batch mirrors exactly the keys that route mirrors; each row
    reaches the sink with its own request id and is compared with its own answer."""
    pairs: list[ss.ShadowPair] = []
    with ss.Router(
        {"v1": classes(), "v2": classes(shift=0.1)},
        strategy=ss.Shadow("v1", "v2", sample=0.3, min_pairs=10**9, sink=pairs.append),
    ) as router:
        x = np.linspace(0.0, 1.0, 2_000)
        keys = [f"user-{i}" for i in range(2_000)]
        single = {router.route(x[i : i + 1], key=k).request_id: k for i, k in enumerate(keys)}
        drained(router)
        by_single = {single[p.request_id] for p in pairs}
        pairs.clear()
        routed = router.route_batch(x.reshape(-1, 1), keys=keys)
        drained(router)
        r = router.status().shadow
    assert r is not None
    batch = dict(zip(routed.request_ids.tolist(), keys, strict=True))
    by_batch = {batch[p.request_id] for p in pairs}
    assert by_batch == by_single
    assert 500 < len(by_batch) < 700
    assert r.submitted == r.compared == 2 * len(by_batch)
    # The candidate disagrees on rows in (0.5, 0.6]: each row was paired with its own answer.
    rows = {k: x[i] for i, k in enumerate(keys)}
    expected = sum(0.5 < rows[k] <= 0.6 for k in by_batch)
    assert r.disagreements == 2 * expected
    assert all(p.shadow_output != p.primary_output for p in pairs if 0.5 < p.input[0] <= 0.6)


def primary_with_nan(X: Any) -> Any:
    """Class scores, NaN on rows whose input is exactly 0.7."""
    x = np.asarray(X)[:, 0]
    return np.where(x == 0.7, np.nan, (x > 0.5).astype(np.float64))


def test_overridden_and_rejected_rows_are_not_mirrored() -> None:
    """Rows pinned to the candidate, and rows whose answer the validator rejected, are kept
    out of the comparison, as single requests are."""
    with ss.Router(
        {"v1": primary_with_nan, "v2": lambda X: classes(shift=0.3)(X).astype(np.float64)},
        strategy=ss.Shadow("v1", "v2", min_pairs=10**9),
        overrides={f"tester-{i}": "v2" for i in range(50)},
        validators={"v1": ss.is_finite},
    ) as router:
        keys = [f"tester-{i}" for i in range(50)] + [f"user-{i}" for i in range(30)]
        X = np.full((80, 1), 0.6)
        X[-10:] = 0.7  # ten users get a rejected (NaN) answer
        router.predict_batch(X, keys=keys)
        drained(router)
        r = router.status().shadow
    assert r is not None
    assert (r.submitted, r.compared) == (20, 20)
    assert r.difference_mean == -1.0  # the candidate says 0 where the primary says 1


def shadow_then_canary(shift: float) -> ss.Router:
    return ss.Router(
        {"v1": classes(), "v2": classes(shift=shift)},
        strategy=ss.Pipeline(
            [
                ss.Shadow(
                    "v1",
                    "v2",
                    max_disagreement=0.05,
                    min_pairs=300,
                    min_duration=0.0,
                    evaluate_every=200,
                ),
                ss.Canary("v1", "v2", min_duration=1e9, deadline=None),
            ]
        ),
        clock=Clock(),
    )


def serve_batches(router: ss.Router, until: ss.Phase, batches: int = 600) -> set[str]:
    """Serve batches of 100 rows (never calling evaluate) until the phase is reached.

    (The error check counts each batch's call once: with max_error_rate 0.01 it passes
    after about 320 error-free calls, however many rows they hold.)"""
    rng = np.random.default_rng(0)
    served: set[str] = set()
    for b in range(batches):
        keys = np.arange(b * 100, (b + 1) * 100)
        served |= set(router.route_batch(rng.random((100, 1)), keys=keys).variants.tolist())
        drained(router)
        if router.status().phase is until:
            break
    return served


def test_a_batch_only_service_passes_a_shadow_phase() -> None:
    """An identical candidate, served in batches only: the shadow phase passes by itself."""
    with shadow_then_canary(0.0) as router:
        serve_batches(router, ss.Phase.PROGRESSING)
        st = router.status()
    assert st.phase is ss.Phase.PROGRESSING
    assert st.weights["v2"] == 5.0
    assert st.shadow is None


def test_a_disagreeing_candidate_served_in_batches_ends_the_pipeline_unseen() -> None:
    """~20% disagreement on batch rows fails the shadow phase before any user sees v2."""
    with shadow_then_canary(0.2) as router:
        served = serve_batches(router, ss.Phase.ROLLED_BACK)
        st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    assert served == {"v1"}
    assert st.metrics.variant("v2").totals["requests"] == 0
    assert st.decisions[-1].reason.startswith("shadow failed")


def test_batches_count_towards_automatic_evaluations() -> None:
    """predict_batch rows count as requests: with evaluate_every=1,000, ten batches of 100
    bring the first automatic evaluation, nine do not."""
    clock = Clock()
    router = ss.Router(
        {"v1": classes(), "v2": classes()},
        strategy=ss.Canary(
            "v1",
            "v2",
            evaluate_every=1_000,
            evaluate_interval=1e12,
            min_duration=1e9,
            deadline=None,
        ),
        clock=clock,
    )
    X = np.random.default_rng(0).random((100, 1))
    for b in range(9):
        router.predict_batch(X, keys=np.arange(b * 100, (b + 1) * 100))
    assert router.status().decisions == ()
    router.predict_batch(X, keys=np.arange(900, 1_000))
    assert len(router.status().decisions) == 1
    for b in range(10, 19):
        router.predict_batch(X, keys=np.arange(b * 100, (b + 1) * 100))
    assert len(router.status().decisions) == 1
    router.route_batch(X, keys=np.arange(1_900, 2_000))
    assert len(router.status().decisions) == 2


def test_a_batch_buffer_refilled_by_the_caller_does_not_change_what_the_shadow_sees() -> None:
    """Services often refill one input array for each batch: the rows the shadow answers
    must be those the primary answered (an identical candidate then never disagrees)."""
    with ss.Router(
        {"v1": classes(), "v2": classes()},
        strategy=ss.Shadow("v1", "v2", min_pairs=10**9, queue_size=100_000),
    ) as router:
        rng = np.random.default_rng(0)
        buffer = np.empty((200, 1))
        for b in range(30):
            buffer[:] = rng.random((200, 1))
            router.predict_batch(buffer, keys=np.arange(b * 200, (b + 1) * 200))
        drained(router)
        r = router.status().shadow
    assert r is not None
    assert r.compared == 6_000
    assert r.disagreements == 0


class Frame:
    """A table of columns (as a data frame is): a length, but no rows by position."""

    def __init__(self, x: Any) -> None:
        self.columns = {"x": np.asarray(x)}

    def __len__(self) -> int:
        return len(self.columns["x"])

    def __getitem__(self, name: str) -> Any:
        return self.columns[name]


def test_rows_that_cannot_be_selected_are_not_mirrored_and_the_caller_is_served() -> None:
    """A batch the router cannot take rows from (here, columns only) is answered as before;
    the shadow does not get it, and the router says so once per shadow phase."""
    from structlog.testing import capture_logs

    def model(X: Any) -> Any:
        return (X["x"] > 0.5).astype(np.int64)

    with (
        capture_logs() as logs,
        ss.Router(
            {"v1": model, "v2": model}, strategy=ss.Shadow("v1", "v2", sample=0.5, min_pairs=10**9)
        ) as router,
    ):
        for b in range(3):
            ys = router.predict_batch(Frame(np.linspace(0, 1, 100)), keys=np.arange(100) + b)
            assert ys.tolist() == (np.linspace(0, 1, 100) > 0.5).astype(int).tolist()
        r = router.status().shadow
    assert r is not None
    assert r.submitted == 0
    said = [e for e in logs if e["event"] == "safeserve.batch_not_mirrored"]
    assert len(said) == 1
    assert "KeyError" in said[0]["reason"]

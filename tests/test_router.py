"""Router: routing, batches, overrides, weight changes and request-path faults."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import safeserve as ss


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """A model that counts its calls and tags its answers."""

    def __init__(self, tag: float, *, fail: bool = False, output: Any = None) -> None:
        self.tag = tag
        self.calls = 0
        self.fail = fail
        self.output = output

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        if self.fail:
            raise RuntimeError(f"model {self.tag} broke")
        if self.output is not None:
            return self.output
        if isinstance(x, np.ndarray):
            return x[:, 0] * 0 + self.tag
        if isinstance(x, list):
            return [self.tag] * len(x)
        return self.tag


def make(weight: float = 50, **kwargs: Any) -> tuple[ss.Router, Counting, Counting]:
    v1, v2 = Counting(1.0), Counting(2.0)
    router = ss.Router(
        {"v1": v1, "v2": v2},
        strategy=ss.Canary(baseline="v1", candidate="v2", weight=weight),
        name="test",
        **kwargs,
    )
    return router, v1, v2


def requests(router: ss.Router) -> dict[str, int]:
    m = router.status().metrics
    return {name: m.variant(name).requests for name in ("v1", "v2")}


def test_route_returns_value_variant_and_unique_ids() -> None:
    """route() answers with the chosen model and a fresh request id."""
    router, _, _ = make()
    seen = set()
    for i in range(200):
        r = router.route(0, key=f"u{i}")
        assert r.value == {"v1": 1.0, "v2": 2.0}[r.variant]
        assert r.request_id not in seen
        seen.add(r.request_id)


def test_same_key_same_variant_and_share_follows_weight() -> None:
    """A key always gets the same variant; the share follows the weight."""
    router, _, _ = make(weight=25)
    first = [router.route(0, key=i).variant for i in range(4000)]
    again = [router.route(0, key=i).variant for i in range(4000)]
    assert first == again
    share = first.count("v2") / len(first)
    assert 0.2 < share < 0.3


def test_variant_matches_the_hash_contract() -> None:
    """The routed variant is the allocation's owner of the key's bucket."""
    router, _, _ = make(weight=30)
    alloc = ss.Allocation("v1", ("v2",), {"v2": 30})
    for k in ["a", "b", b"raw", 7, -7, "用户"]:
        assert router.route(0, key=k).variant == alloc.variant_of_bucket(
            ss.bucket_of(k, salt="test")
        )


def test_salt_defaults_to_name_and_can_be_set() -> None:
    """The salt is the router's name unless given."""
    a = ss.Router({"a": abs, "b": abs}, strategy=ss.Canary("a", "b", weight=50), name="x")
    b = ss.Router({"a": abs, "b": abs}, strategy=ss.Canary("a", "b", weight=50), name="y", salt="x")
    assert [a.route(1, key=i).variant for i in range(300)] == [
        b.route(1, key=i).variant for i in range(300)
    ]


def test_predict_equals_route_value() -> None:
    """predict() returns exactly route().value."""
    router, _, _ = make()
    for i in range(100):
        assert router.predict(0, key=i) == router.route(0, key=i).value


@pytest.mark.parametrize("kind", ["int-array", "str-list", "mixed-list"])
@pytest.mark.parametrize("container", ["numpy", "list"])
def test_predict_batch_matches_single_requests(kind: str, container: str) -> None:
    """predict_batch routes like predict, keeps input order and calls each model once."""
    router, v1, v2 = make(weight=40)
    n = 500
    if kind == "int-array":
        keys: Any = np.arange(n, dtype=np.int64) * 7919
        single = keys.tolist()
    elif kind == "str-list":
        keys = single = [f"user-{i}" for i in range(n)]
    else:
        keys = single = [f"user-{i}" if i % 3 else i for i in range(n)]
    X: Any = np.arange(n, dtype=float).reshape(n, 1)
    if container == "list":
        X = [float(i) for i in range(n)]
    expected = [router.route(0, key=k).value for k in single]
    v1.calls = v2.calls = 0
    out = router.predict_batch(X, keys=keys)
    assert list(np.asarray(out)) == expected
    assert (v1.calls, v2.calls) == (1, 1)
    rb = router.route_batch(X, keys=keys)
    assert [("v1", "v2")[int(v == 2.0)] for v in expected] == rb.variants.tolist()
    assert len(set(rb.request_ids.tolist())) == n


def test_predict_batch_empty_and_single_variant() -> None:
    """An empty batch returns an empty result; a batch all on one variant calls only it."""
    router, _, v2 = make(weight=0)
    assert len(router.predict_batch(np.zeros((0, 1)), keys=np.zeros(0, dtype=np.int64))) == 0
    out = router.predict_batch(np.zeros((10, 1)), keys=np.arange(10))
    assert out.tolist() == [1.0] * 10
    assert v2.calls == 0


def test_predict_batch_rejects_key_count_mismatch() -> None:
    """A batch with a different number of keys than rows is rejected."""
    router, _, _ = make()
    with pytest.raises(ss.ConfigError, match="3 keys for 2 rows"):
        router.predict_batch(np.zeros((2, 1)), keys=[1, 2, 3])


def test_clock_is_injected_for_latency() -> None:
    """Latency is measured with the injected clock."""
    clock = FakeClock()

    def slow(x: float) -> float:
        clock.now += 0.25
        return x

    router = ss.Router({"v1": slow}, clock=clock)
    router.predict(1.0, key="k")
    lat = router.status().metrics.variant("v1").latency_moments
    assert lat.n == 1
    assert math.isclose(lat.mean, 0.25)


def test_overrides_by_key_and_predicate_are_counted_apart() -> None:
    """Forced keys get their variant, and are kept out of the variant's statistics."""
    router, _, _ = make(
        weight=0,
        overrides={"qa-1": "v2"},
        override=lambda key, x: (
            "v2" if isinstance(key, str) and key.startswith("tester-") else None
        ),
    )
    assert router.route(0, key="qa-1").variant == "v2"
    assert router.route(0, key="tester-9").variant == "v2"
    assert router.route(0, key="someone").variant == "v1"
    out = router.predict_batch([0, 0, 0], keys=["qa-1", "x", "tester-2"])
    assert out == [2.0, 1.0, 2.0]
    m = router.status().metrics
    assert m.variant("v2").overrides == 4
    assert m.variant("v2").requests == 0


def test_override_to_unknown_variant_is_an_error() -> None:
    """A predicate naming a variant that does not exist raises ConfigError."""
    router, _, _ = make(override=lambda key, x: "v9")
    with pytest.raises(ss.ConfigError, match="'v9'"):
        router.route(0, key="k")
    with pytest.raises(ss.ConfigError, match="'v9'"):
        make(overrides={"k": "v9"})


def test_set_weights_changes_routing_and_version() -> None:
    """Manual weight changes take effect at once and bump the version."""
    router, _, _ = make(weight=0)
    assert router.version == 1
    router.set_weights({"v2": 100})
    assert router.version == 2
    assert {router.route(0, key=i).variant for i in range(50)} == {"v2"}
    assert router.status().weights == {"v1": 0.0, "v2": 100.0}


def test_bad_weight_change_keeps_the_old_table() -> None:
    """An invalid weight change raises and leaves routing untouched."""
    router, _, _ = make(weight=10)
    with pytest.raises(ss.ConfigError, match="150"):
        router.set_weights({"v2": 150})
    with pytest.raises(ss.ConfigError, match="'v3'"):
        router.set_weights({"v3": 1})
    assert router.version == 1
    assert router.weights["v2"] == 10.0


def test_keyless_requests_are_counted_apart() -> None:
    """Requests without a key get a seeded random bucket and are counted."""
    a, _, _ = make(weight=50, seed=3)
    b, _, _ = make(weight=50, seed=3)
    assert [a.route(0).variant for _ in range(100)] == [b.route(0).variant for _ in range(100)]
    a.predict_batch([0, 0, 0])
    assert a.status().keyless == 103


def test_candidate_exception_falls_back_to_baseline() -> None:
    """A failing candidate is counted as an error and the baseline answers."""
    v1, v2 = Counting(1.0), Counting(2.0, fail=True)
    router = ss.Router({"v1": v1, "v2": v2}, strategy=ss.Canary("v1", "v2", weight=100))
    r = router.route(0, key="k")
    assert (r.value, r.variant, r.fallback) == (1.0, "v2", True)
    m = router.status().metrics.variant("v2")
    assert (m.requests, m.errors, m.fallbacks) == (1, 1, 1)


def test_candidate_exception_propagates_without_fallback() -> None:
    """With fallback=False the candidate's own exception object propagates unchanged."""
    boom = ValueError("bad input for v2")

    def v2(x: float) -> float:
        raise boom

    router = ss.Router(
        {"v1": abs, "v2": v2}, strategy=ss.Canary("v1", "v2", weight=100), fallback=False
    )
    with pytest.raises(ValueError, match="bad input for v2") as info:
        router.predict(0, key="k")
    assert info.value is boom
    assert router.status().metrics.variant("v2").errors == 1


def test_baseline_exception_always_propagates() -> None:
    """The baseline's exceptions propagate, and are counted."""
    v1 = Counting(1.0, fail=True)
    router = ss.Router({"v1": v1, "v2": Counting(2.0)}, strategy=ss.Canary("v1", "v2", weight=0))
    with pytest.raises(RuntimeError, match=r"model 1\.0 broke"):
        router.predict(0, key="k")
    assert router.status().metrics.variant("v1").errors == 1
    # Also when the baseline is the fallback of a failing candidate.
    router2 = ss.Router(
        {"v1": Counting(1.0, fail=True), "v2": Counting(2.0, fail=True)},
        strategy=ss.Canary("v1", "v2", weight=100),
    )
    with pytest.raises(RuntimeError, match=r"model 1\.0 broke"):
        router2.predict(0, key="k")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [0.1, float("nan")]])
def test_validator_rejects_bad_outputs(bad: Any) -> None:
    """Outputs failing the validator count as errors and the baseline answers."""
    router = ss.Router(
        {"v1": Counting(1.0), "v2": Counting(2.0, output=bad)},
        strategy=ss.Canary("v1", "v2", weight=100),
        validators={"v2": ss.is_finite},
    )
    r = router.route(0, key="k")
    assert (r.value, r.fallback) == (1.0, True)
    m = router.status().metrics.variant("v2")
    assert (m.errors, m.fallbacks) == (1, 1)


def test_invalid_output_without_fallback_raises() -> None:
    """With fallback=False an invalid candidate output raises InvalidOutputError."""
    router = ss.Router(
        {"v1": Counting(1.0), "v2": Counting(2.0, output=[1.0, 2.0, 3.0])},
        strategy=ss.Canary("v1", "v2", weight=100),
        validators={"v2": ss.has_shape(2)},
        fallback=False,
    )
    with pytest.raises(ss.InvalidOutputError, match="'v2'"):
        router.predict(0, key="k")


def test_validator_that_raises_counts_as_rejection() -> None:
    """A validator that raises rejects the output instead of breaking the request."""

    def picky(y: Any) -> bool:
        raise TypeError("cannot judge")

    router = ss.Router(
        {"v1": Counting(1.0), "v2": Counting(2.0)},
        strategy=ss.Canary("v1", "v2", weight=100),
        validators={"v2": picky},
    )
    assert router.predict(0, key="k") == 1.0


def test_batch_candidate_failure_falls_back_per_slice() -> None:
    """In a batch, a failing candidate's rows are answered by the baseline."""
    v1, v2 = Counting(1.0), Counting(2.0, fail=True)
    router = ss.Router({"v1": v1, "v2": v2}, strategy=ss.Canary("v1", "v2", weight=50))
    keys = np.arange(400)
    rb = router.route_batch(np.zeros((400, 1)), keys=keys)
    assert rb.values.tolist() == [1.0] * 400
    assert rb.fallback.sum() == (rb.variants == "v2").sum() > 0
    m = router.status().metrics.variant("v2")
    assert m.errors == m.fallbacks == int(rb.fallback.sum())


def test_batch_invalid_rows_fall_back_row_by_row() -> None:
    """Only the rows whose outputs fail validation are re-answered by the baseline."""

    def v2(X: np.ndarray) -> np.ndarray:
        out = X[:, 0].astype(float) * 0 + 2.0
        out[X[:, 0] % 2 == 1] = np.nan
        return out

    router = ss.Router(
        {"v1": Counting(1.0), "v2": v2},
        strategy=ss.Canary("v1", "v2", weight=100),
        validators={"v2": ss.is_finite},
    )
    X = np.arange(10, dtype=float).reshape(10, 1)
    out = router.predict_batch(X, keys=np.arange(10))
    assert out.tolist() == [2.0 if i % 2 == 0 else 1.0 for i in range(10)]


def test_batch_baseline_failure_propagates() -> None:
    """In a batch the baseline's exception propagates."""
    router = ss.Router(
        {"v1": Counting(1.0, fail=True), "v2": Counting(2.0)},
        strategy=ss.Canary("v1", "v2", weight=0),
    )
    with pytest.raises(RuntimeError, match="broke"):
        router.predict_batch(np.zeros((5, 1)), keys=np.arange(5))


def test_batch_wrong_output_length_is_invalid() -> None:
    """A candidate returning the wrong number of rows is treated as invalid."""
    router = ss.Router(
        {"v1": Counting(1.0), "v2": lambda X: np.zeros(1)},
        strategy=ss.Canary("v1", "v2", weight=100),
    )
    assert router.predict_batch(np.zeros((3, 1)), keys=np.arange(3)).tolist() == [1.0] * 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"models": {}}, "non-empty"),
        ({"models": {"v1": 3}}, "not callable"),
        ({"strategy": ss.Canary("v1", "v9")}, "'v9'"),
        ({"validators": {"v9": abs}}, "'v9'"),
        ({"validators": {"v1": 5}}, "callable"),
        ({"clock": 5}, "clock"),
        ({"name": ""}, "name"),
    ],
)
def test_router_config_errors(kwargs: dict[str, Any], match: str) -> None:
    """Bad router configuration raises ConfigError naming the bad value."""
    args: dict[str, Any] = {"models": {"v1": abs, "v2": abs}}
    args.update(kwargs)
    models = args.pop("models")
    with pytest.raises(ss.ConfigError, match=match):
        ss.Router(models, **args)


def test_canary_config_errors() -> None:
    """Canary validates its names, steps and weight."""
    with pytest.raises(ss.ConfigError, match="differ"):
        ss.Canary("a", "a")
    with pytest.raises(ss.ConfigError, match="increasing"):
        ss.Canary("a", "b", steps=(5, 5, 100))
    with pytest.raises(ss.ConfigError, match="0"):
        ss.Canary("a", "b", steps=(0, 100))
    with pytest.raises(ss.ConfigError, match="120"):
        ss.Canary("a", "b", weight=120)


def test_fixed_split_with_several_candidates() -> None:
    """A FixedSplit routes to several candidates in their own lanes."""
    router = ss.Router(
        {"a": lambda x: "a", "b": lambda x: "b", "c": lambda x: "c"},
        strategy=ss.FixedSplit(baseline="a", weights={"b": 20, "c": 30}),
    )
    seen = [router.predict(0, key=i) for i in range(5000)]
    assert 0.15 < seen.count("b") / 5000 < 0.25
    assert 0.25 < seen.count("c") / 5000 < 0.35


def test_status_is_plain_data() -> None:
    """status() reports name, phase, weights, version and per-variant request counts."""
    router, _, _ = make(weight=50)
    for i in range(100):
        router.predict(0, key=i)
    st = router.status()
    assert st.name == "test"
    assert st.phase is ss.Phase.PROGRESSING
    assert st.weights == {"v1": 50.0, "v2": 50.0}
    counts = requests(router)
    assert sum(counts.values()) == 100


def test_invalid_keys_rejected_on_the_request_path() -> None:
    """A float key raises InvalidKeyError before any model runs."""
    router, v1, v2 = make()
    with pytest.raises(ss.InvalidKeyError):
        router.predict(0, key=1.5)  # type: ignore[arg-type]
    assert v1.calls == v2.calls == 0


def test_batch_outputs_are_summarized_per_variant() -> None:
    """predict_batch feeds class labels, numeric outputs and vectors to the right variant."""
    labels = ss.Router(
        {
            "v1": lambda X: np.zeros(len(X), dtype=np.int64),
            "v2": lambda X: np.ones(len(X), dtype=np.int64),
        },
        strategy=ss.Canary("v1", "v2", weight=50),
    )
    out = labels.predict_batch(np.zeros((1000, 2)), keys=np.arange(1000))
    m = labels.status().metrics
    n1, n2 = int((out == 0).sum()), int((out == 1).sum())
    assert m.variant("v1").labels.to_dict() == {"0": n1}
    assert m.variant("v2").labels.to_dict() == {"1": n2}
    scores = ss.Router(
        {"v1": lambda X: X[:, 0] * 0 + 0.25, "v2": lambda X: X[:, 0] * 0 + 0.75},
        strategy=ss.Canary("v1", "v2", weight=50),
    )
    scores.predict_batch(np.zeros((1000, 2)), keys=np.arange(1000))
    m = scores.status().metrics
    assert m.variant("v1").output.mean == 0.25
    assert m.variant("v2").output.mean == 0.75
    assert m.variant("v1").output.n + m.variant("v2").output.n == 1000
    probs = ss.Router({"v1": lambda X: np.full((len(X), 3), 1 / 3)})
    probs.predict_batch(np.zeros((10, 2)), keys=np.arange(10))
    assert probs.status().metrics.variant("v1").output_kinds["vector"] == 10


def test_batch_fallback_rows_do_not_count_the_baselines_answer() -> None:
    """Rows a fallback answered count as errors of the candidate, not as its outputs."""
    router = ss.Router(
        {"v1": lambda X: X[:, 0] * 0 + 1.0, "v2": lambda X: X[:, 0] * np.nan},
        strategy=ss.Canary("v1", "v2", weight=50),
        validators={"v2": ss.is_finite},
    )
    router.predict_batch(np.ones((500, 1)), keys=np.arange(500))
    v2 = router.status().metrics.variant("v2")
    assert v2.output.n == 0
    assert v2.errors == v2.fallbacks == v2.requests > 0


def test_latency_counts_answered_requests_only() -> None:
    """A call that fails fast adds an error, not a near-zero latency."""
    clock = FakeClock()

    def slow(x: float) -> float:
        clock.now += 0.2
        return x

    def broken(x: float) -> float:
        raise RuntimeError("fails at once")

    router = ss.Router(
        {"v1": slow, "v2": broken}, strategy=ss.Canary("v1", "v2", weight=100), clock=clock
    )
    for i in range(20):
        router.predict(1.0, key=i)
    v2 = router.status().metrics.variant("v2")
    assert v2.errors == 20
    assert v2.latency_moments.n == 0


def test_batch_slice_is_one_latency_observation() -> None:
    """Rows that share one timed call count as one latency observation of the per-row time."""
    clock = FakeClock()

    def model(X: np.ndarray) -> np.ndarray:
        clock.now += 0.5
        return X[:, 0]

    router = ss.Router({"v1": model}, clock=clock)
    router.predict_batch(np.zeros((100, 1)), keys=np.arange(100))
    m = router.status().metrics.variant("v1")
    assert m.requests == 100
    assert m.latency_moments.n == 1
    assert math.isclose(m.latency_moments.mean, 0.005)


@pytest.mark.parametrize("case", ["plain", "column", "candidate_fails", "invalid_rows", "all_one"])
def test_predict_batch_records_what_route_batch_records(case: str) -> None:
    """predict_batch (slices kept as summaries, no request ids) and route_batch (every row
    with its id) leave the same counts, latency and output summaries in the windows."""

    def build() -> tuple[ss.Router, FakeClock]:
        clock = FakeClock()

        def timed(f: Any) -> Any:
            def model(X: np.ndarray) -> Any:
                clock.now += 0.25
                return f(X)

            return model

        def v1(X: np.ndarray) -> Any:
            y = X[:, 0] * 0.5 + 1.0
            return y.reshape(-1, 1) if case == "column" else y

        def v2(X: np.ndarray) -> Any:
            if case == "candidate_fails":
                raise RuntimeError("candidate broke")
            y = X[:, 0] * 2.0 - 3.0
            if case == "invalid_rows":
                y[X[:, 0] % 5 == 0] = np.nan
            return y.reshape(-1, 1) if case == "column" else y

        router = ss.Router(
            {"v1": timed(v1), "v2": timed(v2)},
            strategy=ss.Canary("v1", "v2", weight=100 if case == "all_one" else 30),
            validators={"v2": ss.is_finite} if case == "invalid_rows" else None,
            clock=clock,
            name="same",
        )
        return router, clock

    X = np.random.default_rng(4).normal(size=(3_000, 1)).round(2) * 10
    keys = np.arange(3_000)
    a, _ = build()
    b, _ = build()
    out_a = a.predict_batch(X, keys=keys)
    out_b = b.route_batch(X, keys=keys).values
    assert np.array_equal(np.asarray(out_a), np.asarray(out_b))
    ma, mb = a.status().metrics, b.status().metrics
    for name in ("v1", "v2"):
        va, vb = ma.variant(name), mb.variant(name)
        assert (va.requests, va.ok, va.errors, va.fallbacks, va.rejected) == (
            vb.requests,
            vb.ok,
            vb.errors,
            vb.fallbacks,
            vb.rejected,
        )
        assert va.latency == vb.latency
        assert va.output_histogram == vb.output_histogram
        assert va.output_kinds == vb.output_kinds
        assert va.latency_moments.n == vb.latency_moments.n
        assert va.latency_moments.mean == vb.latency_moments.mean
        assert va.output.n == vb.output.n
        assert va.output.mean == pytest.approx(vb.output.mean, rel=1e-12, abs=1e-15)
        assert va.output.variance == pytest.approx(vb.output.variance, rel=1e-9, nan_ok=True)


def test_predict_keeps_no_request_id_for_outcomes_and_route_does() -> None:
    """predict's caller never sees a request id, so its record carries none (as
    predict_batch's); route's id joins an outcome. Both count in the windows alike."""
    router, _, _ = make(weight=50)
    for k in range(200):
        router.predict(1.0, key=k)
    routed = [router.route(1.0, key=k) for k in range(200, 400)]
    router.flush()
    ids = [r.request_id for r in routed]
    # The ids predict used (0..199) are unknown to the outcome map; route's are accepted.
    assert router.record_outcome(ids[0] - 1, "converted", 1.0).name == "UNKNOWN"
    assert all(router.record_outcome(i, "converted", 1.0).name == "ACCEPTED" for i in ids)
    m = router.status().metrics
    assert m.variant("v1").requests + m.variant("v2").requests == 400
    joined = sum(v.outcomes["converted"].n for v in m.variants if "converted" in v.outcomes)
    assert joined == 200


def full_canary(candidate: Any, *, fallback: bool = True) -> ss.Router:
    """A canary at 100% (promoted by hand) that evaluates every 100 requests."""
    router = ss.Router(
        {"v1": Counting(1.0), "v2": candidate},
        strategy=ss.Canary("v1", "v2", min_duration=0.0, min_samples=100, evaluate_every=100),
        clock=FakeClock(),
        fallback=fallback,
        name="full",
    )
    for _ in range(3):
        router.promote()
    assert router.weights["v2"] == 100.0
    return router


@pytest.mark.parametrize("fault", ["raises", "rejected"])
def test_a_candidate_failing_every_request_is_judged_and_rolled_back(fault: str) -> None:
    """At 100%, a candidate that raises on (or has rejected) every request: the failed
    requests still count towards the automatic evaluations, which roll it back (the upkeep
    ran only after a served answer: no evaluation ever came)."""
    if fault == "raises":
        candidate: Any = Counting(2.0, fail=True)
        router = full_canary(candidate)
    else:
        candidate = Counting(2.0, output=math.nan)
        router = ss.Router(
            {"v1": Counting(1.0), "v2": candidate},
            strategy=ss.Canary("v1", "v2", min_duration=0.0, min_samples=100, evaluate_every=100),
            clock=FakeClock(),
            validators={"v2": ss.is_finite},
            name="full-nan",
        )
        for _ in range(3):
            router.promote()
    for i in range(1000):
        assert router.predict(0.0, key=f"u{i}") == 1.0  # the baseline answers
    assert router._rollout is not None
    assert router._rollout.phase is ss.Phase.ROLLED_BACK


def test_batches_that_raise_still_count_towards_evaluations() -> None:
    """Without fallback every batch raises; the rows still count and the evaluation rolls the
    candidate back."""
    router = full_canary(Counting(2.0, fail=True), fallback=False)
    rollout = router._rollout
    assert rollout is not None
    for b in range(20):
        with pytest.raises(RuntimeError, match="broke"):
            router.predict_batch(np.zeros((50, 1)), keys=np.arange(b * 50, b * 50 + 50))
        if rollout.phase is ss.Phase.ROLLED_BACK:
            break
    assert rollout.phase is ss.Phase.ROLLED_BACK
    assert np.all(router.predict_batch(np.zeros((50, 1)), keys=np.arange(50)) == 1.0)


@pytest.mark.parametrize("output", [None, 3.0, np.float64(3.0), np.zeros(())])
def test_batch_outputs_that_are_not_rows_are_invalid_and_fall_back(output: Any) -> None:
    """A candidate's batch call answering None, a scalar or a 0-d array: its rows are invalid,
    counted, and the baseline answers them (a TypeError reached the caller, and nothing of the
    batch was recorded)."""
    router = ss.Router(
        {"v1": Counting(1.0), "v2": lambda X: output},
        strategy=ss.FixedSplit("v1", {"v2": 50.0}),
        name="no-rows",
    )
    keys = np.arange(400)
    out = router.predict_batch(np.zeros((400, 1)), keys=keys)
    assert np.all(out == 1.0)
    snap = router.recorder.snapshot()
    v2 = snap.variant("v2")
    assert v2.requests > 0
    assert v2.errors == v2.requests
    assert v2.requests + snap.variant("v1").requests == 400


def test_a_baseline_answering_the_wrong_number_of_rows_is_a_typed_error() -> None:
    """The baseline's batch answer has one row too many: an InvalidOutputError naming the
    counts, with every row of the batch recorded (a ValueError from numpy lost the batch)."""
    router = ss.Router(
        {"v1": lambda X: np.zeros(len(X) + 1), "v2": Counting(2.0)},
        strategy=ss.FixedSplit("v1", {"v2": 50.0}),
        name="extra-row",
    )
    with pytest.raises(ss.InvalidOutputError, match=r"'v1' answered \d+ rows with \d+ outputs"):
        router.predict_batch(np.zeros((400, 1)), keys=np.arange(400))
    snap = router.recorder.snapshot()
    assert snap.variant("v1").requests + snap.variant("v2").requests == 400
    assert snap.variant("v1").errors == snap.variant("v1").requests


@pytest.mark.parametrize("strategy", [None, "fixed_split", "pinned_canary"])
def test_an_outcome_past_its_ttl_is_late_however_long_its_request_waited_for_a_flush(
    strategy: str | None,
) -> None:
    """Routers that flush only every few thousand requests (no strategy, a fixed split, a
    canary pinned by hand) kept a quiet service's records unflushed for hours; the outcome's
    own flush then stamped the request with the outcome's time, and a label hours after its
    request was ACCEPTED against a 1 h time to live. Each request now carries its time."""
    clock = FakeClock()
    models = {"v1": lambda x: np.full(len(x), 0.1), "v2": lambda x: np.full(len(x), 0.2)}

    def make() -> ss.Router:
        kinds: dict[str | None, Any] = {
            None: None,
            "fixed_split": ss.FixedSplit("v1", {"v2": 50}),
            "pinned_canary": ss.Canary("v1", "v2", weight=50),
        }
        return ss.Router(models, strategy=kinds[strategy], clock=clock)

    router = make()
    batch = router.route_batch(np.ones((5, 1)), keys=list(range(10, 15))).request_ids
    old = [router.route([1.0], key=k).request_id for k in range(10)]  # not flushed
    clock.now += 3.5 * 3600.0
    assert [router.record_outcome(i, "converted", 1.0).name for i in old] == ["LATE"] * 10
    assert {router.record_outcome(int(i), "converted", 1.0).name for i in batch} == {"LATE"}
    assert router.status().metrics.outcome_reasons == {"late:expired": 15}
    # Within the time to live, counted from each request's own time: accepted.
    router = make()
    batch = router.route_batch(np.ones((5, 1)), keys=list(range(10, 15))).request_ids
    ids = [router.route([1.0], key=k).request_id for k in range(10)]
    clock.now += 3000.0
    assert {router.record_outcome(i, "converted", 1.0).name for i in ids} == {"ACCEPTED"}
    assert {router.record_outcome(int(i), "converted", 1.0).name for i in batch} == {"ACCEPTED"}
    # A request after a quiet stretch flushes what waited before its own record goes in, so
    # that its own is not taken for one made with them: its outcome half an hour later is
    # accepted, the earlier request's (2 h old) is late.
    router = make()
    first = router.route([1.0], key=1).request_id
    clock.now += 2 * 3600.0
    second = router.route([1.0], key=2).request_id
    clock.now += 1800.0
    assert router.record_outcome(second, "converted", 1.0).name == "ACCEPTED"
    assert router.record_outcome(first, "converted", 1.0).name == "LATE"


def test_a_batch_whose_flush_was_put_off_keeps_its_time_for_outcomes() -> None:
    """A batch whose own flush found another flush under way waits in the buffer; its rows
    still count from the batch's time: outcomes 3.5 h later are LATE (they were stamped at
    the later flush, and ACCEPTED)."""
    clock = FakeClock()
    router = ss.Router({"v1": lambda X: np.zeros(len(X))}, clock=clock)
    with router._flush_lock:  # another thread's flush, as the batch ends
        ids = router.route_batch(np.ones((4, 1)), keys=list(range(4))).request_ids
    assert router._recorder.pending() == 1
    clock.now += 3.5 * 3600.0
    assert {router.record_outcome(int(i), "converted", 1.0).name for i in ids} == {"LATE"}


def test_the_upkeep_a_request_runs_first_is_not_counted_in_its_latency() -> None:
    """A request that finds the flush due runs it before its model call: the latency it
    records is the model's alone (it counted the flush's time too)."""
    clock = FakeClock()

    def model(x: float) -> float:
        clock.now += 0.25
        return x

    router = ss.Router({"v1": model}, clock=clock)
    flush = router._recorder.flush

    def slow_flush() -> int:
        clock.now += 1.0
        return flush()

    router._recorder.flush = slow_flush  # type: ignore[method-assign]
    router.predict(1.0, key="a")
    clock.now += 5.0  # past the flush's second
    router.predict(1.0, key="b")
    lat = router.status().metrics.variant("v1").latency_moments
    assert (lat.n, lat.mean) == (2, 0.25)


def _rolling_back_canary(clock: FakeClock, **router_kw: Any) -> tuple[ss.Router, list[int]]:
    """A 50% canary whose candidate always raises, and the keys it sent to the candidate; its
    next evaluation, 20 s of clock on, rolls back."""

    def broken(x: float) -> float:
        raise RuntimeError("candidate down")

    router = ss.Router(
        {"v1": lambda x: 1.0, "v2": broken},
        strategy=ss.Canary(
            "v1", "v2", weight=50, auto=True, evaluate_every=10**9, evaluate_interval=10.0
        ),
        policy=ss.Policy([ss.Guardrail(metric="error_rate", above=0.1)]),
        clock=clock,
        **router_kw,
    )
    candidate_keys = [k for k in range(400) if router.route(1.0, key=k).variant == "v2"]
    clock.now += 20.0
    return router, candidate_keys


def test_a_request_that_runs_a_rollback_is_served_by_the_baseline() -> None:
    """The request that finds an evaluation due runs it before its model call, and is routed
    again if the evaluation moved traffic: after a rollback it is the baseline's."""
    router, candidate_keys = _rolling_back_canary(FakeClock())
    assert candidate_keys
    r = router.route(1.0, key=candidate_keys[0])
    st = router.status()
    assert st.phase is ss.Phase.ROLLED_BACK
    assert (r.variant, r.fallback) == ("v1", False)


def test_a_request_after_a_quiet_spell_waits_for_a_flush_under_way() -> None:
    """A flush under way (another thread's, which began before this request) when a request
    finds the flush due by time: the request waits for it rather than add its record to that
    flush, which would stamp it as made a second after the previous flush, hours before it was:
    its outcome 30 min later is accepted."""
    import threading

    clock = FakeClock()
    router = ss.Router({"v1": lambda x: x}, clock=clock)
    router.route(1.0, key="early")
    clock.now += 2 * 3600.0  # a quiet spell
    got: list[int] = []
    with router._flush_lock:  # another thread's flush, begun before the request
        a = threading.Thread(target=lambda: got.append(router.route(1.0, key="a").request_id))
        a.start()
        a.join(timeout=0.5)
        waited = a.is_alive()
        router._recorder.flush()  # that flush takes what was there before the request
    a.join(timeout=30)
    assert waited
    assert got
    clock.now += 1800.0
    assert router.record_outcome(got[0], "converted", 1.0).name == "ACCEPTED"


def test_a_recorder_on_its_own_clock_is_flushed_on_the_routers_time() -> None:
    """A recorder passed in whose clock reads another epoch (wall time, say) than the
    router's: the router's flushes still fall due on its own clock, so a request after a
    quiet spell flushes what waited before it, and its outcome 30 min later is accepted (the
    flush deadline was set on the recorder's epoch, and never came)."""
    clock = FakeClock()
    wall = FakeClock()
    wall.now = 1.7e9
    recorder = ss.metrics.Recorder(["v1"], clock=wall)
    router = ss.Router({"v1": lambda x: x}, clock=clock, recorder=recorder)
    router.route(1.0, key="early")
    for c in (clock, wall):
        c.now += 2 * 3600.0
    rid = router.route(1.0, key="late").request_id
    for c in (clock, wall):
        c.now += 1800.0
    assert router.record_outcome(rid, "converted", 1.0).name == "ACCEPTED"


def _promoting_canary(clock: FakeClock, **router_kw: Any) -> ss.Router:
    """A 5% canary whose next evaluation, 10 s of clock on, promotes it to 25%."""
    router = ss.Router(
        {"v1": lambda x: 0.0, "v2": lambda x: 0.0},
        strategy=ss.Canary(
            "v1",
            "v2",
            auto=True,
            min_duration=1.0,
            min_samples=1,
            evaluate_every=10**9,
            evaluate_interval=5.0,
        ),
        policy=ss.Policy([]),
        clock=clock,
        **router_kw,
    )
    for i in range(400):
        router.predict(i, key=str(i))
        clock.now += 0.001
    clock.now += 10.0  # the next request finds the evaluation due, and promotes
    return router


def test_a_keyless_request_routed_again_after_its_own_evaluation_is_counted_once() -> None:
    """A keyless request whose own evaluation promotes the canary is routed again on the new
    weights and counted once among keyless requests; one that an override forced stays
    forced, and counts none."""

    def override(key: object, x: object) -> str | None:
        return "v2" if x == "qa" else None

    router = _promoting_canary(FakeClock(), override=override)
    router.route("plain")
    assert router.weights["v2"] == 25.0
    assert router.status().keyless == 1
    router = _promoting_canary(FakeClock(), override=override)
    r = router.route("qa")
    assert router.weights["v2"] == 25.0
    assert (r.variant, router.status().keyless) == ("v2", 0)


@pytest.mark.parametrize("key", [None, "user-7"])
def test_a_request_routed_again_asks_the_override_callable_once(key: str | None) -> None:
    """The request that runs an evaluation moving the weights is routed again, but its
    override callable is asked once: a callable with side effects (a lookup, a count) sees
    one call per request, and its answer (None here) stands."""
    clock = FakeClock()
    calls: list[object] = []

    def override(k: object, x: object) -> str | None:
        calls.append(x)
        return None

    router = _promoting_canary(clock, override=override)
    calls.clear()
    router.predict("the request", key=key)
    assert router.weights["v2"] == 25.0
    assert calls == ["the request"]


def test_a_request_forced_to_the_candidate_that_its_own_evaluation_rolls_back() -> None:
    """Forced to the candidate by the callable, the request that rolls it back is served by
    the baseline (a rolled-back candidate serves nobody), and the callable was asked once."""
    calls: list[object] = []

    def override(key: object, x: object) -> str | None:
        calls.append(key)
        return "v2" if key == "tester" else None

    router, _ = _rolling_back_canary(FakeClock(), override=override)
    calls.clear()
    r = router.route(1.0, key="tester")
    assert router.status().phase is ss.Phase.ROLLED_BACK
    assert (r.variant, r.fallback, calls) == ("v1", False, ["tester"])


def test_a_key_forced_to_a_rolled_back_candidate_is_then_asked_of_the_callable() -> None:
    """Forced to the candidate by the key map, the request that rolls it back is routed as
    if the map had no entry for it: the callable, not asked at its first routing, is asked
    once, and its answer is used."""
    calls: list[object] = []

    def override(key: object, x: object) -> str | None:
        calls.append(key)
        return "v1" if key == "tester" else None

    router, _ = _rolling_back_canary(FakeClock(), overrides={"tester": "v2"}, override=override)
    calls.clear()
    r = router.route(1.0, key="tester")
    assert router.status().phase is ss.Phase.ROLLED_BACK
    assert (r.variant, calls) == ("v1", ["tester"])
    assert router.status().metrics.variant("v1").overrides == 1


def test_a_request_made_inside_the_upkeep_on_its_own_thread_goes_on() -> None:
    """A clock that serves a request while the flush lock is held by its own thread (a
    signal handler or a log processor would): the inner request waits a bounded time for the
    lock, then goes on without the flush (it waited for ever)."""
    import threading

    state = {"t": 0.0, "reenter": False, "done": False}

    def clock() -> float:
        if state["reenter"] and router._flush_lock.locked():
            state["reenter"] = False
            router.predict(1.0, key="inner")
            state["done"] = True
        return float(state["t"])

    router = ss.Router({"v1": lambda x: 0.0}, clock=clock)
    router.predict(0.0, key="a")
    state["t"] = 5.0  # the flush is due
    state["reenter"] = True
    outer = threading.Thread(target=router.predict, args=(0.0,), kwargs={"key": "b"})
    outer.start()
    outer.join(timeout=30)
    assert not outer.is_alive()
    assert state["done"]


def test_an_outcome_for_another_routers_request_is_not_joined() -> None:
    """Request ids started at 1 in every router, so an outcome meant for another router's
    request (another process, a restarted one) was joined to this router's request of the
    same id and counted for whichever model served it."""
    a, b = (
        ss.Router(
            {"v1": lambda x: 1, "v2": lambda x: 2},
            strategy=ss.FixedSplit(baseline="v1", weights={"v2": 50}),
        )
        for _ in range(2)
    )
    ids_a = [a.route(0, key=f"u{i}").request_id for i in range(100)]
    ids_b = [b.route(0, key=f"u{i}").request_id for i in range(100)]
    assert not set(ids_a) & set(ids_b)
    a.flush()
    b.flush()
    results = {b.record_outcome(rid, "converted", 1.0) for rid in ids_a}
    assert results == {ss.metrics.OutcomeResult.UNKNOWN}
    assert {a.record_outcome(rid, "converted", 1.0) for rid in ids_a} == {
        ss.metrics.OutcomeResult.ACCEPTED
    }


@pytest.mark.parametrize(
    "candidate",
    [
        lambda X: np.stack([X.sum(axis=1), -X.sum(axis=1)], 1),  # another shape per row
        lambda X: np.array(["yes"] * len(X)),  # text beside the baseline's numbers
    ],
    ids=["shape", "text"],
)
def test_a_batch_candidate_whose_outputs_cannot_stand_beside_the_baselines_is_invalid(
    candidate: Any,
) -> None:
    """predict_batch merged every slice's outputs in one array: a candidate answering
    another shape per row raised numpy's own error from the router (its slice recorded as
    OK), was broadcast in silence into a 2-row baseline slice's place, or turned the
    baseline's numbers into text. Now its rows are invalid (counted) and the baseline
    answers them."""
    router = ss.Router(
        {"v1": lambda X: X.sum(axis=1), "v2": candidate},
        strategy=ss.Canary("v1", "v2", weight=50),
    )
    routed = np.array([router.route(np.ones((1, 3)), key=int(k)).variant for k in range(200)])
    keys = np.concatenate([np.flatnonzero(routed == "v2")[:3], np.flatnonzero(routed == "v1")[:2]])
    out = router.predict_batch(np.ones((5, 3)), keys=keys)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float64
    assert out.tolist() == [3.0] * 5
    v2 = router.status().metrics.variant("v2")
    assert v2.errors == 3
    assert (v2.totals["invalid"], v2.totals["fallbacks"]) == (3, 3)


@pytest.mark.parametrize(
    "candidate",
    [
        lambda X: [int(v) for v in X.sum(axis=1)],  # a list (its validator sees the list)
        lambda X: X.sum(axis=1).reshape(-1, 1),  # (k, 1) beside the baseline's (k,)
        lambda X: X.sum(axis=1).astype(int).astype(object),  # objects (object-typed classes_)
    ],
    ids=["list", "column", "objects"],
)
def test_a_batch_candidate_whose_outputs_fit_beside_the_baselines_is_served(
    candidate: Any,
) -> None:
    """One value per row in another shape, objects, or a list (given back as a list, as
    before) are served as they were, not taken for invalid outputs."""
    router = ss.Router(
        {"v1": lambda X: X.sum(axis=1).astype(int), "v2": candidate},
        strategy=ss.Canary("v1", "v2", weight=50),
        validators={"v2": lambda y: isinstance(y, int | np.integer | np.ndarray)},
    )
    out = router.predict_batch(np.ones((200, 3)), keys=np.arange(200))
    assert [int(np.ravel(v)[0]) for v in out] == [3] * 200
    assert router.status().metrics.variant("v2").errors == 0
    assert router.status().metrics.variant("v2").requests > 50


def test_outputs_that_cannot_be_merged_raise_a_typed_error_naming_both() -> None:
    """Where no baseline row was there to check against (every row went to the candidate),
    the baseline answers some rows in the candidate's place, and the two kinds of outputs
    cannot make one array: an InvalidOutputError that says what each was (numpy's own
    broadcasting error escaped before)."""

    def candidate(X: Any) -> Any:
        out = np.stack([X.sum(axis=1), -X.sum(axis=1)], 1)
        out[0] = np.nan  # one row the validator rejects: the baseline answers it
        return out

    router = ss.Router(
        {"v1": lambda X: X.sum(axis=1), "v2": candidate},
        strategy=ss.Canary("v1", "v2", weight=100),
        validators={"v2": ss.is_finite},
    )
    with pytest.raises(
        ss.InvalidOutputError,
        match=r"cannot be put in one array: per row, shape \(\) of numbers and shape \(2,\) of",
    ):
        router.predict_batch(np.ones((4, 3)), keys=np.arange(4))
    v2 = router.status().metrics.variant("v2")
    assert (v2.requests, v2.totals["invalid"]) == (4, 1)


def test_request_ids_stay_where_the_recorders_fast_flush_takes_them() -> None:
    """Random first ids, but below 2**45 (the recorder's fast path; ids from 2**45 took the
    general one, about four times slower, on every flush)."""
    firsts = {ss.Router({"v1": lambda x: 1}).route(0, key="u").request_id for _ in range(50)}
    assert len(firsts) == 50
    assert all(2**32 <= rid < 2**43 for rid in firsts)

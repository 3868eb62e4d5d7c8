"""The demo behind ``python -m safeserve demo``: a simulated canary over two small models."""

from __future__ import annotations

from typing import TextIO

import numpy as np

from ._router import Router
from .strategies import Canary

__all__ = ["run_demo"]


def run_demo(*, users: int = 20_000, seed: int = 7, out: TextIO) -> int:
    """Route simulated users through a canary at each step and print the split.

    Shows the two promises of the hash contract: the observed split follows the weight, and a
    user who saw the candidate at a lower weight still sees it at every higher one.

    Returns:
        0 when both promises held, 1 otherwise.
    """
    rng = np.random.default_rng(seed)
    coef_v1 = rng.normal(size=4)
    coef_v2 = coef_v1 + rng.normal(scale=0.05, size=4)

    def v1(X: np.ndarray) -> np.ndarray:
        return (X @ coef_v1 > 0).astype(np.int64)

    def v2(X: np.ndarray) -> np.ndarray:
        return (X @ coef_v2 > 0).astype(np.int64)

    router = Router(
        {"v1": v1, "v2": v2},
        strategy=Canary(baseline="v1", candidate="v2", weight=0),
        name="demo-canary",
    )
    user_ids = rng.choice(10**9, size=users, replace=False).astype(np.int64)
    X = rng.normal(size=(users, 4))
    out.write(f"safeserve demo: canary of v2 over {users:,} simulated users\n\n")
    out.write(f"{'weight':>8} {'users on v2':>12} {'share':>8} {'kept from previous step':>24}\n")
    previous: np.ndarray | None = None
    ok = True
    for step in (5, 25, 50, 100):
        router.set_weights({"v2": step})
        routed = router.route_batch(X, keys=user_ids)
        on_v2 = routed.variants == "v2"
        kept = (
            "-"
            if previous is None
            else f"{int((on_v2 & previous).sum()):,} of {int(previous.sum()):,}"
        )
        if previous is not None and np.any(previous & ~on_v2):
            ok = False
        share = on_v2.mean() * 100
        out.write(f"{step:>7}% {int(on_v2.sum()):>12,} {share:>7.2f}% {kept:>24}\n")
        previous = on_v2
    agree = float(np.mean(v1(X) == v2(X))) * 100
    out.write(f"\nv1 and v2 agree on {agree:.1f}% of the inputs.\n")
    out.write(
        "Every user who saw v2 at a lower weight still sees it at the higher one.\n"
        if ok
        else "ERROR: some users left the candidate while its weight grew.\n"
    )
    return 0 if ok else 1

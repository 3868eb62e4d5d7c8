"""Command line: ``python -m safeserve demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(users=args.users, seed=args.seed, out=sys.stdout)


def _configure_logging(*, verbose: bool) -> None:
    """The command line is an application: it owns the log configuration (to stderr)."""
    import logging

    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.WARNING
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the safeserve command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m safeserve", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="print log events to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="simulate a canary rollout and print the traffic split")
    demo.add_argument("--users", type=int, default=20_000, help="simulated users (default 20000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulation")
    demo.set_defaults(func=_demo)

    args = parser.parse_args(argv)
    if getattr(args, "users", 1) <= 0:
        parser.error(f"--users must be positive, got {args.users!r}")
    _configure_logging(verbose=args.verbose)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""Command line: ``python -m safeserve demo`` and ``python -m safeserve drill CONFIG.toml``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

#: Exit codes of ``drill``: the rollback fired in time, it did not, the configuration is bad.
DRILL_OK, DRILL_MISSED, DRILL_BAD_CONFIG = 0, 1, 2


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(
        users=args.users, seed=args.seed, out=sys.stdout, log_path=args.out, quick=args.quick
    )


def _drill(args: argparse.Namespace) -> int:
    import tomllib

    from ._errors import ConfigError
    from .testing import DrillConfig, run_drill

    path = Path(args.config)
    try:
        with path.open("rb") as fh:
            document = tomllib.load(fh)
        config = DrillConfig.from_dict(document)
    except OSError as e:
        print(f"drill: cannot read {str(path)!r}: {e.strerror or e}", file=sys.stderr)
        return DRILL_BAD_CONFIG
    except tomllib.TOMLDecodeError as e:
        print(f"drill: {str(path)!r} is not valid TOML: {e}", file=sys.stderr)
        return DRILL_BAD_CONFIG
    except ConfigError as e:
        print(f"drill: bad configuration in {str(path)!r}: {e}", file=sys.stderr)
        return DRILL_BAD_CONFIG
    report = run_drill(config.scenario)
    print(report.summary())
    if args.report is not None:
        Path(args.report).write_text(report.to_json(indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    failure = config.check(report)
    if failure is None:
        bound = []
        if config.within_requests is not None:
            bound.append(f"{config.within_requests:,} requests")
        if config.within_seconds is not None:
            bound.append(f"{config.within_seconds:,g} s")
        if config.max_exposed_users is not None:
            bound.append(f"{config.max_exposed_users:,} exposed users")
        what = "rolled back" if config.expect_rollback else "did not roll back"
        print(f"PASS: {what}" + (f" within {', '.join(bound)}" if bound else ""))
        return DRILL_OK
    print("FAIL: " + failure.splitlines()[0])
    return DRILL_MISSED


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
            logging.INFO if verbose else logging.ERROR
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the safeserve command line and return its exit code."""
    parser = argparse.ArgumentParser(prog="python -m safeserve", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="print log events to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="train two fraud models and canary a good and a broken candidate"
    )
    demo.add_argument("--users", type=int, default=20_000, help="simulated users (default 20000)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the data and traffic")
    demo.add_argument(
        "--out",
        default="safeserve-demo-decisions.jsonl",
        help="where to write the decision log, as JSON lines "
        "(default: safeserve-demo-decisions.jsonl)",
    )
    demo.add_argument("--quick", action="store_true", help="shorter bake times (30 s per step)")
    demo.set_defaults(func=_demo)
    drill = sub.add_parser(
        "drill",
        help="run a rollback drill from a TOML file; exit 0 if the rollback fired in time, "
        "1 if not, 2 on a bad configuration",
    )
    drill.add_argument("config", help="the drill's TOML file (see examples/drill.toml)")
    drill.add_argument("--report", default=None, help="also write the full report as JSON here")
    drill.set_defaults(func=_drill)

    args = parser.parse_args(argv)
    if getattr(args, "users", 1) <= 0:
        parser.error(f"--users must be positive, got {args.users!r}")
    _configure_logging(verbose=args.verbose)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

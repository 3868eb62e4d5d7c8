"""Developer tasks: ``nox -s tests``, ``lint``, ``typing``, ``bench`` and ``demo``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True

PYTHONS = ["3.11", "3.12", "3.13"]


def _install(session: nox.Session, *extras: str) -> None:
    """Install the package (editable) with the given extras into the session's venv."""
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite (pass `-- -m slow` for the long simulations)."""
    _install(session, "test")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on src/."""
    _install(session)
    session.install("mypy")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark and print its table."""
    _install(session, "bench")
    for script in sorted(__import__("pathlib").Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """Run `python -m safeserve demo`."""
    _install(session, "demo")
    session.run("python", "-m", "safeserve", "demo", *session.posargs)

"""nox sessions. They reuse the project's .venv (torch is ~5 GB: never reinstall it per session)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run the test suite in the current environment (``.venv/bin/nox -s tests``)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff check + format check."""
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """Run the benchmark suite and print a table."""
    session.run("python", "benchmarks/run_all.py", *session.posargs)

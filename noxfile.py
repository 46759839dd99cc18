"""Developer sessions: ``nox -s tests``, ``nox -s lint``, ``nox -s bench``."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
EXAMPLE_PLUGIN = ROOT / "examples" / "plugins" / "optspec-jsonl-log"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite, slow tests included, plus the example plugin's own tests."""
    session.install("-e", ".[test]")
    if EXAMPLE_PLUGIN.is_dir():
        session.install("-e", str(EXAMPLE_PLUGIN))
    session.run("pytest", *(session.posargs or ["tests"]))
    if EXAMPLE_PLUGIN.is_dir() and not session.posargs:
        session.run("pytest", str(EXAMPLE_PLUGIN / "tests"))
    if not session.posargs:
        # The other ways to share the journal, which this (Linux) machine would not pick itself:
        # the journal and end-to-end run/resume tests again on each.
        for env in PLATFORM_JOURNALS:
            session.run("pytest", *JOURNAL_AND_RUN_TESTS, env=env)


JOURNAL_AND_RUN_TESTS = ["tests/test_journal.py", "tests/test_run.py", "tests/test_resume.py"]
PLATFORM_JOURNALS = [
    {"OPTSPEC_JOURNAL": "portable"},  # macOS and other POSIX systems
    {"OPTSPEC_JOURNAL": "manager", "OPTSPEC_START_METHOD": "spawn"},  # Windows
]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the tree, mypy over the package (settings in pyproject.toml)."""
    session.install("ruff", "mypy", "-e", ".[test]")
    session.run("ruff", "check", ".")
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmarks/bench_*.py; each prints a table of ratios against its own baseline.

    bench_storages.py measures PostgreSQL and Redis rows only with servers to measure against:
    run `eval "$(.ci/services)"` first (it exports their URLs)."""
    session.install("-e", ".[postgres,redis,grpc]")
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        session.log(f"--- {script.name}")
        session.run("python", str(script), *session.posargs)

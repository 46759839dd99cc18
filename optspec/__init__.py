"""optspec: run Optuna studies described in TOML.

This module is the whole public API; everything else is internal and may move::

    from optspec import hookimpl, load_spec, run_study

Importing it is cheap: names that need optuna (the run, the storage contract) are imported on
first use, so ``optspec validate`` and ``optspec --help`` never load optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from optspec.config import Config
from optspec.errors import OptspecError, SpecError, StudyFailed, UsageError
from optspec.outcome import Artifact, Outcome, RunResult
from optspec.plugins.factories import LazyFactory, call_factory
from optspec.plugins.hookspecs import hookimpl, hookspec
from optspec.spec.load import load_spec

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "Config",
    "ExitCode",
    "LazyFactory",
    "Objective",
    "OptspecError",
    "Outcome",
    "RunOptions",
    "RunResult",
    "SharedMemoryJournalBackend",
    "SpecError",
    "StudyFailed",
    "UsageError",
    "__version__",
    "call_factory",
    "command_objective",
    "dump_to_sqlite",
    "failures_by_reason",
    "hookimpl",
    "hookspec",
    "join_study",
    "load_from_sqlite",
    "load_spec",
    "markdown_summary",
    "python_objective",
    "resume_study",
    "run_study",
    "save_study_db",
    "study_summary",
    "write_results_json",
]

if TYPE_CHECKING:
    from optspec.cli import ExitCode
    from optspec.objectives import Objective
    from optspec.objectives.command import command_objective
    from optspec.objectives.python import python_objective
    from optspec.report.failures import failures_by_reason
    from optspec.report.markdown import markdown_summary
    from optspec.report.results import study_summary, write_results_json
    from optspec.run.lifecycle import RunOptions, join_study, resume_study, run_study
    from optspec.storage.select import SharedMemoryJournalBackend
    from optspec.storage.studydb import dump_to_sqlite, load_from_sqlite, save_study_db

# Where each lazily imported name lives; the modules import optuna (and multiprocessing). The
# built-in plugins import what they use from here, like any other plugin.
_LAZY = {
    "ExitCode": "optspec.cli",
    "Objective": "optspec.objectives",
    "command_objective": "optspec.objectives.command",
    "python_objective": "optspec.objectives.python",
    "study_summary": "optspec.report.results",
    "write_results_json": "optspec.report.results",
    "RunOptions": "optspec.run.lifecycle",
    "run_study": "optspec.run.lifecycle",
    "resume_study": "optspec.run.lifecycle",
    "join_study": "optspec.run.lifecycle",
    "SharedMemoryJournalBackend": "optspec.storage.select",
    "dump_to_sqlite": "optspec.storage.studydb",
    "save_study_db": "optspec.storage.studydb",
    "load_from_sqlite": "optspec.storage.studydb",
    # For plugins (the built-in github and terminal ones too): what a finished study shows.
    "markdown_summary": "optspec.report.markdown",
    "failures_by_reason": "optspec.report.failures",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'optspec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)

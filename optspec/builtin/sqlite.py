"""Writes the run's artefacts: study.db (and results.json) in the output directory.

``on_finish`` is a wrapper around every other implementation: the files are written in its
``finally``, after the other plugins ran (so attributes they set are saved) and even when one of
them raised; each file written is recorded in the outcome (``outcome.artifact("study.db")``).
``on_checkpoint`` writes study.db while the run goes on. A failed write leaves the previous
study.db as it was and saves the journal to ``study.journal`` beside it, which ``optspec resume``
accepts; at the end of the run, when that fails too, to a new directory in the temporary
directory that the message names: no finished trial is lost.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optspec
from optspec import StudyFailed, hookimpl

if TYPE_CHECKING:
    import optuna

    from optspec import Config, Outcome

NAME = "sqlite"
"""This plugin's name, as the artefacts it records say."""


@hookimpl(wrapper=True, tryfirst=True)
def on_finish(study: optuna.Study, config: Config, outcome: Outcome) -> Generator[None, Any, Any]:
    try:
        return (yield)
    finally:
        if not _interrupted_before_any_trial(study, config, outcome):
            write_study_db(study, config, last_resort=True)
            outcome.record_artifact("study.db", config.study_db, plugin=NAME)
            results = _write_results(study, config)
            outcome.record_artifact("results.json", results, plugin=NAME)


def _interrupted_before_any_trial(study: optuna.Study, config: Config, outcome: Outcome) -> bool:
    """A Ctrl-C right after start: an empty study.db would only make the next `run` of the same
    spec demand --overwrite. There is nothing to save; an existing study.db stays as it is."""
    return (
        outcome.status == "interrupted"
        and not config.study_db.exists()
        and not study.get_trials(deepcopy=False)
    )


@hookimpl
def on_checkpoint(study: optuna.Study, config: Config) -> None:
    write_study_db(study, config)


def write_study_db(study: optuna.Study, config: Config, *, last_resort: bool = False) -> None:
    """Dump the study to ``config.study_db`` atomically; on failure, save the journal beside it
    and, at the end of the run (``last_resort``), in the temporary directory if need be."""
    # The controller's storage is up to date: dumped from it, no replay of the whole journal.
    optspec.save_study_db(
        study, config.study_db, last_resort=last_resort, spec_dir=config.spec.directory
    )


def _write_results(study: optuna.Study, config: Config) -> Path:
    path = config.output / "results.json"
    try:
        optspec.write_results_json(study, path)
    except OSError as exc:
        raise StudyFailed(f"could not write {path}: {exc}") from exc
    return path

"""Writes the run's artefacts when it ends: study.db (and results.json) in the output directory.

``on_finish`` is a wrapper around every other implementation: the files are written in its
``finally``, after the other plugins ran (so attributes they set are saved) and even when one of
them raised. A failed write leaves the previous study.db as it was and saves the journal to
``study.journal`` beside it, which ``optspec resume`` accepts: no finished trial is lost.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from optspec import hookimpl
from optspec.errors import StudyFailed

if TYPE_CHECKING:
    import optuna

    from optspec.config import Config
    from optspec.outcome import Outcome

FALLBACK_NAME = "study.journal"


@hookimpl(wrapper=True, tryfirst=True)
def on_finish(study: optuna.Study, config: Config, outcome: Outcome) -> Generator[None, Any, Any]:
    try:
        return (yield)
    finally:
        write_study_db(study, config)
        _write_results(study, config)


def write_study_db(study: optuna.Study, config: Config) -> None:
    """Dump the study to ``config.study_db`` atomically; on failure, save the journal beside it."""
    from optspec.storage.optuna_compat import journal_backend, study_storage
    from optspec.storage.studydb import dump_storage_to_sqlite, write_fallback_journal

    storage = study_storage(study)
    target = config.study_db
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # The controller's storage is up to date: no replay of the whole journal.
        dump_storage_to_sqlite(storage, study.study_name, target)
    except Exception as exc:
        backend = journal_backend(storage)  # the run's journal, when it has one
        if backend is None:  # a shared storage still holds every trial
            raise StudyFailed(f"could not write {target}: {exc}") from exc
        fallback = target.with_name(FALLBACK_NAME)
        try:
            write_fallback_journal(backend, fallback)
        except Exception as second:  # noqa: BLE001
            raise StudyFailed(
                f"could not write {target} ({exc}) nor the fallback {fallback} ({second}); "
                f"the previous {target.name} is unchanged"
            ) from exc
        raise StudyFailed(
            f"could not write {target}: {exc}; the previous {target.name} is unchanged and "
            f"every trial is saved in {fallback}: `optspec resume {fallback}` continues from it"
        ) from exc


def _write_results(study: optuna.Study, config: Config) -> None:
    from optspec.report.results import write_results_json

    try:
        write_results_json(study, config.output / "results.json")
    except OSError as exc:
        raise StudyFailed(f"could not write {config.output / 'results.json'}: {exc}") from exc

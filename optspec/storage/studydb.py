"""study.db: the journal of a run, saved as an ordinary Optuna SQLite file, and read back.

While a study runs, every worker shares one in-memory journal. At the end the study is written
as ``study.db``, a file that ``optuna.load_study``, ``optuna-dashboard`` and any other Optuna
tool opens as if ``optuna.copy_study`` had made it. ``optspec resume`` goes the other way.

Why not simply call ``optuna.copy_study``? It writes one transaction per trial through the ORM,
about 10 ms a trial: 17 minutes for 100k trials. Instead:

* The schema, and the ``alembic_version`` and ``version_info`` rows, are the ones the installed
  Optuna's ``RDBStorage`` makes (:mod:`optspec.storage.schema` writes them directly, checked
  against RDBStorage by a test), so the file is stamped exactly as Optuna stamps its files.
* Every row goes in with ``executemany`` in a single transaction, through the stdlib ``sqlite3``.
  The values are encoded the way the ORM encodes them: enums by name, ``inf``/``-inf``/``nan`` as
  NULL plus a type column, datetimes as naive UTC, JSON for attributes and distributions.
* The file is built under a temporary name beside ``study.db``, fsynced, and moved over it with
  ``os.replace``. Whatever goes wrong before that (an exception, a full disk, SIGKILL), the previous
  ``study.db`` is untouched.

Reading back builds the journal directly from the tables: one CREATE_TRIAL log carries a whole
trial, so a study costs one log per trial plus a few, appended in one call.

When ``study.db`` cannot be written, :func:`write_fallback_journal` saves the logs as a journal
file (Optuna's ``JournalFileBackend`` format), and :func:`load_from_sqlite` accepts that file too.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import TrialState

from optspec import platform
from optspec.errors import UsageError
from optspec.storage.indexed import IndexedJournalStorage
from optspec.storage.optuna_compat import JournalOperation, journal_backend
from optspec.storage.replay import LogReplay, install_replayed
from optspec.storage.rows import insert_rows, record_rows, study_rows
from optspec.storage.schema import create_empty_study_file, installed_schema

if TYPE_CHECKING:
    from optspec.storage.optuna_compat import FrozenStudy

__all__ = [
    "StudyFileError",
    "dump_storage_to_sqlite",
    "dump_to_sqlite",
    "load_from_sqlite",
    "write_fallback_journal",
]

SQLITE_HEADER = b"SQLite format 3\x00"

# The worker id of the logs load_from_sqlite writes. No live JournalStorage has it (theirs are a
# uuid and a thread id), so no process believes it owns a trial that was RUNNING in the file.
LOADER_WORKER_ID = "optspec-load_from_sqlite"

# Temporary files are named after study.db and the pid of the process writing them, so a later
# dump can remove what a killed one left behind without touching a live one's file.
_TMP_SUFFIX = ".optspec-tmp"

# The rows that make a study; the last two tables only say which Optuna wrote the file.
_STUDY_TABLES = (
    "studies",
    "study_directions",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
    "trial_user_attributes",
    "trial_system_attributes",
)
_OPTUNA_TABLES = (*_STUDY_TABLES, "version_info", "alembic_version")

# Journal operation codes, as plain ints so that any backend codec (JSON, marshal) takes the logs.
_CREATE_STUDY = int(JournalOperation.CREATE_STUDY)
_DELETE_STUDY = int(JournalOperation.DELETE_STUDY)
_SET_STUDY_USER_ATTR = int(JournalOperation.SET_STUDY_USER_ATTR)
_SET_STUDY_SYSTEM_ATTR = int(JournalOperation.SET_STUDY_SYSTEM_ATTR)
_CREATE_TRIAL = int(JournalOperation.CREATE_TRIAL)

_INF = math.inf


class StudyFileError(UsageError):
    """A study file that is not an Optuna study this Optuna can read; the message names the file."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


# --------------------------------------------------------------------------------------------
# Writing study.db


def dump_to_sqlite(
    backend: BaseJournalBackend,
    study_name: str,
    sqlite_path: str | os.PathLike[str],
    *,
    storage: JournalStorage | None = None,
) -> None:
    """Write the study ``study_name`` of the journal in ``backend`` to ``sqlite_path``.

    The result equals what ``optuna.copy_study`` would write into a new SQLite file, row by row:
    study id 1, trial ids ``number + 1``. Either the whole new file replaces ``sqlite_path`` or,
    if anything fails, ``sqlite_path`` is left as it was.

    ``storage`` may be a ``JournalStorage`` over ``backend`` that the caller already has: it
    catches up with the journal instead of replaying it from the start, which is most of the
    cost of a large dump (about 9 s of 11 for 100k trials).
    """
    if storage is not None:
        if journal_backend(storage) is not backend:
            raise ValueError("storage must be a JournalStorage over the backend being dumped")
        dump_storage_to_sqlite(storage, study_name, sqlite_path)
        return
    # Rows straight from the logs: Optuna's replay would be most of the time.
    replay = LogReplay()
    replay.apply(backend.read_logs(0))
    studies = {study.name: study for study in replay.studies.values()}
    if study_name not in studies:
        _no_such_study(study_name, list(studies))
    study = studies[study_name]
    _write_rows(sqlite_path, record_rows(study, replay.study_trials(study.study_id)))


def dump_storage_to_sqlite(
    storage: BaseStorage, study_name: str, sqlite_path: str | os.PathLike[str]
) -> None:
    """:func:`dump_to_sqlite` for a study on any Optuna storage (``run --storage URL``)."""
    study = _find_study(storage, study_name)
    # No deepcopy: nothing below mutates a trial, and copying 100k trials costs seconds.
    study_id = storage.get_study_id_from_name(study.study_name)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    _write_rows(sqlite_path, study_rows(study, trials))


def _write_rows(sqlite_path: str | os.PathLike[str], rows: Any) -> None:
    target = Path(sqlite_path)
    if target.is_symlink():  # the temporary files live beside the link's destination
        target = Path(os.path.realpath(target))
    _remove_abandoned_temp_files(target)
    with _atomic_target(target) as tmp_path:
        create_empty_study_file(tmp_path)
        insert_rows(tmp_path, rows)


def _find_study(storage: BaseStorage, study_name: str) -> FrozenStudy:
    studies = storage.get_all_studies()
    for study in studies:
        if study.study_name == study_name:
            return study
    _no_such_study(study_name, [study.study_name for study in studies])


def _no_such_study(study_name: str, names: list[str]) -> NoReturn:
    choices = ", ".join(repr(name) for name in names) or "none"
    raise UsageError(f"no study named {study_name!r} in the journal (studies: {choices})")


@contextlib.contextmanager
def _atomic_target(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; when the block succeeds, it becomes ``target``.

    On any failure, including KeyboardInterrupt, the temporary file is removed and ``target``
    keeps its old content. A ``target`` that is a symbolic link is written through: its final
    destination gets the new content and the link stays a link, so whatever else points at the
    study sees it too.
    """
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    directory = target.absolute().parent
    tmp_path = directory / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}"
    # Not tempfile.mkstemp: its 0o600 would become study.db's mode. 0o666 less the umask is
    # what sqlite3 and copy_study give a new file.
    os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp_path
        _fsync_file(tmp_path)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    # After the rename, so the new directory entry survives a power cut.
    _fsync_directory(directory)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open directories; its rename is durable enough.
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_abandoned_temp_files(target: Path) -> None:
    """Remove temporary files of earlier dumps to ``target`` whose process has died."""
    directory = target.absolute().parent
    for leftover in directory.glob(f".{target.name}.*{_TMP_SUFFIX}"):
        pid_text = leftover.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid_text.isdigit() and not platform.process_exists(int(pid_text)):
            with contextlib.suppress(OSError):
                leftover.unlink()


# --------------------------------------------------------------------------------------------
# Fallback journal file


def write_fallback_journal(backend: BaseJournalBackend, path: str | os.PathLike[str]) -> None:
    """Save every log of ``backend`` to ``path`` in ``JournalFileBackend``'s format.

    Meant for when study.db cannot be written: no trial is lost, and both
    ``JournalFileBackend(path)`` and :func:`load_from_sqlite` read the file. It is written
    atomically like study.db.
    """
    target = Path(path)
    with _atomic_target(target) as tmp_path, open(tmp_path, "w", encoding="utf-8") as file:
        for log in backend.read_logs(0):
            # JournalFileBackend.append_logs writes exactly this: compact JSON, one log a line.
            file.write(json.dumps(log, separators=(",", ":")))
            file.write("\n")


FALLBACK_NAME = "study.journal"
"""Where :func:`save_study_db` saves the journal when study.db cannot be written."""


def save_study_db(
    study: optuna.Study,
    target: str | os.PathLike[str],
    *,
    last_resort: bool = False,
    spec_dir: str | os.PathLike[str] | None = None,
) -> None:
    """Dump a live study to ``target`` atomically, straight from its storage (no replay).

    When that fails, the previous ``target`` (if any) is unchanged and, for a study on a journal,
    every log is saved to :data:`FALLBACK_NAME` beside it (``optspec resume`` accepts it). With
    ``last_resort`` (the end of a run: nothing would save the trials later) and that failing
    too, the journal goes to a new directory in the temporary directory; ``spec_dir`` is then
    named in the message's resume command, since the spec's relative paths are not there.
    Checkpoints leave ``last_resort`` off: the final write still comes, and one run must not
    scatter a journal per checkpoint.

    :raises StudyFailed: the dump failed; the message says what was saved instead.
    """
    from optspec.errors import StudyFailed
    from optspec.storage.optuna_compat import study_storage

    storage = study_storage(study)
    target = Path(target)
    existed = target.exists()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        dump_storage_to_sqlite(storage, study.study_name, target)
    except Exception as exc:
        backend = journal_backend(storage)  # the run's journal, when it has one
        if backend is None:  # a shared storage still holds every trial
            raise StudyFailed(f"could not write {target}: {exc}") from exc
        previous = (
            f"the previous {target.name} is unchanged" if existed else f"no {target.name} exists"
        )
        errors = [f"could not write {target} ({exc})"]
        fallback = _save_journal(backend, target.with_name(FALLBACK_NAME), errors)
        if fallback is None and last_resort:
            fallback = _save_journal(backend, None, errors)
        if fallback is None:
            raise StudyFailed(f"{' nor '.join(errors)}; {previous}") from exc
        hint = ""
        if fallback.parent != target.parent and spec_dir is not None:
            hint = f" --spec-dir {Path(spec_dir).resolve()}"
        raise StudyFailed(
            f"{' nor '.join(errors)}; {previous}; every trial is saved in {fallback}: "
            f"`optspec resume {fallback}{hint}` continues from it"
        ) from exc


def _save_journal(backend: Any, path: Path | None, errors: list[str]) -> Path | None:
    """Write the fallback journal to ``path`` (None: a new directory in the temporary
    directory, so that resuming it writes its study.db there); None when that failed."""
    import shutil
    import tempfile

    made = None
    try:
        if path is None:
            made = Path(tempfile.mkdtemp(prefix="optspec-"))
            path = made / FALLBACK_NAME
        write_fallback_journal(backend, path)
    except Exception as exc:  # noqa: BLE001 - reported with the others
        errors.append(f"{path or 'the temporary directory'} ({exc})")
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        return None
    return path


# --------------------------------------------------------------------------------------------
# Reading study.db (or a fallback journal) back into a journal


def load_from_sqlite(
    sqlite_path: str | os.PathLike[str],
    study_name: str | None = None,
    *,
    backend: BaseJournalBackend | None = None,
    check_version: bool = True,
) -> tuple[BaseJournalBackend, optuna.Study]:
    """Build a journal holding the study in ``sqlite_path`` and open the study on it.

    ``sqlite_path`` is an Optuna SQLite file, or a journal file from
    :func:`write_fallback_journal`; the content decides which. ``study_name=None`` means the only
    study in the file. ``backend`` receives the logs, in one ``append_logs`` call, and must be
    empty; by default a new ``SharedMemoryJournalBackend``. The file is opened read-only.

    ``check_version=False`` accepts a file stamped by another Optuna schema revision, as long as
    it has the study tables: right for looking at a study, wrong for resuming one (the file is
    written back with the installed Optuna's stamp).

    Raises StudyFileError when the file is neither, is from another Optuna schema, or lacks the
    study.
    """
    path = Path(sqlite_path)
    if path.is_file() and path.stat().st_size == 0:
        raise StudyFileError(path, "is empty, not an Optuna study")
    if backend is None:
        from optspec.storage.select import SharedMemoryJournalBackend

        backend = SharedMemoryJournalBackend()
    if next(iter(backend.read_logs(0)), None) is not None:
        raise ValueError("load_from_sqlite needs an empty journal backend")

    storage = IndexedJournalStorage(backend)  # on the empty journal: nothing to replay yet
    from_sqlite = is_sqlite_file(path)
    if from_sqlite:
        study_name, logs = _logs_from_sqlite(path, study_name, check_version)
    else:
        study_name, logs = _logs_from_journal_file(path, study_name)
    backend.append_logs(logs)
    try:
        if from_sqlite:
            # Logs this module made, one per trial: their trials are built directly, faster
            # than Optuna's replay (which a journal file, written by anyone, goes through).
            install_replayed(storage, logs)
        study = optuna.load_study(study_name=study_name, storage=storage)
    except (KeyError, ValueError, TypeError) as error:  # rows the replay cannot make sense of
        raise StudyFileError(path, f"holds a study this Optuna cannot read: {error}") from None
    return backend, study


def is_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an SQLite database (study.db) rather than a journal (study.journal).

    An unreadable file is a :class:`StudyFileError` naming it.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return file.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        raise StudyFileError(path, "no such file") from None
    except IsADirectoryError:
        raise StudyFileError(path, "is a directory, not a study file") from None
    except OSError as error:
        raise StudyFileError(path, f"cannot be read: {error.strerror}") from None


def _logs_from_sqlite(
    path: Path, study_name: str | None, check_version: bool
) -> tuple[str, list[dict[str, Any]]]:
    # Read-only, so that looking at a file never changes it (no journal, no schema upgrade).
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as error:
        raise StudyFileError(path, f"cannot be opened as SQLite: {error}") from None
    try:
        _check_optuna_schema(connection, path, check_version)
        study_id, study_name = _choose_study(connection, path, study_name)
        return study_name, _study_logs(connection, study_id, study_name)
    except sqlite3.DatabaseError as error:
        raise StudyFileError(path, f"not a readable Optuna SQLite database: {error}") from None
    except (KeyError, ValueError) as error:  # an enum name or JSON that Optuna never writes
        raise StudyFileError(path, f"holds a value Optuna cannot read: {error!r}") from None
    finally:
        connection.close()


def _check_optuna_schema(connection: sqlite3.Connection, path: Path, check_version: bool) -> None:
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    needed = _OPTUNA_TABLES if check_version else _STUDY_TABLES
    missing = [table for table in needed if table not in tables]
    if missing:
        raise StudyFileError(
            path,
            "an SQLite database, but not an Optuna study database "
            f"(missing tables: {', '.join(missing)})",
        )
    if not check_version:
        return
    schema_version, revision = installed_schema()
    revisions = [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
    if revisions != [revision]:
        found = ", ".join(revisions) or "none"
        raise StudyFileError(
            path,
            f"Optuna schema revision {found}; the installed Optuna {optuna.__version__} reads "
            f"revision {revision} (run `optuna storage upgrade` or use the Optuna that wrote it)",
        )
    versions = connection.execute(
        "SELECT schema_version, library_version FROM version_info"
    ).fetchall()
    if [version for version, _ in versions] != [schema_version]:
        found = ", ".join(f"{v} (Optuna {lib})" for v, lib in versions) or "none"
        raise StudyFileError(
            path,
            f"Optuna schema_version {found}; the installed Optuna {optuna.__version__} "
            f"writes {schema_version}",
        )


def _choose_study(
    connection: sqlite3.Connection, path: Path, study_name: str | None
) -> tuple[int, str]:
    studies = connection.execute("SELECT study_id, study_name FROM studies ORDER BY study_id")
    id_by_name = {name: study_id for study_id, name in studies}
    study_name = _choose_study_name(path, list(id_by_name), study_name)
    return id_by_name[study_name], study_name


def _choose_study_name(path: Path, names: list[str], study_name: str | None) -> str:
    choices = ", ".join(repr(name) for name in names)
    if study_name is None:
        if len(names) == 1:
            return names[0]
        if not names:
            raise StudyFileError(path, "holds no study")
        raise StudyFileError(path, f"holds {len(names)} studies, name the one to load: {choices}")
    if study_name not in names:
        raise StudyFileError(path, f"holds no study named {study_name!r} (studies: {choices})")
    return study_name


def _study_logs(
    connection: sqlite3.Connection, study_id: int, study_name: str
) -> list[dict[str, Any]]:
    """The fewest journal logs that replay into this study: a CREATE_TRIAL per trial."""
    directions = [
        int(optuna.study.StudyDirection[name])
        for (name,) in connection.execute(
            "SELECT direction FROM study_directions WHERE study_id = ? ORDER BY objective",
            (study_id,),
        )
    ]
    # The journal numbers its studies from 0 in creation order, and the backend is empty.
    journal_study_id = 0
    logs: list[dict[str, Any]] = [_log(_CREATE_STUDY, study_name=study_name, directions=directions)]
    for table, op_code, field in (
        ("study_system_attributes", _SET_STUDY_SYSTEM_ATTR, "system_attr"),
        ("study_user_attributes", _SET_STUDY_USER_ATTR, "user_attr"),
    ):
        rows = connection.execute(
            f'SELECT "key", value_json FROM {table} WHERE study_id = ? ORDER BY rowid',
            (study_id,),
        )
        # The replay takes one attribute per log.
        logs.extend(
            _log(op_code, study_id=journal_study_id, **{field: {key: json.loads(value)}})
            for key, value in rows
        )
    logs.extend(_trial_logs(connection, study_id, journal_study_id))
    return logs


def _log(op_code: int, **fields: Any) -> dict[str, Any]:
    return {"op_code": op_code, "worker_id": LOADER_WORKER_ID, **fields}


_STATE_BY_NAME = {state.name: int(state) for state in TrialState}
_VALUE_BY_TYPE = {"INF_POS": _INF, "INF_NEG": -_INF, "NAN": math.nan}


def _trial_logs(
    connection: sqlite3.Connection, study_id: int, journal_study_id: int
) -> list[dict[str, Any]]:
    """One CREATE_TRIAL log per trial, in trial id order (which is number order)."""
    logs: dict[int, dict[str, Any]] = {}
    rows = connection.execute(
        "SELECT trial_id, state, datetime_start, datetime_complete"
        " FROM trials WHERE study_id = ? ORDER BY trial_id",
        (study_id,),
    )
    for trial_id, state, start, complete in rows:
        log = _log(
            _CREATE_TRIAL,
            study_id=journal_study_id,
            state=_STATE_BY_NAME[state],
            datetime_start=_journal_datetime(start),
            value=None,
            values=None,
            distributions={},
            params={},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
        )
        # The replay parses datetime_complete whenever the key is present.
        if complete is not None:
            log["datetime_complete"] = _journal_datetime(complete)
        logs[trial_id] = log

    def trial_rows(query: str) -> Iterable[tuple[Any, ...]]:
        return connection.execute(
            query + " WHERE trial_id IN (SELECT trial_id FROM trials WHERE study_id = ?)"
            " ORDER BY 1",
            (study_id,),
        )

    values: dict[int, list[float]] = {}
    for trial_id, objective, value, value_type in trial_rows(
        "SELECT trial_id, objective, value, value_type FROM trial_values"
    ):
        trial_values = values.setdefault(trial_id, [])
        trial_values.extend([math.nan] * (objective + 1 - len(trial_values)))
        trial_values[objective] = value if value_type == "FINITE" else _VALUE_BY_TYPE[value_type]
    for trial_id, trial_values in values.items():
        logs[trial_id]["values"] = trial_values

    for _, trial_id, name, value, distribution_json in trial_rows(
        "SELECT param_id, trial_id, param_name, param_value, distribution_json FROM trial_params"
    ):
        log = logs[trial_id]
        log["params"][name] = value
        log["distributions"][name] = distribution_json

    for table, field in (
        ("trial_user_attributes", "user_attrs"),
        ("trial_system_attributes", "system_attrs"),
    ):
        for _, trial_id, key, value_json in trial_rows(
            f'SELECT rowid, trial_id, "key", value_json FROM {table}'
        ):
            logs[trial_id][field][key] = json.loads(value_json)

    for _, trial_id, step, value, value_type in trial_rows(
        "SELECT rowid, trial_id, step, intermediate_value, intermediate_value_type"
        " FROM trial_intermediate_values"
    ):
        logs[trial_id]["intermediate_values"][step] = (
            value if value_type == "FINITE" else _VALUE_BY_TYPE[value_type]
        )
    return list(logs.values())


def _journal_datetime(utc_text: str | None) -> str | None:
    """Naive UTC text from the file, as the aware ISO text the journal replay parses."""
    if utc_text is None:
        return None
    if len(utc_text) == 26 and utc_text[10] == " ":  # as SQLAlchemy writes it: no parsing
        return f"{utc_text[:10]}T{utc_text[11:]}+00:00"
    return datetime.fromisoformat(utc_text).replace(tzinfo=timezone.utc).isoformat()


def _logs_from_journal_file(path: Path, study_name: str | None) -> tuple[str, list[dict[str, Any]]]:
    logs: list[dict[str, Any]] = []
    with open(path, "rb") as file:
        for line_number, line in enumerate(file, start=1):
            try:
                log = json.loads(line)
            except ValueError:
                log = None
            if not isinstance(log, dict) or "op_code" not in log or not line.endswith(b"\n"):
                raise StudyFileError(
                    path,
                    "neither an Optuna SQLite database nor an Optuna journal file "
                    f"(line {line_number} is not a journal log)",
                )
            logs.append(log)
    return _choose_study_name(path, _journal_study_names(logs), study_name), logs


def _journal_study_names(logs: Iterable[dict[str, Any]]) -> list[str]:
    """Names of the studies a journal holds, following the replay's rules for ids."""
    names: dict[int, str] = {}
    next_id = 0
    for log in logs:
        if log["op_code"] == _CREATE_STUDY and log["study_name"] not in names.values():
            names[next_id] = log["study_name"]
            next_id += 1
        elif log["op_code"] == _DELETE_STUDY:
            names.pop(log["study_id"], None)
    return list(names.values())

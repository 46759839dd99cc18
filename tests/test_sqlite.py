"""study.db written by optspec must be the file optuna.copy_study would write, and read back whole.

Studies are built through a real JournalStorage over an in-process backend; files are real
SQLite files. The reference for every row is optuna.copy_study itself.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from optuna.distributions import (
    FloatDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import TrialState

from optspec.cli import ExitCode, exit_code_for
from optspec.errors import UsageError
from optspec.storage.studydb import (
    StudyFileError,
    dump_to_sqlite,
    load_from_sqlite,
    write_fallback_journal,
)
from tests.studies import (
    ListBackend,
    assert_same_trials,
    study_in_journal,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPTUNA_TABLES = (
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
    "trial_heartbeats",
    "version_info",
    "alembic_version",
)


def table_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(path) as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
            for table in OPTUNA_TABLES
        }


def system_attrs(study: optuna.Study) -> dict[str, Any]:
    # Study.system_attrs is gone in Optuna 5; the storage still has them.
    return study._storage.get_study_system_attrs(study._study_id)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(study_in_journal())
def test_dump_equals_copy_study_and_loads_back(journal: tuple[ListBackend, str]) -> None:
    backend, name = journal
    source = optuna.load_study(study_name=name, storage=JournalStorage(backend))
    with tempfile.TemporaryDirectory() as directory:
        dumped, copied = Path(directory, "study.db"), Path(directory, "copy.db")
        dump_to_sqlite(backend, name, dumped)
        optuna.copy_study(
            from_study_name=name, from_storage=source._storage, to_storage=f"sqlite:///{copied}"
        )

        # Row for row, ids and datetimes included: copy_study keeps datetimes, and in a new
        # file numbers its study 1 and its trials 1, 2, ... as dump_to_sqlite does.
        assert table_rows(dumped) == table_rows(copied)

        from_file = optuna.load_study(study_name=name, storage=f"sqlite:///{dumped}")
        from_copy = optuna.load_study(study_name=name, storage=f"sqlite:///{copied}")
        assert_same_trials(from_file.trials, from_copy.trials)
        # Only the trial ids differ from the journal's: RDB ids start at 1.
        assert_same_trials(from_file.trials, source.trials, with_id=False)
        assert from_file.directions == source.directions
        assert from_file.user_attrs == source.user_attrs
        assert system_attrs(from_file) == system_attrs(source)

        loaded_backend, loaded = load_from_sqlite(dumped, backend=ListBackend())
        assert loaded.study_name == name
        assert_same_trials(loaded.trials, source.trials)
        assert loaded.directions == source.directions
        assert loaded.user_attrs == source.user_attrs
        assert system_attrs(loaded) == system_attrs(source)
        # One log per trial, study attribute, and the study itself.
        expected_logs = 1 + len(source.user_attrs) + len(system_attrs(source)) + len(source.trials)
        assert len(loaded_backend.read_logs(0)) == expected_logs


# --------------------------------------------------------------------------------------------
# Fixed studies


def build_study(
    backend: BaseJournalBackend, name: str, n_trials: int, *, seed: int = 0
) -> optuna.Study:
    study = optuna.create_study(
        study_name=name,
        storage=JournalStorage(backend),
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )
    study.set_user_attr("owner", name)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        trial.suggest_int("n", 1, 64, log=True)
        trial.suggest_categorical("kind", [None, True, "a", 2.5])
        trial.report(x, 0)
        trial.set_user_attr("square", x * x)
        if trial.number % 7 == 3:
            raise optuna.TrialPruned()
        return x * x

    study.optimize(objective, n_trials=n_trials)
    return study


@pytest.fixture
def study_db(tmp_path: Path) -> Path:
    path = tmp_path / "study.db"
    backend = ListBackend()
    build_study(backend, "old", 12)
    dump_to_sqlite(backend, "old", path)
    return path


def test_dumps_only_the_named_study(tmp_path: Path) -> None:
    backend = ListBackend()
    storage = JournalStorage(backend)
    first = optuna.create_study(study_name="first", storage=storage)
    second = optuna.create_study(study_name="second", storage=storage)
    for number in range(6):  # interleaved: journal trial ids are not second's numbers
        study = first if number % 2 else second
        study.add_trial(optuna.trial.create_trial(value=number))
    dump_to_sqlite(backend, "second", tmp_path / "study.db")

    loaded = optuna.load_study(study_name=None, storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert loaded.study_name == "second"
    assert [(t.number, t._trial_id, t.value) for t in loaded.trials] == [
        (0, 1, 0),
        (1, 2, 2),
        (2, 3, 4),
    ]


def test_dump_from_a_live_storage_writes_the_same_rows(tmp_path: Path) -> None:
    backend = ListBackend()
    study = build_study(backend, "live", 10)
    dump_to_sqlite(backend, "live", tmp_path / "replayed.db")
    # The study's own storage is behind by nothing; a storage that is behind catches up.
    stale = JournalStorage(backend)
    study.add_trial(optuna.trial.create_trial(value=1.0))
    dump_to_sqlite(backend, "live", tmp_path / "live.db", storage=stale)
    dump_to_sqlite(backend, "live", tmp_path / "replayed.db")
    assert table_rows(tmp_path / "live.db") == table_rows(tmp_path / "replayed.db")
    assert len(table_rows(tmp_path / "live.db")["trials"]) == 11

    with pytest.raises(ValueError, match="over the backend"):
        dump_to_sqlite(ListBackend(), "live", tmp_path / "x.db", storage=stale)


def test_study_db_gets_the_mode_of_a_new_file(tmp_path: Path) -> None:
    backend = ListBackend()
    build_study(backend, "mode", 1)
    dump_to_sqlite(backend, "mode", tmp_path / "study.db")
    (tmp_path / "plain").touch()
    assert (tmp_path / "study.db").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_dump_of_a_missing_study_names_the_ones_there(tmp_path: Path) -> None:
    backend = ListBackend()
    build_study(backend, "present", 1)
    with pytest.raises(UsageError, match=r"'absent'.*'present'"):
        dump_to_sqlite(backend, "absent", tmp_path / "study.db")
    assert list(tmp_path.iterdir()) == []


def test_load_needs_an_empty_backend(study_db: Path) -> None:
    backend, _ = load_from_sqlite(study_db, backend=ListBackend())
    with pytest.raises(ValueError, match="empty"):
        load_from_sqlite(study_db, backend=backend)


def test_load_picks_a_study_by_name_or_names_the_choices(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    for name in ("alpha", "beta"):
        optuna.create_study(study_name=name, storage=storage).add_trial(
            optuna.trial.create_trial(value=len(name))
        )
    storage.engine.dispose()

    with pytest.raises(StudyFileError, match=r"2 studies.*'alpha', 'beta'") as error:
        load_from_sqlite(path, backend=ListBackend())
    assert str(path) in str(error.value)
    with pytest.raises(StudyFileError, match="no study named 'gamma'"):
        load_from_sqlite(path, "gamma", backend=ListBackend())

    _, beta = load_from_sqlite(path, "beta", backend=ListBackend())
    assert beta.study_name == "beta"
    assert [t.value for t in beta.trials] == [4]
    # Its trial had id 2 in the file; in the new journal it is the first trial.
    assert beta.trials[0]._trial_id == 0


def test_default_backend_is_shared_memory(study_db: Path) -> None:
    from optspec import SharedMemoryJournalBackend

    backend, study = load_from_sqlite(study_db)
    try:
        assert isinstance(backend, SharedMemoryJournalBackend)
        assert len(study.trials) == 12
    finally:
        backend.close()


# --------------------------------------------------------------------------------------------
# A failed dump leaves the old study.db


def assert_old_study_intact(path: Path, old_bytes: bytes) -> None:
    assert path.read_bytes() == old_bytes
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{path}")
    assert len(study.trials) == 12
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_failed_insert_leaves_old_file(study_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old_bytes = study_db.read_bytes()
    backend = ListBackend()
    build_study(backend, "new", 20)
    # Fails in the middle of the transaction: studies and trials are already inserted.
    import optspec.storage.rows

    broken = dict(optspec.storage.rows._INSERTS)
    broken["trial_params"] = "INSERT INTO no_such_table VALUES (?, ?, ?, ?)"
    monkeypatch.setattr(optspec.storage.rows, "_INSERTS", broken)

    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        dump_to_sqlite(backend, "new", study_db)
    assert_old_study_intact(study_db, old_bytes)


def test_unwritable_temp_location_fails_cleanly(tmp_path: Path) -> None:
    backend = ListBackend()
    build_study(backend, "new", 2)
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    with pytest.raises(NotADirectoryError):
        dump_to_sqlite(backend, "new", not_a_directory / "study.db")


_DISK_FULL_SCRIPT = """
import resource, signal, sys
from optspec.storage.studydb import dump_to_sqlite, load_from_sqlite
sys.path.insert(0, {tests!r})
from test_sqlite import ListBackend

backend, _ = load_from_sqlite({big!r}, backend=ListBackend())
# No file may grow past 1 MB: room for the schema, not for 20k trials. Writes beyond fail with
# EFBIG, as on a full disk, and unlike chmod this stops root too.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    dump_to_sqlite(backend, "big", {target!r})
except Exception as error:
    print(type(error).__name__, error)
    sys.exit(3)
"""


@pytest.fixture(scope="module")
def big_study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 20k-trial study.db, built from journal logs without running Optuna 20k times."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    backend = ListBackend()
    backend.append_logs(bulk_logs("big", 20_000))
    dump_to_sqlite(backend, "big", path)
    return path


def bulk_logs(name: str, n_trials: int) -> list[dict[str, Any]]:
    distribution = optuna.distributions.distribution_to_json(FloatDistribution(0, 1))
    logs: list[dict[str, Any]] = [
        {"op_code": 0, "worker_id": "w", "study_name": name, "directions": [0]}
    ]
    for number in range(n_trials):
        logs.append(
            {
                "op_code": 4,
                "worker_id": "w",
                "study_id": 0,
                "state": 1,
                "datetime_start": "2024-05-01T10:00:00.000001+00:00",
                "datetime_complete": "2024-05-01T10:00:01.000002+00:00",
                "value": number / 3,
                "values": None,
                "distributions": {"x": distribution, "y": distribution},
                "params": {"x": 0.5, "y": 0.25},
                "user_attrs": {"note": f"trial {number}"},
                "system_attrs": {},
                "intermediate_values": {"0": number, "1": "NaN"},
            }
        )
    return logs


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs RLIMIT_FSIZE")
def test_full_disk_leaves_old_file(study_db: Path, big_study_db: Path) -> None:
    old_bytes = study_db.read_bytes()
    script = _DISK_FULL_SCRIPT.format(
        tests=str(Path(__file__).parent), big=str(big_study_db), target=str(study_db)
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 3, result.stderr
    # SQLite reports EFBIG as an I/O error; it must come from the inserts, not the schema.
    assert result.stdout.startswith("OperationalError disk I/O error"), result.stdout
    assert_old_study_intact(study_db, old_bytes)


_KILL_SCRIPT = """
import sys, time
from optspec.storage.studydb import dump_to_sqlite, load_from_sqlite
sys.path.insert(0, {tests!r})
from test_sqlite import ListBackend

backend, _ = load_from_sqlite({big!r}, backend=ListBackend())
print("dumping", flush=True)
start = time.perf_counter()
dump_to_sqlite(backend, "big", {target!r})
print(time.perf_counter() - start, flush=True)
"""


@pytest.mark.slow
def test_sigkill_during_dump_leaves_old_file(study_db: Path, big_study_db: Path) -> None:
    old_bytes = study_db.read_bytes()
    target = study_db.parent / "target.db"
    script = _KILL_SCRIPT.format(
        tests=str(Path(__file__).parent), big=str(big_study_db), target=str(target)
    )

    def start() -> subprocess.Popen[str]:
        target.write_bytes(old_bytes)
        child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline() == "dumping\n"
        return child

    def wait_for_temp_file(child: subprocess.Popen[str]) -> float:
        """Seconds until the dump's temporary file appears (the replay and rows come first)."""
        begin = time.perf_counter()
        while not list(target.parent.glob(".target.db.*")) and child.poll() is None:
            time.sleep(0.001)
        return time.perf_counter() - begin

    # Where the time of a whole dump goes here, so that the kills land inside one.
    calibration = start()
    before_temp = wait_for_temp_file(calibration)
    stdout, _ = calibration.communicate(timeout=120)
    duration = float(stdout)
    assert before_temp < duration
    assert len(optuna.load_study(study_name="big", storage=f"sqlite:///{target}").trials) == 20_000

    rng = random.Random(1234)
    killed_while_writing = 0
    for attempt in range(4):
        child = start()
        # Half the kills anywhere in the dump, half while the temporary file is being written.
        if attempt % 2:
            time.sleep(rng.uniform(0.05, 0.95) * duration)
        else:
            wait_for_temp_file(child)
            time.sleep(rng.uniform(0.0, 0.8) * (duration - before_temp))
        writing = bool(list(target.parent.glob(".target.db.*")))
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
        if target.read_bytes() == old_bytes:
            killed_while_writing += writing and child.returncode == -signal.SIGKILL
            study = optuna.load_study(study_name="old", storage=f"sqlite:///{target}")
            assert len(study.trials) == 12
        else:  # the kill came after the rename: then the new file is whole
            study = optuna.load_study(study_name="big", storage=f"sqlite:///{target}")
            assert len(study.trials) == 20_000
    assert killed_while_writing >= 1

    # A later dump removes temporary files that killed dumps left behind.
    backend = ListBackend()
    build_study(backend, "after", 1)
    dump_to_sqlite(backend, "after", target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["study.db", "target.db"]


# --------------------------------------------------------------------------------------------
# Files that are not Optuna studies this Optuna can read


def _sqlite_without_optuna(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")


def _other_alembic_revision(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'v9.0.0.a'")


def _other_schema_version(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE version_info SET schema_version = 13")


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:2048])


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda path: path.write_text("hello\n"), "neither an Optuna SQLite database"),
        (lambda path: path.write_bytes(os.urandom(4096)), "neither an Optuna SQLite database"),
        (lambda path: path.write_bytes(b""), "is empty, not an Optuna study"),
        (lambda path: path.unlink(), "no such file"),
        (_sqlite_without_optuna, "not an Optuna study database"),
        (_other_alembic_revision, "revision v9.0.0.a"),
        (_other_schema_version, "schema_version 13"),
        (_truncated, "SQLite"),
    ],
    ids=[
        "text",
        "binary",
        "empty",
        "missing",
        "sqlite-not-optuna",
        "other-revision",
        "other-schema-version",
        "truncated",
    ],
)
def test_unreadable_files_raise_study_file_error(study_db: Path, spoil: Any, message: str) -> None:
    if spoil is _sqlite_without_optuna:
        study_db.unlink()
    spoil(study_db)
    with pytest.raises(StudyFileError, match=message) as error:
        load_from_sqlite(study_db, backend=ListBackend())
    assert str(error.value).startswith(f"{study_db}: ")
    assert exit_code_for(error.value) == ExitCode.USAGE_ERROR


# --------------------------------------------------------------------------------------------
# Fallback journal


def test_fallback_journal_is_read_by_optuna_and_by_load(tmp_path: Path) -> None:
    backend = ListBackend()
    source = build_study(backend, "kept", 15)
    source.enqueue_trial({"x": 1.0})
    path = tmp_path / "study.journal"
    write_fallback_journal(backend, path)

    by_optuna = optuna.load_study(
        study_name="kept", storage=JournalStorage(JournalFileBackend(str(path)))
    )
    assert_same_trials(by_optuna.trials, source.trials)
    assert by_optuna.user_attrs == {"owner": "kept"}

    _, loaded = load_from_sqlite(path, backend=ListBackend())
    assert_same_trials(loaded.trials, source.trials)
    assert loaded.trials[-1].state == TrialState.WAITING


def test_fallback_journal_names_its_studies(tmp_path: Path) -> None:
    backend = ListBackend()
    build_study(backend, "one", 1)
    build_study(backend, "two", 1)
    path = tmp_path / "study.journal"
    write_fallback_journal(backend, path)
    with pytest.raises(StudyFileError, match="'one', 'two'"):
        load_from_sqlite(path, backend=ListBackend())
    _, two = load_from_sqlite(path, "two", backend=ListBackend())
    assert len(two.trials) == 1


def test_torn_fallback_journal_is_refused(tmp_path: Path) -> None:
    backend = ListBackend()
    build_study(backend, "kept", 2)
    path = tmp_path / "study.journal"
    write_fallback_journal(backend, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StudyFileError, match=r"line .* is not a journal log"):
        load_from_sqlite(path, backend=ListBackend())


# --------------------------------------------------------------------------------------------
# optuna-dashboard reads study.db


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dashboard(study_db: Path) -> Iterator[str]:
    port = _free_port()
    executable = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(executable), f"sqlite:///{study_db}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                urllib.request.urlopen(url + "/api/studies", timeout=5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study(dashboard: str) -> None:
    summaries = _get_json(dashboard + "/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == ["old"]
    detail = _get_json(f"{dashboard}/api/studies/{summaries[0]['study_id']}")
    assert len(detail["trials"]) == 12
    assert {t["state"] for t in detail["trials"]} == {"Complete", "Pruned"}

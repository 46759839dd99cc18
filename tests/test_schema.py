"""The empty study file optspec writes is the one the installed Optuna's RDBStorage makes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from optspec.storage import schema
from optspec.storage.schema import create_empty_study_file, installed_schema


def _describe(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as connection:
        return {
            "objects": sorted(
                connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master")
            ),
            "version_info": connection.execute("SELECT * FROM version_info").fetchall(),
            "alembic_version": connection.execute("SELECT * FROM alembic_version").fetchall(),
        }


def _made_by_rdb_storage(path: Path) -> Path:
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    storage.remove_session()
    storage.engine.dispose()
    return path


def test_written_schema_is_rdb_storages(tmp_path: Path) -> None:
    ours = tmp_path / "ours.db"
    create_empty_study_file(ours)
    theirs = _made_by_rdb_storage(tmp_path / "theirs.db")
    # Fails after an Optuna upgrade that changes the schema: record the new one in schema.py.
    assert optuna.__version__ == schema.RECORDED_OPTUNA_VERSION
    assert _describe(ours) == _describe(theirs)
    (version,) = _describe(theirs)["version_info"]
    assert installed_schema() == (version[1], _describe(theirs)["alembic_version"][0][0])


def test_optuna_opens_the_written_file_and_stores_a_study(tmp_path: Path) -> None:
    path = tmp_path / "study.db"
    create_empty_study_file(path)
    # RDBStorage refuses a file whose stamp is not its own; this one it takes as is.
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=f"sqlite:///{path}").trials) == 2


def test_another_optuna_version_gets_rdb_storages_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "RECORDED_OPTUNA_VERSION", "0.0.0-not-installed")
    path = tmp_path / "study.db"
    create_empty_study_file(path)
    assert _describe(path) == _describe(_made_by_rdb_storage(tmp_path / "theirs.db"))

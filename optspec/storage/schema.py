"""The empty study file: Optuna's SQLite schema and version stamp, written directly.

``RDBStorage(url)`` makes this file through SQLAlchemy and alembic: 1.3 s on a fresh process
(most of it importing them), paid at the end of every run. The statements below are the ones
it issues for SQLite, copied from ``sqlite_master`` of a file the installed Optuna made, with
the rows it stamps; ``tests/test_schema.py`` makes such a file and compares the two, so an
Optuna upgrade that changes them fails there. Under any other Optuna version than the one
recorded here, the file comes from RDBStorage as before (once per process), so a study.db is
never stamped with a schema the installed Optuna did not make.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import tempfile
from pathlib import Path
from typing import NamedTuple

import optuna

__all__ = ["OptunaSchema", "create_empty_study_file", "installed_schema"]

# Recorded from Optuna 5.0.0 (RDBStorage on SQLite, SQLAlchemy 2.x).
RECORDED_OPTUNA_VERSION = "5.0.0"
RECORDED_SCHEMA_VERSION = 12
RECORDED_REVISION = "v3.2.0.a"
# In sqlite_master order: tables, each followed by its named indexes.
RECORDED_DDL = (
    (
        "CREATE TABLE studies (\n"
        "\tstudy_id INTEGER NOT NULL, \n"
        "\tstudy_name VARCHAR(512) NOT NULL, \n"
        "\tPRIMARY KEY (study_id)\n"
        ")"
    ),
    "CREATE UNIQUE INDEX ix_studies_study_name ON studies (study_name)",
    (
        "CREATE TABLE version_info (\n"
        "\tversion_info_id INTEGER NOT NULL, \n"
        "\tschema_version INTEGER, \n"
        "\tlibrary_version VARCHAR(256), \n"
        "\tPRIMARY KEY (version_info_id), \n"
        "\tCHECK (version_info_id=1)\n"
        ")"
    ),
    (
        "CREATE TABLE study_directions (\n"
        "\tstudy_direction_id INTEGER NOT NULL, \n"
        "\tdirection VARCHAR(8) NOT NULL, \n"
        "\tstudy_id INTEGER NOT NULL, \n"
        "\tobjective INTEGER NOT NULL, \n"
        "\tPRIMARY KEY (study_direction_id), \n"
        "\tUNIQUE (study_id, objective), \n"
        "\tFOREIGN KEY(study_id) REFERENCES studies (study_id)\n"
        ")"
    ),
    (
        "CREATE TABLE study_user_attributes (\n"
        "\tstudy_user_attribute_id INTEGER NOT NULL, \n"
        "\tstudy_id INTEGER, \n"
        '\t"key" VARCHAR(512), \n'
        "\tvalue_json TEXT, \n"
        "\tPRIMARY KEY (study_user_attribute_id), \n"
        '\tUNIQUE (study_id, "key"), \n'
        "\tFOREIGN KEY(study_id) REFERENCES studies (study_id)\n"
        ")"
    ),
    (
        "CREATE TABLE study_system_attributes (\n"
        "\tstudy_system_attribute_id INTEGER NOT NULL, \n"
        "\tstudy_id INTEGER, \n"
        '\t"key" VARCHAR(512), \n'
        "\tvalue_json TEXT, \n"
        "\tPRIMARY KEY (study_system_attribute_id), \n"
        '\tUNIQUE (study_id, "key"), \n'
        "\tFOREIGN KEY(study_id) REFERENCES studies (study_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trials (\n"
        "\ttrial_id INTEGER NOT NULL, \n"
        "\tnumber INTEGER, \n"
        "\tstudy_id INTEGER, \n"
        "\tstate VARCHAR(8) NOT NULL, \n"
        "\tdatetime_start DATETIME, \n"
        "\tdatetime_complete DATETIME, \n"
        "\tPRIMARY KEY (trial_id), \n"
        "\tFOREIGN KEY(study_id) REFERENCES studies (study_id)\n"
        ")"
    ),
    "CREATE INDEX ix_trials_study_id ON trials (study_id)",
    (
        "CREATE TABLE trial_user_attributes (\n"
        "\ttrial_user_attribute_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER, \n"
        '\t"key" VARCHAR(512), \n'
        "\tvalue_json TEXT, \n"
        "\tPRIMARY KEY (trial_user_attribute_id), \n"
        '\tUNIQUE (trial_id, "key"), \n'
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trial_system_attributes (\n"
        "\ttrial_system_attribute_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER, \n"
        '\t"key" VARCHAR(512), \n'
        "\tvalue_json TEXT, \n"
        "\tPRIMARY KEY (trial_system_attribute_id), \n"
        '\tUNIQUE (trial_id, "key"), \n'
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trial_params (\n"
        "\tparam_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER, \n"
        "\tparam_name VARCHAR(512), \n"
        "\tparam_value FLOAT, \n"
        "\tdistribution_json TEXT, \n"
        "\tPRIMARY KEY (param_id), \n"
        "\tUNIQUE (trial_id, param_name), \n"
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trial_values (\n"
        "\ttrial_value_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER NOT NULL, \n"
        "\tobjective INTEGER NOT NULL, \n"
        "\tvalue FLOAT, \n"
        "\tvalue_type VARCHAR(7) NOT NULL, \n"
        "\tPRIMARY KEY (trial_value_id), \n"
        "\tUNIQUE (trial_id, objective), \n"
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trial_intermediate_values (\n"
        "\ttrial_intermediate_value_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER NOT NULL, \n"
        "\tstep INTEGER NOT NULL, \n"
        "\tintermediate_value FLOAT, \n"
        "\tintermediate_value_type VARCHAR(7) NOT NULL, \n"
        "\tPRIMARY KEY (trial_intermediate_value_id), \n"
        "\tUNIQUE (trial_id, step), \n"
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE trial_heartbeats (\n"
        "\ttrial_heartbeat_id INTEGER NOT NULL, \n"
        "\ttrial_id INTEGER NOT NULL, \n"
        "\theartbeat DATETIME NOT NULL, \n"
        "\tPRIMARY KEY (trial_heartbeat_id), \n"
        "\tUNIQUE (trial_id), \n"
        "\tFOREIGN KEY(trial_id) REFERENCES trials (trial_id)\n"
        ")"
    ),
    (
        "CREATE TABLE alembic_version (\n"
        "\tversion_num VARCHAR(32) NOT NULL, \n"
        "\tCONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)\n"
        ")"
    ),
)


class OptunaSchema(NamedTuple):
    schema_version: int  # version_info.schema_version
    revision: str  # alembic_version.version_num


def installed_schema() -> OptunaSchema:
    """The version stamp the installed Optuna gives the files it makes."""
    if optuna.__version__ == RECORDED_OPTUNA_VERSION:
        return OptunaSchema(RECORDED_SCHEMA_VERSION, RECORDED_REVISION)
    return _made_by_optuna()[1]


def create_empty_study_file(path: Path) -> None:
    """Make ``path`` (an empty file or none) an Optuna study file with no study in it."""
    if optuna.__version__ != RECORDED_OPTUNA_VERSION:
        path.write_bytes(_made_by_optuna()[0])
        return
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN")
        for statement in RECORDED_DDL:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO version_info (version_info_id, schema_version, library_version)"
            " VALUES (1, ?, ?)",
            (RECORDED_SCHEMA_VERSION, RECORDED_OPTUNA_VERSION),
        )
        connection.execute(
            "INSERT INTO alembic_version (version_num) VALUES (?)", (RECORDED_REVISION,)
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


@functools.cache
def _made_by_optuna() -> tuple[bytes, OptunaSchema]:
    """An empty study file made by RDBStorage (the image, byte for byte) and its stamp."""
    with tempfile.TemporaryDirectory(prefix="optspec-schema-") as directory:
        path = Path(directory, "schema.db")
        storage = optuna.storages.RDBStorage("sqlite:///" + str(path.absolute()))
        # Close its connections so the file is complete and can be removed.
        storage.remove_session()
        storage.engine.dispose()
        with contextlib.closing(sqlite3.connect(path)) as connection:
            (schema_version,) = connection.execute("SELECT schema_version FROM version_info")
            (revision,) = connection.execute("SELECT version_num FROM alembic_version")
        return path.read_bytes(), OptunaSchema(schema_version[0], revision[0])

"""The rows of a study.db, from FrozenTrials or straight from journal records.

Values are encoded the way Optuna's ORM encodes them: enums by name, ``inf``/``-inf``/``nan``
as NULL plus a type column, datetimes as naive UTC text, JSON for attributes and
distributions. Rows go in per table in trial order, and within a trial in the order
``copy_study`` adds them, so that SQLite numbers them as ``copy_study`` would.
"""

from __future__ import annotations

import json
import marshal
import math
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optspec.storage.replay import StudyRecord, TrialRecord, distribution_of

if TYPE_CHECKING:
    from optspec.storage.optuna_compat import FrozenStudy

__all__ = ["insert_rows", "record_rows", "study_rows"]

_INF = math.inf


# Rows per table, in the column order of the INSERT statements in _INSERTS.
_Rows = dict[str, list[tuple[Any, ...]]]

_INSERTS = {
    "studies": "INSERT INTO studies (study_id, study_name) VALUES (?, ?)",
    "study_directions": (
        "INSERT INTO study_directions (study_id, objective, direction) VALUES (?, ?, ?)"
    ),
    "study_system_attributes": (
        'INSERT INTO study_system_attributes (study_id, "key", value_json) VALUES (?, ?, ?)'
    ),
    "study_user_attributes": (
        'INSERT INTO study_user_attributes (study_id, "key", value_json) VALUES (?, ?, ?)'
    ),
    "trials": (
        "INSERT INTO trials (trial_id, number, study_id, state, datetime_start, datetime_complete)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    ),
    "trial_values": (
        "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)"
    ),
    "trial_params": (
        "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json)"
        " VALUES (?, ?, ?, ?)"
    ),
    "trial_user_attributes": (
        'INSERT INTO trial_user_attributes (trial_id, "key", value_json) VALUES (?, ?, ?)'
    ),
    "trial_system_attributes": (
        'INSERT INTO trial_system_attributes (trial_id, "key", value_json) VALUES (?, ?, ?)'
    ),
    "trial_intermediate_values": (
        "INSERT INTO trial_intermediate_values"
        " (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?, ?, ?, ?)"
    ),
}

# The study is the only one in the new file, so it gets the id copy_study's would get.
_STUDY_ID = 1


def study_rows(study: FrozenStudy, trials: Sequence[FrozenTrial]) -> _Rows:
    """Every row of the new file except the schema's own, keyed by table.

    Only trial ids are explicit. The other tables' ids are left to SQLite, which numbers rows in
    insertion order, as copy_study's one-trial-at-a-time inserts do: so rows go in per table in
    trial order, and within a trial in the order copy_study adds them.
    """
    rows: _Rows = {table: [] for table in _INSERTS}
    rows["studies"].append((_STUDY_ID, study.study_name))
    rows["study_directions"] = [
        (_STUDY_ID, objective, direction.name)
        for objective, direction in enumerate(study.directions)
    ]
    # copy_study sets system attrs first; their order within each table is all that matters.
    rows["study_system_attributes"] = [
        (_STUDY_ID, key, _json(value)) for key, value in study.system_attrs.items()
    ]
    rows["study_user_attributes"] = [
        (_STUDY_ID, key, _json(value)) for key, value in study.user_attrs.items()
    ]

    _add_trial_rows(rows, trials)
    return rows


def _add_trial_rows(rows: _Rows, trials: Sequence[FrozenTrial]) -> None:
    # One loop with the row lists bound to locals: this runs once per trial, 100k times.
    trial_rows, value_rows, param_rows = rows["trials"], rows["trial_values"], rows["trial_params"]
    user_rows, system_rows = rows["trial_user_attributes"], rows["trial_system_attributes"]
    intermediate_rows = rows["trial_intermediate_values"]
    distribution_json = _DistributionJsonCache()
    for trial in trials:
        # Trial ids as copy_study gives them in a new file: 1, 2, ... in number order.
        trial_id = trial.number + 1
        trial_rows.append(
            (
                trial_id,
                trial.number,
                _STUDY_ID,
                trial.state.name,
                _utc_text(trial.datetime_start),
                _utc_text(trial.datetime_complete),
            )
        )
        if trial.values is not None:
            for objective, value in enumerate(trial.values):
                value_rows.append((trial_id, objective, *_stored_value(value)))
        distributions = trial.distributions
        for name, value in trial.params.items():
            distribution = distributions[name]
            param_rows.append(
                (
                    trial_id,
                    name,
                    distribution.to_internal_repr(value),
                    distribution_json(distribution),
                )
            )
        for key, value in trial.user_attrs.items():
            user_rows.append((trial_id, key, _json(value)))
        for key, value in trial.system_attrs.items():
            system_rows.append((trial_id, key, _json(value)))
        for step, value in trial.intermediate_values.items():
            intermediate_rows.append((trial_id, step, *_stored_intermediate_value(value)))


def _stored_value(value: float) -> tuple[float | None, str]:
    # As TrialValueModel.value_to_stored_repr; NaN is not a valid objective value there either.
    if value == _INF:
        return None, "INF_POS"
    if value == -_INF:
        return None, "INF_NEG"
    return value, "FINITE"


def _stored_intermediate_value(value: float) -> tuple[float | None, str]:
    if value != value:  # NaN
        return None, "NAN"
    return _stored_value(value)


def _utc_text(local: datetime | None) -> str | None:
    """A FrozenTrial datetime (naive local time) as RDBStorage stores it: naive UTC text.

    The format is SQLAlchemy's for SQLite DATETIME columns, microseconds always included.
    """
    if local is None:
        return None
    # isoformat is several times faster than strftime; [:26] drops the "+00:00".
    return local.astimezone(timezone.utc).isoformat(" ", "microseconds")[:26]


def _json(value: Any) -> str:
    """``json.dumps(value)``, the way Optuna encodes attributes, faster for the common scalars.

    Each shortcut returns exactly what json.dumps would, so rows stay identical to copy_study's.
    """
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float and -_INF < value < _INF:
        return float.__repr__(value)
    return json.dumps(value)


class _DistributionJsonCache:
    """``distribution_to_json``, remembered for distributions seen before.

    Every trial of a study usually has the same distribution per parameter, and encoding it
    again for each row is a large share of a dump. The key must tell apart what ``==`` does
    not, since the JSON differs: ``CategoricalDistribution((True,)) == ...((1,))``,
    ``FloatDistribution(-0.0, 1) == ...(0.0, 1)``. Attribute values are None, bool, int, float,
    str or tuples of them, and their marshal encoding is exact (type and bits) and fast.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[type, bytes], str] = {}

    def __call__(self, distribution: BaseDistribution) -> str:
        key = (type(distribution), marshal.dumps(tuple(distribution.__dict__.values())))
        text = self._by_key.get(key)
        if text is None:
            text = self._by_key[key] = distribution_to_json(distribution)
        return text


def insert_rows(path: Path, rows: _Rows) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        # The file has no reader until it is renamed, and a crash before that discards it: no
        # need for SQLite's own durability on each page. One fsync at the end makes it durable.
        connection.execute("PRAGMA journal_mode = MEMORY")
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -65536")  # KiB: the indexes stay in memory
        connection.execute("BEGIN")
        for table, statement in _INSERTS.items():
            if rows[table]:
                connection.executemany(statement, rows[table])
        connection.execute("COMMIT")
    finally:
        connection.close()


def record_rows(study: StudyRecord, trials: Sequence[TrialRecord]) -> _Rows:
    """:func:`study_rows` from a :class:`~optspec.storage.replay.LogReplay`'s records: no
    FrozenTrial, no datetime object, each distribution parsed once."""
    rows: _Rows = {table: [] for table in _INSERTS}
    rows["studies"].append((_STUDY_ID, study.name))
    rows["study_directions"] = [
        (_STUDY_ID, objective, StudyDirection(direction).name)
        for objective, direction in enumerate(study.directions)
    ]
    rows["study_system_attributes"] = [
        (_STUDY_ID, key, _json(value)) for key, value in study.system_attrs.items()
    ]
    rows["study_user_attributes"] = [
        (_STUDY_ID, key, _json(value)) for key, value in study.user_attrs.items()
    ]
    trial_rows, value_rows, param_rows = rows["trials"], rows["trial_values"], rows["trial_params"]
    user_rows, system_rows = rows["trial_user_attributes"], rows["trial_system_attributes"]
    intermediate_rows = rows["trial_intermediate_values"]
    state_names = {int(state): state.name for state in TrialState}
    for trial in trials:
        trial_id = trial.number + 1
        trial_rows.append(
            (
                trial_id,
                trial.number,
                _STUDY_ID,
                state_names[trial.state],
                _utc_text_of_iso(trial.start),
                _utc_text_of_iso(trial.complete),
            )
        )
        if trial.values is not None:
            for objective, value in enumerate(trial.values):
                value_rows.append((trial_id, objective, *_stored_value(value)))
        distributions = trial.distributions
        for name, internal in trial.params.items():
            stored, distribution_json = _param_row(distributions[name], internal)
            param_rows.append((trial_id, name, stored, distribution_json))
        for key, value in trial.user_attrs.items():
            user_rows.append((trial_id, key, _json(value)))
        for key, value in trial.system_attrs.items():
            system_rows.append((trial_id, key, _json(value)))
        for step, value in trial.intermediate_values.items():
            intermediate_rows.append((trial_id, step, *_stored_intermediate_value(value)))
    return rows


def _param_row(distribution_text: str, internal: Any) -> tuple[Any, str]:
    """A param's stored value and distribution JSON, as copy_study writes them: the value goes
    through its external representation and back, which may change its type."""
    distribution = distribution_of(distribution_text)
    return (
        distribution.to_internal_repr(distribution.to_external_repr(internal)),
        _json_of_distribution(distribution_text),
    )


_distribution_json: dict[str, str] = {}


def _json_of_distribution(text: str) -> str:
    # Optuna's JSON for the distribution the log's JSON describes (key order, defaults).
    json_text = _distribution_json.get(text)
    if json_text is None:
        json_text = _distribution_json[text] = distribution_to_json(distribution_of(text))
    return json_text


def _utc_text_of_iso(text: str | None) -> str | None:
    """A log's ISO datetime as RDBStorage stores it: naive UTC text, microseconds included."""
    if text is None:
        return None
    if len(text) == 32 and text[10] == "T" and text.endswith("+00:00"):  # as Optuna writes
        return text[:10] + " " + text[11:26]
    return datetime.fromisoformat(text).astimezone(timezone.utc).isoformat(" ", "microseconds")[:26]

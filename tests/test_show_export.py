"""``optspec show`` and ``optspec export``, checked against what Optuna itself reads from study.db.

Every example runs through the real command line, then ``show`` and ``export`` run on its
study.db in a fresh interpreter, and their output is compared with ``optuna.load_study`` on the
same file: the tool must never disagree with Optuna about what a study holds. Hand-made studies
cover what the examples may not produce (absent conditional params, infinite values, NaN attrs,
an empty study), and broken files must fail with exit 2 and a message that names them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from optspec.cli import main
from optspec.util import tomllib

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

EXAMPLES = Path(__file__).parent.parent / "examples"
N_TRIALS = 12  # enough for a Pareto front and some pruning, small enough to run every example

Cli = Callable[..., subprocess.CompletedProcess[str]]


# -- fixtures and helpers -----------------------------------------------------------------------


@pytest.fixture(
    scope="module", params=["quadratic", "multi_objective", "conditional", "pruned", "command"]
)
def example_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """study.db of one example, run once per module through the real ``optspec run``."""
    output = tmp_path_factory.mktemp(request.param)
    spec = EXAMPLES / f"{request.param}.toml"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "optspec",
            "run",
            spec,
            "-o",
            output,
            "-q",
            "--n-trials",
            str(N_TRIALS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return output / "study.db"


def load_with_optuna(study_db: Path) -> optuna.Study:
    # Works on a copy: RDBStorage may touch the file, and the file under test must stay as it was.
    copy = study_db.with_name("optuna-copy.db")
    shutil.copyfile(study_db, copy)
    return optuna.load_study(study_name=None, storage=f"sqlite:///{copy}")


def run_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """The command line in this process (quicker than a new interpreter); its stdout."""
    assert main([str(arg) for arg in args]) == 0
    return capsys.readouterr().out


def assert_cell_equals(cell: str, expected: Any) -> None:
    """A CSV cell is text; compare it as the type Optuna holds the value in."""
    if expected is None:
        assert cell == ""
    elif isinstance(expected, bool):
        assert cell == str(expected)
    elif isinstance(expected, float):
        assert float(cell) == expected or (math.isnan(expected) and math.isnan(float(cell)))
    elif isinstance(expected, int):
        assert int(cell) == expected
    else:
        assert cell == str(expected)


def value_columns(study: optuna.Study, spec_metrics: list[str] | None) -> list[str]:
    if len(study.directions) == 1:
        return ["value"]
    names = spec_metrics or [str(i) for i in range(len(study.directions))]
    return [f"values_{name}" for name in names]


def example_metrics(study: optuna.Study) -> list[str] | None:
    """The metric names the example's spec selects, read from the example, not through optspec."""
    spec = tomllib.loads((EXAMPLES / f"{study.study_name}.toml").read_text())
    return [objective["metric"] for objective in spec["study"].get("objectives", [])] or None


# -- every example, through the command line ----------------------------------------------------


@pytest.mark.slow
def test_show_json_agrees_with_optuna(example_db: Path, optspec_cli: Cli) -> None:
    result = optspec_cli("show", example_db, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    study = load_with_optuna(example_db)
    trials = study.trials

    assert report["study"] == study.study_name
    assert report["n_trials"] == len(trials) == N_TRIALS
    assert sum(report["states"].values()) == len(trials)
    assert report["states"] == dict(Counter(trial.state.name for trial in trials))
    if len(study.directions) == 1:
        assert report["best_trial"]["number"] == study.best_trial.number
        assert report["best_trial"]["values"] == [study.best_value]
        assert report["best_trial"]["params"] == study.best_trial.params
    else:
        front = {trial["number"]: trial["values"] for trial in report["pareto_front"]}
        assert front == {trial.number: trial.values for trial in study.best_trials}
    # The spec study.db keeps is the effective one: the example's file with `--n-trials` applied.
    expected = tomllib.loads((EXAMPLES / f"{study.study_name}.toml").read_text())
    expected["run"]["n_trials"] = N_TRIALS
    assert tomllib.loads(report["spec"]) == expected
    assert f"--set run.n_trials={N_TRIALS}" in report["spec"]
    starts = [t.datetime_start for t in trials]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    assert report["duration_seconds"] == pytest.approx((max(ends) - min(starts)).total_seconds())


@pytest.mark.slow
def test_show_table_names_states_best_and_spec(example_db: Path, optspec_cli: Cli) -> None:
    result = optspec_cli("show", example_db)
    assert result.returncode == 0, result.stderr
    study = load_with_optuna(example_db)
    text = result.stdout

    assert f"study {study.study_name!r}" in text
    for state, count in Counter(trial.state.name for trial in study.trials).items():
        assert f"{count} {state}" in text
    if len(study.directions) == 1:
        best_row = next(line for line in text.splitlines() if line.strip().startswith("#"))
        assert best_row.split()[:2] == [f"#{study.best_trial.number}", f"{study.best_value:.6g}"]
    else:
        assert f"Pareto front: {len(study.best_trials)} trials" in text
        for trial in study.best_trials:
            assert f"  #{trial.number} " in text
    assert "duration: " in text
    assert "version = 1" in text.split("spec:", 1)[1]


@pytest.mark.slow
def test_export_csv_holds_every_trial(example_db: Path, optspec_cli: Cli) -> None:
    result = optspec_cli("export", example_db, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    study = load_with_optuna(example_db)
    columns = value_columns(study, example_metrics(study))
    param_names = {name for trial in study.trials for name in trial.params}

    assert [int(row["number"]) for row in rows] == [trial.number for trial in study.trials]
    for row, trial in zip(rows, study.trials, strict=True):
        assert row["state"] == trial.state.name
        for column, value in zip(columns, trial.values or [None] * len(columns), strict=True):
            assert_cell_equals(row[column], value)
        for name in param_names:  # a conditional param absent from this trial is an empty cell
            assert_cell_equals(row[f"params_{name}"], trial.params.get(name))
        for name, value in trial.user_attrs.items():
            assert_cell_equals(row[f"user_attrs_{name}"], value)
        assert_cell_equals(row["datetime_start"], trial.datetime_start.isoformat())
        if trial.duration is not None:
            assert float(row["duration"]) == pytest.approx(trial.duration.total_seconds())


@pytest.mark.slow
def test_export_json_holds_every_trial(example_db: Path, tmp_path: Path, optspec_cli: Cli) -> None:
    output = tmp_path / "trials.json"
    result = optspec_cli("export", example_db, "--format", "json", "-o", output)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = json.loads(output.read_text())
    study = load_with_optuna(example_db)
    columns = value_columns(study, example_metrics(study))
    param_names = {name for trial in study.trials for name in trial.params}

    assert [row["number"] for row in rows] == [trial.number for trial in study.trials]
    for row, trial in zip(rows, study.trials, strict=True):
        assert row["state"] == trial.state.name
        assert [row[column] for column in columns] == (trial.values or [None] * len(columns))
        assert {name: row[f"params_{name}"] for name in param_names} == {
            name: trial.params.get(name) for name in param_names
        }
        assert {name: row[f"user_attrs_{name}"] for name in trial.user_attrs} == trial.user_attrs


# -- what the examples may not produce ----------------------------------------------------------


def make_study(path: Path, directions: list[str], trials: list[dict[str, Any]]) -> optuna.Study:
    """A study.db written by Optuna itself, without optspec (so without a stored spec)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=f"sqlite:///{path}", study_name="hand", directions=directions
    )
    for trial in trials:
        study.add_trial(optuna.trial.create_trial(**trial))
    return study


def test_export_conditional_params_infinite_values_and_nan_attrs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    floats = optuna.distributions.FloatDistribution(0, 1)
    choice = optuna.distributions.CategoricalDistribution(["adam", "sgd"])
    study_db = tmp_path / "study.db"
    make_study(
        study_db,
        ["minimize", "maximize"],
        [
            dict(
                params={"opt": "sgd", "momentum": 0.5},
                distributions={"opt": choice, "momentum": floats},
                values=[math.inf, 1.0],
                user_attrs={"loss": math.nan, "tags": ["a", "b"]},
            ),
            dict(params={"opt": "adam"}, distributions={"opt": choice}, values=[0.25, -math.inf]),
            dict(state=optuna.trial.TrialState.FAIL),
        ],
    )

    rows = list(csv.DictReader(io.StringIO(run_cli(capsys, "export", study_db))))
    assert [row["values_0"] for row in rows] == ["inf", "0.25", ""]
    assert [row["values_1"] for row in rows] == ["1.0", "-inf", ""]
    assert [row["params_momentum"] for row in rows] == ["0.5", "", ""]
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert rows[0]["user_attrs_loss"] == "nan"
    assert json.loads(rows[0]["user_attrs_tags"]) == ["a", "b"]

    # strict parsing: Python's json would accept the bare NaN/Infinity that other readers reject
    text = run_cli(capsys, "export", study_db, "--format", "json")
    records = json.loads(text, parse_constant=pytest.fail)
    assert records[0]["values_0"] == "inf" and records[0]["user_attrs_loss"] == "nan"
    assert records[1]["params_momentum"] is None

    report = json.loads(run_cli(capsys, "show", study_db, "--json"), parse_constant=pytest.fail)
    assert report["spec"] is None
    assert "not made by optspec" in run_cli(capsys, "show", study_db)


def test_empty_study_shows_and_exports_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study_db = tmp_path / "study.db"
    make_study(study_db, ["minimize"], [])

    report = json.loads(run_cli(capsys, "show", study_db, "--json"))
    assert report["n_trials"] == 0 and report["best_trial"] is None
    assert report["duration_seconds"] is None
    assert "no trial completed" in run_cli(capsys, "show", study_db)
    header = "number,state,value,datetime_start,datetime_complete,duration"
    assert run_cli(capsys, "export", study_db).strip() == header
    assert json.loads(run_cli(capsys, "export", study_db, "--format", "json")) == []


def test_reading_never_changes_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only study.db whose schema a newer Optuna stamped still shows, and stays as it was."""
    study_db = tmp_path / "study.db"
    make_study(study_db, ["minimize"], [dict(params={}, distributions={}, value=1.5)])
    with sqlite3.connect(study_db) as connection:  # what a future Optuna's file would carry
        connection.execute("UPDATE alembic_version SET version_num = 'v99.0.0'")
    study_db.chmod(0o444)
    tmp_path.chmod(0o555)  # not even a journal file may appear beside it
    try:
        before = hashlib.sha256(study_db.read_bytes()).hexdigest()
        assert json.loads(run_cli(capsys, "show", study_db, "--json"))["best_trial"]["values"] == [
            1.5
        ]
        assert run_cli(capsys, "export", study_db).count("\n") == 2
        assert hashlib.sha256(study_db.read_bytes()).hexdigest() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["study.db"]
    finally:
        tmp_path.chmod(0o755)


# -- files that are not studies -----------------------------------------------------------------


def _text_file(path: Path) -> None:
    path.write_text("these are my notes, not a study\n")


def _empty_file(path: Path) -> None:
    path.touch()


def _sqlite_without_optuna_tables(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")


@pytest.mark.parametrize("make_file", [_text_file, _empty_file, _sqlite_without_optuna_tables])
@pytest.mark.parametrize("command", [["show"], ["show", "--json"], ["export"]])
def test_not_a_study_is_exit_2_naming_the_file(
    make_file: Callable[[Path], None], command: list[str], tmp_path: Path, optspec_cli: Cli
) -> None:
    path = tmp_path / "study.db"
    make_file(path)
    result = optspec_cli(*command, path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("where", ["missing-directory", "a-directory"])
def test_export_to_a_path_that_cannot_be_written(
    example_db: Path, optspec_cli: Cli, tmp_path: Path, where: str
) -> None:
    target = tmp_path / "no" / "such" / "dir.csv" if where == "missing-directory" else tmp_path
    result = optspec_cli("export", example_db, "-o", target)
    assert result.returncode == 2
    assert str(target) in result.stderr and "Traceback" not in result.stderr

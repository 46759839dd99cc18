"""``--set KEY=VALUE``: checked like the file, named in errors, and remembered by study.db."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from optspec.errors import SpecError, UsageError
from optspec.spec.load import load_spec, parse_spec
from optspec.spec.overrides import parse_override

SPEC = """\
# a comment the stored spec keeps when nothing is overridden
version = 1
[study]
name = "quad"
direction = "minimize"
[objective]
callable = "objective.py:objective"
[params]
x = { type = "float", low = -10, high = 10 }
epochs = 3
layers = { type = "int", low = 1, high = 4 }
[run]
n_trials = 20
checkpoint = "off"
"""

OBJECTIVE = """\
import os
import time


def objective(params):
    time.sleep(float(os.environ.get("SLEEP", "0")))
    with open(os.environ["TRIALS_LOG"], "a") as log:
        log.write(f"{params['x']}\\n")
    return params["x"] ** 2
"""


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "study.toml").write_text(SPEC)
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    return tmp_path


def optspec(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=180,
        env=_env(cwd, env),
    )


def _env(cwd: Path, extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "TRIALS_LOG": str(cwd / "trials.log"), **extra}


def stored_attrs(study_db: Path) -> dict:
    storage = optuna.storages.RDBStorage(f"sqlite:///{study_db}")
    study_id = storage.get_all_studies()[0]._study_id
    return storage.get_study_system_attrs(study_id)


def trials_of(study_db: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{study_db}").trials


# -- KEY=VALUE -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("run.n_trials=40", ("run", "n_trials"), 40),
        ("params.lr.high=0.5", ("params", "lr", "high"), 0.5),
        ("sampler.name=random", ("sampler", "name"), "random"),  # a bare word is a string
        ("run.timeout=10m", ("run", "timeout"), "10m"),
        ('study.name="a b"', ("study", "name"), "a b"),
        ("params.opt.choices=['a', 'b']", ("params", "opt", "choices"), ["a", "b"]),
        ("params.flag=true", ("params", "flag"), True),
        ('params."my lr".high=1', ("params", "my lr", "high"), 1),
        ("constraints[0].max=3", ("constraints", 0, "max"), 3),
        ("study.name=", ("study", "name"), ""),
        ("study.name=a=b", ("study", "name"), "a=b"),
    ],
)
def test_keys_are_dotted_toml_paths_and_values_toml(text, key, value):
    override = parse_override(text)
    assert (override.key, override.value) == (key, value)
    assert type(override.value) is type(value)


@pytest.mark.parametrize("text", ["run.n_trials", "=3", "run..n_trials=3", "run.n trials=3"])
def test_a_malformed_override_is_a_usage_error(text):
    with pytest.raises(UsageError, match=r"^--set "):
        parse_override(text)


# -- checked like the file -----------------------------------------------------------------------


def test_overrides_change_the_spec_before_validation(study_dir):
    spec = load_spec(
        study_dir / "study.toml",
        overrides=["run.n_trials=40", "params.x.high=5", "sampler.name=random"],
    )
    assert spec.run.n_trials == 40
    assert spec.params[0].high == 5.0
    assert spec.sampler.name == "random"
    assert spec.overrides == ("run.n_trials=40", "params.x.high=5", "sampler.name=random")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "run.n_trial=3",
            "study.toml: --set run.n_trial: unknown key; did you mean 'run.n_trials'? "
            "valid keys here: n_trials,",
        ),
        (
            "run.n_trials=abc",
            "study.toml: --set run.n_trials: must be an integer from 1 to 1000000000, "
            "got the string 'abc'",
        ),
        (
            "params.epochs.high=3",
            "study.toml: --set params.epochs.high: params.epochs is the integer 3, not a table",
        ),
        ("params.z.high=3", "study.toml: --set params.z.high: params.z.type: missing;"),
        (
            "params.x.high=-20",
            "study.toml: params.x.low: must be <= high (-20), got -10 "
            "(with --set params.x.high=-20)",
        ),
        ("params.x[0]=1", "study.toml: --set params.x[0]: params.x is a table, not an array"),
        ("stduy.name=a", "study.toml: --set stduy.name: stduy: unknown key; did you mean 'study'?"),
    ],
)
def test_validate_names_the_set_key_in_errors(study_dir, optspec_cli, override, expected):
    result = optspec_cli("validate", "study.toml", "--set", override, cwd=study_dir)
    assert result.returncode == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr


def test_every_problem_is_reported_at_once(study_dir, optspec_cli):
    result = optspec_cli(
        "validate", "study.toml", "--set", "run.n_trial=3", "--set", "run.workers=0",
        cwd=study_dir,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--set run.n_trial: unknown key" in result.stderr
    assert "--set run.workers: must be an integer from 1 to 1024" in result.stderr


def test_a_malformed_set_is_refused_by_the_command_line(study_dir, optspec_cli):
    result = optspec_cli("validate", "study.toml", "--set", "n_trials", cwd=study_dir)
    assert result.returncode == 2
    assert "argument --set: n_trials: expected KEY=VALUE" in result.stderr


def test_validate_print_shows_the_overridden_spec(study_dir, optspec_cli):
    result = optspec_cli(
        "validate", "study.toml", "--print", "--set", "params.x.high=5", cwd=study_dir
    )
    assert result.returncode == 0, result.stderr
    assert 'x = { type = "float", low = -10.0, high = 5.0, log = false }' in result.stdout


# -- the effective spec --------------------------------------------------------------------------


def test_without_overrides_the_spec_text_is_the_file(study_dir):
    assert load_spec(study_dir / "study.toml").text == SPEC


def test_the_effective_text_is_deterministic_and_reads_back_equal(study_dir):
    overrides = ["params.x.high=5", "run.n_trials=40"]
    first = load_spec(study_dir / "study.toml", overrides=overrides)
    second = load_spec(study_dir / "study.toml", overrides=overrides)
    assert first.text == second.text
    assert first.text.startswith("# The spec this study runs: study.toml with these overrides.")
    assert "#   --set params.x.high=5\n#   --set run.n_trials=40\n" in first.text
    assert parse_spec(first.text, path=study_dir / "study.toml") == first
    # Declaration order is kept: it is the order parameters are suggested in.
    assert [p.name for p in first.params] == ["x", "epochs", "layers"]


def test_overrides_on_a_stored_spec_equal_the_file_with_all_overrides(study_dir):
    """What a resume records is what the checked-in file gives with every override."""
    path = study_dir / "study.toml"
    stored = load_spec(path, overrides=["run.n_trials=40"])
    resumed = parse_spec(
        stored.text, path=path, overrides=["params.x.low=-1"], applied=stored.overrides
    )
    again = load_spec(path, overrides=["run.n_trials=40", "params.x.low=-1"])
    assert resumed.text == again.text
    assert resumed.overrides == again.overrides == ("run.n_trials=40", "params.x.low=-1")


def test_errors_in_a_spec_file_are_not_blamed_on_overrides(study_dir):
    (study_dir / "study.toml").write_text(SPEC.replace("n_trials = 20", "n_trials = 0"))
    with pytest.raises(SpecError) as error:
        load_spec(study_dir / "study.toml", overrides=["params.x.high=5"])
    assert error.value.problems == (
        "run.n_trials: must be an integer from 1 to 1000000000, got the integer 0",
    )


# -- study.db remembers them (real runs) ---------------------------------------------------------


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended early: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError("no trials finished")


@pytest.mark.slow
def test_resume_continues_to_the_n_trials_the_interrupted_run_was_given(study_dir):
    process = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q",
         "--n-trials", "40", "--workers", "2"],
        cwd=study_dir,
        env=_env(study_dir, {"SLEEP": "0.1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    _wait_for_lines(study_dir / "trials.log", 5, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    study_db = study_dir / "out" / "study.db"
    assert 5 <= len(trials_of(study_db)) < 40
    assert stored_attrs(study_db)["optspec:overrides"] == ["run.n_trials=40", "run.workers=2"]

    result = optspec("resume", study_db, "-q", cwd=study_dir)  # no flags
    assert result.returncode == 0, result.stderr
    trials = trials_of(study_db)
    assert len(trials) == 40
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_a_set_is_shown_and_honoured_on_resume_and_a_later_set_overrides_again(study_dir):
    result = optspec(
        "run", "study.toml", "-o", "out", "-q", "--set", "params.x.high=-5", "--n-trials", "4",
        cwd=study_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study_db = study_dir / "out" / "study.db"
    show = optspec("show", study_db, cwd=study_dir)
    assert show.returncode == 0, show.stderr
    assert "--set params.x.high=-5" in show.stdout
    assert 'x = { type = "float", low = -10, high = -5 }' in show.stdout

    result = optspec("resume", study_db, "-q", "--n-trials", "8", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = trials_of(study_db)
    assert len(trials) == 8
    assert all(-10 <= t.params["x"] <= -5 for t in trials)

    result = optspec(
        "resume", study_db, "-q", "--set", "params.x.low=-6", "--n-trials", "11", cwd=study_dir
    )
    assert result.returncode == 0, result.stderr
    trials = trials_of(study_db)
    assert len(trials) == 11
    assert all(-6 <= t.params["x"] <= -5 for t in trials[8:])
    attrs = stored_attrs(study_db)
    assert attrs["optspec:overrides"] == [
        "params.x.high=-5", "run.n_trials=4", "run.n_trials=8", "params.x.low=-6",
        "run.n_trials=11",
    ]  # fmt: skip
    # The checked-in file plus the recorded overrides gives the stored spec again.
    again = load_spec(study_dir / "study.toml", overrides=attrs["optspec:overrides"])
    assert again.text == attrs["optspec:spec"]


@pytest.mark.slow
def test_resume_refuses_a_bad_set_with_nothing_written(study_dir, optspec_cli):
    result = optspec("run", "study.toml", "-o", "out", "-q", "--n-trials", "2", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    study_db = study_dir / "out" / "study.db"
    before = study_db.read_bytes()
    result = optspec("resume", study_db, "--set", "run.n_trial=5", cwd=study_dir)
    assert result.returncode == 2
    assert "--set run.n_trial: unknown key; did you mean 'run.n_trials'?" in result.stderr
    assert study_db.read_bytes() == before

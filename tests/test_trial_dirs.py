"""Parameters by name, a directory per trial, and which directories remain: real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import load, run_cli

OBJECTIVES = """
import json, os

def objective(x, y, trial_dir):
    # A trainer's habit: a checkpoint per trial, next to its own numbers.
    (trial_dir / "model.ckpt").write_text(json.dumps({"x": x, "y": y}))
    if x > 0.8:
        raise RuntimeError("diverged")
    return (x - 0.3) ** 2 + y

def sparse(x, y, trial_dir):
    if y > 0.5:
        (trial_dir / "plot.txt").write_text("a plot")
    if x > 0.7:
        raise RuntimeError("diverged")
    return x

def two(x, y, trial_dir):
    (trial_dir / "model.ckpt").write_text("weights")
    return {"a": x, "b": 1 - x + y, "mem": y}

def conditional(opt, momentum=None, lr=0.5, trial=None, params=None):
    return {"loss": (momentum if momentum is not None else -1.0) + lr, "opt_seen": opt,
            "trial_number": trial.number, "n_params": len(params),
            "worker": os.environ["OPTSPEC_WORKER"]}
"""


def spec_text(callable_: str, keep: str | None, *, study: str = 'direction = "minimize"',
              extra: str = "", n_trials: int = 12) -> str:  # fmt: skip
    keep_line = f'keep_trial_dirs = "{keep}"' if keep else ""
    return f"""
version = 1
[study]
name = "dirs"
seed = 3
{study}
[objective]
callable = "objectives.py:{callable_}"
[params]
x = {{ type = "float", low = 0, high = 1 }}
y = {{ type = "float", low = 0, high = 1 }}
[sampler]
name = "random"
[run]
n_trials = {n_trials}
workers = 2
{keep_line}
{extra}
"""


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    return tmp_path


def run(study_dir: Path, text: str, out: str = "out") -> Path:
    (study_dir / "study.toml").write_text(text)
    result = run_cli("run", "study.toml", "-o", out, "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    return study_dir / out


def kept(out: Path) -> set[int]:
    trials = out / "trials"
    return {int(p.name) for p in trials.iterdir()} if trials.exists() else set()


def test_best_keeps_exactly_the_best_trials_directory(study_dir: Path) -> None:
    out = run(study_dir, spec_text("objective", "best"))
    study = load(out / "study.db")
    assert {t.state for t in study.trials} == {TrialState.COMPLETE, TrialState.FAIL}
    best = study.best_trial
    assert kept(out) == {best.number}
    # The callable got x and y by name and its trial_dir: the checkpoint holds its parameters.
    checkpoint = json.loads((out / "trials" / str(best.number) / "model.ckpt").read_text())
    assert checkpoint == {"x": best.params["x"], "y": best.params["y"]}
    # show and results.json name the directory.
    directory = str((out / "trials" / str(best.number)).absolute())
    shown = run_cli("show", out / "study.db", cwd=study_dir)
    assert f"trial directory: {directory}" in shown.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["best_trial"]["trial_dir"] == directory
    markdown = run_cli("report", out / "study.db", "--format", "md", "-o", "-", cwd=study_dir)
    assert f"Trial directory: `{directory}`" in markdown.stdout
    assert run_cli("report", out / "study.db", cwd=study_dir).returncode == 0
    assert directory in (out / "report.html").read_text()


def test_none_keeps_no_directory(study_dir: Path) -> None:
    out = run(study_dir, spec_text("objective", "none"))
    assert not (out / "trials").exists()
    assert "trial directory" not in run_cli("show", out / "study.db", cwd=study_dir).stdout


@pytest.mark.slow
def test_all_keeps_every_directory(study_dir: Path) -> None:
    out = run(study_dir, spec_text("objective", "all"))
    assert kept(out) == set(range(12))


@pytest.mark.slow
def test_failed_keeps_what_holds_files_as_before(study_dir: Path) -> None:
    out = run(study_dir, spec_text("sparse", None, n_trials=16))
    trials = load(out / "study.db").trials
    assert {t.state for t in trials} == {TrialState.COMPLETE, TrialState.FAIL}
    # A directory the callable wrote into stays, failed or not; an empty one goes.
    assert kept(out) == {t.number for t in trials if t.params["y"] > 0.5}


@pytest.mark.slow
def test_best_with_several_objectives_keeps_the_feasible_pareto_front(study_dir: Path) -> None:
    study = (
        '[[study.objectives]]\nmetric = "a"\ndirection = "minimize"\n'
        '[[study.objectives]]\nmetric = "b"\ndirection = "minimize"'
    )
    constraint = '[[constraints]]\nmetric = "mem"\nmax = 0.5'
    out = run(study_dir, spec_text("two", "best", study=study, extra=constraint, n_trials=16))
    front = {t.number for t in load(out / "study.db").best_trials}
    assert front and kept(out) == front
    results = json.loads((out / "results.json").read_text())
    assert {t["number"] for t in results["pareto_front"] if "trial_dir" in t} == front


def test_parameters_by_name_with_conditions_trial_and_params(study_dir: Path) -> None:
    text = """
version = 1
[study]
name = "cond"
[[study.objectives]]
metric = "loss"
direction = "minimize"
[objective]
callable = "objectives.py:conditional"
[params]
opt = { type = "categorical", choices = ["adam", "sgd"] }
momentum = { type = "float", low = 0.0, high = 0.9, when = { opt = "sgd" } }
lr = 0.25
[run]
n_trials = 8
"""
    out = run(study_dir, text)
    for trial in load(out / "study.db").trials:
        attrs = trial.user_attrs
        assert attrs["opt_seen"] == trial.params["opt"]
        assert attrs["trial_number"] == trial.number
        assert attrs["n_params"] == len(trial.params) + 1  # plus the fixed lr
        assert attrs["worker"] == "0"  # a callable's worker has its index in the environment
        momentum = trial.params.get("momentum", -1.0)  # off: the signature's default, None
        assert trial.value == pytest.approx(momentum + 0.25)
    assert not (out / "trials").exists()  # no trial_dir in the signature: no directory


def test_a_name_the_callable_cannot_be_given_is_a_spec_error(study_dir: Path) -> None:
    (study_dir / "objectives.py").write_text("def objective(x, lr):\n    return x\n")
    (study_dir / "study.toml").write_text(spec_text("objective", None))
    result = run_cli("run", "study.toml", "-o", "out", cwd=study_dir)
    assert result.returncode == 2
    assert "objective.callable: objective() needs 'lr'" in result.stderr
    assert "declared parameter (x, y)" in result.stderr
    assert not (study_dir / "out").exists()


@pytest.mark.slow
def test_a_resumed_study_keeps_the_best_of_all_its_trials(study_dir: Path) -> None:
    out = run(study_dir, spec_text("objective", "best", n_trials=6))
    result = run_cli("resume", out / "study.db", "--n-trials", "14", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    study = load(out / "study.db")
    assert len(study.trials) == 14
    assert kept(out) == {study.best_trial.number}

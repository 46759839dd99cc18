"""Failures a person can see: the end-of-run summary, `optspec show`, and the stored reason,
which names the objective's own line rather than optspec's or Optuna's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

OBJECTIVES = """\
def reports(trial, params):
    trial.report(params["x"], step=0)
    return params["x"], -params["x"]


def picky(params):
    x = params["x"]
    if x > 0:
        raise ValueError(f"x must not be positive, got {x}")
    if x > -5:
        import json
        json.loads("{not json")
    return x
"""

SPEC = """\
version = 1
[study]
name = "s"
{study}
[objective]
callable = "objectives.py:{callable}"
[params]
x = {{ type = "float", low = -10, high = 10 }}
[sampler]
name = "random"
seed = 1
[run]
n_trials = 12
workers = 1
"""


def optspec(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )


@pytest.mark.slow
def test_a_study_where_every_trial_failed_says_why(tmp_path: Path) -> None:
    # trial.report in a multi-objective study: Optuna refuses it in every trial.
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(
        SPEC.format(study='directions = ["minimize", "maximize"]', callable="reports")
    )
    ran = optspec("run", "study.toml", "-o", "out", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    reason = (
        "NotImplementedError: Trial.report is not supported for multi-objective optimization. "
        f"(at {tmp_path / 'objectives.py'}:2)"
    )
    assert "failed: 12 trials\n" in ran.stdout
    assert f"  12 x {reason} (e.g. trial #0)" in ran.stdout

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'out/study.db'}")
    assert {t.user_attrs["fail_reason"] for t in study.trials} == {reason}

    shown = optspec("show", "out/study.db", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "failures: 12 trials, by reason:\n  12 trials (#0, #1, #2" in shown.stdout
    assert f"    {reason}\n" in shown.stdout
    as_json = json.loads(optspec("show", "out/study.db", "--json", cwd=tmp_path).stdout)
    assert as_json["failures"] == [{"reason": reason, "count": 12, "trials": list(range(12))}]


@pytest.mark.slow
def test_the_summary_groups_reasons_most_frequent_first(tmp_path: Path) -> None:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(
        SPEC.format(study='direction = "minimize"', callable="picky").replace("12", "30")
    )
    ran = optspec("run", "study.toml", "-o", "out", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'out/study.db'}")
    positive = [t.number for t in study.trials if t.params["x"] > 0]
    middle = [t.number for t in study.trials if -5 < t.params["x"] <= 0]
    assert positive and middle
    failed = len(positive) + len(middle)
    assert f"failed: {failed} trials, 2 distinct reasons\n" in ran.stdout
    lines = ran.stdout.split(f"failed: {failed} trials, 2 distinct reasons\n")[1].splitlines()
    groups = sorted([(len(positive), positive[0], "ValueError: x must not be positive"),
                     (len(middle), middle[0], "JSONDecodeError: Expecting property name")],
                    key=lambda g: (-g[0], g[1]))  # fmt: skip
    for line, (count, example, start) in zip(lines, groups, strict=False):
        assert line.startswith(f"  {count} x {start}"), line
        assert line.endswith(f"(e.g. trial #{example})"), line
    # The objective's own line, not the json module's where the error was raised.
    json_reason = study.trials[middle[0]].user_attrs["fail_reason"]
    assert json_reason.endswith(f"(at {tmp_path / 'objectives.py'}:12)"), json_reason
    quiet = optspec("resume", "out/study.db", "--n-trials", "31", "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == ""

"""The plugin as users meet it: installed, found through its entry point, run by optspec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optspec import SpecError
from optspec.plugins.manager import DISABLE_AUTOLOAD_ENV


@pytest.fixture(autouse=True)
def _autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plugin is found through its entry point, as in real use.
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_line_per_finished_trial_matching_study_db(optspec_run):
    run = optspec_run(n_trials=5, workers=2)

    assert run.exit_code == 0
    lines = read_lines(run.output / "trials.jsonl")
    saved = {trial.number: trial for trial in run.study.trials}
    assert sorted(line["number"] for line in lines) == [0, 1, 2, 3, 4]
    for line in lines:
        trial = saved[line["number"]]
        assert line["state"] == "COMPLETE"
        assert line["values"] == pytest.approx(trial.values)
        assert line["params"] == pytest.approx(trial.params)
        assert line["datetime_complete"].startswith(str(trial.datetime_complete.date()))


def test_path_from_the_plugin_table_is_relative_to_the_output(optspec_run):
    spec = """\
version = 1
[study]
direction = "minimize"
[params]
x = { type = "float", low = -10, high = 10 }
[plugin.jsonl-log]
path = "logs/all.jsonl"
"""
    run = optspec_run(spec, n_trials=3, workers=1)

    assert len(read_lines(run.output / "logs" / "all.jsonl")) == 3
    assert not (run.output / "trials.jsonl").exists()


def test_failed_trials_are_logged_with_their_reason(optspec_run):
    broken = "def objective(params):\n    raise RuntimeError('diverged')\n"
    spec = """\
version = 1
[study]
direction = "minimize"
[objective]
callable = "broken.py:objective"
[params]
x = { type = "float", low = -10, high = 10 }
"""
    run = optspec_run(spec, files={"broken.py": broken}, n_trials=2, workers=1)

    lines = read_lines(run.output / "trials.jsonl")
    assert [line["state"] for line in lines] == ["FAIL", "FAIL"]
    assert all(line["values"] is None for line in lines)
    assert all("diverged" in line["user_attrs"]["fail_reason"] for line in lines)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("path = 3", r"plugin\.jsonl-log\.path: must be a non-empty file name, got 3"),
        ('path = ""', r"plugin\.jsonl-log\.path: must be a non-empty file name"),
        ('file = "x.jsonl"', r"plugin\.jsonl-log\.file: unknown option"),
    ],
)
def test_bad_table_is_a_spec_error_and_nothing_is_written(optspec_run, table, message):
    spec = f"""\
version = 1
[study]
direction = "minimize"
[params]
x = {{ type = "float", low = -10, high = 10 }}
[plugin.jsonl-log]
{table}
"""
    with pytest.raises(SpecError, match=message):
        optspec_run(spec)
    assert not (optspec_run.tmp_path / "run1" / "output").exists()


def test_blocked_with_p_no(optspec_run):
    run = optspec_run(plugin_args=["no:jsonl-log"], n_trials=2, workers=1)

    assert run.exit_code == 0
    assert not (run.output / "trials.jsonl").exists()


def test_handed_to_the_run_as_a_module(optspec_run):
    # How a plugin not installed yet is tested: the module itself, entry point blocked.
    import optspec_jsonl_log

    run = optspec_run(plugins=[optspec_jsonl_log], plugin_args=["no:jsonl-log"], n_trials=3)

    assert run.exit_code == 0
    assert len(read_lines(run.output / "trials.jsonl")) == 3

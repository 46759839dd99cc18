"""Every hook fires as often as hookspecs.py says, in the process it says, with what it says.

Runs are real (spawned workers, the shared journal, study.db); optspec.testing records each hook
call with the pid that made it. Plugin objects live at module level because every worker unpickles
them by reference.
"""

from __future__ import annotations

import functools
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import pytest

from optspec import SpecError, hookimpl

pytest_plugins = ["optspec.testing"]

FAILING_OBJECTIVE = """\
def objective(params):
    if params["x"] < 0:
        raise RuntimeError("x below zero")
    return params["x"]
"""


# -- plugins used by the tests ----------------------------------------------------------------


class TagTrials:
    """Sets a user attr on every trial in the worker and a study attr at the start."""

    @hookimpl
    def on_study_start(self, study: Any) -> None:
        study.set_user_attr("started_by", "TagTrials")

    @hookimpl
    def on_trial_start(self, trial: Any) -> None:
        trial.set_user_attr("worker_pid", os.getpid())


class RaiseIn:
    """Raises RuntimeError in one hook (optionally for one trial number only)."""

    def __init__(self, hook: str, trial_number: int | None = None) -> None:
        self.hook = hook
        self.trial_number = trial_number

    def _maybe_raise(self, hook: str, trial: Any = None) -> None:
        if hook == self.hook and (self.trial_number is None or trial.number == self.trial_number):
            raise RuntimeError(f"{hook} broke on purpose")

    @hookimpl
    def on_trial_start(self, trial: Any) -> None:
        self._maybe_raise("on_trial_start", trial)

    @hookimpl
    def on_trial_end(self, trial: Any) -> None:
        self._maybe_raise("on_trial_end", trial)

    @hookimpl
    def on_finish(self) -> None:
        self._maybe_raise("on_finish")


class SetAttrOnFinish:
    @hookimpl
    def on_finish(self, study: Any) -> None:
        study.set_user_attr("finished_by", "SetAttrOnFinish")


class SeeWhatWasWritten:
    """A wrapper outside the sqlite plugin's: after its ``yield``, study.db is written or not."""

    @hookimpl(wrapper=True, tryfirst=True)
    def on_finish(self, config: Any, outcome: Any) -> Any:
        result = yield
        artifact = outcome.artifact("study.db")
        written = artifact is not None and artifact.path.is_file()
        # Written into the output directory: the test reads it back from there.
        (config.output / "seen.json").write_text(
            json.dumps({"written": written, "by": artifact and artifact.plugin}), encoding="utf-8"
        )
        return result


class InterruptAfterFirstTrial:
    """Sends the controller SIGINT when the first trial ends, like a user pressing Ctrl-C."""

    @hookimpl
    def on_trial_end(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


class RejectOptions:
    @hookimpl
    def configure(self, config: Any) -> None:
        if config.plugin_options("strict").get("level") != "high":
            raise SpecError("plugin.strict.level: must be 'high'")


def logged_random_sampler(log: Path, seed: int | None = None, note: str = "") -> Any:
    """A sampler factory that writes down what optspec called it with, in whichever process."""
    import optuna

    with log.open("a", encoding="utf-8") as file:
        file.write(json.dumps({"pid": os.getpid(), "seed": seed, "note": note}) + "\n")
    return optuna.samplers.RandomSampler(seed=seed)


class LoggedSampler:
    def __init__(self, log: Path) -> None:
        self.log = log

    @hookimpl
    def register_samplers(self) -> dict[str, Any]:
        return {"logged": functools.partial(logged_random_sampler, self.log)}


# -- how often, where -------------------------------------------------------------------------


def test_each_hook_fires_the_documented_number_of_times_in_the_documented_process(optspec_run):
    run = optspec_run(n_trials=6, workers=2)

    assert run.exit_code == 0
    workers = run.worker_pids()
    assert len(workers) == 2
    assert run.controller_pid not in workers

    configure = Counter(call.pid for call in run.calls("configure"))
    assert configure == {run.controller_pid: 1, **dict.fromkeys(workers, 1)}
    for hook in ("register_samplers", "register_pruners", "register_objectives"):
        assert Counter(call.pid for call in run.calls(hook)) == configure, hook

    (study_start,) = run.calls("on_study_start")
    assert study_start.role == "controller"

    trial_starts = run.calls("on_trial_start")
    assert sorted(call.args["trial"]["number"] for call in trial_starts) == list(range(6))
    assert {call.pid for call in trial_starts} <= workers

    trial_ends = run.calls("on_trial_end")
    assert sorted(call.args["trial"]["number"] for call in trial_ends) == list(range(6))
    assert {call.role for call in trial_ends} == {"controller"}

    (finish,) = run.calls("on_finish")
    assert finish.role == "controller"
    assert finish.kwargs["outcome"].status == "done"
    assert run.hook_calls[-1] is finish


def test_lifecycle_order_study_start_then_each_trial_start_before_its_end(optspec_run):
    run = optspec_run(n_trials=4, workers=2)

    (study_start,) = run.calls("on_study_start")
    starts = {call.args["trial"]["number"]: call.time for call in run.calls("on_trial_start")}
    ends = {call.args["trial"]["number"]: call.time for call in run.calls("on_trial_end")}
    assert study_start.time < min(starts.values())
    assert all(starts[number] < ends[number] for number in ends)


def test_workers_see_config_role_worker(optspec_run):
    run = optspec_run(n_trials=2, workers=2)

    assert {call.args["config"]["role"] for call in run.calls("configure", role="worker")} == {
        "worker"
    }
    assert {call.args["config"]["role"] for call in run.calls("on_trial_start")} == {"worker"}


def test_on_trial_end_sees_every_finished_trial_once_with_its_final_state(optspec_run):
    run = optspec_run(files={"objective.py": FAILING_OBJECTIVE}, n_trials=8, workers=2)

    saved = {trial.number: trial.state.name for trial in run.study.trials}
    reported = Counter(
        (call.args["trial"]["number"], call.args["trial"]["state"])
        for call in run.calls("on_trial_end")
    )
    assert reported == Counter(saved.items())
    assert all(call.role == "controller" for call in run.calls("on_trial_end"))


# -- what hooks may change --------------------------------------------------------------------


def test_attrs_set_in_study_start_trial_start_and_finish_are_saved(optspec_run):
    run = optspec_run(plugins=[TagTrials(), SetAttrOnFinish()], n_trials=4, workers=2)

    study = run.study
    assert study.user_attrs == {"started_by": "TagTrials", "finished_by": "SetAttrOnFinish"}
    assert {trial.user_attrs["worker_pid"] for trial in study.trials} <= run.worker_pids()
    # on_trial_end receives the trial as the worker left it.
    assert all(
        "worker_pid" in call.args["trial"]["user_attrs"] for call in run.calls("on_trial_end")
    )


def test_register_samplers_factory_gets_spec_options_and_a_seed_per_worker(optspec_run, tmp_path):
    log = tmp_path / "sampler-calls.jsonl"
    spec = """\
version = 1
[study]
direction = "minimize"
seed = 10
[params]
x = { type = "float", low = -10, high = 10 }
[sampler]
name = "logged"
note = "from the spec"
"""
    run = optspec_run(spec, plugins=[LoggedSampler(log)], n_trials=4, workers=2)

    assert run.exit_code == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    by_process = {call["pid"]: call for call in calls}
    assert len(calls) == len(by_process) == 3  # once in the controller, once per worker
    assert {call["note"] for call in calls} == {"from the spec"}
    assert by_process[run.controller_pid]["seed"] == 10
    assert sorted(by_process[pid]["seed"] for pid in run.worker_pids()) == [10, 11]


def test_configure_raising_spec_error_stops_before_anything_is_written(optspec_run):
    with pytest.raises(SpecError, match=r"plugin\.strict\.level: must be 'high'"):
        optspec_run(plugins=[RejectOptions()])
    assert not (optspec_run.tmp_path / "run1" / "output").exists()

    spec = """\
version = 1
[study]
direction = "minimize"
[params]
x = { type = "float", low = -10, high = 10 }
[plugin.strict]
level = "high"
"""
    assert optspec_run(spec, plugins=[RejectOptions()]).exit_code == 0


# -- failures ---------------------------------------------------------------------------------


def test_on_trial_start_raising_fails_that_trial_and_stops_the_run(optspec_run):
    run = optspec_run(plugins=[RaiseIn("on_trial_start", trial_number=1)], n_trials=4, workers=1)

    assert run.exit_code == 1
    assert "on_trial_start" in run.result.outcome.message
    states = {trial.number: trial.state.name for trial in run.study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL"}
    reason = run.study.trials[1].user_attrs["fail_reason"]
    assert "RuntimeError: on_trial_start broke on purpose" in reason
    (finish,) = run.calls("on_finish")
    assert finish.kwargs["outcome"].status == "failed"


def test_on_trial_end_raising_fails_the_run_and_study_db_is_written(optspec_run):
    run = optspec_run(plugins=[RaiseIn("on_trial_end")], n_trials=20, workers=1)

    assert run.exit_code == 1
    assert "on_trial_end" in run.result.outcome.message
    assert "broke on purpose" in run.result.outcome.message
    assert len(run.study.trials) >= 1
    (finish,) = run.calls("on_finish")
    assert finish.kwargs["outcome"].status == "failed"


def test_on_finish_raising_fails_the_run_and_study_db_is_written(optspec_run):
    run = optspec_run(plugins=[RaiseIn("on_finish")], n_trials=3, workers=1)

    assert run.exit_code == 1
    assert "on_finish broke on purpose" in run.result.outcome.message
    assert len(run.study.trials) == 3
    assert (run.output / "results.json").is_file()


def test_every_on_finish_implementation_runs_when_one_raises(optspec_run):
    # RaiseIn is registered after SetAttrOnFinish, so pluggy calls it first.
    run = optspec_run(plugins=[SetAttrOnFinish(), RaiseIn("on_finish")], n_trials=2, workers=1)

    assert run.exit_code == 1
    assert run.study.user_attrs == {"finished_by": "SetAttrOnFinish"}


def test_on_finish_fires_once_when_max_failed_stops_the_run(optspec_run):
    spec = """\
version = 1
[study]
direction = "minimize"
[objective]
callable = "broken.py:objective"
[params]
x = { type = "float", low = -10, high = 10 }
[run]
max_failed = 2
"""
    broken = (
        "import time\n\ndef objective(params):\n    time.sleep(0.05)\n    raise ValueError('no')\n"
    )
    run = optspec_run(spec, files={"broken.py": broken}, n_trials=30, workers=1)

    assert run.exit_code == 1
    (finish,) = run.calls("on_finish")
    assert finish.args["outcome"]["status"] == "failed"
    assert "max_failed" in finish.args["outcome"]["message"]
    assert 2 <= len(run.study.trials) < 30


def test_on_finish_fires_once_when_interrupted(optspec_run):
    # Trials of 50 ms: the interrupt lands long before the budget of 200 is spent.
    slow = "import time\n\ndef objective(params):\n    time.sleep(0.05)\n    return params['x']\n"
    run = optspec_run(
        plugins=[InterruptAfterFirstTrial()], files={"objective.py": slow}, n_trials=200, workers=1
    )

    assert run.exit_code == 130
    (finish,) = run.calls("on_finish")
    assert finish.args["outcome"]["status"] == "interrupted"
    assert "SIGINT" in finish.args["outcome"]["message"]
    assert 1 <= len(run.study.trials) < 200


def test_on_finish_tells_wrappers_that_study_db_was_written_by_whom(optspec_run):
    run = optspec_run(plugins=[SeeWhatWasWritten(), RaiseIn("on_finish")], n_trials=2, workers=1)

    assert run.exit_code == 1
    seen = json.loads((run.output / "seen.json").read_text(encoding="utf-8"))
    assert seen == {"written": True, "by": "sqlite"}
    kinds = {artifact.kind: artifact.path for artifact in run.result.outcome.artifacts}
    assert kinds == {"study.db": run.study_db, "results.json": run.output / "results.json"}


def test_with_the_sqlite_plugin_blocked_nothing_is_written_and_the_outcome_says_so(
    optspec_run, capfd
):
    run = optspec_run(plugins=[SeeWhatWasWritten()], plugin_args=["no:sqlite"], n_trials=2)

    assert run.exit_code == 0
    assert not run.study_db.exists()
    assert run.result.outcome.artifact("study.db") is None
    seen = json.loads((run.output / "seen.json").read_text(encoding="utf-8"))
    assert seen == {"written": False, "by": None}
    assert f"no plugin wrote {run.study_db}" in capfd.readouterr().err


SLOW_OBJECTIVE = """\
import time


def objective(params):
    time.sleep(0.4)
    return params["x"]
"""


@pytest.mark.slow
def test_on_checkpoint_fires_in_the_controller_while_workers_run(optspec_run):
    spec = (
        'version = 1\n[study]\nname = "testing"\ndirection = "minimize"\n'
        '[params]\nx = { type = "float", low = -10, high = 10 }\n[sampler]\nname = "random"\n'
        '[run]\ncheckpoint = "1s"\n'
    )
    run = optspec_run(spec, n_trials=8, workers=1, files={"objective.py": SLOW_OBJECTIVE})

    assert run.exit_code == 0
    checkpoints = run.calls("on_checkpoint")
    assert checkpoints and {call.role for call in checkpoints} == {"controller"}
    assert checkpoints[0].args["study"] == {"study_name": "testing"}


@attrs.define
class UnhashableSetAttr:
    """An attrs class with eq=True: its instances cannot be hashed, as many plugin objects."""

    value: str = "unhashable"

    @hookimpl
    def on_finish(self, study: Any) -> None:
        study.set_user_attr("finished_by", self.value)


def test_an_unhashable_plugin_object_still_gets_study_db_written(optspec_run):
    run = optspec_run(plugins=[UnhashableSetAttr()], n_trials=2, workers=1)

    assert run.exit_code == 0
    assert run.study.user_attrs == {"finished_by": "unhashable"}

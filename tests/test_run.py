"""`optspec run` end to end: real CLI, real worker processes, real study.db files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import (
    interrupt_running_run,
    load,
    run_cli,
    spec_text,
    start_run,
    wait_for_trials,
    wait_for_workers,
)

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.toml")))
def test_every_example_runs(example: str, tmp_path: Path) -> None:
    result = run_cli("run", EXAMPLES / example, "-o", tmp_path / "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = load(tmp_path / "out" / "study.db")
    assert study.trials
    assert all(trial.state.is_finished() for trial in study.trials)
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_trial_count_is_exact(workers: int, study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=23, workers=workers))
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert [trial.number for trial in trials] == list(range(23))
    assert all(trial.state == TrialState.COMPLETE for trial in trials)


def test_one_worker_with_a_seed_is_reproducible(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=10, workers=1))
    runs = []
    for out in ("a", "b"):
        result = run_cli("run", "study.toml", "-o", out, "-q", cwd=study_dir)
        assert result.returncode == 0, result.stderr
        runs.append([(t.params, t.values) for t in load(study_dir / out / "study.db").trials])
    assert runs[0] == runs[1]


def test_results_json_holds_the_best_trial(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=8))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    results = json.loads((study_dir / "out" / "results.json").read_text())
    study = load(study_dir / "out" / "study.db")
    assert results["best_trial"]["number"] == study.best_trial.number
    assert results["best_trial"]["values"] == [study.best_value]
    assert results["best_trial"]["params"] == study.best_params


def test_failing_trials_keep_their_reasons_and_the_run_completes(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("flaky", n_trials=40))
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert len(trials) == 40
    reasons = {t.user_attrs["fail_reason"] for t in trials if t.state == TrialState.FAIL}
    assert any("RuntimeError: x is too small" in r for r in reasons)
    assert any("nan" in r for r in reasons)
    assert any("2 values" in r for r in reasons)
    assert all(t.state == TrialState.COMPLETE for t in trials if t.params["x"] >= 5)


def test_max_failed_stops_the_study_with_exit_1(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(
        spec_text("always_fails", n_trials=50, extra="max_failed = 3")
    )
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 1
    assert "max_failed" in result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert 3 <= len(trials) < 50
    assert all(t.state == TrialState.FAIL for t in trials)


@pytest.mark.slow
def test_timeout_ends_the_run_cleanly(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("slow", n_trials=500, extra='timeout = "2s"'))
    started = time.monotonic()
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    trials = load(study_dir / "out" / "study.db").trials
    assert 0 < len(trials) < 500
    assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_trial_timeout_fails_a_runaway_python_trial(study_dir: Path) -> None:
    spec = spec_text("hang", n_trials=6, workers=2, extra='trial_timeout = "1s"')
    (study_dir / "study.toml").write_text(spec)
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert len(trials) == 6
    for trial in trials:
        if trial.params["x"] > 0:
            assert trial.state == TrialState.FAIL
            assert "trial_timeout" in trial.user_attrs["fail_reason"]
        else:
            assert trial.state == TrialState.COMPLETE


@pytest.mark.slow
def test_the_controller_yields_the_cpu_to_its_workers(study_dir: Path) -> None:
    """With workers from the forkserver, the controller runs at a lower priority than they do
    (it only reports; they do the work). Spawned workers would inherit it: nothing changes."""
    from optspec.platform import CONTROLLER_NICENESS, worker_start_method

    (study_dir / "study.toml").write_text(spec_text("slow", n_trials=16, workers=2))
    process = start_run(study_dir)
    try:
        workers = wait_for_workers(process, 2)
        wait_for_trials(study_dir)
        controller = os.getpriority(os.PRIO_PROCESS, process.pid)
        niceness = {os.getpriority(os.PRIO_PROCESS, worker) for worker in workers}
    finally:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert niceness == {ours}
    if worker_start_method() == "forkserver":
        assert controller == min(19, ours + CONTROLLER_NICENESS)
    else:
        assert controller == ours


def test_sigint_keeps_finished_trials_and_exits_130(study_dir: Path) -> None:
    interrupt_running_run(study_dir, "slow", n_trials=200, times=1)
    trials = load(study_dir / "out" / "study.db").trials
    assert 0 < len(trials) < 200
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.state == TrialState.COMPLETE for t in trials)  # running trials finished


@pytest.mark.slow
def test_a_second_sigint_stops_running_trials_as_failed(study_dir: Path) -> None:
    interrupt_running_run(study_dir, "hang", n_trials=50, times=2)
    trials = load(study_dir / "out" / "study.db").trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all("interrupted" in t.user_attrs["fail_reason"] for t in failed)


@pytest.mark.slow
def test_a_killed_worker_fails_its_trial_and_the_run_completes(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("marked", n_trials=20))
    process = start_run(study_dir)
    wait_for_workers(process, 2)
    deadline = time.monotonic() + 30
    while not (running := list(study_dir.glob("running-*"))) and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(int(running[0].name.split("-")[1]), signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert len(trials) == 20
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1
    assert "killed by SIGKILL" in failed[0].user_attrs["fail_reason"]


def test_command_arguments_never_reach_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    choice = f"; touch {marker} #"
    (tmp_path / "echo_args.py").write_text(
        "import json, sys\n"
        "print(json.dumps({'loss': 1.0, 'argv': sys.argv[1:]}))\n"
        "open(sys.argv[2], 'w').write(sys.argv[1])\n"
    )
    (tmp_path / "study.toml").write_text(f"""
version = 1
[objective]
command = ["{sys.executable}", "echo_args.py", "{{opt}}", "{tmp_path / "seen.txt"}"]
[params]
opt = {{ type = "categorical", choices = {json.dumps([choice])} }}
[run]
n_trials = 1
""")
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert (tmp_path / "seen.txt").read_text() == choice
    trial = load(tmp_path / "out" / "study.db").trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["argv"] == [choice, str(tmp_path / "seen.txt")]


@pytest.mark.slow
def test_run_refuses_an_existing_study_db(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    before = (study_dir / "out" / "study.db").read_bytes()
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 2
    assert "optspec resume" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr
    assert (study_dir / "out" / "study.db").read_bytes() == before
    result = run_cli("run", "study.toml", "-o", "out", "-q", "--overwrite", cwd=study_dir)
    assert result.returncode == 0, result.stderr


def test_old_journal_directories_are_not_migrated(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    (study_dir / "out").mkdir()
    (study_dir / "out" / "journal.log").write_text("{}\n")
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 2
    assert "not migrated" in result.stderr
    assert not (study_dir / "out" / "study.db").exists()
    for target in ("out/study.db", "out", "out/journal.log"):
        result = run_cli("resume", target, "-q", cwd=study_dir)
        assert result.returncode == 2, target
        assert "journal.log from an older optspec" in result.stderr, target
        assert "not migrated" in result.stderr, target
        assert "Traceback" not in result.stderr
    assert sorted(path.name for path in (study_dir / "out").iterdir()) == ["journal.log"]


@pytest.mark.slow
def test_verbose_shows_optuna_info_lines(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3, workers=1))
    quiet = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert quiet.returncode == 0, quiet.stderr
    assert "Trial 0 finished" not in quiet.stderr
    verbose = run_cli("run", "study.toml", "-o", "out2", "-v", cwd=study_dir)
    assert verbose.returncode == 0, verbose.stderr
    assert "Trial 2 finished with value" in verbose.stderr
    resumed = run_cli("resume", "out2/study.db", "--n-trials", "4", "-v", cwd=study_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "Trial 3 finished with value" in resumed.stderr


def test_spec_errors_found_by_plugins_write_nothing(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(
        spec_text("quadratic").replace('name = "random"', 'name = "random"\nseeed = 3')
    )
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 2
    assert "study.toml: sampler.seeed: not an option of random; did you mean 'seed'?" in (
        result.stderr
    )
    assert not (study_dir / "out").exists()


def _plugin(study_dir: Path, source: str) -> None:
    (study_dir / "optspec_plugins.py").write_text("from optspec import hookimpl\n" + source)


def test_a_plugin_raising_in_on_trial_start_stops_the_study(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=30))
    _plugin(study_dir, "@hookimpl\ndef on_trial_start(trial):\n    raise ValueError('bug')\n")
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 1
    assert "on_trial_start" in result.stderr and "Traceback" not in result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert 0 < len(trials) < 30
    assert all("on_trial_start" in t.user_attrs["fail_reason"] for t in trials)


def test_a_plugin_raising_in_configure_is_one_line(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic"))
    _plugin(study_dir, "@hookimpl\ndef configure(config):\n    raise ValueError('bad config')\n")
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir)
    assert result.returncode == 1
    assert "ValueError: bad config" in result.stderr and "Traceback" not in result.stderr
    assert not (study_dir / "out").exists()


@pytest.mark.parametrize("problem", ["file-in-the-way", "study-db-is-a-directory"])
def test_an_output_that_cannot_be_written_is_refused_before_running(
    study_dir: Path, problem: str
) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic"))
    if problem == "file-in-the-way":
        (study_dir / "afile").write_text("")
        output = "afile/out"
    else:
        (study_dir / "out" / "study.db").mkdir(parents=True)
        output = "out"
    result = run_cli("run", "study.toml", "-o", output, "-q", "--overwrite", cwd=study_dir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "not a directory" in result.stderr or "is a directory" in result.stderr


@pytest.mark.slow
def test_sigterm_while_on_finish_runs_still_writes_study_db(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=5))
    _plugin(
        study_dir,
        "import pathlib, time\n"
        "@hookimpl\ndef on_finish():\n"
        "    pathlib.Path('finishing').touch()\n"
        "    time.sleep(2)\n",
    )
    process = start_run(study_dir)
    deadline = time.monotonic() + 60
    while not (study_dir / "finishing").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert len(load(study_dir / "out" / "study.db").trials) == 5


def test_timeout_off_on_the_command_line_lifts_the_spec_timeout(study_dir: Path) -> None:
    # 16 trials of 0.2 s on 2 workers take longer than the spec's 1 s timeout allows.
    (study_dir / "study.toml").write_text(spec_text("slow", n_trials=16, extra='timeout = "1s"'))
    result = run_cli("run", "study.toml", "-o", "out", "-q", "--timeout", "off", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert len(load(study_dir / "out" / "study.db").trials) == 16


def test_results_json_holds_the_pareto_front_of_several_objectives(tmp_path: Path) -> None:
    example = EXAMPLES / "multi_objective.toml"
    result = run_cli("run", example, "-o", tmp_path / "out", "-q", "--n-trials", "15", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    front = load(tmp_path / "out" / "study.db").best_trials
    assert [t["number"] for t in results["pareto_front"]] == [t.number for t in front]
    assert [t["values"] for t in results["pareto_front"]] == [t.values for t in front]
    assert all(
        {"number", "values", "params", "user_attrs"} <= set(t) for t in results["pareto_front"]
    )


def test_a_failure_reason_is_where_people_and_older_tools_look(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("always_fails", n_trials=2))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    for trial in load(study_dir / "out" / "study.db").trials:
        reason = trial.user_attrs["fail_reason"]
        assert "ValueError: broken objective" in reason
        assert trial.system_attrs["fail_reason"] == reason  # where Optuna up to 3.x kept it


FOREIGN_SHM = ("sem.mp-", "PostgreSQL.")  # other test runs' semaphores, PostgreSQL servers


def _shm_entries() -> set[str]:
    # Semaphores of other test runs on the machine (sem.mp-*) are not this run's.
    return {e for e in os.listdir("/dev/shm") if not e.startswith(FOREIGN_SHM)}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["normal", "sigint", "sigkill"])
def test_nothing_left_in_shm_or_the_temp_directory(how: str, study_dir: Path) -> None:
    """Whatever the journal kind (OPTSPEC_JOURNAL) and however the controller ends."""
    tmp = study_dir / "tmp"
    tmp.mkdir()
    (study_dir / "study.toml").write_text(spec_text("slow", n_trials=6 if how == "normal" else 200))
    before = _shm_entries()
    process = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q"],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(tmp)},  # a temp directory of its own, to inspect
    )
    if how != "normal":
        wait_for_workers(process, 2)
        wait_for_trials(study_dir)
        time.sleep(1.0)
        process.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == {"normal": 0, "sigint": 130, "sigkill": -9}[how], stderr
    # After SIGKILL the forkserver, workers and any journal server notice and exit by themselves.
    deadline = time.monotonic() + 30
    while (list(tmp.iterdir()) or _shm_entries() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(tmp.iterdir()) == []
    assert _shm_entries() - before == set()

"""`optspec resume` and checkpoints, end to end through the real command line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optspec.spec.load import load_spec
from tests.helpers import (
    interrupt_running_run,
    load,
    run_cli,
    spec_text,
    start_run,
    wait_for_workers,
)


def snapshot(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [(t.number, t.state, t.params, t.values, t.user_attrs) for t in trials]


@pytest.mark.slow
def test_resume_grows_the_study_to_the_new_total(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=30))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    first = snapshot(load(db).trials)

    result = run_cli("resume", db, "--n-trials", "60", "-q", cwd=study_dir)

    assert result.returncode == 0, result.stderr
    trials = load(db).trials
    assert [t.number for t in trials] == list(range(60))
    assert snapshot(trials[:30]) == first
    assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_resume_without_new_total_keeps_the_total_the_run_was_given(study_dir: Path) -> None:
    """The stored spec is the effective one: `--n-trials 5` was part of the study, the file's
    n_trials = 12 is not what it runs to."""
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=12))
    assert (
        run_cli("run", "study.toml", "-o", "out", "-q", "--n-trials", "5", cwd=study_dir).returncode
        == 0
    )
    db = study_dir / "out" / "study.db"
    assert len(load(db).trials) == 5
    assert run_cli("resume", db, "-q", cwd=study_dir).returncode == 0
    assert len(load(db).trials) == 5
    assert run_cli("resume", db, "-q", "--set", "run.n_trials=7", cwd=study_dir).returncode == 0
    assert len(load(db).trials) == 7


@pytest.mark.slow
def test_an_interrupted_run_resumed_retries_the_interrupted_parameters(study_dir: Path) -> None:
    interrupt_running_run(study_dir, "hang", n_trials=12, times=2)
    db = study_dir / "out" / "study.db"
    before = load(db).trials
    interrupted = [t for t in before if t.state == TrialState.FAIL]
    assert interrupted

    # The retried trials hang again; a trial_timeout given through the objective is not
    # available, so stop this resume after the retries started and check what it enqueued.
    result = run_cli("resume", db, "--n-trials", str(len(before) + len(interrupted)), "-q",
                     "--timeout", "3s", cwd=study_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = load(db).trials
    retried = after[len(before) : len(before) + len(interrupted)]
    assert [t.params for t in retried] == [t.params for t in interrupted]


@pytest.mark.slow
def test_resume_of_a_study_db_moved_with_its_spec(study_dir: Path, tmp_path_factory) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=4))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    # A fresh checkout elsewhere: the spec and objective travel with study.db.
    moved = tmp_path_factory.mktemp("checkout") / "project"
    shutil.copytree(study_dir, moved)
    shutil.rmtree(study_dir)
    result = run_cli("resume", moved / "out" / "study.db", "--n-trials", "8", "-q", cwd=moved)
    assert result.returncode == 0, result.stderr
    assert len(load(moved / "out" / "study.db").trials) == 8


@pytest.mark.slow
def test_spec_dir_overrides_where_the_objective_is_found(study_dir: Path, tmp_path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    elsewhere = study_dir / "elsewhere"
    elsewhere.mkdir()
    (study_dir / "objectives.py").rename(elsewhere / "objectives.py")

    failed = run_cli("resume", db, "--n-trials", "5", "-q", cwd=study_dir)
    assert failed.returncode == 2
    assert "objectives.py" in failed.stderr and "Traceback" not in failed.stderr

    result = run_cli("resume", db, "--n-trials", "5", "--spec-dir", elsewhere, "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert len(load(db).trials) == 5


@pytest.mark.parametrize(
    "content", [b"", b"not a database at all\n", b"SQLite format 3\x00" + b"\x00" * 100]
)
def test_resume_refuses_files_that_are_not_studies(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "study.db"
    path.write_bytes(content)
    result = run_cli("resume", path, cwd=tmp_path)
    assert result.returncode == 2
    assert str(path) in result.stderr or "study.db" in result.stderr
    assert "Traceback" not in result.stderr
    assert path.read_bytes() == content


def test_resume_of_a_missing_file(tmp_path: Path) -> None:
    result = run_cli("resume", tmp_path / "nope.db", cwd=tmp_path)
    assert result.returncode == 2
    assert "nope.db" in result.stderr


@pytest.mark.slow
def test_a_second_resume_of_the_same_file_is_refused(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("slow", n_trials=2))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    first = subprocess.Popen(
        [sys.executable, "-m", "optspec", "resume", str(db), "--n-trials", "40", "-q"],
        cwd=study_dir,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_workers(first, 1)
        second = run_cli("resume", db, "--n-trials", "50", "-q", cwd=study_dir)
        assert second.returncode == 2
        assert f"is in use by optspec process {first.pid}" in second.stderr
    finally:
        first.wait(timeout=120)
    assert first.returncode == 0
    assert len(load(db).trials) == 40


@pytest.mark.slow
def test_checkpoints_survive_a_killed_controller_and_resume_retries(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(
        spec_text("slow", n_trials=200, extra='checkpoint = "1s"')
    )
    process = start_run(study_dir)
    workers = wait_for_workers(process, 2)
    db = study_dir / "out" / "study.db"
    deadline = time.monotonic() + 30
    while not db.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    process.kill()
    process.wait(timeout=30)
    for pid in workers:  # orphaned workers notice their controller is gone
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    saved = load(db).trials
    assert saved and any(t.state == TrialState.COMPLETE for t in saved)

    result = run_cli("resume", db, "--n-trials", str(len(saved) + 4), "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = load(db).trials
    assert len(trials) == len(saved) + 4
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_a_seeded_resume_does_not_repeat_the_parameters_it_has(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=5, workers=1))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    assert run_cli("resume", db, "--n-trials", "10", "-q", cwd=study_dir).returncode == 0
    xs = [trial.params["x"] for trial in load(db).trials]
    assert len(set(xs)) == 10


@pytest.mark.slow
def test_a_trial_stopped_by_trial_timeout_is_not_retried(study_dir: Path) -> None:
    spec = spec_text("hang", n_trials=4, workers=2, extra='trial_timeout = "1s"')
    (study_dir / "study.toml").write_text(spec)
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    timed_out = [t for t in load(db).trials if t.state == TrialState.FAIL]
    assert timed_out
    assert run_cli("resume", db, "--n-trials", "6", "-q", cwd=study_dir).returncode == 0
    trials = load(db).trials
    assert len(trials) == 6
    assert not [t for t in trials if "retry_of" in t.user_attrs]  # nothing was enqueued again


@pytest.mark.slow
def test_resume_leaves_no_lock_file_behind(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    before = sorted(p.name for p in (study_dir / "out").iterdir())
    result = run_cli("resume", study_dir / "out" / "study.db", "-p", "no_such_plugin",
                     cwd=study_dir)  # fmt: skip
    assert result.returncode == 2
    assert sorted(p.name for p in (study_dir / "out").iterdir()) == before


# The disk "fills up" just before study.db is written: on_finish implementations run before the
# sqlite plugin's wrapper writes the files, and from then on no file may grow past 20 kB (an
# empty Optuna schema alone is larger; the fallback journal of a few trials is not).
DISK_FILLS_UP = """
import resource
from optspec import hookimpl

@hookimpl
def on_finish():
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
"""


@pytest.mark.slow
def test_a_failed_dump_keeps_the_old_study_db_and_the_fallback_resumes(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    old = db.read_bytes()

    (study_dir / "optspec_plugins.py").write_text(DISK_FILLS_UP)
    failed = run_cli("run", "study.toml", "-o", "out", "-q", "--overwrite", "--n-trials", "7",
                     cwd=study_dir)  # fmt: skip
    (study_dir / "optspec_plugins.py").unlink()

    assert failed.returncode == 1, failed.stderr
    fallback = study_dir / "out" / "study.journal"
    assert str(fallback) in failed.stderr and "Traceback" not in failed.stderr
    assert db.read_bytes() == old  # the previous study.db is untouched
    resumed = run_cli("resume", fallback, "--n-trials", "9", "-q", cwd=study_dir)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(db).trials  # the fallback's 7 trials, then 2 more, in study.db again
    assert [t.number for t in trials] == list(range(9))
    assert all(t.state == TrialState.COMPLETE for t in trials)


# -- which spec a resume runs -------------------------------------------------------------------


def _alter_stored_spec(db: Path, marker: Path) -> str:
    """What a poisoned cache would hold: study.db's stored spec now runs a command."""
    import json
    import sqlite3

    altered = spec_text("quadratic", n_trials=3).replace(
        'callable = "objectives.py:quadratic"',
        f'command = ["{{python}}", "-c", "open({str(marker)!r}, \'w\').close(); print(1.0)"]',
    )
    with sqlite3.connect(db) as connection:
        changed = connection.execute(
            "UPDATE study_system_attributes SET value_json = ? WHERE key = 'optspec:spec'",
            (json.dumps(altered),),
        ).rowcount
    connection.close()
    assert changed == 1
    return altered


def _stored_spec(db: Path) -> str:
    import json
    import sqlite3

    connection = sqlite3.connect(db)
    try:
        (value,) = connection.execute(
            "SELECT value_json FROM study_system_attributes WHERE key = 'optspec:spec'"
        ).fetchone()
    finally:
        connection.close()
    return json.loads(value)


@pytest.mark.slow
def test_resume_runs_the_checked_in_spec_not_one_a_study_db_brings(study_dir: Path) -> None:
    spec = spec_text("quadratic", n_trials=3)
    (study_dir / "study.toml").write_text(spec)
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    marker = study_dir / "MARKER"
    _alter_stored_spec(db, marker)
    before = db.read_bytes()

    refused = run_cli("resume", db, "--n-trials", "5", "-q", cwd=study_dir)
    assert refused.returncode == 2
    message = refused.stderr
    assert str(study_dir / "study.toml") in message
    assert f"--spec {study_dir / 'study.toml'}" in message and "--stored-spec" in message
    assert "Traceback" not in message
    assert not marker.exists()
    assert db.read_bytes() == before

    trusted = run_cli("resume", db, "--spec", "study.toml", "--n-trials", "5", "-q", cwd=study_dir)
    assert trusted.returncode == 0, trusted.stderr
    assert not marker.exists()
    study = load(db)
    assert len(study.trials) == 5
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # The spec it ran is the one recorded now: the file, with this resume's --n-trials.
    assert (
        _stored_spec(db) == load_spec(study_dir / "study.toml", overrides=["run.n_trials=5"]).text
    )

    # From now on stored and checked-in agree: a plain resume runs.
    again = run_cli("resume", db, "--n-trials", "6", "-q", cwd=study_dir)
    assert again.returncode == 0, again.stderr
    assert not marker.exists()

    # --stored-spec is the explicit choice of study.db's own spec.
    _alter_stored_spec(db, marker)
    stored = run_cli("resume", db, "--stored-spec", "--n-trials", "7", "-q", cwd=study_dir)
    assert stored.returncode == 0, stored.stderr
    assert marker.exists()
    # study.db's own spec stays recorded, with this resume's --n-trials on top.
    recorded = _stored_spec(db)
    assert "command = [" in recorded and str(marker) in recorded and "callable" not in recorded
    assert "n_trials = 7" in recorded


@pytest.mark.slow
def test_resume_spec_must_match_the_study_name_and_directions(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=3))
    assert run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir).returncode == 0
    db = study_dir / "out" / "study.db"
    before = db.read_bytes()
    (study_dir / "renamed.toml").write_text(
        spec_text("quadratic", n_trials=5).replace('name = "s"', 'name = "other"')
    )
    (study_dir / "maximize.toml").write_text(
        spec_text("quadratic", n_trials=5).replace(
            'name = "s"', 'name = "s"\ndirection = "maximize"'
        )
    )
    for file, fragment in (("renamed.toml", "named 'other'"), ("maximize.toml", "directions")):
        result = run_cli("resume", db, "--spec", file, "-q", cwd=study_dir)
        assert result.returncode == 2, result.stderr
        assert f"--spec {file}" in result.stderr and fragment in result.stderr
        assert "Traceback" not in result.stderr
    assert db.read_bytes() == before
    both = run_cli("resume", db, "--spec", "study.toml", "--stored-spec", cwd=study_dir)
    assert both.returncode == 2 and "not allowed with" in both.stderr

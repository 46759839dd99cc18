"""Nothing lost, whatever happens: issue 12's hostile situations, each run as a user would.

Every test names its situation (S1..S18 in the issue). Each ends with the trials where they
belong, a clear message, the documented exit code, and no process or file left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

OBJECTIVES = """
import sys, threading, time

def quadratic(params):
    return (params["x"] - 2) ** 2

def lingering_thread(params):
    # A non-daemon thread the objective never stops: it must not keep the worker alive.
    threading.Thread(target=time.sleep, args=(3600,), name="lingering").start()
    return params["x"]

def exits(params, trial):
    if trial.number % 2 == 0:
        sys.exit(3 + trial.number % 4)  # 3 and 5: the codes of old worker failures
    return params["x"]

def grid(params):
    return params["x"]

def fails(params):
    raise ValueError("fails on purpose")
"""


def spec_text(callable_: str, *, n_trials: int = 6, workers: int = 2, extra: str = "") -> str:
    return f"""
version = 1
[study]
name = "s"
seed = 7
[objective]
callable = "objectives.py:{callable_}"
[params]
x = {{ type = "float", low = -10, high = 10 }}
[sampler]
name = "random"
[run]
n_trials = {n_trials}
workers = {workers}
{extra}
"""


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    return tmp_path


def optspec(
    *args: object, cwd: Path, timeout: float = 120, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )


def load(study_db: Path) -> optuna.Study:
    return optuna.load_study(study_name=None, storage=f"sqlite:///{study_db}")


def run_ok(study_dir: Path, spec: str, *args: object) -> Path:
    (study_dir / "study.toml").write_text(spec)
    result = optspec("run", "study.toml", "-o", "out", "-q", *args, cwd=study_dir)
    assert result.returncode == 0, result.stderr
    return study_dir / "out" / "study.db"


# -- S5: export and report never write over their input -----------------------------------------


def test_s5_export_refuses_to_overwrite_the_study_it_reads(study_dir: Path) -> None:
    study_db = run_ok(study_dir, spec_text("quadratic", n_trials=3))
    before = study_db.read_bytes()
    link = study_dir / "link.csv"
    link.symlink_to(study_db)
    for target in (study_db, link):
        result = optspec("export", study_db, "-o", target, cwd=study_dir)
        assert result.returncode == 2, result.stderr
        assert "is the study file being read" in result.stderr
        assert "Traceback" not in result.stderr
    assert study_db.read_bytes() == before
    assert len(load(study_db).trials) == 3


# -- S6: a symlinked study.db, a stale study.journal ---------------------------------------------


@pytest.mark.slow
def test_s6_a_symlinked_study_db_is_written_through_to_its_target(study_dir: Path) -> None:
    study_db = run_ok(study_dir, spec_text("quadratic", n_trials=3))
    elsewhere = study_dir / "kept" / "real.db"
    elsewhere.parent.mkdir()
    study_db.rename(elsewhere)
    study_db.symlink_to(elsewhere)
    result = optspec("resume", study_db, "--n-trials", "5", "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert study_db.is_symlink(), "the link was replaced by a plain file"
    assert len(load(elsewhere).trials) == 5
    assert not [p for p in elsewhere.parent.iterdir() if p.name != "real.db"]


# -- S12: nobody reads stderr any more ----------------------------------------------------------


@pytest.mark.slow
def test_s12_a_closed_stderr_pipe_never_stops_the_study(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=30))
    read, write = os.pipe()
    os.close(read)  # like `| head -1` once head has exited
    try:
        result = subprocess.run(
            [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out"],
            cwd=study_dir,
            stdout=subprocess.PIPE,
            stderr=write,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert result.returncode == 0
    assert "saved:" in result.stdout
    assert len(load(study_dir / "out" / "study.db").trials) == 30

"""optspec where Linux's journal is missing: macOS-like and Windows-like Pythons, by simulation.

Each test runs the real CLI in a subprocess whose ``sitecustomize`` (tests/platforms/<os>/)
removes what that platform lacks: ``sys.platform`` is left alone (changing it breaks the standard
library), since optspec chooses by capability. What the simulation cannot show (a real macOS
kernel, Windows process trees) is listed in README's platform table as unverified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
QUADRATIC = ROOT / "examples" / "quadratic.toml"
SIMULATIONS = Path(__file__).parent / "platforms"


def optspec_as(
    platform: str, *args: object, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SIMULATIONS / platform), str(ROOT)]),
        **env,
    }
    environment.pop("OPTSPEC_JOURNAL", None)  # the platform chooses
    environment.pop("OPTSPEC_START_METHOD", None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


def python_as(platform: str, code: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(SIMULATIONS / platform)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_simulations_remove_what_they_say() -> None:
    probe = (
        "import os, ctypes\n"
        "try:\n    import fcntl; f = 'fcntl'\nexcept ImportError:\n    f = 'no fcntl'\n"
        "robust = hasattr(ctypes.CDLL(None), 'pthread_mutexattr_setrobust')\n"
        "print(f, hasattr(os, 'memfd_create'), hasattr(os, 'fork'), robust)"
    )
    assert python_as("macos", probe) == "fcntl False True False"
    assert python_as("windows", probe) == "no fcntl False False False"


@pytest.mark.slow
def test_on_a_macos_like_system_run_show_export_resume_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run = optspec_as("macos", "run", QUADRATIC, "-o", out, "--n-trials", "12", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[0] == "optspec: 2 workers, portable journal"
    study_db = tmp_path / "out" / "study.db"

    show = optspec_as("macos", "show", study_db, cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    assert "12 trials" in show.stdout or "12" in show.stdout
    export = optspec_as("macos", "export", study_db, "--format", "json", cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert len(json.loads(export.stdout)) == 12

    resume = optspec_as("macos", "resume", study_db, "--n-trials", "20", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    assert "portable journal" in resume.stderr
    again = optspec_as("macos", "export", study_db, "--format", "json", cwd=tmp_path)
    assert len(json.loads(again.stdout)) == 20


def test_on_a_macos_like_system_forcing_memfd_says_what_is_missing(tmp_path: Path) -> None:
    result = optspec_as(
        "macos", "run", QUADRATIC, "-o", tmp_path / "out", cwd=tmp_path, OPTSPEC_JOURNAL="memfd"
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "memfd" in result.stderr
    assert "robust" in result.stderr  # what macOS lacks for it, named
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_on_a_windows_like_system_everything_but_the_run_works_and_the_run_too(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    run = optspec_as("windows", "run", QUADRATIC, "-o", out, "--n-trials", "8", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.splitlines()[0] == "optspec: 2 workers, manager journal"
    study_db = tmp_path / "out" / "study.db"

    for args in (
        ["--version"],
        ["validate", QUADRATIC],
        ["schema"],
        ["plugins"],
        ["show", study_db],
        ["export", study_db, "--format", "csv"],
        ["report", study_db, "-o", tmp_path / "report.html"],
    ):
        result = optspec_as("windows", *args, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr

    resume = optspec_as("windows", "resume", study_db, "--n-trials", "12", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    export = optspec_as("windows", "export", study_db, "--format", "json", cwd=tmp_path)
    assert len(json.loads(export.stdout)) == 12


SLEEPY = "import sys, time; x = float(sys.argv[1]); time.sleep(30 if x > 0 else 0); print(x * x)"


def test_on_a_windows_like_system_a_command_objective_runs_and_times_out(tmp_path: Path) -> None:
    """No process groups: the command is ended on its own (taskkill on a real Windows)."""
    (tmp_path / "study.toml").write_text(
        f"""
version = 1
[study]
name = "cmd"
seed = 3
[objective]
command = ["{{python}}", "-c", "{SLEEPY}", "{{x}}"]
[params]
x = {{ type = "float", low = -1, high = 1 }}
[sampler]
name = "random"
[run]
n_trials = 4
workers = 2
trial_timeout = 1
"""
    )
    result = optspec_as("windows", "run", "study.toml", "-o", "out", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    study_db = tmp_path / "out" / "study.db"
    export = optspec_as("windows", "export", study_db, "--format", "json", cwd=tmp_path)
    trials = json.loads(export.stdout)
    assert len(trials) == 4
    states = {trial["state"] for trial in trials}
    assert states <= {"COMPLETE", "FAIL"}

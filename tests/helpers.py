"""Helpers shared by the test modules (tests import these, never each other).

The objectives and specs of the end-to-end tests, the real command line in a fresh interpreter,
and the process plumbing of the tests that interrupt or kill a running study.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

OBJECTIVES = """
import math, os, time

def quadratic(params):
    return (params["x"] - 2) ** 2

def slow(params):
    open(f"started-{os.getpid()}", "w").close()  # tells a test that trials are running
    time.sleep(0.2)
    return params["x"] ** 2

def flaky(params):
    x = params["x"]
    if x < -5:
        raise RuntimeError("x is too small")
    if x < 0:
        return float("nan")
    if x < 5:
        return [x, x]
    return x

def hang(params):
    open(f"started-{os.getpid()}", "w").close()
    if params["x"] > 0:
        time.sleep(60)
    return params["x"]

def always_fails(params):
    raise ValueError("broken objective")

def marked(params):
    # Tells the test which process runs a trial right now, so it can kill one mid-trial.
    marker = f"running-{os.getpid()}"
    open(marker, "w").close()
    time.sleep(0.5)
    os.remove(marker)
    return params["x"] ** 2
"""


# A plugin module registering an objective kind "constant" that returns [objective] value.
CONSTANT_OBJECTIVE = """\
from optspec import hookimpl


def constant(table):
    value = float(table["value"])
    return lambda trial, params: value


@hookimpl
def register_objectives():
    return {"constant": constant}
"""


def spec_text(callable_: str, *, n_trials: int = 20, workers: int = 2, extra: str = "") -> str:
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


def run_cli(
    *args: object, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``optspec ARGS...`` in a fresh interpreter, as a user runs it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load(study_db: Path) -> optuna.Study:
    """The study in ``study_db``, read by Optuna's own SQLite storage."""
    return optuna.load_study(study_name=None, storage=f"sqlite:///{study_db}")


def start_run(study_dir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q", *args],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of every child process of ``pid``, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append((int(entry.name), cmdline))
    return children


def workers_of(pid: int) -> list[int]:
    """Worker pids of the controller ``pid``: forked by its forkserver child, or its own spawned
    children (``OPTSPEC_START_METHOD=spawn``); not the manager journal's server process."""
    direct = children(pid)
    servers = [child for child, cmdline in direct if b"forkserver" in cmdline]
    candidates = [worker for server in servers for worker, _ in children(server)]
    candidates += [child for child, cmdline in direct if b"spawn_main" in cmdline]
    return [worker for worker in candidates if _process_name(worker) != "optspec-journal"]


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def wait_for_workers(process: subprocess.Popen[str], count: int) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = workers_of(process.pid)
        if len(workers) >= count:
            return workers
        time.sleep(0.1)
    raise AssertionError("workers did not start")


def wait_for_trials(study_dir: Path) -> None:
    """Until a worker runs a trial (of ``slow`` or ``hang``): spawned workers
    (``OPTSPEC_START_METHOD=spawn``) import everything first."""
    deadline = time.monotonic() + 60
    while not list(study_dir.glob("started-*")):
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.05)


def interrupt_running_run(study_dir: Path, objective: str, n_trials: int, times: int) -> str:
    """Start a run, let its workers get going, send SIGINT ``times`` times; its stderr."""
    (study_dir / "study.toml").write_text(spec_text(objective, n_trials=n_trials))
    process = start_run(study_dir)
    wait_for_workers(process, 2)
    wait_for_trials(study_dir)
    time.sleep(2.0)
    for _ in range(times):
        process.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    return stderr

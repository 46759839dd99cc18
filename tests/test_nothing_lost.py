"""Nothing lost, whatever happens: issue 12's hostile situations, each run as a user would.

Every test names its situation (S1..S18 in the issue). Each ends with the trials where they
belong, a clear message, the documented exit code, and no process or file left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import load, run_cli, spec_text

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


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    return tmp_path


def run_ok(study_dir: Path, spec: str, *args: object) -> Path:
    (study_dir / "study.toml").write_text(spec)
    result = run_cli("run", "study.toml", "-o", "out", "-q", *args, cwd=study_dir)
    assert result.returncode == 0, result.stderr
    return study_dir / "out" / "study.db"


# -- S5: export and report never write over their input -----------------------------------------


def test_s5_export_refuses_to_overwrite_the_study_it_reads(study_dir: Path) -> None:
    study_db = run_ok(study_dir, spec_text("quadratic", n_trials=3))
    before = study_db.read_bytes()
    link = study_dir / "link.csv"
    link.symlink_to(study_db)
    for target in (study_db, link):
        result = run_cli("export", study_db, "-o", target, cwd=study_dir)
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
    result = run_cli("resume", study_db, "--n-trials", "5", "-q", cwd=study_dir)
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


# -- S8: a thread left running by the objective --------------------------------------------------


@pytest.mark.slow
def test_s8_an_objective_thread_cannot_keep_a_worker_alive(study_dir: Path) -> None:
    study_db = run_ok(study_dir, spec_text("lingering_thread", n_trials=4))
    assert [t.state for t in load(study_db).trials] == [TrialState.COMPLETE] * 4


# -- S11: sys.exit inside an objective -----------------------------------------------------------


def test_s11_sys_exit_in_an_objective_fails_only_its_trial(study_dir: Path) -> None:
    study_db = run_ok(study_dir, spec_text("exits", n_trials=8))
    trials = load(study_db).trials
    assert len(trials) == 8
    for trial in trials:
        if trial.number % 2 == 0:
            assert trial.state == TrialState.FAIL
            code = 3 + trial.number % 4
            assert f"sys.exit({code})" in trial.user_attrs["fail_reason"]
        else:
            assert trial.state == TrialState.COMPLETE


# -- S7, S16: study names that cannot be stored or cannot name a directory -----------------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [("a\\u0000b", "control character"), ("n" * 5000, "5000 characters long")],
    ids=["nul", "5000-chars"],
)
def test_s7_s16_unusable_study_names_are_spec_errors(
    study_dir: Path, name: str, problem: str
) -> None:
    spec = spec_text("quadratic", n_trials=6).replace('name = "s"', f'name = "{name}"')
    (study_dir / "study.toml").write_text(spec)
    for command in ("validate", "run"):
        result = run_cli(command, "study.toml", cwd=study_dir)
        assert result.returncode == 2, result.stderr
        assert "study.name: " in result.stderr and problem in result.stderr
        assert "Traceback" not in result.stderr
    assert not (study_dir / "optspec-runs").exists()


# -- S9, S10: budgets too large to mean anything, more workers than trials -----------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("", "n_trials"),  # n_trials replaced below
        ("", "workers"),
    ],
)
def test_s9_s10_upper_bounds_are_spec_errors(study_dir: Path, extra: str, key: str) -> None:
    spec = spec_text("quadratic", n_trials=6)
    spec = (
        spec.replace("n_trials = 6", "n_trials = 3000000000")
        if key == "n_trials"
        else spec.replace("workers = 2", "workers = 100000")
    )
    (study_dir / "study.toml").write_text(spec)
    result = run_cli("run", "study.toml", cwd=study_dir, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"run.{key}: must be an integer from 1 to" in result.stderr
    option = "--n-trials" if key == "n_trials" else "--workers"
    result = run_cli("run", "study.toml", option, "3000000000", cwd=study_dir, timeout=60)
    assert result.returncode == 2 and "expected an integer from 1 to" in result.stderr


def test_s9_a_huge_budget_costs_nothing_before_the_first_trial(study_dir: Path) -> None:
    # 10**9 tickets handed out one by one took minutes before any worker started; the first
    # failed trial (max_failed = 1) now ends the run at once.
    spec = spec_text("fails", n_trials=10**9, workers=1, extra="max_failed = 1")
    (study_dir / "study.toml").write_text(spec)
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=study_dir, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "max_failed = 1 reached" in result.stderr
    assert [t.state for t in load(study_dir / "out" / "study.db").trials] == [TrialState.FAIL]


def test_s10_workers_are_capped_at_the_remaining_budget(study_dir: Path) -> None:
    spec = spec_text("quadratic", n_trials=3, workers=1000)
    study_db = run_ok(study_dir, spec)
    trials = load(study_db).trials
    assert len(trials) == 3
    # One worker per trial at most: worker indexes beyond 2 never ran.
    assert all(t.state == TrialState.COMPLETE for t in trials)


# -- S17: attribute access in a command placeholder ---------------------------------------------


def test_s17_attribute_access_in_a_placeholder_is_caught_by_validate(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(
        'version = 1\n[objective]\ncommand = ["python", "{x.real}", "{x[0]}"]\n'
        '[params]\nx = { type = "float", low = 0, high = 1 }\n'
    )
    result = run_cli("validate", "study.toml", cwd=study_dir)
    assert result.returncode == 2
    for index, name in ((1, "x.real"), (2, "x[0]")):
        assert (
            f"objective.command[{index}]: placeholder {{{name}}}: attribute and index access "
            "are not supported" in result.stderr
        )


@pytest.mark.slow
def test_s6_a_stale_journal_never_replaces_a_newer_study_db(study_dir: Path) -> None:
    from optspec.storage.studydb import load_from_sqlite, write_fallback_journal

    study_db = run_ok(study_dir, spec_text("quadratic", n_trials=3))
    backend, _ = load_from_sqlite(study_db)
    journal = study_db.with_name("study.journal")
    write_fallback_journal(backend, journal)
    backend.close()
    assert run_cli("resume", study_db, "--n-trials", "6", "-q", cwd=study_dir).returncode == 0
    os.utime(journal, ns=(1, 1))  # older than study.db, whatever the clock's resolution

    result = run_cli("resume", journal, "--n-trials", "9", "-q", cwd=study_dir)
    assert result.returncode == 2, result.stderr
    assert f"optspec resume {study_db}" in result.stderr
    assert len(load(study_db).trials) == 6


# -- S3: one invocation per output directory ----------------------------------------------------


def start(study_dir: Path, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`optspec run` in a session of its own, as a terminal would start it."""
    return subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", *map(str, args)],
        cwd=study_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )


def session_processes(sid: int) -> list[int]:
    """Live processes of session ``sid`` (commands start sessions of their own: their parent
    chain is followed too)."""
    parents: dict[int, int] = {}
    sessions: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
                sessions[int(entry.name)] = int(fields[3])
    found = {pid for pid, session in sessions.items() if session == sid}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return sorted(found)


def wait_until(condition, what: str, deadline: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline:g}s")
        time.sleep(0.1)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # exited meanwhile
        return b""


def running_commands(sid: int) -> int:
    return sum(1 for pid in session_processes(sid) if b"time.sleep" in cmdline(pid))


HOLD_SPEC = """
version = 1
[study]
name = "hold"
[objective]
# Runs while the file `hold` exists in the spec's directory: the test decides when trials end.
command = [
    "{python}",
    "-c",
    "import os, sys, time\\nwhile os.path.exists('hold'): time.sleep(0.05)\\nprint(sys.argv[1])",
    "{x}",
]
[params]
x = { type = "float", low = 0, high = 1 }
[run]
n_trials = 6
workers = 2
"""


@pytest.mark.slow
def test_s3_one_invocation_per_output_directory(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(HOLD_SPEC + 'checkpoint = "1s"\n')
    (study_dir / "hold").touch()
    first = start(study_dir, "-q")
    study_db = study_dir / "out" / "study.db"
    try:
        wait_until(study_db.exists, "a checkpoint")
        for args in (("run", "study.toml", "-o", "out", "--overwrite"), ("resume", study_db)):
            second = run_cli(*args, "-q", cwd=study_dir)
            assert second.returncode == 2, second.stderr
            assert f"is in use by optspec process {first.pid}" in second.stderr
    finally:
        (study_dir / "hold").unlink()
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert len(load(study_db).trials) == 6


# -- S1, S2, S13, S15: the controller and its signals ---------------------------------------------

COMMAND_SPEC = """
version = 1
[study]
name = "cmd"
[objective]
command = [
    "{python}", "-c", "import sys, time; time.sleep(SECONDS); print(float(sys.argv[1]))", "{x}"
]
[params]
x = { type = "float", low = 0, high = 1 }
[run]
n_trials = N_TRIALS
workers = 2
EXTRA
"""


def command_spec(seconds: float, n_trials: int, extra: str = "") -> str:
    return (
        COMMAND_SPEC.replace("SECONDS", str(seconds))
        .replace("N_TRIALS", str(n_trials))
        .replace("EXTRA", extra)
    )


@pytest.mark.slow
def test_s1_a_killed_controller_takes_its_workers_and_commands_along(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(command_spec(0.5, 200, 'checkpoint = "1s"'))
    process = start(study_dir, "-q")
    study_db = study_dir / "out" / "study.db"
    wait_until(lambda: study_db.exists() and running_commands(process.pid) == 2, "a checkpoint")
    os.kill(process.pid, 9)
    process.wait()
    wait_until(lambda: not session_processes(process.pid), "workers and commands gone", 20)

    result = run_cli("resume", study_db, "--n-trials", str(len(load(study_db).trials) + 6),
                     "-q", cwd=study_dir)  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = load(study_db).trials
    reasons = [t.user_attrs.get("fail_reason", "") for t in trials if t.state == TrialState.FAIL]
    assert all(reason.startswith("interrupted") for reason in reasons), reasons


@pytest.mark.slow
def test_s2_sighup_to_the_group_saves_and_leaves_nothing(study_dir: Path) -> None:
    tmp = study_dir / "tmp"
    tmp.mkdir()
    (study_dir / "study.toml").write_text(command_spec(0.5, 200))
    process = start(study_dir, env={**os.environ, "TMPDIR": str(tmp)})
    wait_until(lambda: running_commands(process.pid) == 2, "commands running")
    time.sleep(1.0)
    os.killpg(process.pid, 1)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "finishing 2 running trials; SIGHUP again to stop them now" in stderr
    wait_until(lambda: not session_processes(process.pid), "every process gone", 20)
    assert not list(tmp.iterdir()), "multiprocessing left files in TMPDIR"
    trials = load(study_dir / "out" / "study.db").trials
    assert trials and all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.slow
def test_s13_one_ctrl_c_waits_for_running_trials_and_says_so(study_dir: Path) -> None:
    from optspec.run.controller import GRACE_PERIOD

    (study_dir / "study.toml").write_text(HOLD_SPEC)
    (study_dir / "hold").touch()
    process = start(study_dir)
    wait_until(lambda: running_commands(process.pid) == 2, "commands running")
    os.killpg(process.pid, 2)  # Ctrl-C: the terminal signals the whole group
    # Longer than any grace period: the running trials are still waited for.
    time.sleep(GRACE_PERIOD + 2)
    assert process.poll() is None and running_commands(process.pid) == 2
    (study_dir / "hold").unlink()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.count("finishing 2 running trials; Ctrl-C again to stop them now") == 1
    trials = load(study_dir / "out" / "study.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


@pytest.mark.slow
def test_s13_sigterm_to_the_group_marks_trials_interrupted_for_resume(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(HOLD_SPEC)
    (study_dir / "hold").touch()
    process = start(study_dir, "-q")
    wait_until(lambda: running_commands(process.pid) == 2, "commands running")
    os.killpg(process.pid, 15)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    wait_until(lambda: not session_processes(process.pid), "every process gone", 20)
    study_db = study_dir / "out" / "study.db"
    trials = load(study_db).trials
    assert len(trials) == 2
    assert all(t.system_attrs.get("optspec:interrupted") for t in trials), trials

    (study_dir / "hold").unlink()
    result = run_cli("resume", study_db, "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    trials = load(study_db).trials
    assert len(trials) == 6
    assert sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs) == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3, 0.6])
def test_s15_ctrl_c_right_after_start(study_dir: Path, delay: float) -> None:
    (study_dir / "study.toml").write_text(spec_text("quadratic", n_trials=1000))
    process = start(study_dir, "-q")

    def forkserver_started() -> bool:
        return any(b"forkserver" in cmdline(pid) for pid in session_processes(process.pid))

    # The window of the issue: the forkserver imports optuna while the controller sets up.
    wait_until(forkserver_started, "the forkserver")
    time.sleep(delay)
    os.killpg(process.pid, 2)
    _, stderr = process.communicate(timeout=120)
    assert "Traceback" not in stderr and "EOFError" not in stderr, stderr
    assert process.returncode in (0, 130), stderr
    wait_until(lambda: not session_processes(process.pid), "every process gone", 20)
    study_db = study_dir / "out" / "study.db"
    if study_db.exists():
        assert load(study_db).trials, "a study.db without trials blocks the next run"
    else:
        assert run_cli("run", "study.toml", "-o", "out", "-q", "--n-trials", "2",
                       cwd=study_dir).returncode == 0  # fmt: skip


# -- S14: a grid smaller than n_trials -----------------------------------------------------------


@pytest.mark.parametrize("sampler", ["grid", "bruteforce"])
def test_s14_an_exhausted_grid_ends_the_study_cleanly(study_dir: Path, sampler: str) -> None:
    spec = (
        spec_text("grid", n_trials=10)
        .replace('{ type = "float", low = -10, high = 10 }', '{ type = "int", low = 0, high = 2 }')
        .replace('name = "random"', f'name = "{sampler}"')
    )
    (study_dir / "study.toml").write_text(spec)
    result = run_cli("run", "study.toml", "-o", "out", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Study.stop" not in result.stderr
    assert "search space is exhausted" in result.stdout + result.stderr
    trials = load(study_dir / "out" / "study.db").trials
    assert all(t.state == TrialState.COMPLETE for t in trials)
    points = sorted(t.params["x"] for t in trials)
    if sampler == "grid":
        assert points == [0, 1, 2]
        # Progress counts toward the grid's 3 points, not the 10 trials it will never reach.
        assert "3/3 trials" in result.stderr
        assert "/10 trials" not in result.stderr
    else:  # two workers may race for a point; every point is still tried before the end
        assert set(points) == {0, 1, 2}
        assert len(points) < 10


# -- S4: nothing can be written at the end --------------------------------------------------------


def in_full_tmpfs(study_dir: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``optspec ARGS`` with ``out`` a 64 KB tmpfs: too small for any study.db or journal of
    hundreds of trials, a real full disk. Mounted in a private mount namespace (``unshare``), so
    nothing stays mounted, whoever runs the tests; prints what ``out`` holds after the run."""
    import shlex
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a tmpfs")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
    )
    if probe.returncode != 0:  # a container without user namespaces: no way to fill a disk
        pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.decode().strip()}")
    command = shlex.join([sys.executable, "-m", "optspec", *map(str, args)])
    script = (
        f"mkdir -p out && mount -t tmpfs -o size=64k tmpfs out && {command}; "
        'code=$?; echo "out holds: $(ls out)"; exit $code'
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=study_dir,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(study_dir / "tmp")},
    )


@pytest.mark.slow
def test_s4_on_a_full_disk_the_journal_goes_to_the_temp_dir(study_dir: Path) -> None:
    (study_dir / "tmp").mkdir()
    (study_dir / "study.toml").write_text(
        spec_text("quadratic", n_trials=300, extra='checkpoint = "0.2s"')
    )
    result = in_full_tmpfs(study_dir, "run", "study.toml", "-o", "out", "-q", "-p", "no:jsonl-log")
    assert result.returncode == 1, result.stderr
    # No study.db fitted, nor the final journal (an early checkpoint's journal may have).
    assert "out holds: " in result.stdout and "study.db" not in result.stdout
    # One journal, however many checkpoints failed before the end.
    (journal,) = (study_dir / "tmp").glob("optspec-*/study.journal")
    assert f"every trial is saved in {journal}: `optspec resume {journal} --spec-dir" in (
        result.stderr
    )
    assert "no study.db exists" in result.stderr
    assert "is unchanged" not in result.stderr
    result = run_cli("resume", journal, "--spec-dir", study_dir, "-q", cwd=study_dir)
    assert result.returncode == 0, result.stderr
    assert len(load(journal.with_name("study.db")).trials) == 300

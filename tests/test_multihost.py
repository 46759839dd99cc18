"""Many machines: a controller and `optspec worker` processes sharing real PostgreSQL, Redis, or
the controller's own study served over gRPC (`run --serve`).

Each "machine" is a separate `optspec` process tree with its own forkserver: they share nothing
but the storage URL, as hosts would. The servers come from .ci/services (see conftest.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optspec.storage.remote import open_storage
from tests.helpers import load, run_cli

OBJECTIVES = """
import os, time

def tagged(trial, params):
    # The pgid names the `optspec` process tree (the "machine") that ran the trial.
    trial.set_user_attr("machine", os.getpgid(0))
    marker = f"running-{os.getpgid(0)}-{trial.number}"
    open(marker, "w").close()
    time.sleep(float(os.environ.get("TRIAL_SECONDS", "0.2")))
    os.remove(marker)
    return params["x"] ** 2
"""


def spec_text(name: str, n_trials: int, workers: int, heartbeat: str = "30s") -> str:
    return f"""
version = 1
[study]
name = "{name}"
seed = 3
[objective]
callable = "objectives.py:tagged"
[params]
x = {{ type = "float", low = -10, high = 10 }}
[sampler]
name = "random"
[run]
n_trials = {n_trials}
workers = {workers}
heartbeat = "{heartbeat}"
checkpoint = "off"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def offer(request: pytest.FixtureRequest, kind: str) -> tuple[list[str], str]:
    """How the controller offers the study, and the URL a worker joins it by."""
    if kind.startswith("serve"):
        port = free_port()
        served = ["--serve", f"127.0.0.1:{port}"]
        if kind == "serve-postgres":  # the proxy in front of a database: one client for many
            served += ["--storage", request.getfixturevalue("postgres_url")]
        return served, f"grpc://127.0.0.1:{port}"
    url = request.getfixturevalue(f"{kind}_url")
    return ["--storage", url], url


@pytest.fixture(params=["postgres", "redis", "serve"])
def shared(request: pytest.FixtureRequest) -> tuple[list[str], str]:
    return offer(request, request.param)


@pytest.fixture(params=["postgres", "redis", "serve", "serve-postgres"])
def shared_with_proxy(request: pytest.FixtureRequest) -> tuple[list[str], str]:
    return offer(request, request.param)


def start(*args: str, cwd: Path, seconds: float) -> subprocess.Popen[str]:
    # A session of its own: its process group is the "machine", killed at once with killpg.
    return subprocess.Popen(
        [sys.executable, "-m", "optspec", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TRIAL_SECONDS": str(seconds)},
    )


def finish(process: subprocess.Popen[str]) -> str:
    try:
        _, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, stderr
    return stderr


def same_trials(study_db: Path, url: str, name: str) -> None:
    """study.db holds what the shared storage holds, trial by trial."""
    stored = load(study_db).trials
    live = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    assert [(t.number, t.state, t.params, t.values) for t in stored] == [
        (t.number, t.state, t.params, t.values) for t in live
    ]


class _VanishingStudy(optuna.storages.InMemoryStorage):
    """Answers the proxy's readiness check, then fails as a study whose server went away."""

    def get_study_id_from_name(self, study_name: str) -> int:
        raise RuntimeError("the served study is gone")


def test_a_worker_joining_a_served_study_that_goes_away_says_so(tmp_path: Path) -> None:
    """A worker that arrives as a served study ends (its controller finished first) gets a
    message and exit code 1, not an internal error."""
    from optspec.storage.optuna_compat import make_grpc_server

    server, port = make_grpc_server(_VanishingStudy(), "127.0.0.1", 0)
    server.start()
    try:
        (tmp_path / "objectives.py").write_text(OBJECTIVES)
        (tmp_path / "study.toml").write_text(spec_text("gone", n_trials=4, workers=1))
        url = f"grpc://127.0.0.1:{port}"
        result = run_cli("worker", "study.toml", "--storage", url, cwd=tmp_path)
    finally:
        server.stop(None)
    assert result.returncode == 1, result.stderr
    assert "stopped answering" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.slow
def test_a_controller_and_two_joined_machines_run_exactly_n_trials(
    tmp_path: Path, shared: tuple[list[str], str]
) -> None:
    controller_args, url = shared
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(spec_text("exact", n_trials=24, workers=2))
    # The joined machines start first and wait for the study, so that all three take part.
    joined = [
        start("worker", "study.toml", "--storage", url, "--workers", "2", "-q",
              cwd=tmp_path, seconds=0.3)
        for _ in range(2)
    ]  # fmt: skip
    # One worker on the controller: alone it would need 7 s, time for the others to start.
    controller = start("run", "study.toml", "-o", "out", "-q", "--workers", "1",
                       *controller_args, cwd=tmp_path, seconds=0.3)  # fmt: skip
    stderr = finish(controller)
    for process in joined:
        finish(process)

    trials = load(tmp_path / "out" / "study.db").trials
    assert len(trials) == 24, stderr
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 24}
    machines = {t.user_attrs["machine"] for t in trials}
    assert controller.pid in machines and machines & {p.pid for p in joined}
    if controller_args[0] == "--storage":
        same_trials(tmp_path / "out" / "study.db", url, "exact")


@pytest.mark.slow
def test_a_joined_machine_killed_mid_trial_loses_its_trial_which_is_retried(
    tmp_path: Path, shared_with_proxy: tuple[list[str], str]
) -> None:
    controller_args, url = shared_with_proxy
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    # Enough trials that some are still queued when the lease runs out, even on a slow machine.
    (tmp_path / "study.toml").write_text(spec_text("lost", 24, workers=1, heartbeat="1s"))
    controller = start("run", "study.toml", "-o", "out", "-q", *controller_args,
                       cwd=tmp_path, seconds=0.5)  # fmt: skip
    victim = start("worker", "study.toml", "--storage", url, "-q", cwd=tmp_path, seconds=0.5)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(f"running-{victim.pid}-*")):
        assert time.monotonic() < deadline, "the joined worker never ran a trial"
        assert victim.poll() is None, victim.communicate()
        time.sleep(0.02)
    os.killpg(victim.pid, signal.SIGKILL)  # the whole machine: no process left to tell anyone
    victim.wait()
    finish(controller)

    trials = load(tmp_path / "out" / "study.db").trials
    assert len(trials) == 24
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert lost and all(t.user_attrs["fail_reason"] == "worker lost" for t in lost)
    assert all(t.user_attrs["machine"] == victim.pid for t in lost)
    states = Counter(t.state for t in trials)
    assert states == {TrialState.COMPLETE: 24 - len(lost), TrialState.FAIL: len(lost)}
    retries = {t.user_attrs.get("retry_of"): t for t in trials if "retry_of" in t.user_attrs}
    for trial in lost:
        assert retries[trial.number].params == trial.params
        assert retries[trial.number].state == TrialState.COMPLETE
    if "--storage" in controller_args:
        storage_url = controller_args[controller_args.index("--storage") + 1]
        same_trials(tmp_path / "out" / "study.db", storage_url, "lost")


@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_a_retry_takes_the_place_of_a_queued_ticket_once_the_budget_is_all_queued(
    server: str, request: pytest.FixtureRequest
) -> None:
    from optspec.run.budget import TicketIssuer

    storage = open_storage(request.getfixturevalue(f"{server}_url"))
    study = optuna.create_study(study_name="retry", storage=storage)
    issuer = TicketIssuer(study, n_trials=3, window=8)
    issuer.issue()
    assert issuer.room == 0

    assert issuer.retry({"x": 1.5}, {"retry_of": 0})

    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.WAITING] * 3  # still exactly the budget
    retried = [t for t in trials if t.user_attrs.get("retry_of") == 0]
    assert len(retried) == 1
    # A worker that pops it runs the lost trial's parameters.
    trial = study.ask()
    while trial.number != retried[0].number:
        trial = study.ask()
    assert trial.suggest_float("x", -10, 10) == 1.5


@pytest.mark.slow
def test_a_trial_longer_than_the_lost_window_on_a_live_worker_completes(
    tmp_path: Path, shared_with_proxy: tuple[list[str], str]
) -> None:
    # Workers beat first one interval into a trial; the controller must not take a live
    # worker's long trial for a lost one before that beat, nor after it.
    controller_args, url = shared_with_proxy
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(spec_text("long", 3, workers=1, heartbeat="1s"))
    controller = start("run", "study.toml", "-o", "out", "-q", *controller_args,
                       cwd=tmp_path, seconds=3.5)  # fmt: skip
    joined = start("worker", "study.toml", "--storage", url, "-q", cwd=tmp_path, seconds=3.5)
    finish(controller)
    finish(joined)

    trials = load(tmp_path / "out" / "study.db").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [
        t.user_attrs.get("fail_reason") for t in trials
    ]


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_a_run_stopped_early_leaves_its_unused_tickets_to_resume(
    tmp_path: Path, server: str, request: pytest.FixtureRequest
) -> None:
    import json

    url = request.getfixturevalue(f"{server}_url")
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    spec = spec_text("early", 30, workers=2)
    (tmp_path / "study.toml").write_text(spec.replace("[run]", '[run]\ntimeout = "1s"'))
    first = start("run", "study.toml", "-o", "first", "--storage", url, cwd=tmp_path, seconds=0.2)
    stdout, stderr = first.communicate(timeout=180)
    assert first.returncode == 0, stderr

    results = json.loads((tmp_path / "first" / "results.json").read_text())
    ran = results["n_trials"]
    assert 0 < ran < 30 and results["states"] == {"COMPLETE": ran}
    assert results["queued"] == 30 - ran  # the unused tickets: not counted as trials
    assert f"{ran} trials (" in stdout and f"{30 - ran} trials queued, not run" in stdout
    same_trials(tmp_path / "first" / "study.db", url, "early")  # study.db holds them too

    # study.db on one machine: resume runs the queued trials as its budget.
    finish(start("resume", "first/study.db", "-q", cwd=tmp_path, seconds=0.01))
    resumed = load(tmp_path / "first" / "study.db").trials
    assert [t.state for t in resumed] == [TrialState.COMPLETE] * 30
    assert "queued" not in json.loads((tmp_path / "first" / "results.json").read_text())

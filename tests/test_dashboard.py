"""optuna-dashboard through optspec: a real server, a real browser, a live study.

``optspec dashboard`` runs as a subprocess on a free port and is asked what a user's browser would
ask: the JSON API, and the page itself rendered by headless Chromium (the dashboard is a React
app, so only a browser shows whether the study and its trials really appear). The live dashboard
of ``optspec run --dashboard`` is served over a JournalStorage that another thread keeps writing
to. Without optuna-dashboard installed, the command must say in one line how to get it.

Chromium is an optional test dependency: without it the browser tests skip with a one-line
reason, except in CI (``CI=true``, which .ci/run sets after installing Chromium), where a skipped
browser test would prove nothing, so they fail instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.storages import JournalStorage

from optspec.errors import UsageError
from optspec.report.dashboard import INSTALL_HINT, start_live_dashboard
from optspec.storage.select import SharedMemoryJournalBackend

EXAMPLES = Path(__file__).parent.parent / "examples"
CHROMIUM = "chromium"
NO_CHROMIUM = "chromium is not installed (apt-get install -y chromium); this browser test needs it"


def require_chromium() -> str:
    """Chromium's path; the test skips without it, or fails under CI=true."""
    chromium = shutil.which(CHROMIUM)
    if chromium is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{NO_CHROMIUM}, and CI=true")
        pytest.skip(NO_CHROMIUM)
    return chromium


# Headless, offline, no first-run chatter; virtual time lets the page's API calls finish before
# the DOM is dumped, without a fixed sleep.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # tests may run as root (CI containers)
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
)


# -- helpers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


class DashboardProcess:
    """``optspec dashboard`` in a subprocess, ready once it has printed its URL."""

    def __init__(self, study_db: Path, port: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "optspec", "dashboard", str(study_db), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first_line = self.process.stdout.readline()  # printed after the socket is bound
        assert f"http://127.0.0.1:{port}/dashboard" in first_line, self.stop_and_explain()
        self.base = f"http://127.0.0.1:{port}"

    def interrupt(self) -> int:
        """Ctrl-C, as a user stops it; the exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=10)

    def stop_and_explain(self) -> str:
        self.process.kill()
        out, err = self.process.communicate()
        return f"dashboard did not start:\n{out}\n{err}"


@pytest.fixture(scope="module")
def study_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """study.db of the quadratic example, made by the real ``optspec run``."""
    output = tmp_path_factory.mktemp("quadratic")
    args = ["run", EXAMPLES / "quadratic.toml", "-o", output, "-q", "--n-trials", "8"]
    run = subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return output / "study.db"


@pytest.fixture(scope="module")
def expected(study_db: Path) -> optuna.Study:
    """The study as Optuna itself reads it (from a copy, so study.db stays untouched)."""
    copy = study_db.with_name("optuna-copy.db")
    shutil.copyfile(study_db, copy)
    return optuna.load_study(study_name=None, storage=f"sqlite:///{copy}")


@pytest.fixture(scope="module")
def dashboard(study_db: Path) -> Iterator[DashboardProcess]:
    server = DashboardProcess(study_db, free_port())
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.communicate()


# -- optspec dashboard STUDY_DB -----------------------------------------------------------------


@pytest.mark.slow
def test_api_serves_the_study_and_its_trials(
    dashboard: DashboardProcess, expected: optuna.Study
) -> None:
    summaries = get_json(f"{dashboard.base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [expected.study_name]

    detail = get_json(f"{dashboard.base}/api/studies/{summaries[0]['study_id']}")
    trials = {trial["number"]: trial for trial in detail["trials"]}
    assert sorted(trials) == [trial.number for trial in expected.trials]
    for trial in expected.trials:
        assert trials[trial.number]["values"] == trial.values


@pytest.mark.slow
def test_browser_renders_the_study_and_its_trials(
    dashboard: DashboardProcess, expected: optuna.Study, tmp_path: Path
) -> None:
    chromium = require_chromium()
    study_id = get_json(f"{dashboard.base}/api/studies")["study_summaries"][0]["study_id"]
    dom = dump_dom(chromium, f"{dashboard.base}/dashboard/studies/{study_id}/trials", tmp_path)

    # The "incompatible schema" page would replace the app if study.db's revision were not
    # the installed Optuna's head; optspec writes study.db with the installed Optuna.
    assert "incompatible" not in dom.lower()
    assert expected.study_name in dom
    for trial in expected.trials:
        assert f"Trial {trial.number}<" in dom


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets the API calls finish)."""
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_ctrl_c_stops_it_with_exit_0(study_db: Path) -> None:
    server = DashboardProcess(study_db, free_port())
    assert server.interrupt() == 0
    assert "Traceback" not in server.process.stderr.read()


def test_port_in_use_is_exit_2(study_db: Path, optspec_cli: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = optspec_cli("dashboard", study_db, "--port", port)
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_not_a_study_is_exit_2(tmp_path: Path, optspec_cli: Any) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("not a study\n")
    result = optspec_cli("dashboard", notes, "--port", free_port())
    assert result.returncode == 2
    assert str(notes) in result.stderr and "Traceback" not in result.stderr


# Runs the real command line in an interpreter where `import optuna_dashboard` fails, as it does
# when the `dashboard` extra is not installed.
WITHOUT_OPTUNA_DASHBOARD = """
import sys
from importlib.abc import MetaPathFinder

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "optuna_dashboard" or name.startswith("optuna_dashboard."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from optspec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_without_optuna_dashboard_one_line_says_how_to_install(study_db: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPTUNA_DASHBOARD, "dashboard", str(study_db)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [INSTALL_HINT]
    assert "pip install 'optspec[dashboard]'" in INSTALL_HINT


def test_live_dashboard_without_optuna_dashboard_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import now raises ImportError
    with pytest.raises(UsageError, match=r"pip install 'optspec\[dashboard\]'"):
        start_live_dashboard(optuna.storages.InMemoryStorage(), 0)


# -- optspec run --dashboard: a live storage -----------------------------------------------------


@pytest.mark.slow
def test_live_dashboard_sees_trials_while_they_are_written() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with SharedMemoryJournalBackend() as backend:
        storage = JournalStorage(backend)
        study = optuna.create_study(storage=storage, study_name="live")
        stop_writing = threading.Event()

        def write_trials() -> None:
            while not stop_writing.is_set():
                study.optimize(lambda trial: trial.suggest_float("x", -1, 1) ** 2, n_trials=1)
                time.sleep(0.01)

        writer = threading.Thread(target=write_trials)
        dashboard = start_live_dashboard(storage, 0)
        try:
            assert dashboard.url == f"http://127.0.0.1:{dashboard.port}/dashboard"
            writer.start()
            counts = trial_counts_until_they_grow(dashboard.port)
        finally:
            stop_writing.set()
            writer.join()
            dashboard.stop()

        assert counts == sorted(counts) and counts[-1] > counts[0]
        assert counts[-1] <= len(study.trials)
        with pytest.raises(ConnectionRefusedError):  # stopped means the port is free again
            socket.create_connection(("127.0.0.1", dashboard.port), timeout=1).close()
        dashboard.stop()  # a second stop does nothing


def live_trials(port: int) -> list[dict[str, Any]]:
    (summary,) = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
    return get_json(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}")["trials"]


def trial_counts_until_they_grow(port: int, timeout: float = 20.0) -> list[int]:
    # optuna-dashboard caches a study's trials for 2 s (small studies), so growth shows only
    # after that; poll for a while rather than expect it at once.
    counts = [len(live_trials(port))]
    deadline = time.monotonic() + timeout
    while counts[-1] == counts[0] and time.monotonic() < deadline:
        time.sleep(0.25)
        counts.append(len(live_trials(port)))
    return counts


SLOW_QUADRATIC = """
import time

def objective(params):
    time.sleep(0.05)
    return (params["x"] - 2) ** 2
"""


@pytest.mark.slow
def test_run_with_dashboard_serves_the_live_study_to_a_browser(tmp_path: Path) -> None:
    chromium = require_chromium()
    (tmp_path / "slow.py").write_text(SLOW_QUADRATIC)
    (tmp_path / "study.toml").write_text(
        'version = 1\n[study]\nname = "live-run"\n[objective]\ncallable = "slow.py:objective"\n'
        '[params]\nx = { type = "float", low = -10, high = 10 }\n'
        "[run]\nn_trials = 400\nworkers = 2\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q",
         "--dashboard", str(port)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        counts = []
        deadline = time.monotonic() + 30
        while not counts and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                counts = trial_counts_until_they_grow(port)
            time.sleep(0.2)
        assert counts and counts[-1] > counts[0], "the live study did not grow"
        (summary,) = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        dom = dump_dom(
            chromium, f"http://127.0.0.1:{port}/dashboard/studies/{summary['study_id']}", tmp_path
        )
        assert "live-run" in dom
        assert process.poll() is None, "the run ended before the browser looked"
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert f"http://127.0.0.1:{port}/dashboard" in stderr
    with pytest.raises(ConnectionRefusedError):  # stopped with the run
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert (tmp_path / "out" / "study.db").is_file()

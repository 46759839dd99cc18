"""Progress and summary, as a user sees them in a terminal, in a log, and with -q."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

from tests.helpers import OBJECTIVES, load, run_cli, spec_text


def write_study(tmp_path: Path, n_trials: int = 12) -> None:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(spec_text("quadratic", n_trials=n_trials))


def test_off_a_terminal_progress_is_plain_lines_and_a_summary(tmp_path: Path) -> None:
    write_study(tmp_path)
    result = run_cli("run", "study.toml", "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "optspec: 12/12 trials" in result.stderr
    assert "\r" not in result.stderr  # no redrawing in a log file
    best = load(tmp_path / "out" / "study.db").best_trial
    assert f"best trial #{best.number}: value {best.value:.6g}" in result.stdout
    assert f"saved: {tmp_path / 'out' / 'study.db'}" in result.stdout


def test_quiet_prints_nothing_but_writes_everything(tmp_path: Path) -> None:
    write_study(tmp_path)
    result = run_cli("run", "study.toml", "-o", "out", "-q", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == "" and result.stderr == ""
    assert json.loads((tmp_path / "out" / "results.json").read_text())["n_trials"] == 12


def test_on_a_terminal_a_bar_is_redrawn_in_place(tmp_path: Path) -> None:
    write_study(tmp_path, n_trials=30)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out"],
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the other side closed: the run is over
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = output.decode()
    assert "\r[" in text and "########################] 30/30 trials" in text
    assert "trials/s" in text and "best" in text
    assert "saved:" in text

"""`run --storage URL` and `optspec worker`: one study shared by processes that only share a URL.

Against a real PostgreSQL server (.ci/services starts one; see conftest.py). Many machines, Redis
and `--serve` are in test_multihost.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import CONSTANT_OBJECTIVE, OBJECTIVES, load, run_cli, spec_text


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "objectives.py").write_text(OBJECTIVES)
    (tmp_path / "study.toml").write_text(spec_text("slow", n_trials=30, workers=1))
    return tmp_path


@pytest.mark.slow
def test_a_worker_joins_a_study_on_a_shared_storage(study_dir: Path, postgres_url: str) -> None:
    url = postgres_url
    controller = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q",
         "--storage", url],
        cwd=study_dir,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    joined = run_cli("worker", "study.toml", "--storage", url, "--workers", "2", "-q",
                     cwd=study_dir)  # fmt: skip
    _, stderr = controller.communicate(timeout=120)
    assert controller.returncode == 0, stderr
    assert joined.returncode == 0, joined.stderr

    trials = load(study_dir / "out" / "study.db").trials
    # Three workers take trials at the same time, from tickets: never one over the target.
    assert len(trials) == 30
    # The controller waits for the trials the joined workers still ran when the target was met.
    unfinished = [
        (t.number, t.state.name, t.user_attrs) for t in trials if t.state != TrialState.COMPLETE
    ]
    assert unfinished == []  # test_multihost.py checks that every machine took part


def test_a_study_name_taken_on_the_storage_is_refused(study_dir: Path, postgres_url: str) -> None:
    url = postgres_url
    first = run_cli("run", "study.toml", "-o", "a", "-q", "--storage", url, "--n-trials", "2",
                    cwd=study_dir)  # fmt: skip
    assert first.returncode == 0, first.stderr
    second = run_cli("run", "study.toml", "-o", "b", "-q", "--storage", url, cwd=study_dir)
    assert second.returncode == 2
    assert "optspec worker" in second.stderr and "Traceback" not in second.stderr
    assert not (study_dir / "b").exists()


def test_a_storage_url_that_cannot_be_opened(study_dir: Path) -> None:
    result = run_cli("run", "study.toml", "-o", "out", "--storage", "nosuchdb://x", cwd=study_dir)
    assert result.returncode == 2
    assert "--storage nosuchdb://x" in result.stderr and "Traceback" not in result.stderr
    assert not (study_dir / "out").exists()


def test_a_worker_with_an_edited_spec_is_refused(study_dir: Path, postgres_url: str) -> None:
    url = postgres_url
    started = run_cli("run", "study.toml", "-o", "a", "-q", "--storage", url, "--n-trials", "1",
                      cwd=study_dir)  # fmt: skip
    assert started.returncode == 0, started.stderr
    spec = study_dir / "study.toml"
    spec.write_text(spec.read_text().replace("high = 10", "high = 20"))
    joined = run_cli("worker", "study.toml", "--storage", url, cwd=study_dir)
    assert joined.returncode == 2
    assert "differs from the spec" in joined.stderr and "Traceback" not in joined.stderr
    assert "at params.x.high;" in joined.stderr


def test_a_worker_with_the_same_spec_laid_out_differently_joins(
    study_dir: Path, postgres_url: str
) -> None:
    started = run_cli("run", "study.toml", "-o", "a", "-q", "--storage", postgres_url,
                      "--n-trials", "1", cwd=study_dir)  # fmt: skip
    assert started.returncode == 0, started.stderr
    spec = study_dir / "study.toml"
    spec.write_text("# a comment changes nothing\n" + spec.read_text().replace(" = ", "="))
    joined = run_cli("worker", "study.toml", "--storage", postgres_url, cwd=study_dir)
    assert joined.returncode == 0, joined.stderr


def test_a_worker_loads_the_plugins_it_is_given_with_p(study_dir: Path, postgres_url: str) -> None:
    (study_dir / "constant_objective.py").write_text(CONSTANT_OBJECTIVE)
    spec = study_dir / "study.toml"
    constant = 'kind = "constant"\nvalue = 7.5'
    spec.write_text(spec.read_text().replace('callable = "objectives.py:slow"', constant))
    started = run_cli("run", "study.toml", "-o", "a", "-q", "--storage", postgres_url,
                      "--n-trials", "2", "-p", "constant_objective", cwd=study_dir)  # fmt: skip
    assert started.returncode == 0, started.stderr

    without = run_cli("worker", "study.toml", "--storage", postgres_url, cwd=study_dir)
    assert without.returncode == 2 and "constant" in without.stderr
    joined = run_cli("worker", "study.toml", "--storage", postgres_url, "-p",
                     "constant_objective", cwd=study_dir)  # fmt: skip
    assert joined.returncode == 0, joined.stderr

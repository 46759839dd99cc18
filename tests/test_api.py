"""The Python API's calling conventions: RunOptions, or the same options by keyword."""

from __future__ import annotations

from pathlib import Path

import pytest

import optspec
from optspec import RunOptions


def test_each_entry_point_takes_only_the_options_it_uses(tmp_path: Path) -> None:
    spec = tmp_path / "study.toml"  # never read: the options are checked first
    with pytest.raises(TypeError, match=r"run_study.*'spec_dir'"):
        optspec.run_study(spec, spec_dir=tmp_path)
    with pytest.raises(TypeError, match=r"resume_study.*'overwrite'"):
        optspec.resume_study(tmp_path / "study.db", overwrite=True)
    with pytest.raises(TypeError, match=r"join_study.*'plugins'"):
        optspec.join_study(spec, storage="sqlite://", plugins=[object()])
    with pytest.raises(TypeError, match=r"join_study.*storage"):
        optspec.join_study(spec)


def test_keywords_and_a_run_options_object_mean_the_same(tmp_path: Path) -> None:
    missing = tmp_path / "absent" / "study.db"
    for call in (
        lambda: optspec.resume_study(missing, n_trials=3, quiet=True),
        lambda: optspec.resume_study(missing, RunOptions(n_trials=3, quiet=True)),
    ):
        with pytest.raises(optspec.UsageError, match="no such file"):
            call()


def test_run_options_apply_the_budget_to_a_spec(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(
        'version = 1\n[study]\ndirection = "minimize"\n[objective]\ncallable = "m:f"\n'
        '[params]\nx = { type = "float", low = 0, high = 1 }\n[run]\nn_trials = 5\ntimeout = 60\n'
    )
    spec = optspec.load_spec(path)

    changed = RunOptions(n_trials=9, timeout=float("inf"), workers="auto").with_budget(spec)

    assert (changed.run.n_trials, changed.run.timeout, changed.run.workers) == (9, None, "auto")
    assert RunOptions().with_budget(spec) is spec

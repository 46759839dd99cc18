"""record_result: what a study records for each shape of result an objective may return."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from optspec.objectives.results import FAIL_REASON_ATTR, TrialFailed, record_result
from optspec.spec.load import parse_spec
from optspec.spec.model import Spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

ONE_OBJECTIVE = '[study]\ndirection = "minimize"\n'
TWO_DIRECTIONS = '[study]\ndirections = ["minimize", "maximize"]\n'
BY_METRIC = """
[study]
[[study.objectives]]
metric = "loss"
direction = "minimize"
[[study.objectives]]
metric = "accuracy"
direction = "maximize"
"""
MEMORY_CONSTRAINT = "[[constraints]]\nmetric = 'mem_mb'\nmax = 512\n"


def make_spec(tmp_path: Path, study: str, extra: str = "") -> Spec:
    text = f'version = 1\n{study}\n[objective]\ncallable = "math:sqrt"\n{extra}'
    return parse_spec(text, path=tmp_path / "study.toml")


def run_one(spec: Spec, result: Any) -> optuna.trial.FrozenTrial:
    """One trial of a real study whose objective returned ``result``, recorded as a worker does."""
    study = optuna.create_study(directions=spec.study.directions)

    def objective(trial: optuna.Trial) -> list[float]:
        try:
            return record_result(trial, result, spec)
        except TrialFailed as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, exc.reason)
            raise

    study.optimize(objective, n_trials=1, catch=(TrialFailed,))
    return study.trials[0]


def reason(trial: optuna.trial.FrozenTrial) -> str:
    assert trial.state == optuna.trial.TrialState.FAIL
    return trial.user_attrs[FAIL_REASON_ATTR]


@pytest.mark.parametrize("result", [0.25, 3, np.float32(0.5), [0.25], (7,)])
def test_a_number_or_a_one_element_sequence_is_the_value(tmp_path: Path, result: Any) -> None:
    trial = run_one(make_spec(tmp_path, ONE_OBJECTIVE), result)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.values == [pytest.approx(float(np.ravel(result)[0]))]


def test_a_sequence_gives_one_value_per_direction(tmp_path: Path) -> None:
    trial = run_one(make_spec(tmp_path, TWO_DIRECTIONS), (1.5, np.float64(0.75)))
    assert trial.values == [1.5, 0.75]


def test_inf_is_kept(tmp_path: Path) -> None:
    trial = run_one(make_spec(tmp_path, ONE_OBJECTIVE), float("inf"))
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.values == [math.inf]


def test_a_dict_selects_objectives_by_metric_and_keeps_every_metric(tmp_path: Path) -> None:
    result = {
        "accuracy": 0.9,
        "loss": np.float32(0.5),
        "note": "ok",
        "curve": [1, 2.5],
        "worst": float("-inf"),
        "model": object(),  # not JSON: left out of the attrs, not a reason to fail
    }
    trial = run_one(make_spec(tmp_path, BY_METRIC), result)
    assert trial.values == [0.5, pytest.approx(0.9)]
    assert trial.user_attrs == {
        "accuracy": 0.9,
        "loss": 0.5,
        "note": "ok",
        "curve": [1, 2.5],
        "worst": -math.inf,
    }


def test_a_dict_with_one_number_needs_no_objectives_table(tmp_path: Path) -> None:
    trial = run_one(make_spec(tmp_path, ONE_OBJECTIVE), {"loss": 0.125, "model": "resnet"})
    assert trial.values == [0.125]
    assert trial.user_attrs == {"loss": 0.125, "model": "resnet"}


def test_constraints_are_recorded_as_violations(tmp_path: Path) -> None:
    extra = MEMORY_CONSTRAINT + "[[constraints]]\nmetric = 'latency'\nmin = 1\nmax = 10\n"
    spec = make_spec(tmp_path, ONE_OBJECTIVE, extra)
    trial = run_one(spec, {"loss": 1.0, "mem_mb": 600, "latency": 4})
    # Optuna's samplers read these: > 0 infeasible (by how much), <= 0 feasible.
    assert trial.constraints == {"mem_mb": 88.0, "latency": -3.0}
    assert trial.system_attrs["constraints:mem_mb"] == 88.0


FAILURES: list[tuple[str, str, str, Any, Callable[[str], bool]]] = [
    ("nan", ONE_OBJECTIVE, "", float("nan"), lambda r: "objective returned nan" in r),
    ("nan metric", BY_METRIC, "", {"loss": math.nan, "accuracy": 1}, lambda r: "nan" in r),
    (
        "too many",
        TWO_DIRECTIONS,
        "",
        [1, 2, 3],
        lambda r: r == "returned 3 values for 2 objectives",
    ),
    ("too few", TWO_DIRECTIONS, "", 1.0, lambda r: r == "returned 1 value for 2 objectives"),
    ("bool", ONE_OBJECTIVE, "", True, lambda r: "bool True" in r),
    ("string", ONE_OBJECTIVE, "", "0.5", lambda r: "str '0.5'" in r and "dict of metrics" in r),
    ("none", ONE_OBJECTIVE, "", None, lambda r: "NoneType" in r),
    ("string in seq", TWO_DIRECTIONS, "", [1, "x"], lambda r: "value 1" in r and "str" in r),
    (
        "missing metric",
        BY_METRIC,
        "",
        {"loss": 1.0, "acc": 0.5},
        lambda r: "'accuracy' is missing" in r and "present: loss, acc" in r,
    ),
    (
        "number for metrics",
        BY_METRIC,
        "",
        0.5,
        lambda r: "return a dict like" in r and '"accuracy"' in r,
    ),
    (
        "ambiguous dict",
        ONE_OBJECTIVE,
        "",
        {"loss": 1.0, "acc": 0.5},
        lambda r: "[[study.objectives]]" in r and "loss, acc" in r,
    ),
    (
        "missing constraint metric",
        ONE_OBJECTIVE,
        MEMORY_CONSTRAINT,
        {"loss": 1.0},
        lambda r: "constraint metric 'mem_mb' is missing" in r,
    ),
    (
        "constraint on a number",
        ONE_OBJECTIVE,
        MEMORY_CONSTRAINT,
        1.0,
        lambda r: "(mem_mb)" in r and "dict" in r,
    ),
    (
        "nan constraint",
        ONE_OBJECTIVE,
        MEMORY_CONSTRAINT,
        {"loss": 1.0, "mem_mb": math.nan},
        lambda r: "'mem_mb' is nan" in r,
    ),
]


@pytest.mark.parametrize(
    ("study", "extra", "result", "check"),
    [case[1:] for case in FAILURES],
    ids=[case[0] for case in FAILURES],
)
def test_unusable_results_fail_with_a_reason(
    tmp_path: Path, study: str, extra: str, result: Any, check: Callable[[str], bool]
) -> None:
    text = reason(run_one(make_spec(tmp_path, study, extra), result))
    assert check(text), text


def test_metrics_of_a_failed_trial_are_still_kept(tmp_path: Path) -> None:
    trial = run_one(make_spec(tmp_path, BY_METRIC), {"loss": 1.0, "acc": 0.5})
    assert trial.user_attrs["acc"] == 0.5
    assert "'accuracy' is missing" in trial.user_attrs[FAIL_REASON_ATTR]

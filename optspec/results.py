"""What a study found, in the shape results.json, ``optspec show`` and exports share."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def trial_summary(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "values": [_json_number(v) for v in trial.values] if trial.values is not None else None,
        "params": trial.params,
        "user_attrs": trial.user_attrs,
    }


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """States, and the best trial (one objective) or the Pareto front (several)."""
    trials = study.get_trials(deepcopy=False)
    summary: dict[str, Any] = {
        "study": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": len(trials),
        "states": dict(Counter(trial.state.name for trial in trials)),
    }
    if len(study.directions) == 1:
        try:
            summary["best_trial"] = trial_summary(study.best_trial)
        except ValueError:  # no complete (feasible) trial yet
            summary["best_trial"] = None
    else:
        summary["best_trials"] = [trial_summary(trial) for trial in study.best_trials]
    return summary


def write_results_json(study: optuna.Study, path: Path) -> None:
    text = json.dumps(study_summary(study), indent=2, default=str)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def _json_number(value: float) -> float | str:
    # JSON has no inf or nan; strings keep the file valid for every reader.
    return value if math.isfinite(value) else str(value)

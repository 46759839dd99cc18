"""optspec-jsonl-log: append one JSON line per finished trial to ``<output>/trials.jsonl``.

Options, in the spec::

    [plugin.jsonl-log]
    path = "trials.jsonl"     # relative to the run's output directory (or absolute)

Hooks: ``configure`` checks the table (in the controller and every worker, so a bad value stops
the run before anything is written); ``on_trial_end`` runs in the controller only, once per
finished trial, so this module needs no locking: only one process ever writes the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optspec import SpecError, hookimpl

if TYPE_CHECKING:
    from datetime import datetime

    from optuna.trial import FrozenTrial

    from optspec.config import Config

NAME = "jsonl-log"
DEFAULT_PATH = "trials.jsonl"

# Per process: configure() runs again for every run, so a second run never writes to the first
# run's file.
_path: Path | None = None


@hookimpl
def configure(config: Config) -> None:
    global _path
    options = config.plugin_options(NAME)
    unknown = sorted(set(options) - {"path"})
    if unknown:
        raise SpecError(f"plugin.{NAME}.{unknown[0]}: unknown option; the only option is 'path'")
    path = options.get("path", DEFAULT_PATH)
    if not isinstance(path, str) or not path.strip():
        raise SpecError(f"plugin.{NAME}.path: must be a non-empty file name, got {path!r}")
    _path = config.output / path


@hookimpl
def on_trial_end(trial: FrozenTrial) -> None:
    if _path is None:
        return
    _path.parent.mkdir(parents=True, exist_ok=True)
    with _path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(trial_record(trial)) + "\n")


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """What one line holds. JSON has no infinity or NaN: such values are written as strings."""
    return {
        "number": trial.number,
        "state": trial.state.name,
        "values": None if trial.values is None else [_number(v) for v in trial.values],
        "params": trial.params,
        "user_attrs": trial.user_attrs,
        "datetime_start": _iso(trial.datetime_start),
        "datetime_complete": _iso(trial.datetime_complete),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _number(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)

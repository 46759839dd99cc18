"""What a study found, in the shape results.json, ``optspec show`` and ``optspec export`` share.

Two audiences read a finished study: the run itself, which writes ``results.json`` and prints its
summary (:func:`study_summary`, :func:`write_results_json`), and a person or a script looking at a
``study.db`` later (:func:`show`, :func:`export`).

The later look never changes the file. :func:`open_study_file` reads the tables through a
read-only SQLite connection into a journal held in a Python list, instead of opening the file with
``RDBStorage`` (which creates tables and refuses, or offers to migrate, another Optuna's schema).
So a read-only file, or a study.db written by a newer Optuna whose tables we still understand,
shows; a file that is no Optuna study is a :class:`~optspec.storage.studydb.StudyFileError`
(a usage error) that names it.

JSON output is always valid JSON: ``inf``, ``-inf`` and ``nan`` become strings, wherever they
occur (values, params, user attrs).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from optspec.errors import UsageError
from optspec.objectives.trial_dirs import trial_dir_path
from optspec.report.failures import failures_by_reason
from optspec.run.study_attrs import OVERRIDES_ATTR, SPEC_ATTR
from optspec.util import tomllib

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

__all__ = [
    "export",
    "objective_names",
    "open_study_file",
    "pareto_front",
    "show",
    "show_report",
    "stored_overrides",
    "stored_spec",
    "study_summary",
    "to_json",
    "trial_rows",
    "trial_summary",
    "write_results_json",
]


def trial_summary(trial: FrozenTrial, output: Path | None = None) -> dict[str, Any]:
    """Number, values, params, user attrs; and ``trial_dir`` when the trial's directory under
    ``output`` still exists (``[run] keep_trial_dirs``)."""
    summary: dict[str, Any] = {
        "number": trial.number,
        "values": [_json_number(v) for v in trial.values] if trial.values is not None else None,
        "params": trial.params,
        "user_attrs": trial.user_attrs,
    }
    if output is not None:
        directory = trial_dir_path(output, trial.number)
        if directory.is_dir():
            summary["trial_dir"] = str(directory.absolute())
    return summary


def study_summary(study: optuna.Study, output: Path | None = None) -> dict[str, Any]:
    """States, and ``best_trial`` (one objective) or ``pareto_front`` (several), the names
    results.json uses (see README); each trial with number, values, params and user attrs, and
    its directory when ``output`` (the run's directory) still holds it."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    # WAITING trials have not run: a run on a shared storage that stopped early leaves its
    # unused tickets queued for the next one. They are the study's to-do, not its trials.
    run = [trial for trial in trials if trial.state != TrialState.WAITING]
    summary: dict[str, Any] = {
        "study": study.study_name,
        "directions": [d.name.lower() for d in study.directions],
        "n_trials": len(run),
        "states": dict(Counter(trial.state.name for trial in run)),
    }
    if len(run) < len(trials):
        summary["queued"] = len(trials) - len(run)
    if len(study.directions) == 1:
        try:
            summary["best_trial"] = trial_summary(study.best_trial, output)
        except ValueError:  # no complete (feasible) trial yet
            summary["best_trial"] = None
    else:
        summary["pareto_front"] = [trial_summary(t, output) for t in pareto_front(study)]
    return summary


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """The trials of ``study.best_trials``, in trial order, without its cost.

    Optuna 5's ``best_trials`` reads ``study.trials``, a deep copy of every trial: 16 s of a
    10k-trial, two-objective report went there. Same rule here on the trials as they are: the
    complete trials (only the feasible ones when any trial has constraints) that no other
    dominates; trials with equal values are all on the front.
    """
    import numpy as np
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if any(trial.constraints for trial in study.get_trials(deepcopy=False)):
        trials = [t for t in trials if all(v <= 0 for v in t.constraints.values())]
    if not trials:
        return []
    signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    losses = np.asarray([[s * v for s, v in zip(signs, t.values, strict=True)] for t in trials])
    unique, inverse = np.unique(losses, axis=0, return_inverse=True)  # sorted lexicographically
    on_front = np.zeros(len(unique), dtype=bool)
    remaining = np.arange(len(unique))
    rest = unique[:, 1:]
    while len(remaining):
        # Lexicographic order: no later row dominates the first remaining one.
        first = remaining[0]
        on_front[first] = True
        remaining = remaining[np.any(rest[remaining] < rest[first], axis=1)]
    keep = on_front[inverse.reshape(-1)]
    return [trial for trial, kept in zip(trials, keep, strict=True) if kept]


def write_results_json(study: optuna.Study, path: Path) -> None:
    text = to_json(study_summary(study, path.parent))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def to_json(data: Any) -> str:
    """Indented JSON that every reader accepts: non-finite floats as strings, odd types as str."""
    return json.dumps(_jsonable(data), indent=2, default=str, allow_nan=False)


def _jsonable(data: Any) -> Any:
    if isinstance(data, float):
        return _json_number(data)
    if isinstance(data, dict):
        return {key: _jsonable(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_jsonable(value) for value in data]
    return data


def _json_number(value: float) -> float | str:
    # JSON has no inf or nan; strings keep the file valid for every reader.
    return value if math.isfinite(value) else str(value)


# -- opening a study file without changing it ---------------------------------------------------


def open_study_file(path: str | os.PathLike[str]) -> optuna.Study:
    """The only study in ``path`` (an Optuna SQLite file or an optspec fallback journal), in memory.

    Read-only, and without the check that the installed Optuna wrote the file: looking at a study
    must work on a read-only file and on one a newer Optuna stamped.

    :raises StudyFileError: the file is missing, empty, or not an Optuna study.
    """
    from optspec.storage.journal import InProcessJournalBackend
    from optspec.storage.studydb import load_from_sqlite

    _, study = load_from_sqlite(path, backend=InProcessJournalBackend(), check_version=False)
    return study


def stored_spec(study: optuna.Study) -> str | None:
    """The spec text optspec stored in the study, or None for a study optspec did not make."""
    from optspec.storage.optuna_compat import study_id, study_storage

    spec = study_storage(study).get_study_system_attrs(study_id(study)).get(SPEC_ATTR)
    return spec if isinstance(spec, str) else None


def stored_overrides(study: optuna.Study) -> list[str]:
    """The ``--set KEY=VALUE`` overrides the stored spec was made with, as ``KEY=VALUE`` texts."""
    from optspec.storage.optuna_compat import study_id, study_storage

    stored = study_storage(study).get_study_system_attrs(study_id(study)).get(OVERRIDES_ATTR)
    if isinstance(stored, dict):
        return [f"{key}={value}" for key, value in stored.items()]
    if isinstance(stored, list):
        return [str(item) for item in stored]
    return []


def objective_names(study: optuna.Study) -> list[str]:
    """A name per objective: the spec's metric names, else Optuna's metric names, else its index.

    One objective is ``value``, as in Optuna's own dataframes.
    """
    if len(study.directions) == 1:
        return ["value"]
    names = _spec_metrics(stored_spec(study)) or study.metric_names
    if names is None or len(names) != len(study.directions):
        names = [str(index) for index in range(len(study.directions))]
    return [f"values_{name}" for name in names]


def _spec_metrics(spec_text: str | None) -> list[str] | None:
    # Plain TOML, not the spec model: a spec from another optspec version may no longer validate,
    # and `[[study.objectives]] metric` is all we need from it.
    if spec_text is None:
        return None
    try:
        objectives = tomllib.loads(spec_text).get("study", {}).get("objectives", [])
        metrics = [objective["metric"] for objective in objectives]
    except (tomllib.TOMLDecodeError, AttributeError, KeyError, TypeError):
        return None
    return [str(metric) for metric in metrics] or None


# -- optspec show -------------------------------------------------------------------------------


def show(path: str | os.PathLike[str], *, as_json: bool = False) -> None:
    """``optspec show``: print what the study in ``path`` holds, or raise StudyFileError."""
    study = open_study_file(path)
    report = show_report(study, path)
    text = to_json(report) if as_json else show_text(report)
    _to_stdout(lambda file: file.write(text + "\n"))


def show_report(study: optuna.Study, path: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`study_summary` plus the file, the objectives' names, the run's span and its spec."""
    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    first, last = (min(starts), max(ends)) if starts and ends else (None, None)
    return {
        "file": os.fspath(path),
        **study_summary(study, Path(path).parent),
        "objectives": objective_names(study),
        "datetime_start": _iso(first),
        "datetime_complete": _iso(last),
        "duration_seconds": (last - first).total_seconds() if first and last else None,
        "failures": [
            {"reason": group.reason, "count": group.count, "trials": list(group.trials)}
            for group in failures_by_reason(trials)
        ],
        "spec": stored_spec(study),
    }


def show_text(report: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {state}" for state, n in sorted(report["states"].items()))
    duration = report["duration_seconds"]
    lines = [
        f"study {report['study']!r} in {report['file']}",
        f"directions: {', '.join(report['directions'])}",
        f"trials: {report['n_trials']} ({states or 'none'})"
        + (f"; {report['queued']} queued, not run" if report.get("queued") else ""),
        "duration: "
        + (
            f"{_duration_text(duration)} ({report['datetime_start']} to "
            f"{report['datetime_complete']})"
            if duration is not None
            else "no trial finished"
        ),
        "",
    ]
    header = ["trial", *report["objectives"], "params"]
    if "best_trial" in report:
        best = report["best_trial"]
        lines.append("best trial:" if best else "best trial: none (no trial completed)")
        front = [best] if best else []
    else:
        front = report["pareto_front"]
        lines.append(f"Pareto front: {len(front)} trials")
    if front:
        rows = [
            [f"#{t['number']}", *(_number_text(v) for v in t["values"]), _params_text(t["params"])]
            for t in front
        ]
        lines += _table(header, rows)
        kept = [t for t in front if t.get("trial_dir")]
        if len(kept) == 1 and len(front) == 1:
            lines.append(f"trial directory: {kept[0]['trial_dir']}")
        elif kept:
            lines.append("trial directories:")
            lines += [f"  #{t['number']}  {t['trial_dir']}" for t in kept]
    lines.append("")
    failures = report["failures"]
    if failures:
        total = sum(group["count"] for group in failures)
        lines.append(f"failures: {total} trials, by reason:")
        for group in failures:
            trials = ", ".join(f"#{n}" for n in group["trials"][:10])
            more = f" and {len(group['trials']) - 10} more" if len(group["trials"]) > 10 else ""
            lines.append(f"  {group['count']} trials ({trials}{more}):")
            lines += [f"    {line}" for line in group["reason"].splitlines() or [""]]
        lines.append("")
    if report["spec"] is None:
        lines.append(f"spec: none stored (no {SPEC_ATTR} attribute: not made by optspec)")
    else:
        lines.append("spec:")
        lines += ["  " + line if line else "" for line in report["spec"].splitlines()]
    return "\n".join(lines)


def _duration_text(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02.0f}s"
    if minutes:
        return f"{minutes}m{secs:04.1f}s"
    return f"{secs:.2f}s"


def _number_text(value: float | str | None) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in params.items())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


# -- optspec export -----------------------------------------------------------------------------


def export(
    path: str | os.PathLike[str], *, fmt: str = "csv", output: str | os.PathLike[str] | None = None
) -> None:
    """``optspec export``: every trial of ``path`` as CSV or JSON, to ``output`` or stdout."""
    if output is not None:
        refuse_overwriting_input(path, output)
    study = open_study_file(path)
    rows = trial_rows(study)
    columns = list(rows[0]) if rows else _fixed_columns(objective_names(study))
    if output is None:
        _to_stdout(lambda file: _write_rows(columns, rows, fmt, file))
    else:
        try:
            file = open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except OSError as exc:
            raise UsageError(f"-o {output}: cannot write it: {exc.strerror}") from None
        with file:
            _write_rows(columns, rows, fmt, file)


def refuse_overwriting_input(
    study_db: str | os.PathLike[str], output: str | os.PathLike[str]
) -> None:
    """``-o`` naming the study file itself (or a link to it) would destroy the study it reads."""
    try:
        same = os.path.samefile(study_db, output)
    except OSError:  # one of them does not exist: nothing to destroy
        return
    if same:
        raise UsageError(
            f"-o {output}: is the study file being read ({study_db}); choose another output file"
        )


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat dict per trial, every row with the same keys in the same order.

    Keys: number, state, the objectives (:func:`objective_names`), datetime_start,
    datetime_complete, duration (seconds), ``params_<name>`` and ``user_attrs_<name>``. A value
    a trial lacks (a conditional param, an unfinished trial's values) is None.
    """
    trials = study.get_trials(deepcopy=False)
    objectives = objective_names(study)
    params = _keys_in_order(trial.params for trial in trials)
    user_attrs = _keys_in_order(trial.user_attrs for trial in trials)
    rows = []
    for trial in trials:
        values = trial.values or [None] * len(objectives)
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        row.update(zip(objectives, values, strict=True))
        row["datetime_start"] = _iso(trial.datetime_start)
        row["datetime_complete"] = _iso(trial.datetime_complete)
        row["duration"] = trial.duration.total_seconds() if trial.duration is not None else None
        row.update((f"params_{name}", trial.params.get(name)) for name in params)
        row.update((f"user_attrs_{name}", trial.user_attrs.get(name)) for name in user_attrs)
        rows.append(row)
    return rows


def _fixed_columns(objectives: list[str]) -> list[str]:
    """The columns every export has, even of a study without trials."""
    return ["number", "state", *objectives, "datetime_start", "datetime_complete", "duration"]


def _keys_in_order(dicts: Iterable[dict[str, Any]]) -> list[str]:
    # First-seen order keeps the spec's parameter order; dict keys are an ordered set.
    return list(dict.fromkeys(key for d in dicts for key in d))


def _write_rows(columns: list[str], rows: list[dict[str, Any]], fmt: str, file: TextIO) -> None:
    if fmt == "json":
        file.write(to_json(rows) + "\n")
        return
    writer = csv.writer(file, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_csv_cell(value) for value in row.values()] for row in rows)


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""  # absent, as pandas and spreadsheets read an empty cell
    if isinstance(value, float):
        return repr(value)  # round-trips exactly; inf and nan as float() reads them
    if isinstance(value, (dict, list)):
        return json.dumps(_jsonable(value), allow_nan=False)
    return str(value)


def _to_stdout(write: Callable[[TextIO], object]) -> None:
    try:
        write(sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:
        # `optspec export study.db | head`: the reader has what it wanted. Point stdout at
        # devnull so the interpreter's own flush at exit does not raise again (Python docs' recipe).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None

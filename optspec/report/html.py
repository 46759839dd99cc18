"""``optspec report --format html``: one self-contained page about a study.

No script and no external resource: styles are inline and the charts are SVG drawn by
:mod:`optspec.report.svg`, so the file opens offline, from a CI artifact, in any browser, and
makes no request to any address.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timezone
from html import escape
from typing import TYPE_CHECKING, Any

from optspec.report import charts
from optspec.report.failures import failures_by_reason
from optspec.report.results import show_report

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

MAX_SLICES = 16
MAX_FRONT_ROWS = 50

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;
background:#fafafa}
main{max-width:1040px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}h3{font-size:14px;margin:12px 0 4px;color:#444}
.meta{color:#555;margin:0 0 8px}
.states span{display:inline-block;margin:0 12px 4px 0;padding:2px 8px;border-radius:10px;
background:#eee}.states .FAIL{background:#fbd5d5}.states .COMPLETE{background:#d5f0dd}
.states .PRUNED{background:#e4e4f7}
table{border-collapse:collapse;margin:4px 0 8px;background:#fff}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid #ddd;padding:8px 12px;overflow:auto;font-size:12.5px}
td pre{border:0;padding:0;margin:0;white-space:pre-wrap;max-width:640px}
.chart{width:100%;max-width:760px;height:auto;background:#fff;border:1px solid #ddd;
display:block;margin:4px 0 12px}
.plot-area{fill:#fff}.grid{stroke:#eee}.axis{stroke:#888}
.tick{font-size:10.5px;fill:#555}.label{font-size:12px;fill:#222}
.grid-2{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:0 16px}
.note{color:#666;font-style:italic}nav a{margin-right:12px}
"""


def build_html(study: optuna.Study, path: str) -> str:
    """The whole page for ``study``, read from the file ``path`` (named in the header)."""
    from optuna.trial import TrialState

    from optspec import __version__

    report = show_report(study, path)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]
    names = [_objective_label(name) for name in report["objectives"]]
    several = len(study.directions) > 1
    sections: list[tuple[str, str, str]] = [
        ("best", "Best trials (Pareto front)" if several else "Best trial", _best(report, names)),
        ("history", "Optimization history", _history(study, complete, names)),
    ]
    if several:
        sections.append(("pareto", "Pareto front plot", _pareto(study, complete, names)))
    sections += [
        ("importance", "Parameter importances", _importances(study, complete, names)),
        ("parallel", "Parallel coordinates", _parallel(study, complete, names)),
        ("slices", "Slices", _slices(study, complete, names)),
        ("failures", "Failures", _failures(trials)),
        ("spec", "Spec", _spec(study, report)),
    ]
    nav = " ".join(f'<a href="#{key}">{escape(title)}</a>' for key, title, _ in sections)
    states = "".join(
        f'<span class="{escape(state)}">{count} {escape(state)}</span>'
        for state, count in sorted(report["states"].items())
    )
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    duration = report["duration_seconds"]
    span = (
        f"; trials ran from {escape(str(report['datetime_start']))} for {_duration(duration)}"
        if duration is not None
        else ""
    )
    body = [
        f"<h1>Study {escape(report['study'])}</h1>",
        f'<p class="meta">{escape(str(report["file"]))}: {report["n_trials"]} trials, '
        f"{escape(', '.join(report['directions']))}{span}. "
        f"Report by optspec {escape(__version__)}, {generated}.</p>",
        f'<p class="states" id="states">{states or "no trials"}</p>',
        f"<nav>{nav}</nav>",
    ]
    for key, title, content in sections:
        body.append(f'<section id="{key}"><h2>{escape(title)}</h2>{content}</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>optspec report: {escape(report['study'])}</title>"
        f"<style>{STYLE}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def _objective_label(name: str) -> str:
    return name.removeprefix("values_")


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return escape(str(value))


def _best(report: dict[str, Any], names: Sequence[str]) -> str:
    if "best_trial" in report:
        best = report["best_trial"]
        if best is None:
            return _note("No trial completed.")
        pairs = [("trial", f"#{best['number']}"), ("value", _number(best["values"][0]))]
        pairs += [(name, _number(value)) for name, value in best["params"].items()]
        pairs += [
            (f"user attr {name}", _number(value))
            for name, value in best["user_attrs"].items()
            if name != "fail_reason"
        ]
        if best.get("trial_dir"):  # [run] keep_trial_dirs kept it
            pairs.append(("trial directory", escape(best["trial_dir"])))
        table = "".join(f'<tr><th>{escape(k)}</th><td class="num">{v}</td></tr>' for k, v in pairs)
        return f'<table id="best-trial">{table}</table>'
    front = report["pareto_front"]
    if not front:
        return _note("No trial completed.")
    params = list(dict.fromkeys(name for t in front for name in t["params"]))
    head = "".join(f"<th>{escape(h)}</th>" for h in ["trial", *names, *params])
    rows: list[str] = []
    for t in front[:MAX_FRONT_ROWS]:
        cells = [f"#{t['number']}", *(_number(v) for v in t["values"])]
        cells += [_number(t["params"][p]) if p in t["params"] else "" for p in params]
        rows.append("<tr>" + "".join(f'<td class="num">{c}</td>' for c in cells) + "</tr>")
    more = (
        _note(f"{len(front) - MAX_FRONT_ROWS} more trials on the front are not listed.")
        if len(front) > MAX_FRONT_ROWS
        else ""
    )
    return (
        f"<p>{len(front)} trials on the Pareto front.</p>"
        f'<table id="pareto-front"><tr>{head}</tr>{"".join(rows)}</table>{more}'
    )


def _history(study: optuna.Study, complete: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    if not complete:
        return _note("No trial completed: nothing to draw.")
    parts = []
    for index, name in enumerate(names):
        if len(names) > 1:
            parts.append(f"<h3>{escape(name)}</h3>")
        parts.append(charts.history(study, complete, index, name))
    legend = (
        "Each dot is a complete trial; the red line is the best value so far."
        if len(names) == 1
        else "Each dot is a complete trial."
    )
    return _note(legend) + "".join(parts)


def _pareto(study: optuna.Study, complete: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    if not complete:
        return _note("No trial completed: nothing to draw.")
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))][:3]
    charts_ = "".join(charts.pareto(study, complete, i, j, names) for i, j in pairs)
    return _note("Red: trials on the Pareto front; grey: the other complete trials.") + charts_


def _importances(study: optuna.Study, complete: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    parts = []
    for index, name in enumerate(names):
        chart, why_not = charts.importances(study, complete, index, name)
        if len(names) > 1:
            parts.append(f"<h3>{escape(name)}</h3>")
        parts.append(chart if chart is not None else _note(f"Not shown: {why_not}."))
    return "".join(parts)


def _parallel(study: optuna.Study, complete: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    if not complete:
        return _note("No trial completed: nothing to draw.")
    chart = charts.parallel(study, complete, 0, names[0])
    if chart is None:
        return _note("The study has no parameters.")
    return _note(f"One line per complete trial, darker for a better {names[0]}.") + chart


def _slices(study: optuna.Study, complete: Sequence[FrozenTrial], names: Sequence[str]) -> str:
    if not complete:
        return _note("No trial completed: nothing to draw.")
    found = charts.slices(study, complete, 0, names[0])
    if not found:
        return _note("The study has no parameters.")
    shown = "".join(chart for _, chart in found[:MAX_SLICES])
    more = (
        _note(f"{len(found) - MAX_SLICES} more parameters are not drawn.")
        if len(found) > MAX_SLICES
        else ""
    )
    return f'<div class="grid-2">{shown}</div>{more}'


def _failures(trials: Sequence[FrozenTrial]) -> str:
    groups = failures_by_reason(trials)
    if not groups:
        return _note("No trial failed.")
    total = sum(group.count for group in groups)
    rows = "".join(
        f'<tr><td class="num">{group.count}</td><td><pre>{escape(group.reason)}</pre></td>'
        f'<td class="num">#{group.example}</td>'
        f"<td>{escape(_numbers(group.trials))}</td></tr>"
        for group in groups
    )
    return (
        f"<p>{total} failed trials, {len(groups)} distinct "
        f"{'reason' if len(groups) == 1 else 'reasons'}.</p>"
        '<table id="failure-table"><tr><th>trials</th><th>reason (of the example)</th>'
        f"<th>example</th><th>trial numbers</th></tr>{rows}</table>"
    )


def _numbers(numbers: Sequence[int], limit: int = 12) -> str:
    shown = ", ".join(f"#{n}" for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")


def _spec(study: optuna.Study, report: dict[str, Any]) -> str:
    from optspec.report.results import stored_overrides

    if report["spec"] is None:
        return _note("No spec stored: this study was not made by optspec.")
    overrides = stored_overrides(study)
    listed = (
        "<p>Command-line overrides: "
        + ", ".join(f"<code>{escape(item)}</code>" for item in overrides)
        + "</p>"
        if overrides
        else ""
    )
    return f'{listed}<pre id="spec-text">{escape(report["spec"])}</pre>'


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02.0f}s"
    return f"{secs:.1f}s"

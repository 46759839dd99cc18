"""``optspec report --format md``: a compact Markdown summary for CI job summaries.

Best trial (or the Pareto front), counts by state, failures by reason: what a reviewer wants
to see on a job's page without downloading anything. GitHub renders it in the step summary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optspec.report.failures import failures_by_reason
from optspec.report.results import objective_names, study_summary

if TYPE_CHECKING:
    import optuna

    from optspec.outcome import Outcome

MAX_ROWS = 10
MAX_REASON = 200


def markdown_summary(
    study: optuna.Study, outcome: Outcome | None = None, output: Path | None = None
) -> str:
    """The summary of ``study``; with the ``outcome`` of the run that just ended, how it ended;
    with the run's ``output`` directory, where the best trial's directory is, if kept."""
    summary = study_summary(study, output)
    names = [name.removeprefix("values_") for name in objective_names(study)]
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary["states"].items()))
    lines = [
        f"### optspec study `{summary['study']}`",
        "",
        f"**{summary['n_trials']} trials** ({states or 'none'}); "
        f"{', '.join(summary['directions'])}",
        "",
    ]
    if outcome is not None:
        ended = outcome.status + (f": {outcome.message}" if outcome.message else "")
        lines += [f"Run ended **{_cell(ended)}**", ""]
    if "best_trial" in summary:
        best = summary["best_trial"]
        if best is None:
            lines += ["No trial completed.", ""]
        else:
            lines += [
                f"**Best trial #{best['number']}**: {names[0]} = `{_number(best['values'][0])}`",
                "",
            ]
            if best.get("trial_dir"):
                lines += [f"Trial directory: `{_cell(best['trial_dir'])}`", ""]
            if best["params"]:
                lines += _table(
                    ["param", "value"],
                    [[name, f"`{_cell(value)}`"] for name, value in best["params"].items()],
                )
    else:
        front = summary["pareto_front"]
        lines += [f"**Pareto front**: {len(front)} trials", ""]
        params = list(dict.fromkeys(name for t in front for name in t["params"]))
        rows = [
            [
                f"#{t['number']}",
                *(f"`{_number(v)}`" for v in t["values"]),
                *(_cell(t["params"].get(p, "")) for p in params),
            ]
            for t in front[:MAX_ROWS]
        ]
        if rows:
            lines += _table(["trial", *names, *params], rows)
        if len(front) > MAX_ROWS:
            lines += [f"and {len(front) - MAX_ROWS} more on the front.", ""]
    groups = failures_by_reason(study.get_trials(deepcopy=False))
    if groups:
        total = sum(group.count for group in groups)
        lines += [f"**Failures**: {total} trials, {len(groups)} reasons", ""]
        lines += _table(
            ["trials", "reason", "example"],
            [[str(g.count), _reason(g.reason), f"#{g.example}"] for g in groups[:MAX_ROWS]],
        )
        if len(groups) > MAX_ROWS:
            lines += [f"and {len(groups) - MAX_ROWS} more reasons (`optspec show`).", ""]
    return "\n".join(lines).rstrip() + "\n"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def _cell(value: Any) -> str:
    return _number(value).replace("|", "\\|").replace("\n", " ")


def _reason(reason: str) -> str:
    first = reason.strip().splitlines()[0] if reason.strip() else reason
    if len(first) > MAX_REASON:
        first = first[: MAX_REASON - 1] + "…"
    return "`" + first.replace("`", "'").replace("|", "\\|") + "`"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]

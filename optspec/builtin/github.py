"""On GitHub Actions, the study's Markdown summary on the job's page.

When ``GITHUB_STEP_SUMMARY`` names a file (GitHub sets it for every step), ``run`` and ``resume``
append the summary ``optspec report --format md`` writes: best trial or Pareto front, counts by
state, failures by reason. Elsewhere it does nothing; ``-p no:github`` turns it off.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from optspec import hookimpl, markdown_summary

if TYPE_CHECKING:
    import optuna

    from optspec import Config, Outcome

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


@hookimpl
def on_finish(study: optuna.Study, config: Config, outcome: Outcome) -> None:
    path = os.environ.get(SUMMARY_ENV)
    if not path or config.role != "controller":
        return
    text = markdown_summary(study, outcome, config.output)
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text + "\n")
    except OSError as exc:
        # The job summary is a courtesy: the study and its files matter more than it.
        print(f"optspec: github: cannot append to {SUMMARY_ENV} ({path}): {exc}", file=sys.stderr)

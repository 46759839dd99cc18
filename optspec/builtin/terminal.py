"""Progress while a study runs and a summary when it ends.

On a terminal, one line redrawn in place: trials done of the total, failures, the best value,
trials per second and the time left. Elsewhere (CI logs, pipes), a plain line every few seconds.
Progress goes to stderr, the summary to stdout; ``-q`` silences both.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

import optspec
from optspec import failures_by_reason, hookimpl

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from optspec import Config, Outcome

REDRAW_INTERVAL = 0.1
LOG_INTERVAL = 5.0


class Progress:
    """Counts what ``on_trial_end`` reports and draws it."""

    def __init__(self, config: Config, stream: TextIO) -> None:
        self.total = config.trial_budget
        self.stream: TextIO | None = stream
        try:
            self.tty = stream.isatty()
        except (OSError, ValueError):  # closed
            self.tty = False
        self.config = config
        self.started = time.monotonic()
        self.last_drawn = 0.0
        self.done_before = 0
        self.done = 0
        self.failed = 0
        self.best: float | None = None
        self.minimize = True
        self.single = True

    def study_start(self, study: optuna.Study) -> None:
        from optuna.study import StudyDirection

        self.single = len(study.directions) == 1
        self.minimize = study.directions[0] == StudyDirection.MINIMIZE
        earlier = [trial for trial in study.get_trials(deepcopy=False) if trial.state.is_finished()]
        for trial in earlier:  # a resumed study's best so far
            self._consider(trial)
        self.done_before = len(earlier)
        self.started = time.monotonic()
        if self.config.journal:  # the first line says how the workers share the study
            workers = self.config.spec.run.worker_count
            self.write(f"optspec: {workers} workers, {self.config.journal} journal\n")

    def _consider(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        if trial.state != TrialState.COMPLETE or not self.single or trial.value is None:
            return
        feasible = all(value <= 0 for value in trial.constraints.values())
        if feasible and (self.best is None or (trial.value < self.best) == self.minimize):
            self.best = trial.value

    def trial_end(self, trial: FrozenTrial) -> None:
        from optuna.trial import TrialState

        self.done += 1
        if trial.state == TrialState.FAIL:
            self.failed += 1
        self._consider(trial)
        now = time.monotonic()
        interval = REDRAW_INTERVAL if self.tty else LOG_INTERVAL
        if now - self.last_drawn >= interval or self.done_before + self.done >= self.total:
            self.last_drawn = now
            self.draw(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        done = self.done_before + self.done
        left = self.total - done
        eta = f"{left / rate:.0f}s left" if rate > 0 and left > 0 else ""
        parts = [f"{done}/{self.total} trials"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.best is not None:
            parts.append(f"best {self.best:.6g}")
        parts.append(f"{rate:.1f} trials/s")
        if eta:
            parts.append(eta)
        return " | ".join(parts)

    def draw(self, now: float) -> None:
        if self.tty:
            width = 24
            filled = (
                width
                if self.total == 0
                else min(width, width * (self.done_before + self.done) // self.total)
            )
            bar = "#" * filled + "-" * (width - filled)
            self.write(f"\r[{bar}] {self.line(now)}\x1b[K")
        else:
            self.write(f"optspec: {self.line(now)}\n")

    def close(self) -> None:
        if self.tty and self.done:
            self.write("\n")

    def write(self, text: str) -> None:
        """Best effort: a closed terminal or pipe (``| head``) ends the progress, not the study."""
        if self.stream is None:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.stream = None


# The run's progress. A module is one plugin object for every run in the process, so the state
# is per context: each run sets it in configure, and runs in other threads (the API) each see
# their own.
_progress: ContextVar[Progress | None] = ContextVar("optspec_terminal_progress", default=None)


@hookimpl
def configure(config: Config) -> None:
    show = config.role == "controller" and not config.quiet
    # sys.stderr is None when the process started with descriptor 2 closed.
    show = show and sys.stderr is not None
    _progress.set(Progress(config, sys.stderr) if show else None)


@hookimpl
def on_study_start(study: optuna.Study) -> None:
    if (progress := _progress.get()) is not None:
        progress.study_start(study)


@hookimpl
def on_trial_end(trial: FrozenTrial) -> None:
    if (progress := _progress.get()) is not None:
        progress.trial_end(trial)


# A wrapper registered after the sqlite plugin's wrapper, so it runs outside it: the summary is
# printed once study.db is written, and says whether it was (from the outcome's artifacts).
@hookimpl(wrapper=True, tryfirst=True)
def on_finish(study: optuna.Study, config: Config, outcome: Outcome) -> Generator[None, Any, Any]:
    progress = _progress.get()
    _progress.set(None)
    if progress is not None:
        progress.close()
    try:
        return (yield)
    finally:
        if progress is not None:
            elapsed = time.monotonic() - progress.started
            saved = outcome.artifact("study.db")
            print_best_effort(
                summary_text(study, config, outcome, elapsed, saved=saved is not None)
            )


def print_best_effort(text: str, file: TextIO | None = None) -> None:
    """Print, unless the stream is gone (a closed pipe): the study matters more than its log."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=file or sys.stdout, flush=True)


def summary_text(
    study: optuna.Study, config: Config, outcome: Outcome, elapsed: float, *, saved: bool = True
) -> str:
    summary = optspec.study_summary(study, config.output)
    states = ", ".join(f"{count} {state}" for state, count in sorted(summary["states"].items()))
    lines = [
        f"{summary['study']}: {summary['n_trials']} trials ({states or 'none'}) "
        f"in {elapsed:.1f}s; {outcome.status}" + (f": {outcome.message}" if outcome.message else "")
    ]
    if summary.get("queued"):
        queued = summary["queued"]
        lines.append(f"{queued} trials queued, not run: a resume of study.db runs them")
    if "best_trial" in summary:
        best = summary["best_trial"]
        if best is None:
            lines.append("no trial completed")
        else:
            lines.append(f"best trial #{best['number']}: value {_number(best['values'][0])}")
            lines += [f"  {name} = {value!r}" for name, value in best["params"].items()]
            if best.get("trial_dir"):
                lines.append(f"trial directory: {best['trial_dir']}")
    else:
        front = summary["pareto_front"]
        lines.append(f"Pareto front: {len(front)} trials")
        lines += _table(
            ["trial", *summary["directions"], "params"],
            [
                [f"#{t['number']}", *(_number(v) for v in t["values"]), _params(t["params"])]
                for t in front
            ],
        )
    lines += failures_text(study)
    if saved:
        lines.append(f"saved: {config.study_db}")
    return "\n".join(lines)


SHOWN_REASONS = 3
REASON_WIDTH = 160


def failures_text(study: optuna.Study) -> list[str]:
    """How many trials failed and the most frequent reasons, each with an example trial."""
    groups = failures_by_reason(study.get_trials(deepcopy=False))
    if not groups:
        return []
    total = sum(group.count for group in groups)
    lines = [
        f"failed: {total} trials, {len(groups)} distinct reasons"
        if len(groups) > 1
        else f"failed: {total} trials"
    ]
    for group in groups[:SHOWN_REASONS]:
        first = group.reason.strip().splitlines()[0] if group.reason.strip() else group.reason
        place = first.rfind(" (at ")
        head, tail = (first[:place], first[place:]) if place > 0 else (first, "")
        if len(head) > REASON_WIDTH:  # a long message is cut; where it was raised is kept
            head = head[: REASON_WIDTH - 1] + "…"
        first = head + tail
        lines.append(f"  {group.count} x {first} (e.g. trial #{group.example})")
    if len(groups) > SHOWN_REASONS:
        lines.append(f"  ... {len(groups) - SHOWN_REASONS} more reasons: `optspec show` lists all")
    return lines


def _number(value: float | str) -> str:
    return (
        value if isinstance(value, str) else f"{value:.6g}" if math.isfinite(value) else str(value)
    )


def _params(params: dict[str, object]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]

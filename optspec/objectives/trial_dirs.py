"""``<output>/trials/<number>/``: a directory per trial, and which of them remain.

A directory is made only for an objective that asks for one: a command (its logs and results
file live there) or a callable naming ``trial_dir``. ``[run] keep_trial_dirs`` decides what is
left of it, in two places:

- in the worker, as the trial ends (:meth:`TrialDirs.release`): whatever the trial's own outcome
  settles (``"none"`` removes every directory, ``"best"`` a failed or pruned trial's, ``"failed"``
  a finished trial's that holds nothing but optspec's own files);
- in the controller, which sees every finished trial once (:class:`BestTrialDirs`): only it knows
  whether a completed trial is the best so far, and it removes what a dead worker left behind.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from optspec.spec.model import Spec

TRIALS_DIR = "trials"
RESULTS_FILE = "results.jsonl"
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
OWN_FILES = frozenset({RESULTS_FILE, STDOUT_FILE, STDERR_FILE})
"""What optspec itself writes into a trial directory (for command objectives)."""

Ending = Literal["complete", "pruned", "failed"]


def trial_dir_path(output: Path, number: int) -> Path:
    return output / TRIALS_DIR / str(number)


class TrialDirs:
    """Makes trial directories under ``output`` and tidies them as their trials end."""

    def __init__(self, output: Path | None, keep: str = "failed") -> None:
        self.output = output
        self.keep = keep

    def make(self, number: int) -> Path:
        if self.output is None:
            # No run directory (the API, or a test calling an objective): a temporary one.
            self.output = Path(tempfile.mkdtemp(prefix="optspec-trials-"))
        path = trial_dir_path(self.output, number)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def release(self, path: Path, ending: Ending) -> None:
        """The trial of ``path`` ended so: remove the directory if the policy says so now."""
        if self.keep == "all" or not path.is_dir():
            return
        if self.keep == "none" or (self.keep == "best" and ending != "complete"):
            shutil.rmtree(path, ignore_errors=True)
        elif self.keep == "failed":
            entries = list(path.iterdir())
            # A failed trial's logs are what the user reads next; a finished trial's directory
            # stays only for files the objective wrote there itself.
            if (ending == "failed" and entries) or any(e.name not in OWN_FILES for e in entries):
                return
            shutil.rmtree(path, ignore_errors=True)


class BestTrialDirs:
    """The controller's half of ``keep_trial_dirs``: ``"best"`` and ``"none"``.

    :meth:`finished` is called once per finished trial and costs O(1) with one objective and
    O(size of the Pareto front) with several: the best trials are kept as they come, never
    looked up in the study. Ties go to the earlier trial, as Optuna's ``best_trial`` does;
    with ``[[constraints]]`` only feasible trials can be best, as in Optuna.
    """

    def __init__(self, spec: Spec, output: Path) -> None:
        self.keep = spec.run.keep_trial_dirs
        self.output = output
        self.signs = [1.0 if d == "minimize" else -1.0 for d in spec.study.directions]
        self.constraints = spec.constraints
        self.best: list[tuple[int, list[float]]] = []  # (number, values made "smaller is better")

    @property
    def active(self) -> bool:
        return self.keep in ("best", "none")

    def start(self, trials: Sequence[FrozenTrial]) -> None:
        """Learn the best of the trials a resumed study already holds (once, at the start);
        their directories are left as an earlier run left them."""
        if self.keep != "best":
            return
        for trial in sorted(trials, key=lambda t: t.number):
            self._consider(trial, remove=False)

    def finished(self, trial: FrozenTrial) -> None:
        if self.keep == "none":
            self._remove(trial.number)
        elif self.keep == "best":
            self._consider(trial, remove=True)

    def is_best(self, number: int) -> bool:
        return any(best == number for best, _ in self.best)

    def _consider(self, trial: FrozenTrial, *, remove: bool) -> None:
        values = self._candidate_values(trial)
        if values is None:
            if remove:
                self._remove(trial.number)
            return
        candidate = (trial.number, values)
        if len(self.signs) == 1:
            if not self.best or _better(candidate, self.best[0]):
                if remove and self.best:
                    self._remove(self.best[0][0])
                self.best = [candidate]
            elif remove:
                self._remove(trial.number)
            return
        if any(_dominates(member[1], values) for member in self.best):
            if remove:
                self._remove(trial.number)
            return
        kept = []
        for member in self.best:
            if _dominates(values, member[1]):
                if remove:
                    self._remove(member[0])
            else:
                kept.append(member)
        self.best = [*kept, candidate]

    def _candidate_values(self, trial: FrozenTrial) -> list[float] | None:
        """The trial's values with every direction turned into "smaller is better", or None
        when it cannot be best (not complete, or infeasible)."""
        if trial.state.name != "COMPLETE" or trial.values is None:
            return None
        if not self._feasible(trial.user_attrs):
            return None
        return [sign * value for sign, value in zip(self.signs, trial.values, strict=True)]

    def _feasible(self, metrics: dict[str, Any]) -> bool:
        for constraint in self.constraints:
            value = metrics.get(constraint.metric)
            if not isinstance(value, int | float) or math.isnan(value):
                return False
            if constraint.violation(float(value)) > 0:
                return False
        return True

    def _remove(self, number: int) -> None:
        shutil.rmtree(trial_dir_path(self.output, number), ignore_errors=True)

    def close(self) -> None:
        """At the end of the run: an empty ``trials/`` is no use to anyone."""
        if self.active:
            with contextlib.suppress(OSError):  # absent, or holds what must stay
                (self.output / TRIALS_DIR).rmdir()


def _better(a: tuple[int, list[float]], b: tuple[int, list[float]]) -> bool:
    return a[1][0] < b[1][0] or (a[1][0] == b[1][0] and a[0] < b[0])


def _dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )

"""How a run ended: what ``on_finish`` receives and what sets the exit code."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from attrs import frozen

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

Status = Literal["done", "failed", "interrupted"]

EXIT_CODES: dict[str, int] = {"done": 0, "failed": 1, "interrupted": 130}


@frozen
class Outcome:
    """``status`` is ``"done"`` (budget or timeout reached), ``"failed"`` (``max_failed`` reached,
    a plugin raised, study.db could not be written) or ``"interrupted"`` (SIGINT or SIGTERM)."""

    status: Status
    message: str = ""

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]


@frozen
class RunResult:
    """What a run leaves: how it ended and, for convenience, a snapshot of its trials."""

    outcome: Outcome
    study_name: str
    output: Path
    study_db: Path
    trials: list[FrozenTrial]

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

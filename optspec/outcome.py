"""How a run ended, and what it left behind: what ``on_finish`` receives and a run returns.

The exit code each outcome gives ``optspec`` is decided in :mod:`optspec.cli` alone
(``exit_code_for``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from attrs import field, frozen

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

Status = Literal["done", "failed", "interrupted"]


@frozen
class Artifact:
    """A file a plugin wrote for the run: ``kind`` names what it is (``"study.db"``,
    ``"results.json"``, ``"study.journal"``), ``plugin`` who wrote it."""

    kind: str
    path: Path
    plugin: str


@frozen
class Outcome:
    """``status`` is ``"done"`` (budget or timeout reached), ``"failed"`` (``max_failed`` reached,
    a plugin raised, study.db could not be written) or ``"interrupted"`` (SIGINT or SIGTERM).

    ``artifacts`` is the channel through which ``on_finish`` implementations tell each other (and
    the caller of the run) what they wrote: the sqlite plugin records study.db there once it is
    written, so the terminal summary and API users know it was, and where.
    """

    status: Status
    message: str = ""
    artifacts: list[Artifact] = field(factory=list, eq=False, repr=False)

    def record_artifact(self, kind: str, path: Path, *, plugin: str) -> None:
        """Note that ``plugin`` wrote ``path`` (a ``kind`` such as ``"study.db"``)."""
        self.artifacts.append(Artifact(kind, Path(path), plugin))

    def artifact(self, kind: str) -> Artifact | None:
        """The last file of that kind written for the run, if any."""
        return next((a for a in reversed(self.artifacts) if a.kind == kind), None)


@frozen
class RunResult:
    """What a run leaves: how it ended and, for convenience, a snapshot of its trials."""

    outcome: Outcome
    study_name: str
    output: Path
    study_db: Path
    trials: list[FrozenTrial]

"""How a run ended: what ``on_finish`` receives and what sets the exit code."""

from __future__ import annotations

from typing import Literal

from attrs import frozen

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

"""Exceptions that reach the user as one clear message and an exit code."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class OptspecError(Exception):
    """Base of every error optspec reports without a traceback (``optspec.cli`` maps each kind
    to its exit code)."""


class UsageError(OptspecError):
    """A bad argument, a missing file, a plugin that cannot be loaded: nothing ran."""


class SpecError(UsageError):
    """One or more problems in a spec, each naming its TOML path.

    Plugins raise it from ``configure`` for bad values in their ``[plugin.NAME]`` table::

        raise SpecError("plugin.jsonl-log.path: must be a string")

    ``problems`` are lines of the form ``"toml.path: what is wrong and what would be valid"``;
    ``file`` is prefixed to each when the error is shown.
    """

    def __init__(self, problems: str | Iterable[str], file: str | Path | None = None) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        self.file = str(file) if file is not None else None
        super().__init__(str(self))

    def with_file(self, file: str | Path) -> SpecError:
        return SpecError(self.problems, file=self.file or file)

    def __str__(self) -> str:
        prefix = f"{self.file}: " if self.file else ""
        return "\n".join(prefix + problem for problem in self.problems)


class StudyFailed(OptspecError):
    """The study stopped early: ``max_failed`` reached or a plugin raised."""

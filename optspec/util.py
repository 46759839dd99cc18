"""Small helpers more than one subpackage needs, so each is written once.

Imports nothing from optspec: any module may use it without risking an import cycle.
"""

from __future__ import annotations

import difflib
import numbers
import os
import sys
from collections.abc import Iterable
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["closest", "did_you_mean", "is_int", "is_number", "tomllib"]


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate nearest ``word``, if one is near enough to be what was meant."""
    close = difflib.get_close_matches(word, list(candidates), n=1)
    return close[0] if close else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"did you mean 'name'? "`` for the candidate nearest ``word``, or ``""`` if none is near.

    Ends with a space so that a message reads ``f"unknown key; {did_you_mean(...)}valid: ..."``.
    """
    close = closest(word, candidates)
    return f"did you mean {close!r}? " if close is not None else ""


def is_number(value: Any) -> bool:
    """A real number, bools excluded (a bool is a number only by accident of Python).

    numbers.Real also admits numpy scalars, which objectives return.
    """
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    """An integer, bools excluded."""
    return isinstance(value, int) and not isinstance(value, bool)


def flush_or_silence(stream: object) -> None:
    """Flush ``stream``; when its reader is gone (``optspec run ... 2>&1 | head -1``), point its
    descriptor at /dev/null, so that later flushes, the interpreter's at exit and the one
    multiprocessing makes before it starts a process, neither fail nor stop the study."""
    try:
        stream.flush()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        try:
            fd = stream.fileno()  # type: ignore[attr-defined]
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

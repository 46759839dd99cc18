"""The built-in objective kinds, one module each: :mod:`.python` and :mod:`.command`.

Both factories run in the controller, to report a bad ``[objective]`` table before anything
starts, and again in every worker. So they only resolve and check (import the module, read the
signature, find the executable) and leave all per-trial work to the callable they return,
``objective(trial, params)``. What that callable returns goes through
:func:`optspec.objectives.results.record_result`, the same for every kind.

optuna is imported inside functions only: listing plugins must stay cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

Objective = Callable[["optuna.Trial", dict[str, Any]], Any]
"""What an objective factory returns: called once per trial as ``objective(trial, params)``."""

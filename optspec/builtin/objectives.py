"""The built-in objective kinds as a plugin: ``python`` and ``command``.

Their code lives in :mod:`optspec.objectives`; this module only registers them, like any
third-party plugin registering its own kinds.
"""

from __future__ import annotations

from collections.abc import Callable

from optspec import hookimpl
from optspec.objectives import Objective
from optspec.objectives.command import command_objective
from optspec.objectives.python import python_objective


@hookimpl
def register_objectives() -> dict[str, Callable[..., Objective]]:
    return {"python": python_objective, "command": command_objective}

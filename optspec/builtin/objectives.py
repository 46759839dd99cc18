"""The built-in objective kinds as a plugin: ``python`` and ``command``.

Their code lives in :mod:`optspec.objectives`; this module only registers them, like any
third-party plugin registering its own kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optspec
from optspec import hookimpl


@hookimpl
def register_objectives() -> dict[str, Callable[..., Any]]:
    return {"python": optspec.python_objective, "command": optspec.command_objective}

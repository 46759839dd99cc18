"""Durations as a spec and the command line write them: ``90``, ``"90s"``, ``"10m"``, ``"off"``."""

from __future__ import annotations

import math
import re
from typing import Any

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_OFF = ("off", "none")
DURATION_HINT = 'expected a duration like "90s", "10m", "2h", a number of seconds, or "off"'


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"``; None for ``"off"``.

    Raises ValueError with what would be valid; used for the CLI's ``--timeout`` too.
    """
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().lower() in _OFF:
        return None
    elif isinstance(value, str) and (match := _DURATION.match(value.lower())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError(DURATION_HINT)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError("must be more than 0 seconds; " + DURATION_HINT)
    return seconds

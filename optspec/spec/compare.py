"""Which keys two spec texts set differently: what a worker with an edited copy is told."""

from __future__ import annotations

from typing import Any

from optspec.util import tomllib


def differing_keys(text: str, other: str) -> list[str]:
    """Dotted TOML paths whose values differ (or that only one text sets), in order.

    Formatting and comments do not count: both texts are compared as parsed TOML.
    """
    return sorted(_differences(tomllib.loads(text), tomllib.loads(other), ""))


def _differences(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in a.keys() | b.keys():
            child = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                found.append(child)
            else:
                found.extend(_differences(a[key], b[key], child))
        return found
    return [] if a == b else [path or "(the whole spec)"]

"""Device slots as a spec (``[run] devices``) and the command line (``--devices``) write them."""

from __future__ import annotations

from typing import Any

from optspec.spec.tables.checker import describe
from optspec.util import is_int, tomllib


def parse_device_entry(item: Any) -> tuple[str, str | None]:
    """A ``devices`` entry as the string workers get, or a problem saying what would be valid."""
    if is_int(item) and item >= 0:
        return str(item), None
    if not isinstance(item, str) or not item:
        return "", ('must be a device like "0", or several like "0,1", got ' + describe(item))
    if any(char.isspace() for char in item) or "" in item.split(","):
        return "", (
            f'{item!r} is not a comma-separated list of devices; write "0,1" without spaces '
            "or empty items"
        )
    return item, None


def parse_device_list(text: str) -> list[str]:
    """``--devices``: ``"0,1"`` is a slot per device, a TOML array (``'["0,1", "2,3"]'``) a slot
    per entry. Raises ValueError saying what would be valid."""
    if text.lstrip().startswith("["):
        try:
            items = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ValueError(f'{text!r} is not a TOML array like \'["0,1", "2,3"]\'') from None
    else:
        items = [item.strip() for item in text.split(",")]
    entries = []
    for item in items:
        entry, problem = parse_device_entry(item)
        if problem:
            raise ValueError(problem)
        entries.append(entry)
    if not entries:
        raise ValueError('expected at least one device, like "0,1"')
    return entries


def devices_problem(workers: int, devices: tuple[str, ...], where: str) -> str:
    """Why ``workers`` workers cannot share ``devices``: each worker holds one entry."""
    return (
        f"{workers} workers but {where} has {len(devices)} entries; each worker holds one "
        'entry for its whole life (an entry may name several devices, "0,1"): give at most '
        f"{len(devices)} workers, or more entries"
    )

"""``[plugins]`` (load, block) and the free-form ``[plugin.NAME]`` tables plugins check."""

from __future__ import annotations

from typing import Any

from optspec.spec.model import PluginsSection
from optspec.spec.tables.checker import Checker, join

PLUGINS_KEYS = ("load", "block")


def check_plugins(c: Checker, value: Any) -> PluginsSection:
    table = c.table(value, "plugins", PLUGINS_KEYS)
    return PluginsSection(
        load=c.string_list(table, "load", "plugins"),
        block=c.string_list(table, "block", "plugins"),
    )


def check_plugin_tables(c: Checker, value: Any) -> dict[str, dict[str, Any]]:
    """Only their shape: each plugin validates its own table in ``configure``."""
    table = c.table(value, "plugin", None)
    for name, item in table.items():
        c.table(item, join("plugin", name), None)
    return {name: item for name, item in table.items() if isinstance(item, dict)}

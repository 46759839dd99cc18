"""The plugin manager: which plugins a run has, in which order, and what they registered.

A fresh manager is built for every run and in every worker (never one global manager built at
import time, which would leak plugins between runs and tests). Plugins are loaded in this order:

1. the built-ins, ``optspec.builtin.<name>`` for each name in :data:`BUILTIN_PLUGINS`;
2. entry points in the group ``optspec`` (skipped when ``OPTSPEC_DISABLE_PLUGIN_AUTOLOAD`` is set);
3. ``-p NAME`` on the command line, then ``[plugins] load`` in the spec: modules imported by name;
4. ``optspec_plugins.py`` next to the spec, if there is one;
5. plugin objects handed to :func:`optspec.run_study` (tests, the API).

``-p no:NAME`` and ``[plugins] block`` block a plugin by its name in any of these groups. pluggy
calls implementations last-registered first, so a later group can override an earlier one.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import pluggy
from attrs import frozen

from optspec.errors import UsageError
from optspec.plugins import hookspecs
from optspec.spec.model import Spec

BUILTIN_PLUGINS = ("samplers", "pruners", "objectives", "sqlite", "terminal", "github")
ENTRY_POINT_GROUP = "optspec"
DISABLE_AUTOLOAD_ENV = "OPTSPEC_DISABLE_PLUGIN_AUTOLOAD"
LOCAL_PLUGIN_FILE = "optspec_plugins.py"
REGISTRIES = ("samplers", "pruners", "objectives")

Source = Literal["builtin", "entry point", "-p", "spec", "local file", "object"]


@frozen
class PluginInfo:
    """Where a registered plugin came from, for messages and ``optspec plugins``."""

    name: str
    source: Source
    module: str
    distribution: str | None = None
    version: str | None = None

    @property
    def origin(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return self.source


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with the optspec hooks, provenance of every plugin, and registries."""

    def __init__(self) -> None:
        super().__init__("optspec")
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self._registries: dict[str, dict[str, Any]] = {}

    def register_plugin(self, plugin: object, info: PluginInfo) -> None:
        # Blocked, or already loaded under another name (``-p`` naming an entry point's module).
        if self.is_blocked(info.name) or self.is_registered(plugin):
            return
        try:
            self.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise UsageError(f"plugin {info.name!r} ({info.origin}): {exc}") from None
        self.infos[info.name] = info

    def check_pending(self) -> None:
        """Implementations of hooks that do not exist (a typo in a hook name) are usage errors."""
        try:
            super().check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.get_name(exc.plugin) or "?"
            info = self.infos.get(name)
            where = f" ({info.origin})" if info else ""
            raise UsageError(
                f"plugin {name!r}{where}: {exc.args[0]}; the hooks are listed in "
                "optspec.plugins.hookspecs and by `optspec plugins`"
            ) from None

    def registry(self, kind: str) -> dict[str, Any]:
        """Factories plugins registered through ``register_<kind>``, by name (cached)."""
        if kind not in self._registries:
            self._registries[kind] = self._collect(kind)
        return self._registries[kind]

    def _collect(self, kind: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        duplicated = False
        for result in getattr(self.hook, f"register_{kind}")():
            duplicated = duplicated or not merged.keys().isdisjoint(result)
            merged.update(result)
        if duplicated:
            # Rare path: find out which plugins clash, to name both.
            seen: dict[str, str] = {}
            for plugin, name in self.registrations(kind):
                if name in seen:
                    raise UsageError(
                        f"{kind[:-1]} {name!r} is registered by two plugins: "
                        f"{self._describe(seen[name])} and {self._describe(plugin)}; "
                        "block one of them with -p no:NAME"
                    )
                seen[name] = plugin
        return merged

    def registrations(self, kind: str) -> list[tuple[str, str]]:
        """(plugin, name) for every name registered through ``register_<kind>``, in call order.

        Calls each implementation on its own, outside hook monitoring: for messages and
        ``optspec plugins`` only.
        """
        pairs = []
        for impl in reversed(getattr(self.hook, f"register_{kind}").get_hookimpls()):
            pairs += [(impl.plugin_name, name) for name in impl.function() or {}]
        return pairs

    def _describe(self, name: str) -> str:
        info = self.infos.get(name)
        return f"{name!r} ({info.origin})" if info else repr(name)

    def hooks_of(self, name: str) -> list[str]:
        plugin = self.get_plugin(name)
        return sorted(caller.name for caller in self.get_hookcallers(plugin) or ())


def split_plugin_args(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """``-p NAME`` values into (names to load, names to block)."""
    load, block = [], []
    for arg in args:
        if arg.startswith("no:"):
            block.append(arg[3:])
        else:
            load.append(arg)
    return load, block


def build_plugin_manager(
    spec: Spec | None = None,
    plugin_args: Sequence[str] = (),
    objects: Sequence[object] = (),
) -> PluginManager:
    """A new manager with every plugin of a run registered, in the documented order."""
    load, block = split_plugin_args(plugin_args)
    if spec is not None:
        load += [name for name in spec.plugins.load if name not in load]
        block += list(spec.plugins.block)
    pm = PluginManager()
    for name in block:
        pm.set_blocked(name)
    for name in BUILTIN_PLUGINS:
        module = importlib.import_module(f"optspec.builtin.{name}")
        pm.register_plugin(module, PluginInfo(name, "builtin", module.__name__))
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        _load_entry_points(pm)
    for name in load:
        source: Source = "spec" if spec is not None and name in spec.plugins.load else "-p"
        _load_module(pm, name, source)
    if spec is not None and spec.path is not None:
        _load_local_file(pm, spec.path.parent / LOCAL_PLUGIN_FILE)
    for index, plugin in enumerate(objects):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{index}"
        pm.register_plugin(plugin, PluginInfo(name, "object", type(plugin).__module__))
    pm.check_pending()
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.is_blocked(entry_point.name) or pm.has_plugin(entry_point.name):
            continue
        dist = entry_point.dist
        info = PluginInfo(
            entry_point.name,
            "entry point",
            entry_point.module,
            dist.name if dist else None,
            dist.version if dist else None,
        )
        try:
            plugin = entry_point.load()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
            raise _import_failure(info, exc) from None
        pm.register_plugin(plugin, info)


def _load_module(pm: PluginManager, name: str, source: Source) -> None:
    if pm.is_blocked(name) or pm.has_plugin(name):
        return
    distribution, version = _distribution_of(name)
    info = PluginInfo(name, source, name, distribution, version)
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
        raise _import_failure(info, exc) from None
    pm.register_plugin(module, info)


def _load_local_file(pm: PluginManager, path: Path) -> None:
    name = "optspec_plugins"
    if not path.is_file() or pm.is_blocked(name):
        return
    info = PluginInfo(name, "local file", str(path))
    # The same module name in every process, and in sys.modules, so that objects defined in the
    # file pickle between controller and workers.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"optspec_plugins_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported
            del sys.modules[module_name]
            raise _import_failure(info, exc) from None
    pm.register_plugin(module, info)


def _import_failure(info: PluginInfo, exc: BaseException) -> UsageError:
    where = (
        f"distribution {info.origin}" if info.distribution else f"from {info.source} {info.module}"
    )
    return UsageError(f"plugin {info.name!r} ({where}) failed to load: {type(exc).__name__}: {exc}")


def _distribution_of(module: str) -> tuple[str | None, str | None]:
    top = module.partition(".")[0]
    names = importlib.metadata.packages_distributions().get(top)
    if not names:
        return None, None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return names[0], None


def describe_plugins(plugin_args: Sequence[str] = ()) -> str:
    """The text of ``optspec plugins``."""
    pm = build_plugin_manager(plugin_args=plugin_args)
    lines = ["plugins (in load order):"]
    for name, info in pm.infos.items():
        hooks = ", ".join(pm.hooks_of(name)) or "no hooks"
        lines.append(f"  {name:<16} {info.origin:<24} {hooks}")
    for kind in REGISTRIES:
        lines.append(f"{kind}:")
        pm.registry(kind)  # raises on a name registered twice
        for plugin, name in pm.registrations(kind):
            lines.append(f"  {name:<20} from {plugin}")
    return "\n".join(lines)

"""The end of a run, and its checkpoints: ``on_finish`` and ``on_checkpoint``.

on_finish
    Every implementation gets its turn, even after one raised, and a signal arriving meanwhile
    cannot cut the writing of study.db short. pluggy stops a hook call at the first
    implementation that raises, so the plain implementations are not called by pluggy in one go:
    a guard, registered for the duration, stands in for all of them inside the wrappers, and calls
    each plugin's own implementation through ``pm.subset_hook_caller`` with its error kept for
    later. The wrappers (the sqlite plugin's, which writes study.db in its ``finally``) thus still
    wrap every plain implementation, as pluggy documents, and see the guard return normally.

on_checkpoint
    Fired every ``[run] checkpoint`` seconds while the workers run; the sqlite plugin writes
    study.db then. A failed checkpoint is reported and the run goes on: the final write counts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from optspec.errors import OptspecError
from optspec.outcome import Outcome
from optspec.plugins.hookspecs import hookimpl
from optspec.run.signals import signals_handled

if TYPE_CHECKING:
    import optuna

    from optspec.config import Config
    from optspec.plugins.manager import PluginManager

_GUARD_NAME = "optspec-finish-guard"


class _EveryImplementation:
    """Stands in for the plain on_finish implementations inside the wrappers (see the module)."""

    def __init__(self, pm: PluginManager, plugins: list[object], wrappers: list[object]) -> None:
        self.pm = pm
        self.plugins = plugins
        # Around the whole call already: left in each plugin's own caller, a wrapper (study.db)
        # would run again for every plain implementation.
        self.wrappers = wrappers
        self.errors: list[tuple[str, BaseException]] = []

    @hookimpl
    def on_finish(self, study: optuna.Study, config: Config, outcome: Outcome) -> None:
        for plugin in self.plugins:
            others = [other for other in self.plugins if other is not plugin]
            own = self.pm.subset_hook_caller(
                "on_finish", remove_plugins=[*others, *self.wrappers, self]
            )
            try:
                own(study=study, config=config, outcome=outcome)
            except Exception as exc:  # noqa: BLE001 - reported once every implementation ran
                self.errors.append((self.pm.get_name(plugin) or "?", exc))


def finish(config: Config, pm: PluginManager, study: optuna.Study, outcome: Outcome) -> Outcome:
    """Fire on_finish; returns the outcome as it stands afterwards (an error in on_finish fails
    the run, a signal while finishing interrupts it). What plugins recorded in the outcome's
    artifacts (study.db written, by whom, where) is kept."""
    hook = pm.hook.on_finish
    # Call order is the reverse of get_hookimpls(); kept, so tryfirst/trylast still hold.
    plain = [
        impl.plugin
        for impl in reversed(hook.get_hookimpls())
        if not (impl.wrapper or impl.hookwrapper)
    ]
    # pluggy's subset callers keep plugins in a set: a plugin object that cannot be hashed (an
    # attrs class with eq=True, say) cannot be left out of one. Then pluggy calls on_finish as
    # usual: a raising plain implementation may skip the ones after it, but the wrappers' finally
    # (study.db) still runs.
    wrappers = [impl.plugin for impl in hook.get_hookimpls() if impl.wrapper or impl.hookwrapper]
    guarded = all(_hashable(plugin) for plugin in [*plain, *wrappers])
    guard = _EveryImplementation(pm, plain, wrappers)
    if guarded:
        pm.register(guard, name=_GUARD_NAME)
    errors = guard.errors
    received: list[str] = []
    try:
        with signals_handled(lambda name: received.append(name)):
            try:
                caller = pm.subset_hook_caller("on_finish", plain) if guarded else hook
                caller(study=study, config=config, outcome=outcome)
            except Exception as exc:  # noqa: BLE001 - a wrapper (study.db itself) failed
                errors.append(("", exc))
    finally:
        if guarded:
            pm.unregister(guard)
    if received and outcome.status == "done":
        outcome = attrs.evolve(
            outcome, status="interrupted", message=f"interrupted by {received[0]} while finishing"
        )
    if not errors:
        if outcome.artifact("study.db") is None:
            # The sqlite plugin blocked (-p no:sqlite) and nothing else saves the study.
            print(f"optspec: no plugin wrote {config.study_db}", file=sys.stderr)
        return outcome
    plugin, error = errors[0]
    if isinstance(error, OptspecError):
        return attrs.evolve(outcome, status="failed", message=str(error))
    where = f"plugin {plugin!r} " if plugin else ""
    return attrs.evolve(
        outcome,
        status="failed",
        message=f"{where}raised in on_finish: {type(error).__name__}: {error}",
    )


def _hashable(plugin: object) -> bool:
    try:
        hash(plugin)
    except TypeError:
        return False
    return True


def checkpointer(
    config: Config, pm: PluginManager, study: optuna.Study
) -> Callable[[], None] | None:
    """``[run] checkpoint``: a function the controller calls on every tick of its loop, which
    fires ``on_checkpoint`` once the interval has passed. None when checkpoints are off."""
    interval = config.spec.run.checkpoint
    if interval is None or not pm.hook.on_checkpoint.get_hookimpls():
        return None
    next_at = time.monotonic() + interval

    def checkpoint() -> None:
        nonlocal next_at
        if time.monotonic() < next_at:
            return
        try:
            pm.hook.on_checkpoint(study=study, config=config)
        except OptspecError as exc:
            print(f"optspec: checkpoint failed: {exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug; the final write still counts
            print(f"optspec: checkpoint failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        next_at = time.monotonic() + interval

    return checkpoint

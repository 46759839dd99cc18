"""What the controller and every worker do alike before the first trial.

Both put the spec's directory on sys.path, build a plugin manager from the same list, fire
``configure`` and build sampler, pruner and objective through the registries. The controller does
it first, to turn every user mistake into an error before anything is written; each worker then
repeats it in its own process (a plugin manager cannot cross a process boundary). Plugin objects
handed to the API travel to the workers pickled, modules by name.
"""

from __future__ import annotations

import importlib
import io
import pickle
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from optspec.config import Config
from optspec.errors import OptspecError, SpecError, StudyFailed, UsageError
from optspec.objectives.python import put_first_on_sys_path

if TYPE_CHECKING:
    import optuna

    from optspec.plugins.manager import PluginManager
    from optspec.spec.model import Spec


def prepare_sys_path(spec: Spec) -> None:
    """The spec's directory first on sys.path, then the working directory, as the docs promise.

    Runs in the controller and in every worker (and for ``validate``), so references resolve
    alike everywhere.
    """
    put_first_on_sys_path([str(spec.directory), str(Path.cwd())])


@frozen
class Components:
    """A run's plugin manager and the components built through it."""

    pm: PluginManager
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    objective: Callable[..., Any]


def build_components(
    config: Config,
    plugins: Sequence[object] = (),
    *,
    worker_index: int = 0,
    generation: int = 0,
    trials_before: int = 0,
) -> Components:
    """Plugins registered and configured, then sampler, pruner and objective built from the spec.

    The worker's index, its respawn generation and the trials the study held before the run go
    into the sampler's seed.
    """
    from optspec.plugins import manager
    from optspec.plugins.components import make_objective, make_pruner, make_sampler

    prepare_sys_path(config.spec)
    # Through the module: optspec.testing wraps build_plugin_manager to monitor hook calls.
    pm = manager.build_plugin_manager(config.spec, config.plugin_args, plugins)
    pm.hook.configure(config=config)
    return Components(
        pm=pm,
        sampler=make_sampler(pm, config, worker_index, generation, trials_before),
        pruner=make_pruner(pm, config),
        objective=make_objective(pm, config),
    )


def prepare_controller(config: Config, plugins: Sequence[object]) -> Components:
    """:func:`build_components` in the controller: every user mistake surfaces here, before
    anything is written, as a UsageError (SpecError naming the spec file) or StudyFailed."""
    file = config.spec.path or config.study_db
    try:
        return build_components(config, plugins)
    except SpecError as exc:
        raise exc.with_file(file) from None
    except OptspecError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug, reported in one line
        raise StudyFailed(
            f"a plugin raised while the run was set up: {type(exc).__name__}: {exc}"
        ) from None


def check_spec(spec: Spec, plugin_args: Sequence[str] = ()) -> None:
    """Every check ``run`` makes before its first trial, without running or writing anything:
    the plugins are imported and configured, sampler, pruner and objective built (the objective's
    module imported, as ``pytest --collect-only`` imports test modules). For ``optspec validate``,
    which therefore imports nothing POSIX-only (this module does not).
    """
    config = Config(spec, spec.study.output, plugin_args=tuple(plugin_args), quiet=True)
    prepare_controller(config, ())


class _PluginPickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # A plugin module travels to the workers by name; they import it themselves.
        if isinstance(obj, types.ModuleType):
            return importlib.import_module, (obj.__name__,)
        return NotImplemented


def pickle_plugins(plugins: Sequence[object]) -> bytes:
    """The plugin objects as the workers will get them, checked before anything is written.

    Modules pickle by name, anything else as pickle does it. Unpickle with
    :func:`unpickle_plugins` once sys.path is in place: their classes may live in modules only
    the controller's sys.path reaches (a test file, a plugin next to the spec).
    """
    if not plugins:
        return b""
    buffer = io.BytesIO()
    try:
        _PluginPickler(buffer).dump(tuple(plugins))
    except Exception as exc:  # noqa: BLE001 - pickle raises many types; all mean the same
        raise UsageError(
            f"a plugin object cannot be sent to the worker processes ({type(exc).__name__}: "
            f"{exc}); pass a module, or an instance of a class defined at a module's top level"
        ) from None
    return buffer.getvalue()


def unpickle_plugins(data: bytes) -> tuple[object, ...]:
    return pickle.loads(data) if data else ()

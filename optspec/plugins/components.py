"""Sampler, pruner and objective of a run, built from what plugins registered.

The controller builds them once before anything is written, so a bad name or option is a spec
error with exit code 2; every worker then builds its own from the same spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optspec.errors import SpecError
from optspec.objectives.space import grid_values
from optspec.plugins.factories import call_factory

if TYPE_CHECKING:
    from collections.abc import Callable

    import optuna

    from optspec.config import Config
    from optspec.plugins.manager import PluginManager

# Keep a respawned worker's seed, and a resumed run's, apart from every other worker's.
_GENERATION_SEED_STRIDE = 7919
_RESUME_SEED_STRIDE = 104_729


def _lookup(pm: PluginManager, kind: str, name: str, path: str) -> Any:
    registry = pm.registry(kind)
    if name not in registry:
        valid = ", ".join(sorted(registry)) or "none"
        raise SpecError(f"{path}: unknown {kind[:-1]} {name!r}; registered {kind}: {valid}")
    return registry[name]


def worker_seed(
    config: Config, worker_index: int, generation: int = 0, trials_before: int = 0
) -> int | None:
    """The study seed offset per worker, per respawn and by the trials the study held when the
    run started: a one-worker run with a seed is reproducible, and a resumed run does not draw
    its first trials' parameters again."""
    seed = config.spec.study.seed
    if seed is None:
        return None
    offset = worker_index + generation * _GENERATION_SEED_STRIDE
    return (seed + offset + trials_before * _RESUME_SEED_STRIDE) % 2**32


def make_sampler(
    pm: PluginManager,
    config: Config,
    worker_index: int = 0,
    generation: int = 0,
    trials_before: int = 0,
) -> optuna.samplers.BaseSampler:
    spec = config.spec
    factory = _lookup(pm, "samplers", spec.sampler.name, "sampler.name")
    context = {
        "seed": lambda: worker_seed(config, worker_index, generation, trials_before),
        "search_space": lambda: grid_values(spec),
        "directions": lambda: spec.study.directions,
    }
    return call_factory(
        factory, spec.sampler.options, table="sampler", name=spec.sampler.name, context=context
    )


def make_pruner(pm: PluginManager, config: Config) -> optuna.pruners.BasePruner:
    spec = config.spec
    factory = _lookup(pm, "pruners", spec.pruner.name, "pruner.name")
    return call_factory(factory, spec.pruner.options, table="pruner", name=spec.pruner.name)


def make_objective(pm: PluginManager, config: Config) -> Callable[..., Any]:
    spec = config.spec
    factory = _lookup(pm, "objectives", spec.objective.kind, "objective.kind")
    context = {"spec": lambda: spec, "config": lambda: config}
    return call_factory(
        factory,
        {},
        table="objective",
        name=spec.objective.kind,
        context=context,
        positional=(dict(spec.objective.options),),
    )

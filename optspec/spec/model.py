"""The spec format, version 1: TOML in, frozen attrs models out.

``load_spec(path)`` reads a file; ``parse_spec(text, path=...)`` parses text that came from
elsewhere (the copy stored inside study.db). Conversion lives in :mod:`optspec.spec.load` and
the table checkers it calls, which know TOML paths, so every problem is reported as
``toml.path: message`` and all of them at once. The models here only hold what was validated;
nothing in this module imports optuna.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import field, frozen

SPEC_VERSION = 1
DIRECTIONS = ("minimize", "maximize")

Scalar = str | int | float | bool | None


@frozen
class StudyObjective:
    """One objective: its direction and, for dict results, the metric it reads."""

    direction: Literal["minimize", "maximize"]
    metric: str | None = None


@frozen
class StudySection:
    name: str
    objectives: tuple[StudyObjective, ...]
    output: Path
    seed: int | None = None

    @property
    def directions(self) -> list[str]:
        return [objective.direction for objective in self.objectives]

    @property
    def metrics(self) -> list[str] | None:
        """Metric names when objectives pick from a dict result, else None."""
        if self.objectives[0].metric is None:
            return None
        return [objective.metric for objective in self.objectives]  # type: ignore[misc]


@frozen
class Condition:
    """``when = { opt = "sgd" }``: the parameter exists only while ``opt`` is one of ``values``."""

    param: str
    values: tuple[Scalar, ...]

    def holds(self, suggested: Mapping[str, Any]) -> bool:
        return self.param in suggested and suggested[self.param] in self.values


@frozen
class FloatParam:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return abs(steps - round(steps)) < 1e-8


@frozen
class IntParam:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return self.low <= value <= self.high and (value - self.low) % self.step == 0


@frozen
class CategoricalParam:
    name: str
    choices: tuple[Scalar, ...]
    when: tuple[Condition, ...] = ()

    def contains(self, value: Any) -> bool:
        # `True in (1,)` is true in Python; a spec author means the exact choice.
        return any(type(value) is type(choice) and value == choice for choice in self.choices)


@frozen
class FixedParam:
    """A plain value in ``[params]``: handed to the objective, never suggested."""

    name: str
    value: Any


Param = FloatParam | IntParam | CategoricalParam | FixedParam
SearchParam = FloatParam | IntParam | CategoricalParam


@frozen
class ObjectiveSection:
    """``[objective]``: what a trial runs.

    ``kind`` is ``"python"`` for ``callable``, ``"command"`` for ``command``, or the name a plugin
    registered through ``register_objectives``; ``options`` is the table as written, which is what
    an objective factory receives.
    """

    kind: str
    options: dict[str, Any] = field(factory=dict)


@frozen
class Component:
    """``[sampler]`` or ``[pruner]``: a registered name and the keyword arguments for it."""

    name: str
    options: dict[str, Any] = field(factory=dict)


@frozen
class Constraint:
    """Feasible when ``min <= metric <= max``; at least one bound is set."""

    metric: str
    min: float | None = None
    max: float | None = None

    def violation(self, value: float) -> float:
        """Optuna's convention: <= 0 when feasible, else how far outside the bounds."""
        excess = []
        if self.min is not None:
            excess.append(self.min - value)
        if self.max is not None:
            excess.append(value - self.max)
        return max(excess)


KEEP_TRIAL_DIRS = ("failed", "all", "best", "none")
"""``[run] keep_trial_dirs``: which ``<output>/trials/<number>/`` directories remain."""
DEVICE_ENV = "CUDA_VISIBLE_DEVICES"


@frozen
class RunSection:
    n_trials: int = 100
    timeout: float | None = None
    workers: int | Literal["auto"] = 1
    """Without the key in a spec: one worker per ``devices`` entry, or 1 without devices."""
    max_failed: int | None = None
    trial_timeout: float | None = None
    checkpoint: float | None = 300.0
    devices: tuple[str, ...] = ()
    """One entry per worker slot; an entry may name several devices (``"0,1"``)."""
    device_env: str = DEVICE_ENV
    keep_trial_dirs: Literal["failed", "all", "best", "none"] = "failed"
    heartbeat: float | None = 30.0
    """On a storage other machines reach: a trial whose worker stops beating for two intervals
    becomes FAIL ("worker lost") and is retried. None ("off") disables it."""

    @property
    def worker_count(self) -> int:
        if self.devices and self.workers == "auto":
            # Accelerator jobs are not CPU-bound: "auto" means one worker per device slot.
            return len(self.devices)
        if self.workers == "auto":
            return (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return self.workers

    def device(self, worker_index: int) -> str | None:
        """The device slot of worker ``worker_index``, None without ``devices``."""
        return self.devices[worker_index] if self.devices else None


@frozen
class PluginsSection:
    load: tuple[str, ...] = ()
    block: tuple[str, ...] = ()


@frozen
class Spec:
    """A validated study spec. ``path``, ``text`` and ``overrides`` say where it came from; they
    do not take part in equality, so a spec printed with ``validate --print`` and read back
    compares equal. ``text`` is the effective spec: the file's text, or with ``--set``
    overrides the overridden document (:mod:`optspec.spec.overrides`)."""

    study: StudySection
    objective: ObjectiveSection
    params: tuple[Param, ...] = ()
    sampler: Component = field(factory=lambda: Component("tpe"))
    pruner: Component = field(factory=lambda: Component("median"))
    constraints: tuple[Constraint, ...] = ()
    run: RunSection = RunSection()
    enqueue: tuple[dict[str, Any], ...] = ()
    plugins: PluginsSection = PluginsSection()
    plugin: dict[str, dict[str, Any]] = field(factory=dict)
    version: int = SPEC_VERSION
    path: Path | None = field(default=None, eq=False)
    text: str = field(default="", eq=False, repr=False)
    overrides: tuple[str, ...] = field(default=(), eq=False)
    """The ``--set`` overrides (``KEY=VALUE``) ``text`` holds on top of the spec file."""

    @property
    def directory(self) -> Path:
        """Where relative references in the spec are resolved from."""
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def search_params(self) -> tuple[SearchParam, ...]:
        return tuple(p for p in self.params if not isinstance(p, FixedParam))

    @property
    def fixed_params(self) -> dict[str, Any]:
        return {p.name: p.value for p in self.params if isinstance(p, FixedParam)}

    def evolve(self, **changes: Any) -> Spec:
        return attrs.evolve(self, **changes)

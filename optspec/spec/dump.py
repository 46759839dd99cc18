"""Writing a spec back as TOML: ``optspec validate --print`` and the round trips tests make."""

from __future__ import annotations

from typing import Any

import tomli_w

from optspec.spec.model import CategoricalParam, FixedParam, FloatParam, Param, Spec


def spec_to_toml(spec: Spec) -> str:
    """The resolved spec, defaults filled in, as TOML that converts back to an equal Spec."""
    return document_to_toml(spec_to_data(spec))


def document_to_toml(data: dict[str, Any]) -> str:
    """A spec document (TOML data) as TOML text, the same text for the same data.

    ``[params]`` is written by hand, one inline table per parameter: tomli_w puts a table's plain
    values before its sub-tables, which would move fixed parameters ahead of the others and so
    change the declared order (the order parameters are suggested in, and what ``when`` needs).
    """
    data = dict(data)
    params = data.pop("params", None)
    # Keys tomli_w may write as top-level values go into the first document, before any table.
    head_keys = ("version", "enqueue", "constraints", "study", "objective")
    head = tomli_w.dumps({key: data[key] for key in head_keys if key in data})
    tail = tomli_w.dumps({key: value for key, value in data.items() if key not in head_keys})
    text = head
    if params:
        lines = "".join(
            f"{_toml_key(name)} = {toml_inline(value)}\n" for name, value in params.items()
        )
        text += f"\n[params]\n{lines}"
    if tail:
        text += "\n" + tail
    return text


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


def toml_inline(value: Any) -> str:
    """``value`` as one line of TOML, tables inline, in their order."""
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {toml_inline(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_inline(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = ") : -1]


def spec_to_data(spec: Spec) -> dict[str, Any]:
    study: dict[str, Any] = {"name": spec.study.name}
    if spec.study.metrics is not None:
        study["objectives"] = [
            {"metric": o.metric, "direction": o.direction} for o in spec.study.objectives
        ]
    elif len(spec.study.objectives) == 1:
        study["direction"] = spec.study.objectives[0].direction
    else:
        study["directions"] = spec.study.directions
    if spec.study.seed is not None:
        study["seed"] = spec.study.seed
    study["output"] = str(spec.study.output)
    run = {
        "n_trials": spec.run.n_trials,
        "workers": spec.run.workers,
        "timeout": _seconds(spec.run.timeout),
        "max_failed": spec.run.max_failed,
        "trial_timeout": _seconds(spec.run.trial_timeout),
        "checkpoint": _seconds(spec.run.checkpoint),
        "devices": list(spec.run.devices) or None,
        # Meaningless without devices: printed only where it takes effect.
        "device_env": spec.run.device_env if spec.run.devices else None,
        "keep_trial_dirs": spec.run.keep_trial_dirs,
        "heartbeat": _seconds(spec.run.heartbeat),
    }
    data: dict[str, Any] = {
        "version": spec.version,
        "study": study,
        "objective": dict(spec.objective.options),
        "params": {param.name: _param_data(param) for param in spec.params},
        "sampler": {"name": spec.sampler.name, **spec.sampler.options},
        "pruner": {"name": spec.pruner.name, **spec.pruner.options},
        "constraints": [
            {
                k: v
                for k, v in (("metric", c.metric), ("min", c.min), ("max", c.max))
                if v is not None
            }
            for c in spec.constraints
        ],
        "run": {key: value for key, value in run.items() if value is not None},
        "enqueue": list(spec.enqueue),
        "plugins": {
            key: list(value)
            for key, value in (("load", spec.plugins.load), ("block", spec.plugins.block))
            if value
        },
        "plugin": spec.plugin,
    }
    return {key: value for key, value in data.items() if value not in ({}, [])}


def _seconds(value: float | None) -> float | str:
    return "off" if value is None else value


def _param_data(param: Param) -> Any:
    if isinstance(param, FixedParam):
        return param.value
    if isinstance(param, CategoricalParam):
        data: dict[str, Any] = {"type": "categorical", "choices": list(param.choices)}
    else:
        data = {
            "type": "float" if isinstance(param, FloatParam) else "int",
            "low": param.low,
            "high": param.high,
        }
        if param.step is not None:
            data["step"] = param.step
        data["log"] = param.log
    if param.when:
        data["when"] = {
            c.param: c.values[0] if len(c.values) == 1 else list(c.values) for c in param.when
        }
    return data

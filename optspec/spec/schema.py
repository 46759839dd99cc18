"""JSON Schema (draft 2020-12) of the spec format, version 1, for editors: ``optspec schema``.

The tables and their keys come from the key tuples of the table checkers
(:mod:`optspec.spec.tables`), so a key added there without a schema entry here fails loudly
(``KeyError``) instead of drifting. The schema says what an editor can say (types, bounds,
exclusive keys); checks that need the whole spec, such as ``when`` naming an earlier categorical
or enqueued points inside the space, stay with ``optspec validate``.
"""

from __future__ import annotations

from typing import Any

from optspec.spec.load import TOP_KEYS
from optspec.spec.model import DIRECTIONS, KEEP_TRIAL_DIRS, SPEC_VERSION
from optspec.spec.tables.constraints import CONSTRAINT_KEYS
from optspec.spec.tables.objective import OBJECTIVE_KEYS
from optspec.spec.tables.params import CATEGORICAL_KEYS, FLOAT_KEYS, INT_KEYS
from optspec.spec.tables.plugins import PLUGINS_KEYS
from optspec.spec.tables.run import RUN_KEYS
from optspec.spec.tables.study import STUDY_KEYS

Schema = dict[str, Any]


def spec_json_schema() -> Schema:
    """The schema as a dict, ready for ``json.dumps``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"optspec study spec, version {SPEC_VERSION}",
        "description": "A study.toml for `optspec run`. Reference: docs/spec.md.",
        **_table(TOP_KEYS, _top_properties(), required=("objective",)),
        "$defs": {
            "duration": _DURATION,
            "when": _WHEN,
            "float_param": _param_table(FLOAT_KEYS, "float", _number),
            "int_param": _param_table(INT_KEYS, "int", _integer),
            "categorical_param": _param_table(CATEGORICAL_KEYS, "categorical", None),
        },
    }


def _table(
    keys: tuple[str, ...], schemas: dict[str, Schema], *, required: tuple[str, ...] = ()
) -> Schema:
    """An object holding exactly ``keys``; every key needs an entry in ``schemas``."""
    return {
        "type": "object",
        "properties": {key: schemas[key] for key in keys},
        "additionalProperties": False,
        **({"required": list(required)} if required else {}),
    }


def _exclusive(*keys: str) -> Schema:
    """At most one of ``keys``."""
    pairs = [[a, b] for i, a in enumerate(keys) for b in keys[i + 1 :]]
    return {"not": {"anyOf": [{"required": pair} for pair in pairs]}}


_number: Schema = {"type": "number"}
_integer: Schema = {"type": "integer"}
_name: Schema = {"type": "string", "minLength": 1}
_direction: Schema = {"enum": list(DIRECTIONS)}
_scalar: Schema = {"type": ["string", "number", "boolean"]}
_free_table: Schema = {"type": "object"}
_positive_int: Schema = {"type": "integer", "minimum": 1}

# The converter lower-cases and strips before matching; JSON Schema regexes have no flags.
_DURATION: Schema = {
    "description": 'seconds, or "90s", "10m", "2h" (also "ms", "d"), or "off"',
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {
            "type": "string",
            "pattern": r"^\s*(\d+(\.\d*)?|\.\d+)\s*([mM][sS]|[sSmMhHdD])?\s*$",
        },
        {"type": "string", "pattern": r"^\s*([oO][fF][fF]|[nN][oO][nN][eE])\s*$"},
    ],
}

_WHEN: Schema = {
    "description": "the parameter exists only while each named categorical takes one of these",
    "type": "object",
    "additionalProperties": {
        "anyOf": [_scalar, {"type": "array", "items": _scalar, "minItems": 1}]
    },
}


def _param_table(keys: tuple[str, ...], kind: str, bound: Schema | None) -> Schema:
    schemas: dict[str, Schema] = {
        "type": {"const": kind},
        "when": {"$ref": "#/$defs/when"},
        "choices": {"type": "array", "items": _scalar, "minItems": 1},
        "log": {"type": "boolean"},
    }
    if bound is not None:
        schemas |= {
            "low": bound,
            "high": bound,
            "step": {**bound, "exclusiveMinimum": 0},
        }
    required = ("type", "low", "high") if bound is not None else ("type", "choices")
    table = _table(keys, schemas, required=required)
    if kind == "float":
        # log = true and a step together: optuna refuses the distribution.
        table["not"] = {"required": ["log", "step"], "properties": {"log": {"const": True}}}
    return table


def _top_properties() -> dict[str, Schema]:
    objectives = {
        "type": "array",
        "minItems": 1,
        "items": _table(
            ("metric", "direction"),
            {"metric": _name, "direction": _direction},
            required=("metric", "direction"),
        ),
    }
    study = _table(
        STUDY_KEYS,
        {
            "name": _name,
            "direction": _direction,
            "directions": {"type": "array", "items": _direction, "minItems": 1},
            "objectives": objectives,
            "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
            "output": _name,
        },
    )
    study |= _exclusive("direction", "directions", "objectives")

    objective_keys = {
        "callable": {"type": "string", "pattern": "^.+:[A-Za-z_][A-Za-z0-9_.]*$"},
        "args": _free_table,
        "command": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "cwd": {"type": "string"},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "kind": _name,
    }
    builtin_kinds = ["python", "command"]
    objective = {
        "type": "object",
        "properties": {key: objective_keys[key] for key in OBJECTIVE_KEYS},
        # A plugin's kind validates its own table; the built-in kinds are checked here.
        "if": {
            "required": ["kind"],
            "properties": {"kind": {"not": {"enum": builtin_kinds}}},
        },
        "else": {
            **_table(OBJECTIVE_KEYS, objective_keys),
            "oneOf": [{"required": ["callable"]}, {"required": ["command"]}],
        },
    }

    params = {
        "type": "object",
        "additionalProperties": {
            "oneOf": [
                {"$ref": "#/$defs/float_param"},
                {"$ref": "#/$defs/int_param"},
                {"$ref": "#/$defs/categorical_param"},
                {"description": "a fixed value", "not": {"type": "object"}},
            ]
        },
    }
    component = {
        "type": "object",
        "properties": {"name": _name},
        "required": ["name"],
        "description": "other keys: keyword arguments of the sampler or pruner",
    }
    constraint = _table(
        CONSTRAINT_KEYS,
        {"metric": _name, "min": _number, "max": _number},
        required=("metric",),
    )
    constraint["anyOf"] = [{"required": ["min"]}, {"required": ["max"]}]
    duration = {"$ref": "#/$defs/duration"}
    run = _table(
        RUN_KEYS,
        {
            "n_trials": _positive_int,
            "timeout": duration,
            "workers": {"anyOf": [_positive_int, {"const": "auto"}]},
            "max_failed": _positive_int,
            "trial_timeout": duration,
            "checkpoint": duration,
            "devices": {
                "description": 'one entry per worker slot; an entry may name devices, "0,1"',
                "type": "array",
                "minItems": 1,
                "items": {
                    "anyOf": [
                        {"type": "string", "pattern": r"^[^,\s]+(,[^,\s]+)*$"},
                        {"type": "integer", "minimum": 0},
                    ]
                },
            },
            "device_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
            "keep_trial_dirs": {"enum": list(KEEP_TRIAL_DIRS)},
            "heartbeat": duration,
        },
    )
    names = {"type": "array", "items": _name}
    return {
        "version": {"const": SPEC_VERSION},
        "study": study,
        "objective": objective,
        "params": params,
        "sampler": component,
        "pruner": component,
        "constraints": {"type": "array", "items": constraint},
        "run": run,
        "enqueue": {"type": "array", "items": _free_table},
        "plugins": _table(PLUGINS_KEYS, {"load": names, "block": names}),
        "plugin": {"type": "object", "additionalProperties": _free_table},
    }

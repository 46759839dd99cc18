"""Conversion between TOML data and :class:`~optspec.spec.model.Spec`, knowing every TOML path.

The converter never stops at the first problem: each check records ``path: message`` and carries on
with a usable default, so a user fixing a spec sees everything that is wrong in one go. Messages say
what would be valid. Optuna's own rules for distributions are checked here, up front, without
importing optuna.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from optspec.errors import SpecError, UsageError
from optspec.spec.model import (
    DIRECTIONS,
    KEEP_TRIAL_DIRS,
    SPEC_VERSION,
    CategoricalParam,
    Component,
    Condition,
    Constraint,
    FixedParam,
    FloatParam,
    IntParam,
    ObjectiveSection,
    Param,
    PluginsSection,
    RunSection,
    Spec,
    StudyObjective,
    StudySection,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOP_KEYS = (
    "version", "study", "objective", "params", "sampler", "pruner",
    "constraints", "run", "enqueue", "plugins", "plugin",
)  # fmt: skip
STUDY_KEYS = ("name", "direction", "directions", "objectives", "seed", "output")
OBJECTIVE_KEYS = ("callable", "args", "command", "cwd", "env", "kind")
FLOAT_KEYS = ("type", "low", "high", "step", "log", "when")
INT_KEYS = FLOAT_KEYS
CATEGORICAL_KEYS = ("type", "choices", "when")
CONSTRAINT_KEYS = ("metric", "min", "max")
RUN_KEYS = (
    "n_trials", "timeout", "workers", "max_failed", "trial_timeout", "checkpoint",
    "devices", "device_env", "keep_trial_dirs", "heartbeat",
)  # fmt: skip
PLUGINS_KEYS = ("load", "block")
PARAM_TYPES = ("float", "int", "categorical")
# Placeholders a command may use besides the parameters themselves; {python} is the interpreter
# optspec runs on, so a spec need not guess whether "python" or "python3" is on PATH.
COMMAND_FIELDS = ("trial_number", "trial_dir", "python", "worker", "device")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_OFF = ("off", "none")
_IDENTIFIER_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def read_spec_file(path: Path) -> Spec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, expected a spec file (study.toml)") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    return convert_spec_text(text, path)


def convert_spec_text(text: str, path: Path) -> Spec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(_describe_toml_error(exc), file=path) from None
    converter = _Converter(path)
    spec = converter.spec(data, text)
    if converter.problems:
        raise SpecError(converter.problems, file=path)
    return spec


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"10m"``, ``"2h"``; None for ``"off"``.

    Raises ValueError with what would be valid; used for the CLI's ``--timeout`` too.
    """
    if isinstance(value, bool):
        raise ValueError(_DURATION_HINT)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip().lower() in _OFF:
        return None
    elif isinstance(value, str) and (match := _DURATION.match(value.lower())):
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    else:
        raise ValueError(_DURATION_HINT)
    if not seconds > 0 or math.isinf(seconds):
        raise ValueError("must be more than 0 seconds; " + _DURATION_HINT)
    return seconds


_DURATION_HINT = 'expected a duration like "90s", "10m", "2h", a number of seconds, or "off"'


def _describe_toml_error(exc: Exception) -> str:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match:
        message = message[: match.start()].strip()
        return f"line {match[1]}, column {match[2]}: invalid TOML: {message}"
    return f"invalid TOML: {message}"


def _describe(value: Any) -> str:
    """How a wrong value reads in a message: its TOML type and the value itself."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = f'"{key}"'
    return f"{path}.{key}" if path else key


class _Converter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []
        # Parameters declared with an error: a `when` naming one is not reported a second time.
        self.broken_params: set[str] = set()
        self.declared_later: list[str] = []  # while converting a parameter: those after it

    # -- primitives ---------------------------------------------------------------------------

    def add(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def table(self, value: Any, path: str, known: Iterable[str] | None) -> dict[str, Any]:
        """``value`` as a table, reporting a non-table and every key outside ``known``."""
        if not isinstance(value, dict):
            self.add(path, f"must be a table, got {_describe(value)}")
            return {}
        if known is not None:
            known = tuple(known)
            for key in value:
                if key not in known:
                    self.unknown_key(_join(path, key), key, known)
        return value

    def unknown_key(self, path: str, key: str, known: tuple[str, ...]) -> None:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        self.add(path, f"unknown key; {hint}valid keys here: {', '.join(known)}")

    def get(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        check: Callable[[Any], bool],
        expected: str,
        default: Any = None,
        *,
        required: bool = False,
    ) -> Any:
        where = _join(path, key)
        if key not in table:
            if required:
                self.add(where, f"missing; expected {expected}")
            return default
        value = table[key]
        if not check(value):
            self.add(where, f"must be {expected}, got {_describe(value)}")
            return default
        return value

    def metric(self, table: Mapping[str, Any], path: str) -> str | None:
        """The required ``metric`` key of [[study.objectives]] and [[constraints]] entries."""
        return self.get(
            table,
            "metric",
            path,
            lambda v: isinstance(v, str) and v != "",
            "the name of a metric in the objective's result",
            required=True,
        )

    def string_list(self, table: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
        value = self.get(table, key, path, lambda v: isinstance(v, list), "an array of strings", [])
        good = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                good.append(item)
            else:
                self.add(
                    _join(_join(path, key), index),
                    f"must be a non-empty string, got {_describe(item)}",
                )
        return tuple(good)

    def duration(
        self, table: Mapping[str, Any], key: str, path: str, default: float | None
    ) -> float | None:
        if key not in table:
            return default
        try:
            return parse_duration(table[key])
        except ValueError as exc:
            self.add(_join(path, key), f"{exc}, got {_describe(table[key])}")
            return default

    # -- sections -----------------------------------------------------------------------------

    def spec(self, data: dict[str, Any], text: str) -> Spec:
        self.table(data, "", TOP_KEYS)
        version = self.get(data, "version", "", _is_int, "the integer 1", SPEC_VERSION)
        if version != SPEC_VERSION:
            self.add("version", f"unsupported spec version {version}; this optspec reads version 1")
        study = self.study(data.get("study", {}))
        params = self.params(data.get("params", {}))
        objective = self.objective(data.get("objective"), params)
        sampler = self.component(data, "sampler", "tpe")
        pruner = self.pruner(data, study)
        self.check_sampler_space(sampler, params)
        return Spec(
            version=SPEC_VERSION,
            study=study,
            objective=objective,
            params=params,
            sampler=sampler,
            pruner=pruner,
            constraints=self.constraints(data.get("constraints", [])),
            run=self.run(data.get("run", {})),
            enqueue=self.enqueue(data.get("enqueue", []), params),
            plugins=self.plugins(data.get("plugins", {})),
            plugin=self.plugin_tables(data.get("plugin", {})),
            path=self.path,
            text=text,
        )

    def study(self, value: Any) -> StudySection:
        table = self.table(value, "study", STUDY_KEYS)
        name = self.get(
            table,
            "name",
            "study",
            lambda v: isinstance(v, str) and v.strip() != "",
            "a non-empty string",
            self.path.stem,
        )
        if isinstance(name, str) and ("/" in name or "\\" in name or name in (".", "..")):
            self.add(
                "study.name", f"{name!r} cannot name a directory; use letters, digits, - and _"
            )
            name = self.path.stem
        seed = self.get(
            table,
            "seed",
            "study",
            lambda v: _is_int(v) and 0 <= v < 2**32,
            "an integer from 0 to 4294967295",
        )
        output = self.get(
            table,
            "output",
            "study",
            lambda v: isinstance(v, str) and v != "",
            "a directory path (a string)",
        )
        output_dir = (
            (self.path.parent / output).resolve() if output else Path.cwd() / "optspec-runs" / name
        )
        return StudySection(
            name=name, objectives=self.study_objectives(table), seed=seed, output=output_dir
        )

    def study_objectives(self, table: Mapping[str, Any]) -> tuple[StudyObjective, ...]:
        given = [key for key in ("direction", "directions", "objectives") if key in table]
        if len(given) > 1:
            self.add("study", f"{' and '.join(given)} are exclusive; give one of them")
        is_direction = lambda v: v in DIRECTIONS  # noqa: E731
        expected = '"minimize" or "maximize"'
        if "directions" in table:
            directions = self.get(
                table,
                "directions",
                "study",
                lambda v: isinstance(v, list) and v != [],
                f"a non-empty array of {expected}",
                [],
            )
            for index, direction in enumerate(directions):
                if not is_direction(direction):
                    self.add(
                        f"study.directions[{index}]",
                        f"must be {expected}, got {_describe(direction)}",
                    )
            return tuple(StudyObjective(d) for d in directions if is_direction(d)) or (
                StudyObjective("minimize"),
            )
        if "objectives" in table:
            return self.metric_objectives(table["objectives"])
        direction = self.get(table, "direction", "study", is_direction, expected, "minimize")
        return (StudyObjective(direction),)

    def metric_objectives(self, value: Any) -> tuple[StudyObjective, ...]:
        if not isinstance(value, list) or not value:
            self.add(
                "study.objectives",
                f"must be an array of tables ([[study.objectives]]), got {_describe(value)}",
            )
            return (StudyObjective("minimize"),)
        objectives = []
        for index, item in enumerate(value):
            path = f"study.objectives[{index}]"
            table = self.table(item, path, ("metric", "direction"))
            metric = self.metric(table, path)
            direction = self.get(
                table,
                "direction",
                path,
                lambda v: v in DIRECTIONS,
                '"minimize" or "maximize"',
                required=True,
            )
            if metric and direction:
                objectives.append(StudyObjective(direction, metric))
        metrics = [objective.metric for objective in objectives]
        for metric in {m for m in metrics if metrics.count(m) > 1}:
            self.add("study.objectives", f"metric {metric!r} is named twice")
        return tuple(objectives) or (StudyObjective("minimize"),)

    def objective(self, value: Any, params: tuple[Param, ...]) -> ObjectiveSection:
        if value is None:
            self.add(
                "objective",
                'missing; add [objective] with callable = "pkg.module:function" '
                'or command = ["python", "train.py"]',
            )
            return ObjectiveSection("python", {})
        if not isinstance(value, dict):
            self.table(value, "objective", None)
            return ObjectiveSection("python", {})
        table = value
        kind = self.get(
            table,
            "kind",
            "objective",
            lambda v: isinstance(v, str) and v != "",
            "the name of an objective kind",
        )
        given = [key for key in ("callable", "command") if key in table]
        if len(given) == 2:
            self.add("objective", "callable and command are exclusive; give one of them")
        if kind is None and not given:
            # A misspelt `callable` is the likely cause: name it before the general advice.
            self.table(table, "objective", OBJECTIVE_KEYS)
            self.add(
                "objective",
                'give exactly one of callable = "pkg.module:function", '
                'command = ["python", "train.py"], or kind = "NAME" of a plugin\'s objective',
            )
            return ObjectiveSection("python", {})
        kind = kind or given[0].replace("callable", "python")
        if kind not in ("python", "command"):
            # A plugin's kind: its factory validates the table when the run starts.
            return ObjectiveSection(kind, dict(table))
        self.table(table, "objective", OBJECTIVE_KEYS)
        if kind == "python":
            self.python_objective(table, params)
        else:
            self.command_objective(table, params)
        return ObjectiveSection(kind, dict(table))

    def python_objective(self, table: Mapping[str, Any], params: tuple[Param, ...]) -> None:
        ref = self.get(
            table,
            "callable",
            "objective",
            lambda v: isinstance(v, str),
            '"pkg.module:function" or "path/to/file.py:function"',
            required=True,
        )
        if ref is not None:
            self.reference(ref, "objective.callable")
        args = self.get(
            table,
            "args",
            "objective",
            lambda v: isinstance(v, dict),
            "a table of keyword arguments",
            {},
        )
        declared = {param.name for param in params}
        for key in args:
            if key in declared:
                # The callable receives declared parameters by name: which value would win?
                self.add(
                    _join("objective.args", key),
                    f"{key!r} is also declared as params.{key}; the callable receives "
                    "parameters by name, so rename one of them",
                )
        for key in ("cwd", "env"):
            if key in table:
                self.add(_join("objective", key), "applies to command objectives only")

    def reference(self, ref: str, path: str) -> None:
        module, sep, attr = ref.rpartition(":")
        if not sep or not module or not _IDENTIFIER_PATH.match(attr):
            self.add(path, f'{ref!r} is not "pkg.module:function" or "path/to/file.py:function"')
        elif module.endswith(".py"):
            if not (self.path.parent / module).is_file():
                self.add(
                    path, f"no file {module!r} next to the spec (looked in {self.path.parent})"
                )
        elif not _IDENTIFIER_PATH.match(module):
            self.add(path, f"{module!r} is not a module name like pkg.module, nor a .py file")

    def command_objective(self, table: Mapping[str, Any], params: tuple[Param, ...]) -> None:
        command = table.get("command")
        if "callable" in table and "command" not in table:
            self.add(
                "objective.callable",
                'applies to kind = "python" only; a command objective runs objective.command',
            )
        if command is None:
            self.add(
                "objective.command",
                'missing; expected an argv array like ["python", "train.py", "--lr", "{lr}"]',
            )
        elif isinstance(command, str):
            self.add(
                "objective.command",
                'must be an argv array like ["python", "train.py", "--lr", '
                '"{lr}"], never a shell string',
            )
        elif not isinstance(command, list) or not command:
            self.add(
                "objective.command",
                f"must be a non-empty array of strings, got {_describe(command)}",
            )
        else:
            names = {param.name for param in params} | set(COMMAND_FIELDS)
            for index, element in enumerate(command):
                self.command_element(element, f"objective.command[{index}]", names)
        self.get(
            table, "cwd", "objective", lambda v: isinstance(v, str), "a directory path (a string)"
        )
        env = self.get(
            table, "env", "objective", lambda v: isinstance(v, dict), "a table of strings", {}
        )
        for key, value in env.items():
            if not isinstance(value, str):
                self.add(_join("objective.env", key), f"must be a string, got {_describe(value)}")
        if "args" in table:
            self.add(
                "objective.args", "applies to callable objectives only; pass values in command"
            )

    def command_element(self, element: Any, path: str, names: set[str]) -> None:
        if not isinstance(element, str):
            self.add(path, f"must be a string, got {_describe(element)}")
            return
        try:
            fields = [
                name for _, name, _, _ in string.Formatter().parse(element) if name is not None
            ]
        except ValueError as exc:
            self.add(path, f"{exc}; write {{{{ and }}}} for literal braces")
            return
        for name in fields:
            if name not in names:
                valid = ", ".join(sorted(names))
                self.add(path, f"placeholder {{{name}}} names no parameter; valid: {valid}")

    # -- parameters ---------------------------------------------------------------------------

    def params(self, value: Any) -> tuple[Param, ...]:
        table = self.table(value, "params", None)
        params: dict[str, Param] = {}
        for name, item in table.items():
            path = _join("params", name)
            if not isinstance(item, dict):
                params[name] = FixedParam(name, item)
                continue
            kind = item.get("type")
            if kind not in PARAM_TYPES:
                got = "missing" if kind is None else f"got {_describe(kind)}"
                self.add(
                    _join(path, "type"),
                    f'{got}; expected "float", "int" or "categorical" '
                    "(a plain value, not a table, fixes a parameter)",
                )
                self.table(item, path, tuple(dict.fromkeys(FLOAT_KEYS + CATEGORICAL_KEYS)))
                self.broken_params.add(name)
                continue
            self.declared_later = [n for n in table if n not in params and n != name]
            when = self.conditions(item.get("when"), _join(path, "when"), params)
            param = getattr(self, f"{kind}_param")(name, item, path, when)
            if param is not None:
                params[name] = param
            else:
                self.broken_params.add(name)
        return tuple(params.values())

    def conditions(
        self, value: Any, path: str, earlier: Mapping[str, Param]
    ) -> tuple[Condition, ...]:
        if value is None:
            return ()
        conditions = []
        for name, wanted in self.table(value, path, None).items():
            where = _join(path, name)
            parent = earlier.get(name)
            if name in self.broken_params:
                continue  # params.NAME already has its own error; do not pile a second one on
            if not isinstance(parent, CategoricalParam):
                problem = self.condition_parent_problem(name, parent, earlier)
                if parent is None and name in self.declared_later:
                    problem = f"params.{name} is declared after this parameter; move it above"
                self.add(where, problem)
                continue
            values = tuple(wanted) if isinstance(wanted, list) else (wanted,)
            absent = [v for v in values if not parent.contains(v)]
            if absent or not values:
                self.add(
                    where,
                    f"{_describe(absent[0]) if absent else 'an empty array'} is not a choice "
                    f"of params.{name}; choices: {_choices(parent.choices)}",
                )
                continue
            conditions.append(Condition(name, values))
        return tuple(conditions)

    @staticmethod
    def condition_parent_problem(
        name: str, parent: Param | None, earlier: Mapping[str, Param]
    ) -> str:
        categoricals = [n for n, p in earlier.items() if isinstance(p, CategoricalParam)]
        valid = f"categorical parameters declared before it: {', '.join(categoricals) or 'none'}"
        if parent is None:
            return f"names no parameter declared before this one; {valid}"
        return f"params.{name} is not categorical; when needs one of the {valid}"

    def bounds(
        self, item: Mapping[str, Any], path: str, check: Callable[[Any], bool], expected: str
    ):
        low = self.get(item, "low", path, check, expected, required=True)
        high = self.get(item, "high", path, check, expected, required=True)
        if low is not None and high is not None and low > high:
            self.add(_join(path, "low"), f"must be <= high ({high}), got {low}")
            return None, None
        return low, high

    def float_param(
        self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]
    ):
        self.table(item, path, FLOAT_KEYS)
        finite = lambda v: _is_number(v) and math.isfinite(v)  # noqa: E731
        low, high = self.bounds(item, path, finite, "a finite number")
        step = self.get(item, "step", path, lambda v: finite(v) and v > 0, "a number > 0")
        log = self.get(item, "log", path, lambda v: isinstance(v, bool), "true or false", False)
        if log and step is not None:
            self.add(_join(path, "step"), "cannot be combined with log = true; remove one of them")
            step = None
        if log and low is not None and low <= 0:
            self.add(_join(path, "low"), f"must be > 0 when log = true, got {low}")
            return None
        if low is None or high is None:
            return None
        return FloatParam(
            name, float(low), float(high), None if step is None else float(step), log, when
        )

    def int_param(self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]):
        self.table(item, path, INT_KEYS)
        low, high = self.bounds(item, path, _is_int, "an integer")
        step = self.get(item, "step", path, lambda v: _is_int(v) and v > 0, "an integer > 0", 1)
        log = self.get(item, "log", path, lambda v: isinstance(v, bool), "true or false", False)
        if log and step != 1:
            self.add(_join(path, "step"), "must be 1 (or absent) when log = true")
            step = 1
        if log and low is not None and low < 1:
            self.add(_join(path, "low"), f"must be >= 1 when log = true, got {low}")
            return None
        if low is None or high is None:
            return None
        return IntParam(name, low, high, step, log, when)

    def categorical_param(
        self, name: str, item: Mapping[str, Any], path: str, when: tuple[Condition, ...]
    ):
        self.table(item, path, CATEGORICAL_KEYS)
        where = _join(path, "choices")
        choices = self.get(
            item,
            "choices",
            path,
            lambda v: isinstance(v, list),
            "an array of choices",
            required=True,
        )
        if choices is None:
            return None
        if not choices:
            self.add(where, "must hold at least one choice")
            return None
        for index, choice in enumerate(choices):
            if not isinstance(choice, str | int | float | bool):
                self.add(
                    f"{where}[{index}]",
                    f"must be a string, number or boolean, got {_describe(choice)}",
                )
                return None
        for index, choice in enumerate(choices):
            # Optuna stores a choice by its index found with ==: True and 1 (or 1 and 1.0) collide.
            earlier = [c for c in choices[:index] if c == choice]
            if earlier:
                same = (
                    "is given twice"
                    if type(earlier[0]) is type(choice)
                    else (
                        f"equals {_describe(earlier[0])} in Python; optuna cannot tell them apart"
                    )
                )
                self.add(f"{where}[{index}]", f"{_describe(choice)} {same}")
                return None
        return CategoricalParam(name, tuple(choices), when)

    def check_sampler_space(self, sampler: Component, params: tuple[Param, ...]) -> None:
        if sampler.name not in ("grid", "bruteforce"):
            return
        for param in params:
            if isinstance(param, FloatParam) and param.step is None:
                self.add(
                    _join(_join("params", param.name), "step"),
                    f"missing; the {sampler.name} sampler needs a discrete search space: "
                    "give this float a step, or use an int or categorical parameter",
                )

    # -- the rest -----------------------------------------------------------------------------

    def component(self, data: Mapping[str, Any], key: str, default: str) -> Component:
        if key not in data:
            return Component(default)
        if not isinstance(data[key], dict):
            self.table(data[key], key, None)
            return Component(default)
        table = data[key]
        name = self.get(
            table,
            "name",
            key,
            lambda v: isinstance(v, str) and v != "",
            f"the name of a registered {key} (see `optspec plugins`)",
            default,
            required=True,
        )
        return Component(name, {k: v for k, v in table.items() if k != "name"})

    def pruner(self, data: Mapping[str, Any], study: StudySection) -> Component:
        """Median by default; with several objectives no pruner, as Optuna refuses
        ``trial.report`` there (every trial that reported would fail)."""
        if len(study.directions) == 1:
            return self.component(data, "pruner", "median")
        pruner = self.component(data, "pruner", "nop")
        if "pruner" in data and pruner.name != "nop":
            self.add(
                "pruner",
                f"{pruner.name!r} cannot prune a study with several objectives (Optuna refuses "
                'trial.report there); remove [pruner], or set name = "nop"',
            )
        return pruner

    def constraints(self, value: Any) -> tuple[Constraint, ...]:
        if not isinstance(value, list):
            self.add(
                "constraints",
                f"must be an array of tables ([[constraints]]), got {_describe(value)}",
            )
            return ()
        constraints = []
        for index, item in enumerate(value):
            path = f"constraints[{index}]"
            table = self.table(item, path, CONSTRAINT_KEYS)
            metric = self.metric(table, path)
            low = self.get(table, "min", path, _is_number, "a number")
            high = self.get(table, "max", path, _is_number, "a number")
            if "min" not in table and "max" not in table:
                self.add(path, "needs min, max or both: feasible when min <= metric <= max")
            elif low is not None and high is not None and low > high:
                self.add(_join(path, "min"), f"must be <= max ({high}), got {low}")
            elif metric is not None and (low is not None or high is not None):
                constraints.append(Constraint(metric, low, high))
        return tuple(constraints)

    def run(self, value: Any) -> RunSection:
        table = self.table(value, "run", RUN_KEYS)
        defaults = RunSection()
        positive = lambda v: _is_int(v) and v >= 1  # noqa: E731
        workers = self.get(
            table,
            "workers",
            "run",
            lambda v: positive(v) or v == "auto",
            'an integer >= 1 or "auto"',
            defaults.workers,
        )
        devices = self.devices(table)
        if devices and "workers" not in table:
            workers = len(devices)
        elif (
            len(devices) == len(table.get("devices", ()))
            and _is_int(workers)
            and devices
            and (workers > len(devices))
        ):
            self.add("run.workers", devices_problem(workers, devices, "run.devices"))
            workers = len(devices)
        return RunSection(
            n_trials=self.get(
                table, "n_trials", "run", positive, "an integer >= 1", defaults.n_trials
            ),
            timeout=self.duration(table, "timeout", "run", defaults.timeout),
            workers=workers,
            max_failed=self.get(table, "max_failed", "run", positive, "an integer >= 1"),
            trial_timeout=self.duration(table, "trial_timeout", "run", defaults.trial_timeout),
            checkpoint=self.duration(table, "checkpoint", "run", defaults.checkpoint),
            devices=devices,
            device_env=self.get(
                table,
                "device_env",
                "run",
                lambda v: isinstance(v, str) and bool(_ENV_NAME.match(v)),
                'an environment variable name like "CUDA_VISIBLE_DEVICES"',
                defaults.device_env,
            ),
            keep_trial_dirs=self.get(
                table,
                "keep_trial_dirs",
                "run",
                lambda v: v in KEEP_TRIAL_DIRS,
                ", ".join(f'"{keep}"' for keep in KEEP_TRIAL_DIRS[:-1])
                + f' or "{KEEP_TRIAL_DIRS[-1]}"',
                defaults.keep_trial_dirs,
            ),
            heartbeat=self.duration(table, "heartbeat", "run", defaults.heartbeat),
        )

    def devices(self, table: Mapping[str, Any]) -> tuple[str, ...]:
        """``[run] devices``: one entry per worker slot, as strings (``7`` is read as ``"7"``)."""
        if "devices" not in table:
            return ()
        value = table["devices"]
        if not isinstance(value, list) or not value:
            self.add(
                "run.devices",
                f'must be a non-empty array like ["0", "1"], one entry per worker, got '
                f"{_describe(value)}; leave it out to run without devices",
            )
            return ()
        entries = []
        for index, item in enumerate(value):
            entry, problem = parse_device_entry(item)
            if problem:
                self.add(_join("run.devices", index), problem)
            else:
                entries.append(entry)
        return tuple(entries)

    def enqueue(self, value: Any, params: tuple[Param, ...]) -> tuple[dict[str, Any], ...]:
        if not isinstance(value, list):
            self.add("enqueue", f"must be an array of tables ([[enqueue]]), got {_describe(value)}")
            return ()
        declared = {param.name: param for param in params}
        points = []
        for index, item in enumerate(value):
            path = f"enqueue[{index}]"
            for name, point in self.table(item, path, None).items():
                param = declared.get(name)
                where = _join(path, name)
                if param is None or isinstance(param, FixedParam):
                    searchable = [n for n, p in declared.items() if not isinstance(p, FixedParam)]
                    what = "is fixed" if param else "is not a declared parameter"
                    self.add(where, f"{what}; enqueue one of: {', '.join(searchable) or 'none'}")
                elif not param.contains(point):
                    self.add(
                        where,
                        f"{_describe(point)} is outside the space of params.{name} "
                        f"({_space(param)})",
                    )
                else:
                    self.enqueued_condition(item, param, where)
            points.append(dict(item) if isinstance(item, dict) else {})
        return tuple(points)

    def enqueued_condition(self, point: Mapping[str, Any], param: Param, where: str) -> None:
        """A conditional value in a point whose parent value switches the parameter off would
        be silently dropped by optuna; say so."""
        for condition in getattr(param, "when", ()):
            if condition.param in point and not condition.holds(point):
                self.add(
                    where,
                    f"params.{param.name} exists only when {condition.param} is "
                    f"{_choices(condition.values)}, but this point sets "
                    f"{condition.param} = {point[condition.param]!r}",
                )

    def plugins(self, value: Any) -> PluginsSection:
        table = self.table(value, "plugins", PLUGINS_KEYS)
        return PluginsSection(
            load=self.string_list(table, "load", "plugins"),
            block=self.string_list(table, "block", "plugins"),
        )

    def plugin_tables(self, value: Any) -> dict[str, dict[str, Any]]:
        table = self.table(value, "plugin", None)
        for name, item in table.items():
            self.table(item, _join("plugin", name), None)
        return {name: item for name, item in table.items() if isinstance(item, dict)}


def parse_device_entry(item: Any) -> tuple[str, str | None]:
    """A ``devices`` entry as the string workers get, or a problem saying what would be valid."""
    if _is_int(item) and item >= 0:
        return str(item), None
    if not isinstance(item, str) or not item:
        return "", ('must be a device like "0", or several like "0,1", got ' + _describe(item))
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


def _choices(choices: Iterable[Any]) -> str:
    return ", ".join(repr(choice) for choice in choices)


def _space(param: Param) -> str:
    if isinstance(param, CategoricalParam):
        return f"choices: {_choices(param.choices)}"
    text = f"low = {param.low}, high = {param.high}"
    if (isinstance(param, IntParam) and param.step != 1) or (
        isinstance(param, FloatParam) and param.step
    ):
        text += f", step = {param.step}"
    return text


def spec_to_toml(spec: Spec) -> str:
    """The resolved spec, defaults filled in, as TOML that converts back to an equal Spec.

    ``[params]`` is written by hand, one inline table per parameter: tomli_w puts a table's plain
    values before its sub-tables, which would move fixed parameters ahead of the others and so
    change the declared order (the order parameters are suggested in, and what ``when`` needs).
    """
    import tomli_w

    data = spec_to_data(spec)
    params = data.pop("params", None)
    # Keys tomli_w may write as top-level values go into the first document, before any table.
    head_keys = ("version", "enqueue", "constraints", "study", "objective")
    head = tomli_w.dumps({key: data[key] for key in head_keys if key in data})
    tail = tomli_w.dumps({key: value for key, value in data.items() if key not in head_keys})
    text = head
    if params:
        lines = "".join(
            f"{_toml_key(name)} = {_toml_inline(value)}\n" for name, value in params.items()
        )
        text += f"\n[params]\n{lines}"
    if tail:
        text += "\n" + tail
    return text


def _toml_key(key: str) -> str:
    import tomli_w

    return tomli_w.dumps({key: 0})[: -len(" = 0\n")]


def _toml_inline(value: Any) -> str:
    """``value`` as one line of TOML, tables inline, in their order."""
    import tomli_w

    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_inline(v)}" for k, v in value.items())
        return f"{{ {items} }}" if items else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_inline(item) for item in value) + "]"
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


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and validate the spec at ``path``; raise :class:`~optspec.SpecError` listing every
    problem, or :class:`~optspec.UsageError` when the file cannot be read."""
    return read_spec_file(Path(path))


def parse_spec(text: str, *, path: str | os.PathLike[str]) -> Spec:
    """Validate spec ``text`` as if it were the file at ``path`` (which need not exist)."""
    return convert_spec_text(text, Path(path))

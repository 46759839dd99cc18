"""The spec models and converter: round trips through `validate --print`, durations, the JSON
Schema, and docs/spec.md staying in step with the converter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from optspec.errors import SpecError
from optspec.spec.dump import spec_to_toml
from optspec.spec.durations import parse_duration
from optspec.spec.load import TOP_KEYS, convert_spec_text, load_spec, parse_spec
from optspec.spec.model import (
    CategoricalParam,
    Constraint,
    FixedParam,
    FloatParam,
    IntParam,
    PluginsSection,
    RunSection,
    Spec,
    StudySection,
)
from optspec.spec.schema import spec_json_schema
from optspec.spec.tables.constraints import CONSTRAINT_KEYS
from optspec.spec.tables.objective import OBJECTIVE_KEYS
from optspec.spec.tables.params import CATEGORICAL_KEYS, FLOAT_KEYS, INT_KEYS
from optspec.spec.tables.plugins import PLUGINS_KEYS
from optspec.spec.tables.run import RUN_KEYS
from optspec.spec.tables.study import STUDY_KEYS
from optspec.util import tomllib

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
EXAMPLE_SPECS = sorted(EXAMPLES.glob("*.toml"))

RICH_SPECS = {
    "everything": """
version = 1
[study]
name = "rich"
seed = 3
output = "out dir/rich"
[[study.objectives]]
metric = "acc"
direction = "maximize"
[[study.objectives]]
metric = "latency ms"
direction = "minimize"
[objective]
callable = "pkg.mod:objective"
args = { data = { name = "iris", split = [0.8, 0.2] }, "odd key" = 'quote " and \\\\ backslash' }
[params]
epochs = 20
opt = { type = "categorical", choices = ["adam", "sgd", "rms"] }
tags = ["a", "b"]
momentum = { type = "float", low = 0, high = 0.99, step = 0.01, when = { opt = ["sgd", "rms"] } }
lr = { type = "float", low = 1e-5, high = 0.1, log = true }
"batch size" = { type = "int", low = 16, high = 256, step = 16 }
units = { type = "int", low = 1, high = 1024, log = true }
flag = { type = "categorical", choices = [true, false] }
mixed = { type = "categorical", choices = [1, "two", 3.5] }
[sampler]
name = "nsga2"
population_size = 8
[pruner]
name = "nop"
[[constraints]]
metric = "mem"
max = 512
[[constraints]]
metric = "acc"
min = 0.5
max = 1
[run]
n_trials = 7
timeout = "1h"
workers = "auto"
max_failed = 3
trial_timeout = 90
checkpoint = "off"
[[enqueue]]
opt = "sgd"
momentum = 0.5
"batch size" = 32
[[enqueue]]
opt = "adam"
[plugins]
load = ["my_plugin"]
block = ["terminal"]
[plugin.my_plugin]
url = "http://127.0.0.1:9000"
nested = { a = [1, 2] }
""",
    "command": """
version = 1
[study]
directions = ["minimize", "maximize"]
[objective]
command = ["python3", "t.py", "--lr={lr}", "--dir", "{trial_dir}", "{{literal}}"]
cwd = "sub"
env = { A = "1" }
[params]
lr = { type = "float", low = 0.001, high = 1, step = 0.001 }
[sampler]
name = "grid"
[run]
n_trials = 1
""",
    "minimal-defaults": """
[objective]
callable = "pkg.mod:f"
""",
    "plugin-kind": """
version = 1
[objective]
kind = "remote"
endpoint = "https://example.invalid"
[params]
x = { type = "int", low = -3, high = 3 }
""",
}


# -- round trip through the real `optspec validate --print` ----------------------------------------


def print_spec(path: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "optspec", "validate", "--print", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def assert_round_trip(path: Path) -> None:
    original = load_spec(path)
    printed = path.with_name(f"printed-{path.name}")  # same directory: same relative references
    printed.write_text(print_spec(path), encoding="utf-8")
    again = load_spec(printed)
    assert again == original
    assert [p.name for p in again.params] == [p.name for p in original.params]
    # Printing is stable: the printed spec prints to itself.
    assert print_spec(printed) == printed.read_text(encoding="utf-8")


@pytest.mark.parametrize("example", EXAMPLE_SPECS, ids=lambda p: p.stem)
def test_examples_round_trip(tmp_path, example):
    copy = tmp_path / "examples"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    assert_round_trip(copy / example.name)


# `validate` checks that the sampler, pruner and objective kind a spec names are registered, so
# the rich specs get the plugin they name, next to them.
NAMED_PLUGIN = """
from optspec import hookimpl

@hookimpl
def register_objectives():
    return {"remote": lambda table: (lambda trial, params: 0.0)}
"""


def write_pkg_mod(directory: Path) -> None:
    """``pkg.mod``, which the rich specs name: validate imports it, as run does."""
    (directory / "pkg").mkdir()
    (directory / "pkg" / "mod.py").write_text(
        "def objective(params, **args):\n    return 0.0, 0.0\n\ndef f(params):\n    return 0.0\n",
        encoding="utf-8",
    )


@pytest.mark.parametrize("name", RICH_SPECS)
def test_rich_specs_round_trip(tmp_path, name):
    write_pkg_mod(tmp_path)
    (tmp_path / "sub").mkdir()  # the command spec's cwd
    (tmp_path / "my_plugin.py").write_text('"""A plugin with no hooks."""\n', encoding="utf-8")
    (tmp_path / "optspec_plugins.py").write_text(NAMED_PLUGIN, encoding="utf-8")
    path = tmp_path / f"{name}.toml"
    path.write_text(RICH_SPECS[name], encoding="utf-8")
    assert_round_trip(path)


def test_printed_spec_fills_in_defaults(tmp_path):
    write_pkg_mod(tmp_path)
    path = tmp_path / "minimal.toml"
    path.write_text(RICH_SPECS["minimal-defaults"], encoding="utf-8")
    data = tomllib.loads(print_spec(path))
    assert data["version"] == 1
    assert data["study"] == {
        "name": "minimal",
        "direction": "minimize",
        "output": str(Path.cwd() / "optspec-runs" / "minimal"),
    }
    assert data["sampler"] == {"name": "tpe"}
    assert data["pruner"] == {"name": "median"}
    assert data["run"] == {
        "n_trials": 100,
        "workers": 1,
        "timeout": "off",
        "trial_timeout": "off",
        "checkpoint": 300.0,
        "keep_trial_dirs": "failed",
        "heartbeat": 30.0,
    }


def test_equality_ignores_where_a_spec_came_from(tmp_path):
    text = RICH_SPECS["command"]
    a = parse_spec(text, path=tmp_path / "a" / "s.toml")
    b = parse_spec(text + "\n# a comment\n", path=tmp_path / "b" / "s.toml")
    assert a == b
    assert (a.path, b.path) == (tmp_path / "a" / "s.toml", tmp_path / "b" / "s.toml")
    assert a.text != b.text


def test_relative_output_is_resolved_from_the_spec_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = parse_spec(
        '[study]\noutput = "runs/q"\n[objective]\ncallable = "m:f"\n', path=tmp_path / "s.toml"
    )
    assert spec.study.output == tmp_path / "runs" / "q"


def test_converted_models(tmp_path):
    spec = parse_spec(RICH_SPECS["everything"], path=tmp_path / "rich.toml")
    params = {p.name: p for p in spec.params}
    assert [p.name for p in spec.params] == [
        "epochs",
        "opt",
        "tags",
        "momentum",
        "lr",
        "batch size",
        "units",
        "flag",
        "mixed",
    ]
    assert params["epochs"] == FixedParam("epochs", 20)
    assert params["lr"] == FloatParam("lr", 1e-5, 0.1, None, True)
    assert params["batch size"] == IntParam("batch size", 16, 256, 16)
    assert params["momentum"].when[0].values == ("sgd", "rms")
    assert spec.fixed_params == {"epochs": 20, "tags": ["a", "b"]}
    assert len(spec.search_params) == 7
    assert spec.study.metrics == ["acc", "latency ms"]
    assert spec.study.directions == ["maximize", "minimize"]
    assert spec.constraints == (Constraint("mem", None, 512), Constraint("acc", 0.5, 1))
    assert spec.run == RunSection(7, 3600.0, "auto", 3, 90.0, None)
    assert spec.plugins == PluginsSection(("my_plugin",), ("terminal",))
    assert spec.sampler.options == {"population_size": 8}


def test_default_components_are_not_shared_between_specs(tmp_path):
    study = StudySection("a", (), tmp_path)
    one, two = Spec(study, None), Spec(study, None)  # type: ignore[arg-type]
    one.sampler.options["x"] = 1
    assert two.sampler.options == {}


def test_categorical_contains_is_type_exact():
    param = CategoricalParam("c", (1, "1"))
    assert param.contains(1) and param.contains("1")
    assert not param.contains(True) and not param.contains(1.0)


def test_constraint_violation_sign():
    both = Constraint("m", 0, 10)
    assert both.violation(5) <= 0
    assert both.violation(12) == 2
    assert both.violation(-3) == 3


# -- hypothesis: random valid search spaces -------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True)
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.text(max_size=8), st.integers(-100, 100), finite, st.booleans())


@st.composite
def float_params(draw):
    low = draw(finite)
    high = draw(st.floats(low, low + 1e6, allow_nan=False))
    if draw(st.booleans()) and low > 0:
        return {"type": "float", "low": low, "high": high, "log": True}
    table = {"type": "float", "low": low, "high": high}
    if draw(st.booleans()):
        table["step"] = draw(st.floats(1e-3, 1e3))
    return table


@st.composite
def int_params(draw):
    low = draw(st.integers(-1000, 1000))
    high = draw(st.integers(low, low + 1000))
    if draw(st.booleans()) and low >= 1:
        return {"type": "int", "low": low, "high": high, "log": True}
    return {"type": "int", "low": low, "high": high, "step": draw(st.integers(1, 10))}


def distinct_choices(values: list[Any]) -> list[Any]:
    kept: list[Any] = []
    for value in values:
        if not any(value == k for k in kept):  # the converter's rule: no two equal in Python
            kept.append(value)
    return kept


categorical_params = st.lists(scalars, min_size=1, max_size=5).map(
    lambda values: {"type": "categorical", "choices": distinct_choices(values)}
)
fixed_params = st.one_of(scalars, st.lists(st.integers(), max_size=3))


@st.composite
def param_spaces(draw):
    space: dict[str, Any] = {}
    for name in draw(st.lists(names, min_size=1, max_size=8, unique=True)):
        value = draw(st.one_of(float_params(), int_params(), categorical_params, fixed_params))
        categoricals = [n for n, v in space.items() if isinstance(v, dict) and "choices" in v]
        if isinstance(value, dict) and categoricals and draw(st.booleans()):
            parent = draw(st.sampled_from(categoricals))
            value["when"] = {parent: draw(st.sampled_from(space[parent]["choices"]))}
        space[name] = value
    return space


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(space=param_spaces())
def test_random_valid_spaces_convert_and_round_trip(tmp_path, space):
    text = tomli_w.dumps({"objective": {"callable": "m:f"}, "params": space})
    spec = convert_spec_text(text, tmp_path / "s.toml")
    # The order the TOML file declares them in (tomli_w writes plain values before tables).
    assert [p.name for p in spec.params] == list(tomllib.loads(text)["params"])
    for param in spec.params:
        if isinstance(param, FixedParam):
            assert param.value == space[param.name]
        else:
            assert param.when == () or "when" in space[param.name]
    assert convert_spec_text(spec_to_toml(spec), tmp_path / "s.toml") == spec


# -- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        (" 30 s ", 30.0),
        ("2H", 7200.0),
        ("45", 45.0),
        (".5m", 30.0),
        ("off", None),
        ("OFF", None),
        ("none", None),
    ],
)
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "10 minutes",
        "1h30m",
        "-5s",
        "5 m s",
        "m",
        "1e3",
        "inf",
        0,
        -1,
        0.0,
        float("inf"),
        float("nan"),
        True,
        None,
        [1],
        "0s",
    ],
)
def test_parse_duration_rejects(value):
    with pytest.raises(ValueError, match="duration like"):
        parse_duration(value)


# -- JSON Schema -----------------------------------------------------------------------------------


def schema_errors(schema: dict, value: Any) -> list[str]:
    """What jsonschema finds wrong with ``value``, one line per error."""
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in Draft202012Validator(schema).iter_errors(value)
    ]


@pytest.fixture(scope="module")
def schema() -> dict:
    return spec_json_schema()


def test_schema_command_prints_the_schema(optspec_cli):
    result = optspec_cli("schema")
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(result.stdout) == spec_json_schema()


def test_schema_is_a_valid_draft_2020_12_schema(schema):
    Draft202012Validator.check_schema(schema)


def test_schema_tables_hold_exactly_the_converter_keys(schema):
    props = schema["properties"]
    assert list(props) == list(TOP_KEYS)
    assert list(props["study"]["properties"]) == list(STUDY_KEYS)
    assert list(props["objective"]["properties"]) == list(OBJECTIVE_KEYS)
    assert list(props["run"]["properties"]) == list(RUN_KEYS)
    assert list(props["plugins"]["properties"]) == list(PLUGINS_KEYS)
    assert list(props["constraints"]["items"]["properties"]) == list(CONSTRAINT_KEYS)
    defs = schema["$defs"]
    assert list(defs["float_param"]["properties"]) == list(FLOAT_KEYS)
    assert list(defs["int_param"]["properties"]) == list(INT_KEYS)
    assert list(defs["categorical_param"]["properties"]) == list(CATEGORICAL_KEYS)


VALID_TEXTS = {path.stem: path.read_text(encoding="utf-8") for path in EXAMPLE_SPECS}
VALID_TEXTS |= {f"rich-{name}": text for name, text in RICH_SPECS.items()}


@pytest.mark.parametrize("name", VALID_TEXTS)
def test_valid_specs_match_the_schema(schema, name):
    assert schema_errors(schema, tomllib.loads(VALID_TEXTS[name])) == []


SCHEMA_INVALID = {
    "unknown-top-key": "studdy = 1",
    "unknown-study-key": '[study]\nnmae = "a"',
    "direction-and-directions": '[study]\ndirection = "minimize"\ndirections = ["maximize"]',
    "bad-direction": '[study]\ndirection = "min"',
    "float-log-and-step": '[params]\nx = { type = "float", low = 1, high = 2, log = true, step = 1 }',  # noqa: E501
    "param-unknown-key": '[params]\nx = { type = "float", low = 0, hihg = 1 }',
    "int-float-bound": '[params]\nn = { type = "int", low = 0.5, high = 3 }',
    "empty-choices": '[params]\nc = { type = "categorical", choices = [] }',
    "constraint-no-bound": '[[constraints]]\nmetric = "m"',
    "run-duration-words": '[run]\ntimeout = "10 minutes"',
    "run-workers": "[run]\nworkers = 0",
    "version-2": "version = 2",
    "command-string": None,
    "callable-and-command": None,
}


@pytest.mark.parametrize("case", SCHEMA_INVALID)
def test_invalid_specs_do_not_match_the_schema(schema, case):
    objective = '[objective]\ncallable = "m:f"\n'
    if case == "command-string":
        objective = '[objective]\ncommand = "python3 t.py"\n'
    elif case == "callable-and-command":
        objective = '[objective]\ncallable = "m:f"\ncommand = ["python3"]\n'
    extra = SCHEMA_INVALID[case] or ""
    text = f"{extra}\n{objective}" if not extra.startswith("[") else f"{objective}{extra}\n"
    data = tomllib.loads(text)
    assert schema_errors(schema, data) != []
    with pytest.raises(SpecError):  # the converter agrees
        convert_spec_text(text, REPO / "s.toml")


def test_plugin_objective_kinds_are_left_to_the_plugin(schema):
    data = tomllib.loads(RICH_SPECS["plugin-kind"])
    assert schema_errors(schema, data) == []
    data["objective"] = {"kind": "python", "endpoint": "x", "callable": "m:f"}
    assert schema_errors(schema, data) != []


@pytest.mark.parametrize(
    "value", ["90s", "10m", " 2 H ", "500ms", ".5m", "off", "None", "1h30m", "10 minutes", "", "s"]
)
def test_schema_duration_pattern_agrees_with_parse_duration(schema, value):
    try:
        parse_duration(value)
        accepted = True
    except ValueError:
        accepted = False
    assert (schema_errors(schema["$defs"]["duration"], value) == []) == accepted


# -- docs/spec.md --------------------------------------------------------------------------------

DOC = REPO / "docs" / "spec.md"
# heading in docs/spec.md -> (the converter's keys, the attrs model holding their defaults)
DOC_TABLES = {
    "Top level": (TOP_KEYS, Spec),
    "`[study]`": (STUDY_KEYS, StudySection),
    "`[[study.objectives]]`": (("metric", "direction"), None),
    "`[objective]`": (OBJECTIVE_KEYS, None),
    "float parameters": (FLOAT_KEYS, FloatParam),
    "int parameters": (INT_KEYS, IntParam),
    "categorical parameters": (CATEGORICAL_KEYS, CategoricalParam),
    "`[[constraints]]`": (CONSTRAINT_KEYS, Constraint),
    "`[run]`": (RUN_KEYS, RunSection),
    "`[plugins]` and `[plugin.NAME]`": (PLUGINS_KEYS, PluginsSection),
}


def doc_tables() -> dict[str, list[tuple[str, str]]]:
    """Heading -> [(key, default cell)] for every key table in docs/spec.md."""
    tables: dict[str, list[tuple[str, str]]] = {}
    heading = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("| `") and heading is not None:
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            tables.setdefault(heading, []).append((cells[0].strip("`"), cells[2]))
    return tables


def test_doc_lists_exactly_the_converter_keys():
    tables = doc_tables()
    for heading, (keys, _) in DOC_TABLES.items():
        assert heading in tables, f"docs/spec.md has no key table under {heading!r}"
        assert [key for key, _ in tables[heading]] == list(keys), heading


def test_doc_defaults_match_the_models():
    tables = doc_tables()
    for heading, (_, model) in DOC_TABLES.items():
        if model is None:
            continue
        fields = {f.name: f.default for f in attrs.fields(model)}
        for key, cell in tables[heading]:
            default = fields.get(key, attrs.NOTHING)
            computed = default is attrs.NOTHING or isinstance(default, attrs.Factory)  # type: ignore[arg-type]
            if computed or attrs.has(type(default)):
                continue  # computed (the file's stem, the working directory) or a whole table
            where = f"{heading} {key}"
            if default is None:
                assert not cell.startswith("`"), f"{where}: no default, the doc says {cell}"
                continue
            if default == () and cell == "—":
                continue  # an empty table or array: "none" reads better than `[]` here
            assert cell.startswith("`") and cell.endswith("`"), f"{where}: doc lacks {default!r}"
            documented = tomllib.loads(f"v = {cell.strip('`')}")["v"]
            if isinstance(documented, list | dict):
                documented = tuple(documented)
            if isinstance(documented, str) and isinstance(default, float):
                documented = parse_duration(documented)
            assert documented == default and type(documented) is type(default), where


def test_devices_set_the_worker_count_and_accept_numbers(tmp_path):
    text = 'version = 1\n[objective]\ncallable = "m:f"\n[run]\ndevices = ["7", 9, "0,1"]\n'
    spec = parse_spec(text, path=tmp_path / "s.toml")
    assert spec.run.devices == ("7", "9", "0,1")
    assert spec.run.workers == 3 and spec.run.worker_count == 3
    assert spec.run.device_env == "CUDA_VISIBLE_DEVICES"
    assert spec.run.keep_trial_dirs == "failed"
    # Fewer workers than entries use the first ones; "auto" means one per entry.
    fewer = parse_spec(text + "workers = 2\n", path=tmp_path / "s.toml")
    assert fewer.run.worker_count == 2 and fewer.run.device(1) == "9"
    auto = parse_spec(text + 'workers = "auto"\n', path=tmp_path / "s.toml")
    assert auto.run.worker_count == 3

"""Plugins as users load them: through the real `optspec` command, in a fresh interpreter.

Entry points come from the installed example plugin (optspec-jsonl-log) and from distributions
these tests lay out on PYTHONPATH (a ``*.dist-info`` with ``entry_points.txt`` is all
importlib.metadata needs), so load order and broken distributions are tested without installing
anything.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.helpers import CONSTANT_OBJECTIVE

SPEC = """\
version = 1
[study]
name = "plugged"
direction = "minimize"
[objective]
callable = "objective.py:objective"
[params]
x = {{ type = "float", low = -10, high = 10 }}
{extra}
"""

OBJECTIVE = "def objective(params):\n    return (params['x'] - 2) ** 2\n"

# A sampler that always suggests `x` (default 1.25): which sampler ran shows in every trial.
PINNED_SAMPLER = """\
from optspec import hookimpl


def pinned(x=1.25):
    import optuna

    return optuna.samplers.PartialFixedSampler({"x": x}, optuna.samplers.RandomSampler())


@hookimpl
def register_samplers():
    return {"pinned": pinned}
"""


def cli(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OPTSPEC_DISABLE_PLUGIN_AUTOLOAD"}
    return subprocess.run(
        [sys.executable, "-m", "optspec", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environ, **(env or {})},
        timeout=60,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with the objective module; tests add a spec and plugin modules."""
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    return tmp_path


def write_spec(directory: Path, extra: str = "") -> Path:
    path = directory / "study.toml"
    path.write_text(SPEC.format(extra=extra))
    return path


def run(directory: Path, *args: str, env: dict[str, str] | None = None, n_trials: int = 3):
    spec = directory / "study.toml"
    if not spec.exists():
        write_spec(directory)
    return cli(
        "run", spec, "-o", directory / "out", "-q", "--n-trials", n_trials, "--workers", 1, *args,
        cwd=directory, env=env,
    )  # fmt: skip


def saved_trials(directory: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{directory / 'out' / 'study.db'}"
    return optuna.load_study(study_name="plugged", storage=storage).trials


def make_distribution(site: Path, dist: str, entry_point: str, module: str, source: str) -> None:
    """An installed distribution `dist` 1.0 whose entry point `entry_point` is module `module`."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[optspec]\n{entry_point} = {module}\n")


# -- the installed example plugin -------------------------------------------------------------


def test_installed_example_plugin_runs_without_a_flag(project):
    result = run(project, n_trials=4)

    assert result.returncode == 0, result.stderr
    lines = (project / "out" / "trials.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["number"] for line in lines) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("args", "env"),
    [(["-p", "no:jsonl-log"], None), ([], {"OPTSPEC_DISABLE_PLUGIN_AUTOLOAD": "1"})],
    ids=["-p no:jsonl-log", "OPTSPEC_DISABLE_PLUGIN_AUTOLOAD"],
)
def test_example_plugin_can_be_turned_off(project, args, env):
    result = run(project, *args, env=env)

    assert result.returncode == 0, result.stderr
    assert (project / "out" / "study.db").is_file()
    assert not (project / "out" / "trials.jsonl").exists()


# -- what plugins register is usable from a spec ----------------------------------------------


@pytest.mark.parametrize("how", ["-p", "[plugins] load", "optspec_plugins.py"])
def test_a_plugin_sampler_is_usable_by_name(project, how):
    sampler = '[sampler]\nname = "pinned"\nx = 0.5\n'
    args: list[str] = []
    if how == "optspec_plugins.py":
        (project / "optspec_plugins.py").write_text(PINNED_SAMPLER)
        write_spec(project, sampler)
    else:
        (project / "pinned_sampler.py").write_text(PINNED_SAMPLER)
        if how == "-p":
            args = ["-p", "pinned_sampler"]
            write_spec(project, sampler)
        else:
            write_spec(project, '[plugins]\nload = ["pinned_sampler"]\n' + sampler)

    result = run(project, *args)

    assert result.returncode == 0, result.stderr
    assert [trial.params["x"] for trial in saved_trials(project)] == [0.5, 0.5, 0.5]


def test_a_plugin_objective_kind_is_usable_by_name(project):
    (project / "constant_objective.py").write_text(CONSTANT_OBJECTIVE)
    spec = write_spec(project)
    spec.write_text(
        spec.read_text().replace(
            'callable = "objective.py:objective"', 'kind = "constant"\nvalue = 7.5'
        )
    )

    result = run(project, "-p", "constant_objective")

    assert result.returncode == 0, result.stderr
    assert [trial.value for trial in saved_trials(project)] == [7.5, 7.5, 7.5]


# -- mistakes: exit 2, one line, nothing written ----------------------------------------------


def assert_usage_error(result: subprocess.CompletedProcess[str], directory: Path, *needles: str):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr
    assert not (directory / "out").exists()


def test_plugin_that_fails_to_import_is_named(project):
    (project / "broken_plugin.py").write_text("import no_such_module_anywhere\n")

    result = run(project, "-p", "broken_plugin")

    assert_usage_error(
        result, project, "'broken_plugin'", "failed to load", "No module named 'no_such_module"
    )


def test_entry_point_that_fails_to_import_names_its_distribution(project):
    site = project / "site"
    make_distribution(site, "broken-dist", "broken", "broken_ep", "raise RuntimeError('oops')\n")

    result = run(project, env={"PYTHONPATH": str(site)})

    assert_usage_error(result, project, "'broken'", "broken-dist 1.0", "RuntimeError: oops")


def test_sampler_name_registered_by_two_plugins_names_both(project):
    (project / "first_pinned.py").write_text(PINNED_SAMPLER)
    (project / "second_pinned.py").write_text(PINNED_SAMPLER)

    result = run(project, "-p", "first_pinned", "-p", "second_pinned")

    assert_usage_error(result, project, "'pinned'", "'first_pinned'", "'second_pinned'")


def test_unknown_sampler_option_names_its_toml_path(project):
    write_spec(project, '[sampler]\nname = "tpe"\nn_startup_trialz = 3\n')

    result = run(project)

    assert_usage_error(
        result, project, "study.toml", "sampler.n_startup_trialz", "'n_startup_trials'"
    )


def test_unknown_sampler_name_lists_the_registered_ones(project):
    write_spec(project, '[sampler]\nname = "tpee"\n')

    result = run(project)

    assert_usage_error(result, project, "study.toml", "sampler.name", "'tpee'", "tpe")


def test_plugin_rejecting_its_table_in_configure(project):
    (project / "strict.py").write_text(
        "from optspec import SpecError, hookimpl\n\n\n"
        "@hookimpl\n"
        "def configure(config):\n"
        "    if config.plugin_options('strict').get('level') != 'high':\n"
        "        raise SpecError(\"plugin.strict.level: must be 'high'\")\n"
    )
    write_spec(project, '[plugin.strict]\nlevel = "low"\n')

    result = run(project, "-p", "strict")

    assert_usage_error(result, project, "study.toml", "plugin.strict.level: must be 'high'")


# -- optspec plugins --------------------------------------------------------------------------


def test_optspec_plugins_lists_plugins_with_origin_hooks_and_registrations(project):
    (project / "pinned_sampler.py").write_text(PINNED_SAMPLER)

    result = cli("plugins", "-p", "pinned_sampler", cwd=project)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line for line in lines if line.startswith("  ")}
    for builtin in ("samplers", "pruners", "objectives", "sqlite", "terminal", "github"):
        assert "builtin" in rows[builtin]
    assert "optspec-jsonl-log 0.1.0" in rows["jsonl-log"]
    assert "configure, on_trial_end" in rows["jsonl-log"]
    assert "register_samplers" in rows["pinned_sampler"]
    assert "from pinned_sampler" in rows["pinned"]
    assert "from samplers" in rows["tpe"]
    assert "from pruners" in rows["median"]
    assert "from objectives" in rows["command"]
    sections = [line for line in lines if not line.startswith("  ")]
    assert sections == ["plugins (in load order):", "samplers:", "pruners:", "objectives:"]


# -- load order -------------------------------------------------------------------------------

# Each plugin appends its name to $ORDER_LOG when the study starts, in the controller.
ORDER_PLUGIN = """\
import os

from optspec import hookimpl


@hookimpl
def on_study_start():
    with open(os.environ["ORDER_LOG"], "a") as log:
        log.write("{name}\\n")
"""


def test_plugins_load_in_the_documented_order_and_later_ones_run_first(project):
    site = project / "site"
    make_distribution(site, "order-dist", "order-ep", "order_ep", ORDER_PLUGIN.format(name="ep"))
    (project / "order_p.py").write_text(ORDER_PLUGIN.format(name="-p"))
    (project / "order_spec.py").write_text(ORDER_PLUGIN.format(name="spec"))
    (project / "optspec_plugins.py").write_text(ORDER_PLUGIN.format(name="local file"))
    write_spec(project, '[plugins]\nload = ["order_spec"]\n')
    log = project / "order.log"
    env = {"PYTHONPATH": str(site), "ORDER_LOG": str(log)}

    result = run(project, "-p", "order_p", env=env)
    listing = cli("plugins", "-p", "order_p", cwd=project, env=env)

    assert result.returncode == 0, result.stderr
    # pluggy calls the last registered first: the reverse of the load order.
    assert log.read_text().splitlines() == ["local file", "spec", "-p", "ep"]
    lines = listing.stdout.splitlines()
    names = [line.split()[0] for line in lines[1 : lines.index("samplers:")]]
    assert names[:6] == ["samplers", "pruners", "objectives", "sqlite", "terminal", "github"]
    assert set(names[6:-1]) == {"jsonl-log", "order-ep"}  # entry points, in the group's order
    assert names[-1] == "order_p"


# A -p plugin wraps register_samplers and swaps the entry point's `pinned` for its own, the way
# a later plugin overrides an earlier one: its wrapper runs outside every earlier implementation.
OVERRIDING_PLUGIN = """\
import optuna

from optspec import hookimpl


def minus_three():
    return optuna.samplers.PartialFixedSampler({"x": -3.0}, optuna.samplers.RandomSampler())


@hookimpl(wrapper=True)
def register_samplers():
    results = yield
    return [{**found, "pinned": minus_three} if "pinned" in found else found for found in results]
"""


@pytest.mark.slow
def test_a_p_plugin_overrides_what_an_entry_point_registered(project):
    site = project / "site"
    make_distribution(site, "pinned-dist", "pinned", "pinned_ep", PINNED_SAMPLER)
    (project / "override.py").write_text(OVERRIDING_PLUGIN)
    write_spec(project, '[sampler]\nname = "pinned"\n')
    env = {"PYTHONPATH": str(site)}

    plain = run(project, env=env)
    assert plain.returncode == 0, plain.stderr
    assert {trial.params["x"] for trial in saved_trials(project)} == {1.25}

    overridden = run(project, "-p", "override", "--overwrite", env=env)
    assert overridden.returncode == 0, overridden.stderr
    assert {trial.params["x"] for trial in saved_trials(project)} == {-3.0}


def test_a_misspelt_hook_name_is_one_line_and_exit_2(project: Path) -> None:
    tmp_path = project
    write_spec(tmp_path)
    (tmp_path / "optspec_plugins.py").write_text(
        "from optspec import hookimpl\n\n@hookimpl\ndef on_trial_ennd(trial):\n    pass\n"
    )
    for command in (["validate", tmp_path / "study.toml"], ["run", tmp_path / "study.toml"]):
        result = cli(*command, "-q" if command[0] == "run" else "--print", cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "unknown hook 'on_trial_ennd'" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_naming_an_autoloaded_plugin_with_p_loads_it_once(project: Path) -> None:
    result = run(project, "-p", "optspec_jsonl_log")
    assert result.returncode == 0, result.stderr
    lines = (project / "out" / "trials.jsonl").read_text().splitlines()
    assert len(lines) == 3

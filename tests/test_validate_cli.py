"""`optspec validate`: every invalid spec exits 2 naming the file and the TOML path, no traceback.

The corpus runs in-process through ``optspec.cli.main`` (fast); a sample of it, and the cases about
files, runs through the real ``python -m optspec`` in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from optspec import cli

FLOAT_X = 'x = { type = "float", low = 0, high = 1 }'
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
OPT = 'opt = { type = "categorical", choices = ["adam", "sgd"] }'


def spec(
    *,
    top: str = "",
    version: str = "1",
    objective: str | None = 'callable = "pkg.mod:f"',
    params: str | None = FLOAT_X,
    extra: str = "",
) -> str:
    """A valid spec with one part replaced: ``top`` keys, ``[objective]``, ``[params]`` and
    ``extra`` tables after them."""
    parts = [top, f"version = {version}" if version is not None else ""]
    if objective is not None:
        parts += ["[objective]", objective]
    if params is not None:
        parts += ["[params]", params]
    parts.append(extra)
    return "\n".join(parts) + "\n"


def case(case_id: str, text: str, path: str, fragment: str = ""):
    return pytest.param(text, path, fragment, id=case_id)


INVALID = [
    # -- top level ------------------------------------------------------------------------------
    case("top-unknown-key", spec(extra='[studdy]\nname = "a"'), "studdy", "did you mean 'study'"),
    case("version-string", spec(version='"1"'), "version", "must be the integer 1"),
    case("version-2", spec(version="2"), "version", "unsupported spec version 2"),
    case("study-not-table", spec(top='study = "quadratic"'), "study", "must be a table"),
    case("params-not-table", spec(top="params = 3", params=None), "params", "must be a table"),
    # -- [study] --------------------------------------------------------------------------------
    case(
        "study-unknown-key", spec(extra='[study]\nnmae = "a"'), "study.nmae", "did you mean 'name'"
    ),
    case("study-direction", spec(extra='[study]\ndirection = "min"'), "study.direction"),
    case("study-name-type", spec(extra="[study]\nname = 3"), "study.name", "non-empty string"),
    case("study-name-slash", spec(extra='[study]\nname = "a/b"'), "study.name", "directory"),
    case("study-seed-negative", spec(extra="[study]\nseed = -1"), "study.seed"),
    case(
        "study-directions-item",
        spec(extra='[study]\ndirections = ["minimize", "up"]'),
        "study.directions[1]",
    ),
    case(
        "study-direction-and-directions",
        spec(extra='[study]\ndirection = "minimize"\ndirections = ["minimize"]'),
        "study",
        "exclusive",
    ),
    case(
        "study-objectives-not-array", spec(extra='[study]\nobjectives = "loss"'), "study.objectives"
    ),
    case(
        "study-objectives-unknown-key",
        spec(extra='[[study.objectives]]\nmetric = "a"\ndirection = "minimize"\nweight = 1'),
        "study.objectives[0].weight",
        "valid keys here: metric, direction",
    ),
    case(
        "study-objectives-no-metric",
        spec(extra='[[study.objectives]]\ndirection = "minimize"'),
        "study.objectives[0].metric",
        "missing",
    ),
    case(
        "study-objectives-twice",
        spec(
            extra='[[study.objectives]]\nmetric = "a"\ndirection = "minimize"\n'
            '[[study.objectives]]\nmetric = "a"\ndirection = "maximize"'
        ),
        "study.objectives",
        "named twice",
    ),
    # -- [objective] ----------------------------------------------------------------------------
    case("objective-missing", spec(objective=None), "objective", "missing"),
    case(
        "objective-both",
        spec(objective='callable = "pkg.mod:f"\ncommand = ["python3", "t.py"]'),
        "objective",
        "exclusive",
    ),
    case("objective-neither", spec(objective="args = { a = 1 }"), "objective", "exactly one"),
    case(
        "objective-typo",
        spec(objective='calable = "pkg.mod:f"'),
        "objective.calable",
        "did you mean 'callable'",
    ),
    case(
        "objective-unknown-key",
        spec(objective='callable = "pkg.mod:f"\ntimeout = 3'),
        "objective.timeout",
    ),
    case("callable-type", spec(objective="callable = 3"), "objective.callable"),
    case("callable-no-colon", spec(objective='callable = "pkg.mod"'), "objective.callable"),
    case(
        "callable-file-missing",
        spec(objective='callable = "nope.py:objective"'),
        "objective.callable",
        "no file 'nope.py'",
    ),
    case("args-not-table", spec(objective='callable = "pkg.mod:f"\nargs = 3'), "objective.args"),
    case(
        "cwd-with-callable",
        spec(objective='callable = "pkg.mod:f"\ncwd = "."'),
        "objective.cwd",
        "command objectives only",
    ),
    case(
        "command-shell-string",
        spec(objective='command = "python3 train.py --lr {x}"'),
        "objective.command",
        "never a shell string",
    ),
    case("command-empty", spec(objective="command = []"), "objective.command", "non-empty"),
    case("command-element", spec(objective='command = ["python3", 3]'), "objective.command[1]"),
    case(
        "command-unknown-placeholder",
        spec(objective='command = ["python3", "t.py", "--lr={lr}"]'),
        "objective.command[2]",
        "placeholder {lr} names no parameter",
    ),
    case(
        "command-env-value",
        spec(objective='command = ["python3", "t.py"]\nenv = { A = 1 }'),
        "objective.env.A",
    ),
    case(
        "command-with-args",
        spec(objective='command = ["python3", "t.py"]\nargs = { a = 1 }'),
        "objective.args",
    ),
    case(
        "kind-command-no-command",
        spec(objective='kind = "command"'),
        "objective.command",
        "missing",
    ),
    # -- [params] -------------------------------------------------------------------------------
    case("param-no-type", spec(params="x = { low = 0, high = 1 }"), "params.x.type", "missing"),
    case(
        "param-typo-key",
        spec(params='x = { type = "float", low = 0, hihg = 1 }'),
        "params.x.hihg",
        "did you mean 'high'",
    ),
    case(
        "param-typo-type-key",
        spec(params='x = { typ = "float", low = 0, high = 1 }'),
        "params.x.typ",
        "did you mean 'type'",
    ),
    case(
        "param-bad-type", spec(params='x = { type = "double", low = 0, high = 1 }'), "params.x.type"
    ),
    case(
        "float-low-above-high",
        spec(params='x = { type = "float", low = 2, high = 1 }'),
        "params.x.low",
        "must be <= high",
    ),
    case(
        "float-low-string",
        spec(params='x = { type = "float", low = "0", high = 1 }'),
        "params.x.low",
    ),
    case(
        "float-no-high", spec(params='x = { type = "float", low = 0 }'), "params.x.high", "missing"
    ),
    case(
        "float-low-inf", spec(params='x = { type = "float", low = -inf, high = 1 }'), "params.x.low"
    ),
    case(
        "float-log-low-zero",
        spec(params='lr = { type = "float", low = 0, high = 1, log = true }'),
        "params.lr.low",
        "must be > 0 when log = true",
    ),
    case(
        "float-log-and-step",
        spec(params='lr = { type = "float", low = 0.1, high = 1, log = true, step = 0.1 }'),
        "params.lr.step",
        "cannot be combined with log",
    ),
    case(
        "float-step-negative",
        spec(params='x = { type = "float", low = 0, high = 1, step = -0.1 }'),
        "params.x.step",
    ),
    case(
        "float-log-string",
        spec(params='x = { type = "float", low = 1, high = 2, log = "yes" }'),
        "params.x.log",
    ),
    case(
        "int-float-bound", spec(params='n = { type = "int", low = 1.5, high = 4 }'), "params.n.low"
    ),
    case(
        "int-log-low-zero",
        spec(params='n = { type = "int", low = 0, high = 8, log = true }'),
        "params.n.low",
        ">= 1 when log = true",
    ),
    case(
        "int-log-step",
        spec(params='n = { type = "int", low = 1, high = 8, log = true, step = 2 }'),
        "params.n.step",
    ),
    case(
        "int-step-zero",
        spec(params='n = { type = "int", low = 1, high = 8, step = 0 }'),
        "params.n.step",
    ),
    case(
        "categorical-empty",
        spec(params='opt = { type = "categorical", choices = [] }'),
        "params.opt.choices",
        "at least one choice",
    ),
    case(
        "categorical-not-array",
        spec(params='opt = { type = "categorical", choices = "adam" }'),
        "params.opt.choices",
    ),
    case(
        "categorical-duplicate",
        spec(params='opt = { type = "categorical", choices = ["adam", "adam"] }'),
        "params.opt.choices[1]",
        "given twice",
    ),
    case(
        "categorical-true-and-1",
        spec(params='opt = { type = "categorical", choices = [true, 1] }'),
        "params.opt.choices[1]",
        "cannot tell them apart",
    ),
    case(
        "categorical-table-choice",
        spec(params='opt = { type = "categorical", choices = [{ a = 1 }] }'),
        "params.opt.choices[0]",
    ),
    case(
        "categorical-unknown-key",
        spec(params='opt = { type = "categorical", choices = [1, 2], low = 1 }'),
        "params.opt.low",
    ),
    case(
        "when-unknown-param",
        spec(
            params=f'{OPT}\nm = {{ type = "float", low = 0, high = 1, when = {{ nope = "sgd" }} }}'
        ),
        "params.m.when.nope",
        "names no parameter declared before",
    ),
    case(
        "when-later-param",
        spec(
            params=f'm = {{ type = "float", low = 0, high = 1, when = {{ opt = "sgd" }} }}\n{OPT}'
        ),
        "params.m.when.opt",
        "params.opt is declared after this parameter; move it above",
    ),
    case(
        "when-not-categorical",
        spec(
            params=f'{FLOAT_X}\nm = {{ type = "float", low = 0, high = 1, when = {{ x = 0.5 }} }}'
        ),
        "params.m.when.x",
        "not categorical",
    ),
    case(
        "when-absent-choice",
        spec(
            params=f'{OPT}\nm = {{ type = "float", low = 0, high = 1, when = {{ opt = "rms" }} }}'
        ),
        "params.m.when.opt",
        "is not a choice of params.opt",
    ),
    case(
        "when-not-table",
        spec(params=f'{OPT}\nm = {{ type = "float", low = 0, high = 1, when = "opt" }}'),
        "params.m.when",
    ),
    # -- [sampler], [pruner] --------------------------------------------------------------------
    case(
        "grid-continuous-float",
        spec(extra='[sampler]\nname = "grid"'),
        "params.x.step",
        "discrete search space",
    ),
    case("sampler-no-name", spec(extra="[sampler]\nseed = 1"), "sampler.name", "missing"),
    case("sampler-not-table", spec(top='sampler = "tpe"'), "sampler", "must be a table"),
    case("pruner-name-type", spec(extra="[pruner]\nname = 3"), "pruner.name"),
    # -- [[constraints]] ------------------------------------------------------------------------
    case(
        "constraint-no-bound",
        spec(extra='[[constraints]]\nmetric = "mem"'),
        "constraints[0]",
        "needs min, max or both",
    ),
    case(
        "constraint-min-above-max",
        spec(extra='[[constraints]]\nmetric = "mem"\nmin = 5\nmax = 1'),
        "constraints[0].min",
        "must be <= max",
    ),
    case(
        "constraint-unknown-key",
        spec(extra='[[constraints]]\nmetric = "mem"\nmaximum = 1'),
        "constraints[0].maximum",
        "did you mean 'max'",
    ),
    case("constraint-no-metric", spec(extra="[[constraints]]\nmax = 1"), "constraints[0].metric"),
    case(
        "constraints-table",
        spec(extra='[constraints]\nmetric = "mem"'),
        "constraints",
        "array of tables",
    ),
    # -- [run] ----------------------------------------------------------------------------------
    case(
        "run-unknown-key",
        spec(extra="[run]\nn_trial = 5"),
        "run.n_trial",
        "did you mean 'n_trials'",
    ),
    case("run-n-trials-zero", spec(extra="[run]\nn_trials = 0"), "run.n_trials", "from 1 to"),
    case("run-workers", spec(extra='[run]\nworkers = "many"'), "run.workers"),
    case("run-timeout-words", spec(extra='[run]\ntimeout = "10 minutes"'), "run.timeout", '"10m"'),
    case("run-timeout-negative", spec(extra="[run]\ntimeout = -5"), "run.timeout", "more than 0"),
    case("run-trial-timeout-bool", spec(extra="[run]\ntrial_timeout = true"), "run.trial_timeout"),
    case("run-checkpoint", spec(extra='[run]\ncheckpoint = "soon"'), "run.checkpoint"),
    case("run-max-failed-float", spec(extra="[run]\nmax_failed = 2.5"), "run.max_failed"),
    case("run-devices-empty", spec(extra="[run]\ndevices = []"), "run.devices", "non-empty"),
    case("run-devices-string", spec(extra='[run]\ndevices = "0,1"'), "run.devices", '["0", "1"]'),
    case("run-devices-space", spec(extra='[run]\ndevices = ["0, 1"]'), "run.devices[0]", '"0,1"'),
    case(
        "run-workers-over-devices",
        spec(extra='[run]\nworkers = 3\ndevices = ["0", "1"]'),
        "run.workers",
        "3 workers but run.devices has 2 entries",
    ),
    case("run-device-env", spec(extra='[run]\ndevice_env = "CUDA VISIBLE"'), "run.device_env"),
    case(
        "run-keep-trial-dirs",
        spec(extra='[run]\nkeep_trial_dirs = "best-only"'),
        "run.keep_trial_dirs",
        '"failed", "all", "best" or "none"',
    ),
    case(
        "args-also-a-param",
        spec(objective='callable = "pkg.mod:f"\nargs = { x = 1 }'),
        "objective.args.x",
        "also declared as params.x",
    ),
    # -- [[enqueue]] ----------------------------------------------------------------------------
    case(
        "enqueue-outside", spec(extra="[[enqueue]]\nx = 1.5"), "enqueue[0].x", "outside the space"
    ),
    case(
        "enqueue-unknown-param",
        spec(extra="[[enqueue]]\ny = 0.5"),
        "enqueue[0].y",
        "not a declared parameter",
    ),
    case(
        "enqueue-fixed-param",
        spec(params=f"{FLOAT_X}\nepochs = 20", extra="[[enqueue]]\nepochs = 10"),
        "enqueue[0].epochs",
        "is fixed",
    ),
    case(
        "enqueue-not-a-choice", spec(params=OPT, extra='[[enqueue]]\nopt = "rms"'), "enqueue[0].opt"
    ),
    case(
        "enqueue-off-step",
        spec(
            params='n = { type = "int", low = 0, high = 8, step = 2 }', extra="[[enqueue]]\nn = 3"
        ),
        "enqueue[0].n",
        "step = 2",
    ),
    case(
        "enqueue-condition-off",
        spec(
            params=f'{OPT}\nm = {{ type = "float", low = 0, high = 1, when = {{ opt = "sgd" }} }}',
            extra='[[enqueue]]\nopt = "adam"\nm = 0.5',
        ),
        "enqueue[0].m",
        "exists only when opt is 'sgd'",
    ),
    case("enqueue-table", spec(extra="[enqueue]\nx = 0.5"), "enqueue", "array of tables"),
    # -- [plugins], [plugin.NAME] ---------------------------------------------------------------
    case(
        "plugins-unknown-key",
        spec(extra='[plugins]\nloads = ["a"]'),
        "plugins.loads",
        "did you mean 'load'",
    ),
    case("plugins-load-string", spec(extra='[plugins]\nload = "a"'), "plugins.load", "array"),
    case("plugins-load-item", spec(extra='[plugins]\nblock = [""]'), "plugins.block[0]"),
    case("plugin-not-table", spec(extra="[plugin]\nmy-plugin = 1"), "plugin.my-plugin", "table"),
]


def assert_reported(code: int, stderr: str, spec_path: Path, toml_path: str, fragment: str = ""):
    """Exit code 2, and a line ``FILE: toml.path: message`` holding ``fragment``."""
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    prefix = f"{spec_path}: {toml_path}: "
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert lines, f"no line starts with {prefix!r}:\n{stderr}"
    assert any(fragment in line for line in lines), f"{fragment!r} not in {lines}"


def validate_in_process(capsys: pytest.CaptureFixture[str], *paths: Path) -> tuple[int, str, str]:
    code = cli.main(["validate", *map(str, paths)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_corpus_is_large_and_ids_are_unique():
    ids = [param.id for param in INVALID]
    assert len(ids) >= 45
    assert len(set(ids)) == len(ids)


def test_the_template_itself_is_valid(write_spec, capsys):
    path = write_spec(spec(objective=OBJ))
    write_objective(path.parent)
    assert validate_in_process(capsys, path) == (0, f"ok: {path}\n", "")


@pytest.mark.parametrize(("text", "toml_path", "fragment"), INVALID)
def test_invalid_spec_in_process(write_spec, capsys, text, toml_path, fragment):
    path = write_spec(text)
    code, out, err = validate_in_process(capsys, path)
    assert out == ""
    assert_reported(code, err, path, toml_path, fragment)


SUBPROCESS_SAMPLE = {
    "top-unknown-key",
    "study-unknown-key",
    "objective-typo",
    "command-shell-string",
    "float-log-low-zero",
    "when-later-param",
    "grid-continuous-float",
    "run-timeout-words",
    "enqueue-outside",
    "constraint-min-above-max",
}


@pytest.mark.parametrize(
    ("text", "toml_path", "fragment"), [p for p in INVALID if p.id in SUBPROCESS_SAMPLE]
)
def test_invalid_spec_real_cli(write_spec, optspec_cli, text, toml_path, fragment):
    path = write_spec(text)
    result = optspec_cli("validate", path)
    assert result.stdout == ""
    assert_reported(result.returncode, result.stderr, path, toml_path, fragment)


# -- files, not contents ---------------------------------------------------------------------------


def test_broken_toml_names_file_line_and_column(write_spec, optspec_cli):
    path = write_spec('version = 1\n[objective]\ncallable = "pkg.mod:f\n')
    result = optspec_cli("validate", path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}: line 3, column ")
    assert "invalid TOML" in result.stderr


def test_missing_file(tmp_path, optspec_cli):
    path = tmp_path / "nope.toml"
    result = optspec_cli("validate", path)
    assert (result.returncode, result.stdout) == (2, "")
    assert f"{path}: no such spec file" in result.stderr
    assert "Traceback" not in result.stderr


def test_directory_instead_of_file(tmp_path, optspec_cli):
    result = optspec_cli("validate", tmp_path)
    assert result.returncode == 2
    assert f"{tmp_path}: is a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_not_utf8(tmp_path, optspec_cli):
    path = tmp_path / "latin1.toml"
    path.write_bytes("version = 1\n# caf\xe9\n".encode("latin-1"))
    result = optspec_cli("validate", path)
    assert result.returncode == 2
    assert f"{path}: not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_callable_file_resolved_next_to_spec_not_cwd(tmp_path, optspec_cli):
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "obj.py").write_text("def f(params):\n    return 0.0\n")
    path = tmp_path / "spec" / "study.toml"
    path.write_text(spec(objective='callable = "obj.py:f"'))
    result = optspec_cli("validate", "spec/study.toml", cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok: spec/study.toml\n", "")
    (tmp_path / "spec" / "obj.py").unlink()
    result = optspec_cli("validate", "spec/study.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert "spec/study.toml: objective.callable: no file 'obj.py'" in result.stderr


# -- how errors are reported -----------------------------------------------------------------------


def test_every_problem_is_reported_at_once(write_spec, capsys):
    text = spec(
        params='lr = { type = "float", low = 0, high = 1, log = true }',
        extra='[study]\ndirection = "down"\n[run]\nworkers = 0',
    )
    path = write_spec(text)
    code, _, err = validate_in_process(capsys, path)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert [line.split(": ")[1] for line in lines] == [
        "study.direction",
        "params.lr.low",
        "run.workers",
    ]
    assert all(line.startswith(f"{path}: ") for line in lines)


def test_unknown_key_lists_the_valid_ones(write_spec, capsys):
    path = write_spec(spec(extra="[run]\nworker = 2"))
    _, _, err = validate_in_process(capsys, path)
    assert err == (
        f"{path}: run.worker: unknown key; did you mean 'workers'? valid keys here: "
        "n_trials, timeout, workers, max_failed, trial_timeout, checkpoint, devices, "
        "device_env, keep_trial_dirs, heartbeat\n"
    )


def test_unknown_key_far_from_any_gets_no_guess(write_spec, capsys):
    path = write_spec(spec(extra="[run]\nbanana = 2"))
    _, _, err = validate_in_process(capsys, path)
    assert "run.banana: unknown key; valid keys here:" in err
    assert "did you mean" not in err


def test_a_broken_parent_is_reported_once(write_spec, capsys):
    # opt is broken (no choices); m's `when` on it must not add a misleading second error.
    params = (
        'opt = { type = "categorical" }\n'
        'm = { type = "float", low = 0, high = 1, when = { opt = "a" } }'
    )
    path = write_spec(spec(params=params))
    code, _, err = validate_in_process(capsys, path)
    assert code == 2
    assert err.splitlines() == [
        f"{path}: params.opt.choices: missing; expected an array of choices"
    ]


def test_several_files_ok_and_bad(write_spec, tmp_path, capsys):
    good = write_spec(spec(objective=OBJ), "good.toml")
    write_objective(tmp_path)
    bad = write_spec(spec(version="3"), "bad.toml")
    code, out, err = validate_in_process(capsys, good, bad)
    assert code == 2
    assert out == f"ok: {good}\n"
    assert err.startswith(f"{bad}: version: ")


# -- the examples ----------------------------------------------------------------------------------

EXAMPLE_SPECS = sorted(EXAMPLES.glob("*.toml"))


def test_there_are_examples():
    names = {path.stem for path in EXAMPLE_SPECS}
    assert {"quadratic", "multi_objective", "conditional", "command", "pruned"} <= names


def test_every_example_validates_with_the_real_cli(optspec_cli):
    result = optspec_cli("validate", *EXAMPLE_SPECS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ok: {path}" for path in EXAMPLE_SPECS]
    assert result.stderr == ""


# -- start-up cost ---------------------------------------------------------------------------------


def test_building_the_parser_does_not_import_optuna():
    code = "import optspec.cli, sys; optspec.cli.build_parser(); print('optuna' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "False\n"


# -- every check run makes before its first trial --------------------------------------------

OBJ = 'callable = "obj.py:f"'


def write_objective(directory: Path) -> None:
    (directory / "obj.py").write_text("def f(params):\n    return params['x']\n")


@pytest.mark.parametrize(
    ("text", "toml_path", "fragment"),
    [
        (
            spec(objective=OBJ, extra='[sampler]\nname = "tpe"\nn_startup = 5'),
            "sampler.n_startup",
            "did you mean 'n_startup_trials'",
        ),
        (
            spec(objective=OBJ, extra='[pruner]\nname = "median"\nwarmup = 5'),
            "pruner.warmup",
            "not an option of median",
        ),
        (spec(objective='callable = "obj.py:nope"'), "objective.callable", "no attribute 'nope'"),
        (spec(objective='callable = "no_such_module_here:f"'), "objective.callable", ""),
        (
            spec(
                objective=OBJ,
                extra='[study]\ndirections = ["minimize", "maximize"]\n[pruner]\nname = "median"',
            ),
            "pruner",
            "several objectives",
        ),
    ],
    ids=["sampler-option", "pruner-option", "missing-callable", "missing-module", "mo-pruner"],
)
def test_validate_makes_the_checks_run_makes(
    write_spec, tmp_path, optspec_cli, text, toml_path, fragment
):
    path = write_spec(text)
    write_objective(tmp_path)
    validated = optspec_cli("validate", path)
    assert_reported(validated.returncode, validated.stderr, path, toml_path, fragment)
    assert validated.stdout == ""
    ran = optspec_cli("run", path, "-o", tmp_path / "out")
    stderr = ran.stderr.removeprefix("optspec: ")  # run prefixes a one-line message
    assert_reported(ran.returncode, stderr, path, toml_path, fragment)
    assert not (tmp_path / "out").exists()


def test_validate_imports_plugins_and_lets_them_check_their_options(write_spec, tmp_path, capsys):
    (tmp_path / "optspec_plugins.py").write_text(
        "import optspec\n"
        "@optspec.hookimpl\n"
        "def configure(config):\n"
        "    if config.plugin_options('local').get('level') != 'high':\n"
        "        raise optspec.SpecError('plugin.local.level: must be \"high\"')\n"
    )
    write_objective(tmp_path)
    path = write_spec(spec(objective=OBJ, extra='[plugin.local]\nlevel = "low"'))
    code, out, err = validate_in_process(capsys, path)
    assert out == ""
    assert_reported(code, err, path, "plugin.local.level", "must be")


def test_several_objectives_without_pruner_get_none(write_spec, tmp_path, capsys):
    write_objective(tmp_path)
    several = write_spec(
        spec(objective=OBJ, extra='[study]\ndirections = ["minimize", "maximize"]')
    )
    one = write_spec(spec(objective=OBJ), "one.toml")
    assert cli.main(["validate", "--print", str(several)]) == 0
    assert '[pruner]\nname = "nop"\n' in capsys.readouterr().out
    assert cli.main(["validate", "--print", str(one)]) == 0
    assert '[pruner]\nname = "median"\n' in capsys.readouterr().out


def test_no_abbreviated_options(tmp_path, optspec_cli):
    # `--spec` once silently meant `--spec-dir`; an abbreviation is now an error.
    result = optspec_cli("resume", tmp_path / "study.db", "--spec-d", tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --spec-d" in result.stderr


def test_a_sampler_that_is_not_a_table_is_one_problem(write_spec, capsys):
    path = write_spec(spec(top='sampler = "tpe"'))
    _, _, err = validate_in_process(capsys, path)
    assert err == f"{path}: sampler: must be a table, got the string 'tpe'\n"

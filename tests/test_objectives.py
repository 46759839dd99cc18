"""The built-in objective kinds, run the way a worker runs them: real studies, real processes."""

from __future__ import annotations

import json
import os
import pickle
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest

from optspec.config import Config
from optspec.errors import SpecError
from optspec.objectives.results import FAIL_REASON_ATTR
from optspec.plugins.manager import build_plugin_manager
from optspec.run.setup import build_components
from optspec.run.worker import run_trial
from optspec.spec.load import parse_spec
from optspec.spec.model import Spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

PYTHON = sys.executable
TrialState = optuna.trial.TrialState


# -- helpers --------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def make_spec(tmp_path: Path, objective: str, rest: str = "", study: str = "") -> Spec:
    study = study or 'direction = "minimize"'
    text = f"version = 1\n[study]\n{study}\n[objective]\n{objective}\n{rest}"
    return parse_spec(text, path=tmp_path / "study.toml")


def build(spec: Spec, tmp_path: Path) -> Any:
    """The objective callable, built as the controller and every worker build it: plugins
    registered and configured, the factory the spec's kind names called through the registry."""
    return build_components(_config(spec, tmp_path)).objective


def _config(spec: Spec, tmp_path: Path) -> Config:
    return Config(spec, output=tmp_path / "out", role="worker", worker_index=0)


def run(
    spec: Spec,
    objective: Any,
    n_trials: int = 1,
    pruner: optuna.pruners.BasePruner | None = None,
    enqueue: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> list[optuna.trial.FrozenTrial]:
    """Trials of a real study, each asked, evaluated and told by the worker's own ``run_trial``
    (suggesting the declared space, recording results, failing with a reason)."""
    study = optuna.create_study(
        directions=spec.study.directions,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=pruner,
    )
    for point in enqueue:
        study.enqueue_trial(point)
    config = _config(spec, spec.directory)
    pm = build_plugin_manager(spec)
    for _ in range(n_trials):
        run_trial(study, study.ask(), objective, pm, config)
    return study.trials


def spec_error(spec: Spec, tmp_path: Path) -> str:
    with pytest.raises(SpecError) as info:
        build(spec, tmp_path)
    return str(info.value)


def unique(prefix: str) -> str:
    """A module name no other test imported: sys.modules outlives each test."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its new parent) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not alive(pid)


X_PARAM = '[params]\nx = { type = "float", low = -4, high = 4 }\n'


# -- python ---------------------------------------------------------------------------------------


def test_module_from_the_spec_directory_gets_params_and_args_by_name(tmp_path: Path) -> None:
    name = unique("quad")
    write(
        tmp_path / f"{name}.py",
        """
        def objective(params, offset, scale=1.0):
            return scale * (params["x"] - offset) ** 2 + params["epochs"]
        """,
    )
    spec = make_spec(
        tmp_path,
        f'callable = "{name}:objective"\nargs = {{ offset = 2.0 }}',
        X_PARAM + "epochs = 10\n",
    )
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.state == TrialState.COMPLETE
    assert trial.value == pytest.approx((trial.params["x"] - 2.0) ** 2 + 10)


def test_file_reference_with_dotted_attr_sibling_import_and_pickling(tmp_path: Path) -> None:
    write(tmp_path / "models" / "shapes_helper.py", "BIAS = 0.5\n")
    write(
        tmp_path / "models" / "train.py",
        """
        from shapes_helper import BIAS  # a sibling module: the file's directory is on sys.path

        class Result:
            def __init__(self, loss):
                self.loss = loss

        class Model:
            @staticmethod
            def fit(params):
                return Result(params["x"] ** 2 + BIAS).loss
        """,
    )
    spec = make_spec(tmp_path, 'callable = "models/train.py:Model.fit"', X_PARAM)
    objective = build(spec, tmp_path)
    (trial,) = run(spec, objective)
    assert trial.value == pytest.approx(trial.params["x"] ** 2 + 0.5)
    # Classes defined in the file pickle by reference, so results can cross process boundaries.
    result_class = objective.function.__globals__["Result"]
    assert pickle.loads(pickle.dumps(result_class(3.0))).loss == 3.0
    # Building again (as each worker does) reuses the module instead of loading a second copy.
    assert build(spec, tmp_path).function is objective.function


def test_define_by_run_parameters_and_reports(tmp_path: Path) -> None:
    write(
        tmp_path / "dbr.py",
        """
        def objective(trial, params):
            layers = trial.suggest_int("layers", 1, 3)
            for step in range(3):
                trial.report(float(step), step)
            return params["x"] + layers
        """,
    )
    spec = make_spec(tmp_path, 'callable = "dbr.py:objective"', X_PARAM)
    (trial,) = run(spec, build(spec, tmp_path))
    assert set(trial.params) == {"x", "layers"}
    assert trial.intermediate_values == {0: 0.0, 1: 1.0, 2: 2.0}
    assert trial.value == pytest.approx(trial.params["x"] + trial.params["layers"])


def test_kwargs_function_takes_any_args_entry(tmp_path: Path) -> None:
    write(tmp_path / "kw.py", "def objective(params, **options):\n    return options['k']\n")
    spec = make_spec(tmp_path, 'callable = "kw.py:objective"\nargs = { k = 4 }')
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.value == 4


@pytest.mark.parametrize(
    ("source", "table", "expected"),
    [
        (
            "def objective(params):\n    return 0\n",
            'callable = "{mod}:objectve"',
            ["objective.callable:", "has no attribute 'objectve'", "did you mean 'objective'?"],
        ),
        (
            "objective = 3\n",
            'callable = "{mod}:objective"',
            ["objective.callable:", "is a int, not callable"],
        ),
        (
            "def objective(params, dataset):\n    return 0\n",
            'callable = "{mod}:objective"',
            ["objective.callable:", "needs 'dataset'", "objective.args"],
        ),
        (
            "def objective(params, dataset):\n    return 0\n",
            'callable = "{mod}:objective"\nargs = { dataset = "iris", datset = 1 }',
            ["objective.args.datset:", "did you mean 'dataset'?"],
        ),
        (
            "def objective(params, **kw):\n    return 0\n",
            'callable = "{mod}:objective"\nargs = { trial = 1 }',
            ["objective.args.trial:", "reserved"],
        ),
        (
            "import optspec_no_such_dependency\n",
            'callable = "{mod}:objective"',
            ["objective.callable:", "importing", "No module named 'optspec_no_such_dependency'"],
        ),
        (
            "def objective(params:\n",
            'callable = "{mod}:objective"',
            ["objective.callable:", "SyntaxError"],
        ),
    ],
    ids=["typo", "not-callable", "unknown-param", "bad-arg", "reserved", "broken-import", "syntax"],
)
def test_bad_python_references_are_spec_errors(
    tmp_path: Path, source: str, table: str, expected: list[str]
) -> None:
    mod = unique("bad")
    write(tmp_path / f"{mod}.py", source)
    message = spec_error(make_spec(tmp_path, table.replace("{mod}", mod)), tmp_path)
    for part in expected:
        assert part in message


def test_missing_module_names_it_and_the_directories_tried(tmp_path: Path) -> None:
    message = spec_error(make_spec(tmp_path, 'callable = "optspec_absent.mod:objective"'), tmp_path)
    assert message.startswith("objective.callable: cannot import 'optspec_absent.mod'")
    assert "No module named 'optspec_absent'" in message
    assert str(tmp_path) in message and os.getcwd() in message


# -- command -------------------------------------------------------------------------------------

REPORTER = """
import json, os, sys
params = json.loads(os.environ["OPTSPEC_PARAMS"])
with open(os.environ["OPTSPEC_RESULTS"], "a") as out:
    for step in range(3):
        out.write(json.dumps({"step": step, "loss": float(sys.argv[1]) + 3 - step}) + "\\n")
    out.write(json.dumps({"loss": float(sys.argv[1])}) + "\\n")
    out.write(json.dumps({
        "mode": os.environ["MODE"],
        "cwd": os.getcwd(),
        "number": os.environ["OPTSPEC_TRIAL_NUMBER"],
        "trial_dir": os.environ["OPTSPEC_TRIAL_DIR"],
        "params": params,
        "argv": sys.argv[1:],
    }) + "\\n")
"""


def test_command_reports_steps_and_final_metrics(tmp_path: Path) -> None:
    write(tmp_path / "reporter.py", REPORTER)
    spec = make_spec(
        tmp_path,
        f'command = ["{PYTHON}", "reporter.py", "{{x}}", "{{trial_number}}", "{{trial_dir}}"]\n'
        'env = { MODE = "fast" }',
        X_PARAM + "epochs = 5\n",
    )
    (trial,) = run(spec, build(spec, tmp_path))
    x = trial.params["x"]
    trial_dir = str(tmp_path / "out" / "trials" / "0")
    assert trial.state == TrialState.COMPLETE
    assert trial.value == pytest.approx(x)
    assert trial.intermediate_values == pytest.approx({0: x + 3, 1: x + 2, 2: x + 1})
    attrs = trial.user_attrs
    assert attrs["mode"] == "fast"
    assert attrs["cwd"] == str(tmp_path)  # the spec's directory by default
    assert attrs["number"] == "0"
    assert attrs["trial_dir"] == trial_dir
    assert attrs["params"] == {"x": x, "epochs": 5}
    assert attrs["argv"] == [str(x), "0", trial_dir]
    # The command left nothing of its own: the trial directory is gone again.
    assert not Path(trial_dir).exists()


def test_a_trial_directory_with_the_commands_files_is_kept(tmp_path: Path) -> None:
    write(
        tmp_path / "keeper.py",
        "import os\nopen(os.path.join(os.environ['OPTSPEC_TRIAL_DIR'], 'model.bin'), 'w')\n"
        "print(1.5)\n",
    )
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "keeper.py"]\ncwd = "."')
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.value == 1.5
    assert (tmp_path / "out" / "trials" / "0" / "model.bin").exists()


@pytest.mark.parametrize(
    ("stdout", "value", "attrs"),
    [
        (
            'print("epoch 1")\nprint(json.dumps({"loss": 0.25, "acc": "n/a"}))\nprint("bye")',
            0.25,
            2,
        ),
        ('print("warming up")\nprint(7)', 7, 0),
        ('print("{not json")\nprint(" 2.5 ")', 2.5, 0),
    ],
    ids=["json-object", "number", "number-after-junk"],
)
def test_last_stdout_line_is_the_result_without_a_results_file(
    tmp_path: Path, stdout: str, value: float, attrs: int
) -> None:
    write(tmp_path / "printer.py", "import json\n" + stdout + "\n")
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "printer.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.value == value
    assert len(trial.user_attrs) == attrs


def test_non_zero_exit_fails_with_the_status_and_stderr_tail(tmp_path: Path) -> None:
    write(
        tmp_path / "crash.py",
        "import sys\nfor i in range(40):\n    print(f'line {i}', file=sys.stderr)\nsys.exit(3)\n",
    )
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "crash.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    reason = trial.user_attrs[FAIL_REASON_ATTR]
    assert trial.state == TrialState.FAIL
    assert "exited with status 3" in reason
    assert "line 39" in reason and "line 20" in reason and "line 19\n" not in reason
    # The logs stay for a failed trial; the reason says where.
    assert (tmp_path / "out" / "trials" / "0" / "stderr.log").read_text().count("line") == 40
    assert str(tmp_path / "out" / "trials" / "0") in reason


def test_a_command_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    write(tmp_path / "suicide.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "suicide.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert "killed by SIGKILL" in trial.user_attrs[FAIL_REASON_ATTR]


def test_no_result_is_a_failure_saying_what_was_expected(tmp_path: Path) -> None:
    write(tmp_path / "silent.py", "print('done')\n")
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "silent.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert "gave no result" in trial.user_attrs[FAIL_REASON_ATTR]


SLEEPER = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(sys.argv[1], "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
with open(os.environ["OPTSPEC_RESULTS"], "a") as out:
    out.write('{"step": 0, "loss": 100.0}\\n')
time.sleep(60)
"""


def read_pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 10
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, "the command never wrote its pids"
        time.sleep(0.02)
    return [int(pid) for pid in path.read_text().split()]


def test_a_pruned_command_and_its_children_are_terminated(tmp_path: Path) -> None:
    write(tmp_path / "sleeper.py", SLEEPER)
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "sleeper.py", "pids"]')
    started = time.monotonic()
    (trial,) = run(spec, build(spec, tmp_path), pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    assert trial.state == TrialState.PRUNED
    assert trial.intermediate_values == {0: 100.0}
    assert time.monotonic() - started < 10
    for pid in read_pids(tmp_path / "pids"):
        assert wait_gone(pid), f"process {pid} survived pruning"
    assert not (tmp_path / "out" / "trials" / "0").exists()


def test_trial_timeout_kills_the_command(tmp_path: Path) -> None:
    write(tmp_path / "sleeper.py", SLEEPER.replace('{"step": 0, "loss": 100.0}', "{}"))
    spec = make_spec(
        tmp_path, f'command = ["{PYTHON}", "sleeper.py", "pids"]', "[run]\ntrial_timeout = 0.5\n"
    )
    started = time.monotonic()
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs[FAIL_REASON_ATTR].startswith("trial_timeout of 0.5s exceeded")
    assert time.monotonic() - started < 10
    for pid in read_pids(tmp_path / "pids"):
        assert wait_gone(pid), f"process {pid} survived the timeout"


def test_a_command_runs_in_its_own_session(tmp_path: Path) -> None:
    # Ctrl-C in the terminal signals the foreground process group: the command is not in it.
    write(
        tmp_path / "session.py",
        "import os, json\nprint(json.dumps({'loss': 0, 'sid': os.getsid(0)}))\n",
    )
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "session.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.user_attrs["sid"] != os.getsid(0)


def test_parameter_values_are_never_interpreted_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "optspec-pwned"
    payload = f"; touch {marker} #"
    write(
        tmp_path / "echo.py", "import sys, json\nprint(json.dumps({'loss': 0, 'argv': sys.argv}))"
    )
    spec = make_spec(
        tmp_path,
        f'command = ["{PYTHON}", "echo.py", "{{cmd}}", "--name={{cmd}}"]',
        f"[params]\ncmd = {{ type = 'categorical', choices = [{json.dumps(payload)}] }}\n",
    )
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.state == TrialState.COMPLETE
    assert trial.user_attrs["argv"] == ["echo.py", payload, f"--name={payload}"]
    assert not marker.exists()


def test_a_placeholder_of_an_absent_conditional_param_fails_the_trial(tmp_path: Path) -> None:
    write(tmp_path / "echo.py", "print(0)\n")
    spec = make_spec(
        tmp_path,
        f'command = ["{PYTHON}", "echo.py", "--momentum", "{{momentum}}"]',
        "[params]\nopt = { type = 'categorical', choices = ['adam', 'sgd'] }\n"
        "momentum = { type = 'float', low = 0, high = 1, when = { opt = 'sgd' } }\n",
    )
    (trial,) = run(spec, build(spec, tmp_path), enqueue=[{"opt": "adam"}])
    reason = trial.user_attrs[FAIL_REASON_ATTR]
    assert reason.startswith("objective.command[3]: placeholder {momentum} has no value")


def test_step_lines_pick_the_first_objectives_metric(tmp_path: Path) -> None:
    write(
        tmp_path / "multi.py",
        """
        import json, os
        with open(os.environ["OPTSPEC_RESULTS"], "a") as out:
            out.write('{"step": 0, "acc": 0.5, "loss": 2.0}\\n')
            out.write('{"step": 1, "acc": 0.6, "loss": 1.0}\\n')
            out.write('{"acc": 0.7}\\n{"loss": 0.5}\\n')
        """,
    )
    spec = make_spec(
        tmp_path,
        f'command = ["{PYTHON}", "multi.py"]',
        study='[[study.objectives]]\nmetric = "loss"\ndirection = "minimize"',
    )
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.intermediate_values == {0: 2.0, 1: 1.0}
    assert trial.value == 0.5  # final lines are merged
    assert trial.user_attrs == {"acc": 0.7, "loss": 0.5}


def test_bad_results_lines_fail_the_trial(tmp_path: Path) -> None:
    write(
        tmp_path / "garbage.py",
        "import os\nopen(os.environ['OPTSPEC_RESULTS'], 'a').write('loss=3\\n')\n",
    )
    spec = make_spec(tmp_path, f'command = ["{PYTHON}", "garbage.py"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert (
        "results.jsonl line 1 is not a JSON object: 'loss=3'" in trial.user_attrs[FAIL_REASON_ATTR]
    )


def test_executable_is_checked_when_the_objective_is_built(tmp_path: Path) -> None:
    message = spec_error(make_spec(tmp_path, 'command = ["optspec-no-such-program"]'), tmp_path)
    assert message.startswith("objective.command[0]: 'optspec-no-such-program' is neither on PATH")

    write(tmp_path / "train.sh", "#!/bin/sh\necho 1\n")
    message = spec_error(make_spec(tmp_path, 'command = ["./train.sh"]'), tmp_path)
    assert message.startswith("objective.command[0]:") and "not executable" in message

    message = spec_error(make_spec(tmp_path, 'command = ["x"]\ncwd = "nowhere"'), tmp_path)
    assert message.startswith("objective.cwd: no directory")


@pytest.mark.parametrize("argv0", ["./train.sh", "train.sh"])
def test_an_executable_next_to_the_spec_runs(tmp_path: Path, argv0: str) -> None:
    write(tmp_path / "train.sh", "#!/bin/sh\necho 0.5\n").chmod(0o755)
    spec = make_spec(tmp_path, f'command = ["{argv0}"]')
    (trial,) = run(spec, build(spec, tmp_path))
    assert trial.value == 0.5


def test_listing_objectives_does_not_import_optuna() -> None:
    import subprocess

    code = (
        "import sys; from optspec.builtin import objectives; objectives.register_objectives(); "
        "print('optuna' in sys.modules)"
    )
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

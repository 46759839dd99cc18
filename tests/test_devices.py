"""A device slot per worker: real worker processes, real command objectives, a real SIGKILL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.helpers import load, run_cli

# Appends what one trial saw to trials.log, one JSON line per trial. The trial whose number is
# in kill_at SIGKILLs its own worker (the command's parent), once: the worker dies mid-trial.
RECORDER = """
import json, os, signal, sys, time

number, worker, device = sys.argv[1:4]
seen = {
    "number": int(number),
    "worker_arg": worker,
    "device_arg": device,
    "OPTSPEC_WORKER": os.environ.get("OPTSPEC_WORKER"),
    "OPTSPEC_DEVICE": os.environ.get("OPTSPEC_DEVICE"),
    "visible": os.environ.get(os.environ["DEVICE_ENV"]),
    "worker_pid": os.getppid(),
    "start": time.time(),
}
time.sleep(0.3)
seen["end"] = time.time()
kill = os.path.exists("kill_at") and open("kill_at").read().strip() == number
with open("trials.log", "a") as log:
    log.write(json.dumps({**seen, "killed_its_worker": kill}) + "\\n")
if kill:
    os.remove("kill_at")
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(1)
print(json.dumps({"loss": float(number)}))
"""


def spec_text(devices: str, *, n_trials: int = 10, extra: str = "") -> str:
    return f"""
version = 1
[study]
name = "devices"
[objective]
command = ["{{python}}", "recorder.py", "{{trial_number}}", "{{worker}}", "{{device}}"]
env = {{ DEVICE_ENV = "CUDA_VISIBLE_DEVICES" }}
[params]
x = {{ type = "float", low = 0, high = 1 }}
[sampler]
name = "random"
[run]
n_trials = {n_trials}
{devices}
{extra}
"""


def records(directory: Path) -> list[dict]:
    lines = (directory / "trials.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_device_env() -> dict[str, str]:
    """The test's own environment, minus what would leak a device into the workers."""
    names = ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "OPTSPEC_WORKER", "OPTSPEC_DEVICE")
    return {k: v for k, v in os.environ.items() if k not in names}


def run(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        env=without_device_env(),
    )


@pytest.fixture
def study_dir(tmp_path: Path) -> Path:
    (tmp_path / "recorder.py").write_text(RECORDER)
    return tmp_path


@pytest.mark.slow
def test_each_worker_keeps_its_device_and_a_replacement_takes_it_over(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text('devices = ["7", "9"]', n_trials=10))
    (study_dir / "kill_at").write_text("3")
    result = run(study_dir)
    assert result.returncode == 0, result.stderr

    seen = records(study_dir)
    assert sorted(r["number"] for r in seen) == list(range(10))
    for r in seen:
        assert r["visible"] in ("7", "9")
        # The environment, the placeholders and the slot agree: worker 0 has "7", worker 1 "9".
        assert r["OPTSPEC_DEVICE"] == r["device_arg"] == r["visible"]
        assert r["OPTSPEC_WORKER"] == r["worker_arg"] in ("0", "1")
        assert r["visible"] == ["7", "9"][int(r["worker_arg"])]
    # Trials that ran at the same time never shared a device.
    for a in seen:
        for b in seen:
            if a["number"] < b["number"] and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["visible"] != b["visible"], (a, b)

    (killed,) = [r for r in seen if r["killed_its_worker"]]
    study = load(study_dir / "out" / "study.db")
    assert study.trials[killed["number"]].state == TrialState.FAIL
    # The replacement worker is another process with the same index and device.
    same_slot = [r for r in seen if r["worker_arg"] == killed["worker_arg"]]
    later = [r for r in same_slot if r["start"] > killed["end"]]
    assert later, "the killed worker's slot ran no trial afterwards"
    assert all(r["worker_pid"] != killed["worker_pid"] for r in later)
    assert {r["visible"] for r in later} == {killed["visible"]}


@pytest.mark.slow
def test_without_devices_workers_still_know_their_index(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text("workers = 2", n_trials=6))
    result = run(study_dir)
    assert result.returncode == 0, result.stderr
    seen = records(study_dir)
    assert {r["OPTSPEC_WORKER"] for r in seen} <= {"0", "1"}
    assert all(r["worker_arg"] == r["OPTSPEC_WORKER"] for r in seen)
    assert all(r["visible"] is None and r["OPTSPEC_DEVICE"] is None for r in seen)
    assert all(r["device_arg"] == "" for r in seen)


@pytest.mark.slow
def test_device_env_names_the_variable_and_an_entry_may_hold_several(study_dir: Path) -> None:
    text = spec_text('devices = ["0,1"]\ndevice_env = "HIP_VISIBLE_DEVICES"', n_trials=3)
    (study_dir / "study.toml").write_text(text.replace("CUDA_VISIBLE", "HIP_VISIBLE"))
    result = run(study_dir)
    assert result.returncode == 0, result.stderr
    seen = records(study_dir)
    assert {(r["visible"], r["OPTSPEC_DEVICE"], r["device_arg"]) for r in seen} == {
        ("0,1", "0,1", "0,1")
    }


def test_more_workers_than_devices_is_refused_before_anything_runs(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text('devices = ["7", "9"]'))
    result = run(study_dir, "--workers", "3")
    assert result.returncode == 2
    # --workers is a shorthand for --set run.workers, checked with the spec it changes.
    assert "study.toml: --workers 3: 3 workers but run.devices has 2 entries" in result.stderr
    assert not (study_dir / "out").exists()


@pytest.mark.slow
def test_workers_joining_from_another_machine_take_their_own_devices(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text('devices = ["7"]', n_trials=16))
    url = f"sqlite:///{study_dir / 'shared.db'}"
    controller = subprocess.Popen(
        [sys.executable, "-m", "optspec", "run", "study.toml", "-o", "out", "-q",
         "--storage", url],
        cwd=study_dir,
        stderr=subprocess.PIPE,
        text=True,
        env=without_device_env(),
    )  # fmt: skip
    joined = run_cli("worker", "study.toml", "--storage", url, "--devices", "3,4", "-q",
                     cwd=study_dir)  # fmt: skip
    _, stderr = controller.communicate(timeout=120)
    assert controller.returncode == 0, stderr
    assert joined.returncode == 0, joined.stderr
    slots = {(r["OPTSPEC_WORKER"], r["visible"]) for r in records(study_dir)}
    # The controller's one worker has "7"; the joined machine's two workers "3" and "4".
    assert slots <= {("0", "7"), ("0", "3"), ("1", "4")}
    assert ("0", "3") in slots or ("1", "4") in slots


def test_devices_option_of_optspec_worker_is_checked(study_dir: Path) -> None:
    (study_dir / "study.toml").write_text(spec_text('devices = ["7"]'))
    result = run_cli(
        "worker", "study.toml", "--storage", "sqlite:///x.db", "--devices", "0, ,1", cwd=study_dir
    )
    assert result.returncode == 2
    assert "--devices" in result.stderr and "Traceback" not in result.stderr


def test_the_training_example_trains_per_device_prunes_and_keeps_the_best_checkpoint(
    tmp_path: Path,
) -> None:
    example = Path(__file__).parent.parent / "examples" / "training.toml"
    result = run_cli("run", example, "-o", tmp_path / "out", "-q", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study = load(tmp_path / "out" / "study.db")
    states = [t.state for t in study.trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {t.user_attrs["device"] for t in completed} <= {"0", "1"}
    best = study.best_trial
    trials_dir = tmp_path / "out" / "trials"
    assert [p.name for p in trials_dir.iterdir()] == [str(best.number)]
    checkpoint = json.loads((trials_dir / str(best.number) / "checkpoint.json").read_text())
    assert checkpoint["val_loss"] == pytest.approx(best.value)
    assert checkpoint["device"] == best.user_attrs["device"]


def test_a_declared_device_parameter_keeps_its_placeholder(tmp_path: Path) -> None:
    """Specs written before slots existed, with a parameter named device, run as before."""
    import optuna

    from optspec.builtin.objectives import register_objectives
    from optspec.config import Config
    from optspec.spec.load import parse_spec

    code = "import json, sys; print(json.dumps(dict(device=sys.argv[1], worker={worker})))"
    text = (
        f'version = 1\n[objective]\ncommand = ["{{python}}", "-c", "{code}", "{{device}}"]\n'
        '[params]\ndevice = "cuda"\n[run]\ndevices = ["7", "9"]\n'
    )
    spec = parse_spec(text, path=tmp_path / "study.toml")
    config = Config(spec, output=tmp_path / "out", worker_index=1, device="9")
    objective = register_objectives()["command"](spec.objective.options, spec, config)
    trial = optuna.create_study().ask()
    assert objective(trial, {"device": "cuda"}) == {"device": "cuda", "worker": 1}

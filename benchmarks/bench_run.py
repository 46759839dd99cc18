"""`optspec run` against plain `study.optimize` with InMemoryStorage, in one process.

Compares, for the quadratic example with RandomSampler and 2,000 trials:
- trials/s over the whole run (workers W = 1 and 2) as a ratio of the baseline's;
- the time from starting the command to the first finished trial, against the baseline
  started the same way (a fresh interpreter that imports optuna and runs the same objective).

Both sides are timed from outside, as a user would time them, in this same script. Run with
`python benchmarks/bench_run.py [N_TRIALS]`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# A plugin that stamps when the first and the last trial finished, as the controller sees it.
TIMING_PLUGIN = """
import json, os, time
from optspec import hookimpl

_stamps = {}

@hookimpl
def on_trial_end(trial):
    _stamps.setdefault("first", time.time())
    _stamps["last"] = time.time()

@hookimpl
def on_finish():
    with open(os.environ["BENCH_TIMES"], "w") as file:
        json.dump(_stamps, file)
"""

BASELINE = """
import json, sys, time
started = float(sys.argv[1])
import optuna
sys.path.insert(0, {examples!r})
from quadratic import objective

optuna.logging.set_verbosity(optuna.logging.WARNING)
stamps = {{}}
def callback(study, trial):
    stamps.setdefault("first", time.time())
study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
study.optimize(lambda trial: objective({{"x": trial.suggest_float("x", -10, 10)}}),
               n_trials=int(sys.argv[2]), callbacks=[callback])
stamps["last"] = time.time()
print(json.dumps(stamps))
"""


def run_baseline(n_trials: int) -> dict[str, float]:
    started = time.time()
    script = BASELINE.format(examples=str(EXAMPLES))
    out = subprocess.run(
        [sys.executable, "-c", script, str(started), str(n_trials)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stamps = json.loads(out)
    return {"first": stamps["first"] - started, "total": stamps["last"] - started}


def run_optspec(n_trials: int, workers: int, work: Path) -> dict[str, float]:
    spec = work / f"w{workers}.toml"
    spec.write_text(
        (EXAMPLES / "quadratic.toml")
        .read_text()
        .replace('name = "tpe"', 'name = "random"')
        .replace(
            'callable = "quadratic.py:objective"', f'callable = "{EXAMPLES}/quadratic.py:objective"'
        )
    )
    times = work / f"w{workers}.json"
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "optspec", "run", str(spec), "-o", str(work / f"out{workers}"),
         "--n-trials", str(n_trials), "--workers", str(workers), "-q", "-p", "bench_timing"],
        cwd=work,
        check=True,
        env={**_env(), "BENCH_TIMES": str(times), "PYTHONPATH": str(work)},
    )  # fmt: skip
    ended = time.time()
    stamps = json.loads(times.read_text())
    return {"first": stamps["first"] - started, "total": ended - started}


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def main() -> None:
    n_trials = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print(__doc__.strip().splitlines()[0])
    print(f"quadratic example, RandomSampler, {n_trials} trials, trivial objective\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "bench_timing.py").write_text(textwrap.dedent(TIMING_PLUGIN))
        base = run_baseline(n_trials)
        rows = [("optimize, InMemoryStorage", 1, base)]
        for workers in (1, 2):
            rows.append(("optspec run", workers, run_optspec(n_trials, workers, work)))
    header = f"{'what':<28}{'W':>3}{'trials/s':>10}{'vs base':>9}{'first trial':>13}{'vs base':>9}"
    print(header)
    print("-" * len(header))
    base_rate = n_trials / base["total"]
    for name, workers, stamps in rows:
        rate = n_trials / stamps["total"]
        print(
            f"{name:<28}{workers:>3}{rate:>10.0f}{rate / base_rate:>9.2f}"
            f"{stamps['first']:>12.2f}s{stamps['first'] / base['first']:>9.2f}"
        )
    print("\ntrials/s counts the whole command (start-up, workers, writing study.db);")
    print("'first trial' is from launching the command to the first finished trial.")


if __name__ == "__main__":
    main()

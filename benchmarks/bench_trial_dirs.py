"""What ``keep_trial_dirs = "best"`` costs the controller per finished trial, by study size.

Compared, on a JournalStorage over an in-process journal (the controller's kind of storage):
  keeper   optspec's BestTrialDirs.finished(trial): keeps the best as trials come
  lookup   asking the study after each trial (study.best_trial, or best_trials with several
           objectives), the obvious way to learn which trial is best
Each row times the decisions for the last trials of a study of N trials (BATCH of them for
the keeper, LOOKUPS for the lookup), with one
objective (and a constraint, which makes Optuna look at the feasible trials) and with two.
Directories are not created, so the numbers are the bookkeeping alone.
Run with ``python benchmarks/bench_trial_dirs.py [N ...]``.
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import JournalStorage
from optuna.trial import TrialState, create_trial

from optspec.objectives.trial_dirs import BestTrialDirs
from optspec.spec.load import parse_spec
from optspec.storage.journal import InProcessJournalBackend

BATCH = 200
LOOKUPS = 3  # the lookup is slow enough to time over a few trials only
SIZES = (1_000, 4_000, 16_000)

ONE = """version = 1
[study]
name = "bench"
[[study.objectives]]
metric = "loss"
direction = "minimize"
[objective]
callable = "m:f"
[[constraints]]
metric = "mem"
max = 0.9
[run]
keep_trial_dirs = "best"
"""
TWO = """version = 1
[study]
name = "bench"
directions = ["minimize", "minimize"]
[objective]
callable = "m:f"
[run]
keep_trial_dirs = "best"
"""


def make_trial(rng: random.Random, objectives: int) -> optuna.trial.FrozenTrial:
    x = rng.random()
    values = [x] if objectives == 1 else [x, (1 - x) ** 2 + rng.random() * 0.1]
    return create_trial(
        state=TrialState.COMPLETE,
        values=values,
        params={"x": x},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"loss": values[0], "mem": rng.random()},
        system_attrs={"constraints": [0.0]} if objectives == 1 else {},
    )


def measure(n: int, objectives: int, output: Path) -> tuple[float, float]:
    """Median seconds per decision at the end of the study: (keeper, lookup)."""
    spec = parse_spec(ONE if objectives == 1 else TWO, path=output / "study.toml")
    storage = JournalStorage(InProcessJournalBackend())
    study = optuna.create_study(storage=storage, directions=spec.study.directions)
    rng = random.Random(n)
    keeper = BestTrialDirs(spec, output)
    for _ in range(n - BATCH):
        study.add_trial(make_trial(rng, objectives))
    keeper.start(study.get_trials(deepcopy=False))
    keeper_times, lookup_times = [], []
    gc.disable()  # a collection of the whole study would land on whichever call runs then
    try:
        for index in range(BATCH):
            study.add_trial(make_trial(rng, objectives))
            trial = study.get_trials(deepcopy=False)[-1]
            started = time.perf_counter()
            keeper.finished(trial)
            keeper_times.append(time.perf_counter() - started)
            if index >= BATCH - LOOKUPS:
                started = time.perf_counter()
                if objectives == 1:
                    study.best_trial  # noqa: B018 - the lookup is what is timed
                else:
                    study.best_trials  # noqa: B018
                lookup_times.append(time.perf_counter() - started)
    finally:
        gc.enable()
    # Medians: on a shared machine a descheduled moment must not count as the code's cost.
    return statistics.median(keeper_times), statistics.median(lookup_times)


def main(sizes: tuple[int, ...]) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print("per finished trial, at the end of a study of N trials (microseconds)")
    print(f"{'objectives':>10} {'N':>7} {'keeper':>9} {'lookup':>11} {'lookup/keeper':>14}")
    print("(two objectives: the keeper grows with the Pareto front, the lookup with N)")
    with tempfile.TemporaryDirectory() as tmp:
        for objectives in (1, 2):
            for n in sizes:
                keeper, lookup = measure(n, objectives, Path(tmp))
                print(
                    f"{objectives:>10} {n:>7} {keeper * 1e6:>9.1f} {lookup * 1e6:>11.1f} "
                    f"{lookup / keeper:>14.0f}"
                )


if __name__ == "__main__":
    main(tuple(int(arg) for arg in sys.argv[1:]) or SIZES)

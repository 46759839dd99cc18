"""Cost per trial as a study grows, and the fixed cost of starting and finishing a run.

Each row is a ratio against a baseline measured in this same script, so the machine's load
cancels out as far as it can (other processes on the machine still blur single runs: the
load average is printed with the table).

1. Scale: trivial objective (x float, n int, c categorical), RandomSampler, N trials (50k;
   1k with --quick; --trials N). Completion rates over the first and the last 1,000 trials,
   read from each trial's datetime_complete, for `optspec run` with W = 1 and W = 2 and for
   plain `study.optimize` on InMemoryStorage in one process. "overall" is N over the span from the
   first trial's start to the last trial's end.
2. One trial: wall time of `optspec run --n-trials 1` against a plain script doing
   `import optuna; optuna.create_study().optimize(f, n_trials=1)`; median of interleaved runs.
3. End to end: 300 trials of a ~40 ms CPU-bound objective, `optspec run` with 2 workers
   against plain `study.optimize`, both timed from launch to exit.
4. dump_to_sqlite(backend, ...) (no live storage) against optuna.copy_study per trial, at 10k
   and 100k trials (copy_study is timed on 1k trials: it costs ~10 ms a trial).
5. `optspec resume` of a 100k-trial study.db: launch to its first new finished trial, against
   the same for a 1k-trial study.db.

Run with `python benchmarks/bench_scale.py [--quick] [--trials N] [--only SECTIONS]`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

OBJECTIVE = """
import math

def objective(params):
    return params["x"] ** 2 + params["n"] + len(params["c"])

def busy(params):
    # About 40 ms of pure Python on this machine kind.
    total = 0.0
    for i in range(int(__import__("os").environ.get("BENCH_BUSY", "400000"))):
        total += math.sqrt(i)
    return params["x"] ** 2 + total * 0.0
"""

SPEC = """
version = 1
[study]
name = "scale"
direction = "minimize"
seed = 1
[objective]
callable = "objective.py:{function}"
[params]
x = {{ type = "float", low = -10, high = 10 }}
n = {{ type = "int", low = 1, high = 100 }}
c = {{ type = "categorical", choices = ["a", "bb", "ccc"] }}
[sampler]
name = "random"
[run]
n_trials = 1
workers = 1
"""

PLAIN = """
import sys, json, time, os
sys.path.insert(0, os.getcwd())
import optuna
import objective as module
optuna.logging.set_verbosity(optuna.logging.WARNING)
function = getattr(module, sys.argv[1])
def f(trial):
    return function({"x": trial.suggest_float("x", -10, 10),
                     "n": trial.suggest_int("n", 1, 100),
                     "c": trial.suggest_categorical("c", ["a", "bb", "ccc"])})
storage = None
if os.environ.get("BENCH_JOURNAL"):  # Optuna's JournalStorage over a plain list
    from optuna.storages.journal import BaseJournalBackend

    class ListBackend(BaseJournalBackend):
        def __init__(self):
            self.logs = []
        def read_logs(self, log_number_from):
            return self.logs[log_number_from:]
        def append_logs(self, logs):
            self.logs.extend(logs)

    storage = optuna.storages.JournalStorage(ListBackend())
study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
study.optimize(f, n_trials=int(sys.argv[2]))
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as out:
        json.dump([[t.datetime_start.timestamp(), t.datetime_complete.timestamp()]
                   for t in study.trials], out)
"""

# What a user would write to time the fixed cost: nothing but optuna.
MINIMAL = """
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
optuna.create_study().optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=1)
"""

TIMING_PLUGIN = """
import json, os, time
from optspec import hookimpl

@hookimpl
def on_trial_end(trial):
    path = os.environ.get("BENCH_TIMES")
    if path and not os.path.exists(path):
        with open(path, "w") as file:
            json.dump({"first": time.time()}, file)
"""


def optspec(work: Path, *args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        # -p no:jsonl-log: the example plugin that the dev venv installs is not optspec's cost.
        [sys.executable, "-m", "optspec", *args, "-q", "-p", "no:jsonl-log"],
        cwd=work,
        check=True,
        env={**os.environ, "PYTHONPATH": _python_path(work), **(env or {})},
    )
    return time.perf_counter() - started


def _python_path(work: Path) -> str:
    # Keeps an outer PYTHONPATH, so the script can time another checkout of optspec.
    return os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))


def plain(work: Path, *args: str, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", PLAIN, *args],
        cwd=work,
        check=True,
        env={**os.environ, **(env or {})},
    )
    return time.perf_counter() - started


def spec(work: Path, function: str) -> Path:
    path = work / f"{function}.toml"
    path.write_text(SPEC.format(function=function))
    return path


def rates(times: list[tuple[float, float]]) -> dict[str, float]:
    """First-1k, last-1k and overall completion rates from (start, complete) pairs."""
    times = sorted(times, key=lambda pair: pair[1])
    ends = [end for _, end in times]
    k = min(1000, len(ends) // 2)
    first = k / (ends[k] - ends[0])
    last = k / (ends[-1] - ends[-1 - k])
    overall = len(ends) / (ends[-1] - min(start for start, _ in times))
    return {"first": first, "last": last, "overall": overall}


def study_db_times(path: Path) -> list[tuple[float, float]]:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT datetime_start, datetime_complete FROM trials WHERE state = 'COMPLETE'"
        ).fetchall()
    return [
        (datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp())
        for start, end in rows
    ]


def scale(work: Path, n_trials: int) -> list[tuple[str, dict[str, float]]]:
    out = work / "plain-times.json"
    seconds = plain(work, "objective", str(n_trials), str(out))
    rows = [("study.optimize, InMemoryStorage", {**rates(json.loads(out.read_text())),
                                                  "wall": seconds})]  # fmt: skip
    # Optuna's own JournalStorage in one process, over a list: what a journal costs without
    # optspec's index and watcher (it scans the study for WAITING trials at every ask).
    seconds = plain(work, "objective", str(n_trials), str(out), env={"BENCH_JOURNAL": "1"})
    ceiling = ("study.optimize, Optuna JournalStorage", {**rates(json.loads(out.read_text())),
                                                        "wall": seconds})  # fmt: skip
    for workers in (1, 2):
        output = work / f"scale-w{workers}"
        seconds = optspec(
            work, "run", str(spec(work, "objective")), "-o", str(output), "--overwrite",
            "--n-trials", str(n_trials), "--workers", str(workers),
        )  # fmt: skip
        times = study_db_times(output / "study.db")
        rows.append((f"optspec run, W={workers}", {**rates(times), "wall": seconds}))
    return [*rows, ceiling]


def one_trial(work: Path, rounds: int) -> tuple[float, float]:
    (work / "minimal.py").write_text(MINIMAL)
    path = spec(work, "objective")
    ours, theirs = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(work / "minimal.py")], check=True, cwd=work)
        theirs.append(time.perf_counter() - started)
        args = ["--n-trials", "1", "--workers", "1"]
        ours.append(optspec(work, "run", str(path), "-o", str(work / "one"), "--overwrite", *args))
    return statistics.median(ours), statistics.median(theirs)


def end_to_end(work: Path, n_trials: int, rounds: int) -> tuple[float, float]:
    """Medians of interleaved runs: the load of a shared machine moves within seconds."""
    path = spec(work, "busy")
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(plain(work, "busy", str(n_trials)))
        args = ["-o", str(work / "busy"), "--overwrite", "--n-trials", str(n_trials)]
        ours.append(optspec(work, "run", str(path), *args, "--workers", "2"))
    return statistics.median(ours), statistics.median(theirs)


def calibrate_busy() -> str:
    """BENCH_BUSY such that ``busy`` takes about 40 ms here."""
    import math

    loops = 200_000
    started = time.perf_counter()
    total = 0.0
    for i in range(loops):
        total += math.sqrt(i)
    elapsed = time.perf_counter() - started
    return str(int(loops * 0.040 / elapsed))


def dump(sizes: tuple[int, ...]) -> tuple[float, list[tuple[int, float]]]:
    import optuna
    from bench_sqlite import BLOCK, STUDY, copy_study, journal_logs, optuna_block

    from optspec.storage.select import SharedMemoryJournalBackend
    from optspec.storage.studydb import dump_to_sqlite

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    block = optuna_block()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        warm_up = SharedMemoryJournalBackend()
        warm_up.append_logs(copy.deepcopy(block[:1]))
        dump_to_sqlite(warm_up, STUDY, Path(directory, "w.db"))
        warm_up.close()
        started = time.perf_counter()
        copy_study(block, SharedMemoryJournalBackend, Path(directory, "c.db"))
        copy_per_trial = (time.perf_counter() - started) / BLOCK
        for n_trials in sizes:
            with SharedMemoryJournalBackend() as backend:
                backend.append_logs(journal_logs(block, n_trials))
                started = time.perf_counter()
                dump_to_sqlite(backend, STUDY, Path(directory, f"{n_trials}.db"))
                rows.append((n_trials, time.perf_counter() - started))
    return copy_per_trial, rows


def resume(sizes: tuple[int, ...]) -> list[tuple[int, float]]:
    from bench_resume import OBJECTIVE as RESUME_OBJECTIVE
    from bench_resume import SPEC as RESUME_SPEC
    from bench_resume import TIMING_PLUGIN as RESUME_PLUGIN
    from bench_resume import make_study_db, time_resume

    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            (directory / "study.toml").write_text(RESUME_SPEC)
            (directory / "objective.py").write_text(RESUME_OBJECTIVE)
            (directory / "bench_timing.py").write_text(RESUME_PLUGIN)
            study_db = make_study_db(directory, size)
            rows.append((size, time_resume(directory, study_db, size)["first"]))
    return rows


def main() -> None:
    # Bytecode caches for every child, out of the source tree: a user's installed optspec has
    # them, as optuna here does; without, each run compiles optspec's modules again.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(Path(tempfile.gettempdir(), "bench-pycache")))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--trials", type=int, help="study size of section 1 (default 50,000)")
    parser.add_argument("--only", help="comma-separated sections: scale,one,e2e,dump,resume")
    args, _ = parser.parse_known_args()
    quick = args.quick
    only = set(args.only.split(",")) if args.only else {"scale", "one", "e2e", "dump", "resume"}
    n_scale = args.trials or (1_000 if quick else 50_000)
    print(__doc__.strip().splitlines()[0])
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "objective.py").write_text(textwrap.dedent(OBJECTIVE))
        (work / "bench_timing.py").write_text(TIMING_PLUGIN)
        if "scale" in only:
            rows = scale(work, n_scale)
            base = rows[0][1]
            w1 = rows[1][1]
            print(f"1. {n_scale:,} trials, trivial objective, RandomSampler")
            header = (
                f"{'what':<34}{'first 1k/s':>11}{'last 1k/s':>11}{'last/first':>11}"
                f"{'overall/s':>11}{'vs optimize':>12}{'vs W=1':>8}{'wall s':>9}"
            )
            print(header)
            print("-" * len(header))
            for name, row in rows:
                print(
                    f"{name:<34}{row['first']:>11.0f}{row['last']:>11.0f}"
                    f"{row['last'] / row['first']:>11.2f}{row['overall']:>11.0f}"
                    f"{row['overall'] / base['overall']:>12.2f}"
                    f"{row['overall'] / w1['overall']:>8.2f}{row['wall']:>9.1f}"
                )
            print(
                f"targets: W=1 last/first >= 0.8: {w1['last'] / w1['first']:.2f};"
                f" W=1 overall >= 0.5x optimize: {w1['overall'] / base['overall']:.2f};"
                f" W=2 >= 1.3x W=1: {rows[2][1]['overall'] / w1['overall']:.2f}"
                f" (load average now {os.getloadavg()[0]:.2f})"
            )
            print(
                "W=1 against study.optimize on Optuna's JournalStorage (list backend, one process):"
                f" {w1['overall'] / rows[3][1]['overall']:.2f}\n"
            )
        if "one" in only:
            ours, theirs = one_trial(work, 2 if quick else 7)
            print("2. one trial, median of interleaved runs (wall time from launch to exit)")
            print(f"   plain optuna script {theirs:.2f} s; optspec run {ours:.2f} s;"
                  f" ratio {ours / theirs:.2f} (target <= 2.0)\n")  # fmt: skip
        if "e2e" in only:
            n_busy = 10 if quick else 300
            os.environ["BENCH_BUSY"] = calibrate_busy()
            ours, theirs = end_to_end(work, n_busy, 1 if quick else 3)
            print(f"3. {n_busy} trials of a ~40 ms CPU-bound objective, launch to exit (median)")
            print(f"   plain study.optimize {theirs:.2f} s; optspec run W=2 {ours:.2f} s;"
                  f" speed-up {theirs / ours:.2f}x (target >= 1.6)\n")  # fmt: skip
    if "dump" in only:
        sizes = (1_000, 2_000) if quick else (10_000, 100_000)
        copy_per_trial, rows = dump(sizes)
        print("4. dump_to_sqlite(backend, ...) without a live storage, vs copy_study per trial")
        print(f"   copy_study: {copy_per_trial * 1e6:,.0f} us/trial (timed on 1k trials)")
        for n_trials, seconds in rows:
            print(f"   {n_trials:>7,} trials: {seconds:6.2f} s,"
                  f" {copy_per_trial * n_trials / seconds:6.0f}x copy_study")  # fmt: skip
        print("   targets: >= 100x at 10k; 100k < 5 s\n")
    if "resume" in only:
        sizes = (1_000, 2_000) if quick else (1_000, 100_000)
        rows = resume(sizes)
        print("5. optspec resume: launch to the first new finished trial (2 workers)")
        for size, seconds in rows:
            ratio = seconds / rows[0][1]
            print(f"   {size:>7,} trials: {seconds:6.2f} s ({ratio:.1f}x the smallest)")
        print("   target: 100k <= 3 s\n")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Time from `optspec resume STUDY_DB` to its first new finished trial, by study size.

Compares resuming a 100k-trial study.db with resuming a 1k-trial one (the fixed cost of
starting a run), both in this script: the ratio says what a large study adds. Workers start
from the controller's replayed state (a snapshot) instead of replaying the journal each.
Run with `python benchmarks/bench_resume.py [N_TRIALS ...]`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage

sys.path.insert(0, str(Path(__file__).parent))
from bench_sqlite import journal_logs, optuna_block

from optspec.run.study_attrs import SPEC_ATTR, SPEC_DIR_ATTR, SPEC_FILE_ATTR
from optspec.storage.journal import InProcessJournalBackend
from optspec.storage.studydb import dump_to_sqlite

SPEC = """
version = 1
[study]
name = "bench"
[objective]
callable = "objective.py:objective"
[params]
x = { type = "float", low = -10, high = 10 }
n = { type = "int", low = 1, high = 100, log = true }
kind = { type = "categorical", choices = ["a", "b", "c"] }
[sampler]
name = "random"
[run]
workers = 2
"""

OBJECTIVE = """
def objective(params):
    return params["x"] ** 2 + params["n"]
"""

TIMING_PLUGIN = """
import json, os, time
from optspec import hookimpl

@hookimpl
def on_trial_end(trial):
    path = os.environ["BENCH_TIMES"]
    if not os.path.exists(path):
        with open(path, "w") as file:
            json.dump({"first": time.time()}, file)
"""


def make_study_db(directory: Path, n_trials: int) -> Path:
    backend = InProcessJournalBackend()
    backend.append_logs(journal_logs(optuna_block(), n_trials))
    storage = JournalStorage(backend)
    study_id = storage.get_study_id_from_name("bench")
    storage.set_study_system_attr(study_id, SPEC_ATTR, SPEC)
    storage.set_study_system_attr(study_id, SPEC_DIR_ATTR, {"relative": "..", "absolute": ""})
    storage.set_study_system_attr(study_id, SPEC_FILE_ATTR, "study.toml")
    out = directory / "out"
    out.mkdir()
    dump_to_sqlite(backend, "bench", out / "study.db", storage=storage)
    return out / "study.db"


def time_resume(directory: Path, study_db: Path, n_trials: int) -> dict[str, float]:
    times = directory / "times.json"
    started = time.time()
    subprocess.run(
        [sys.executable, "-m", "optspec", "resume", str(study_db), "--n-trials",
         str(n_trials + 20), "-q", "-p", "bench_timing"],
        cwd=directory,
        check=True,
        env={**os.environ, "BENCH_TIMES": str(times), "PYTHONPATH": str(directory)},
    )  # fmt: skip
    ended = time.time()
    return {"first": json.loads(times.read_text())["first"] - started, "total": ended - started}


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 100_000]
    print(__doc__.strip().splitlines()[0])
    print("each resume runs 20 new trials with 2 workers (RandomSampler, trivial objective)\n")
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            (directory / "study.toml").write_text(SPEC)
            (directory / "objective.py").write_text(OBJECTIVE)
            (directory / "bench_timing.py").write_text(TIMING_PLUGIN)
            study_db = make_study_db(directory, size)
            rows.append((size, study_db.stat().st_size, time_resume(directory, study_db, size)))
    base = rows[0][2]
    header = f"{'trials':>9}{'study.db':>11}{'first new trial':>17}{'ratio':>7}{'whole resume':>14}"
    print(header)
    print("-" * len(header))
    for size, nbytes, stamps in rows:
        print(
            f"{size:>9}{nbytes / 1e6:>9.1f}MB{stamps['first']:>16.2f}s"
            f"{stamps['first'] / base['first']:>7.1f}{stamps['total']:>13.2f}s"
        )
    print("\n'first new trial': from launching `optspec resume` to the first trial it finished;")
    print("'whole resume' includes writing the grown study.db back.")


if __name__ == "__main__":
    main()

"""How fast study.db is written and read back, against optuna.copy_study.

Run: ``python benchmarks/bench_sqlite.py``. Studies of 1k, 10k and 100k trials (3 params, one
value, one user attr) live in a journal as real workers leave it: the logs of 1k trials run by
Optuna, repeated with shifted trial ids. ``dump_to_sqlite`` (journal -> study.db) and
``load_from_sqlite`` (study.db -> journal + study) are timed for each; ``optuna.copy_study`` from
the same journal into SQLite, the obvious alternative, is timed on 1k trials only (it costs about
10 ms a trial) and taken as linear.

Targets: dump at least 100x faster per trial than copy_study and 100k trials in under 10 s;
load at least 10x faster than copy_study.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from optspec.storage.journal import InProcessJournalBackend
from optspec.storage.studydb import dump_to_sqlite, load_from_sqlite

SIZES = (1_000, 10_000, 100_000)
BLOCK = 1_000
STUDY = "bench"


def backend_factory() -> tuple[str, Callable[[], BaseJournalBackend]]:
    """The shared-memory journal optspec uses, if it is there and works; else a list."""
    try:
        from optspec.storage.select import SharedMemoryJournalBackend

        probe = SharedMemoryJournalBackend()
        probe.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s", "directions": [0]}])
        assert len(list(probe.read_logs(0))) == 1
        probe.close()
    except ImportError as error:
        print(f"(SharedMemoryJournalBackend unavailable: {error!r}; using a list backend)")
        return "list", InProcessJournalBackend
    return "SharedMemoryJournalBackend", SharedMemoryJournalBackend


def optuna_block() -> list[dict[str, Any]]:
    """The logs that Optuna writes for BLOCK trials, CREATE_STUDY first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = InProcessJournalBackend()
    study = optuna.create_study(
        study_name=STUDY,
        storage=JournalStorage(backend),
        sampler=optuna.samplers.RandomSampler(seed=0),
    )

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        n = trial.suggest_int("n", 1, 100, log=True)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        trial.set_user_attr("note", f"{kind}-{n}")
        return x * x + n

    study.optimize(objective, n_trials=BLOCK)
    return backend.read_logs(0)


def journal_logs(block: list[dict[str, Any]], n_trials: int) -> list[dict[str, Any]]:
    """``block`` repeated up to ``n_trials`` trials; later copies address their own trials."""
    create_study, trial_logs = block[0], block[1:]
    logs = [create_study]
    for copy_number in range(n_trials // BLOCK):
        offset = copy_number * BLOCK
        for log in trial_logs:
            if "trial_id" in log:
                log = {**log, "trial_id": log["trial_id"] + offset}
            logs.append(log)
    return logs


def time_dump(
    backend: BaseJournalBackend, path: Path, storage: JournalStorage | None = None
) -> float:
    """Seconds to dump; with ``storage``, one already in sync, as the controller has it."""
    start = time.perf_counter()
    dump_to_sqlite(backend, STUDY, path, storage=storage)
    return time.perf_counter() - start


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    backend_name, new_backend = backend_factory()
    block = optuna_block()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        # The first dump in a process imports alembic and SQLAlchemy's SQLite dialect.
        warm_up = new_backend()
        warm_up.append_logs(copy.deepcopy(block[:1]))
        first_call, _ = timed(lambda: dump_to_sqlite(warm_up, STUDY, Path(directory, "w.db")))
        _close(warm_up)

        copy_seconds, _ = timed(lambda: copy_study(block, new_backend, Path(directory, "c.db")))
        copy_per_trial = copy_seconds / BLOCK

        for n_trials in SIZES:
            backend = new_backend()
            backend.append_logs(journal_logs(block, n_trials))
            path = Path(directory, f"{n_trials}.db")
            dump_seconds = time_dump(backend, path)
            live_seconds = time_dump(backend, path, JournalStorage(backend))
            _close(backend)
            load_seconds, (loaded, study) = timed(
                lambda: load_from_sqlite(path, backend=new_backend())  # noqa: B023
            )
            assert len(study.trials) == n_trials
            _close(loaded)
            rows.append((n_trials, dump_seconds, live_seconds, load_seconds))

    print(__doc__.split("\n\n")[1].replace("\n", " "))
    print(f"Journal backend: {backend_name}. First dump in a process: {first_call:.2f} s.")
    print(
        f"optuna.copy_study: {copy_seconds:.2f} s for {BLOCK} trials"
        f" = {copy_per_trial * 1e6:,.0f} us/trial.\n"
    )
    print(
        "dump = dump_to_sqlite(backend, ...), replaying the journal with JournalStorage;"
        " live dump = dump_to_sqlite(..., storage=S) with S a JournalStorage already in sync;"
        " load = load_from_sqlite into a new journal, study opened on it."
        " Ratios: copy_study us/trial divided by ours.\n"
    )
    header = (
        "| trials | dump s | dump us/trial | dump vs copy_study | live dump s | live us/trial"
        " | live vs copy_study | load s | load us/trial | load vs copy_study |"
    )
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for n_trials, *seconds in rows:
        cells = [f"{n_trials:,}"]
        for total in seconds:
            per_trial = total / n_trials
            cells += [
                f"{total:.2f}",
                f"{per_trial * 1e6:,.1f}",
                f"{copy_per_trial / per_trial:,.0f}x",
            ]
        print("| " + " | ".join(cells) + " |")

    def worst(column: int) -> float:
        return min(copy_per_trial * row[0] / row[column] for row in rows)

    largest = rows[-1]
    print(
        "\nTargets: dump >= 100x copy_study per trial:"
        f" {_verdict(worst(1) >= 100)} (worst {worst(1):,.0f}x),"
        f" live {_verdict(worst(2) >= 100)} (worst {worst(2):,.0f}x);"
        f" {largest[0]:,} trials dumped < 10 s: {_verdict(largest[1] < 10)} ({largest[1]:.1f} s),"
        f" live {_verdict(largest[2] < 10)} ({largest[2]:.1f} s);"
        f" load >= 10x: {_verdict(worst(3) >= 10)} (worst {worst(3):,.0f}x)."
    )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def copy_study(block: list[dict[str, Any]], new_backend: Callable[[], Any], path: Path) -> None:
    backend = new_backend()
    backend.append_logs(block)
    optuna.copy_study(
        from_study_name=STUDY, from_storage=JournalStorage(backend), to_storage=f"sqlite:///{path}"
    )
    _close(backend)


def _close(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()


if __name__ == "__main__":
    main()

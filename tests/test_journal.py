"""SharedMemoryJournalBackend: in one process, across spawned processes, and when they die.

Multi-process tests use real ``spawn`` processes, as optspec's workers do. Every wait is
bounded, so a deadlock fails the test instead of hanging it.

Tests of the contract run on the kind of journal ``OPTSPEC_JOURNAL`` picks (CI runs this file
once per kind); tests of a lock run on every kind that has one, named explicitly.
"""

from __future__ import annotations

import enum
import glob
import multiprocessing
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import optuna
import pytest

from optspec.storage import journal as journal_module
from optspec.storage.memfd import MemfdJournal
from optspec.storage.select import SharedMemoryJournalBackend, chosen_kind, journal_class

spawn = multiprocessing.get_context("spawn")
JOIN_TIMEOUT = 30.0
# The kinds whose processes share a lock: the manager journal has none to hold or leak.
LOCKING_KINDS = ["memfd", "portable"]


def take_lock(journal: Any) -> None:
    """Take the journal's writers' lock, as an append in progress would."""
    journal._acquire(journal._lock_token()[1])


def release_lock(journal: Any) -> None:
    journal._release(journal._lock_token()[1])


def lock_is_free(journal: Any) -> bool:
    """Whether this process could take the lock now without waiting (and without keeping it)."""
    if isinstance(journal, MemfdJournal):
        from optspec.storage import robust_mutex

        if robust_mutex.try_lock(journal._pinned[1]):
            return False
        robust_mutex.unlock(journal._pinned[1])
        return True
    return not journal._thread_lock._is_owned()


@pytest.fixture
def backend() -> Iterator[SharedMemoryJournalBackend]:
    with SharedMemoryJournalBackend() as journal:
        yield journal


def start(target: Callable[..., Any], *args: Any) -> BaseProcess:
    process = spawn.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def join_all(processes: list[BaseProcess], timeout: float = JOIN_TIMEOUT) -> None:
    """Join every process within ``timeout`` seconds in all, or kill them and fail."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in processes if p.is_alive()]
    for process in hung:
        process.kill()
    assert not hung, f"processes still running after {timeout} s (deadlock?): {hung}"
    assert [p.exitcode for p in processes] == [0] * len(processes)


def receive(queue: Any, count: int, timeout: float = JOIN_TIMEOUT) -> list[Any]:
    # Read results before joining: a child blocks on exit until its queue data is consumed.
    return [queue.get(timeout=timeout) for _ in range(count)]


def wait_for(condition: Callable[[], bool], timeout: float = JOIN_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


# -- one process -----------------------------------------------------------------------------


def test_reads_back_in_order_from_any_log_number(backend: SharedMemoryJournalBackend) -> None:
    logs = [{"n": i, "values": [i / 3, float("inf")], "name": f"x{i}"} for i in range(10)]
    backend.append_logs(logs[:1])
    backend.append_logs(logs[1:7])
    backend.append_logs(logs[7:])

    assert list(backend.read_logs(0)) == logs
    assert list(backend.read_logs(10)) == []
    assert list(backend.read_logs(4)) == logs[4:]
    assert list(backend.read_logs(0)) == logs
    assert list(backend.read_logs(25)) == []
    assert len(backend) == 10
    assert list(backend.logs()) == logs


def test_new_logs_only_after_the_cursor(backend: SharedMemoryJournalBackend) -> None:
    backend.append_logs([{"n": 0}])
    assert list(backend.read_logs(0)) == [{"n": 0}]
    assert list(backend.read_logs(1)) == []
    backend.append_logs([{"n": 1}, {"n": 2}])
    assert list(backend.read_logs(1)) == [{"n": 1}, {"n": 2}]
    # A caller ahead of what this process has indexed still gets only what it asked for.
    backend.append_logs([{"n": 3}, {"n": 4}])
    assert list(backend.read_logs(4)) == [{"n": 4}]
    assert len(backend) == 5


def test_logs_written_as_json_would_write_them(backend: SharedMemoryJournalBackend) -> None:
    class Kind(str, enum.Enum):
        A = "a"

    state = optuna.trial.TrialState.PRUNED
    backend.append_logs([{"op_code": state, "state": state}, {"nested": {"kind": Kind.A}}])
    assert list(backend.read_logs(0)) == [{"op_code": 2, "state": 2}, {"nested": {"kind": "a"}}]
    assert type(next(backend.logs())["state"]) is int
    with pytest.raises(TypeError):
        backend.append_logs([{"not json": object()}])
    assert len(backend) == 2


def test_grows_past_its_initial_size() -> None:
    with SharedMemoryJournalBackend(initial_size=1) as journal:
        logs = [{"n": i, "pad": "x" * 3000} for i in range(1000)]
        for i in range(0, 1000, 100):
            journal.append_logs(logs[i : i + 100])
        journal.append_logs([{"big": "y" * 5_000_000}])
        assert list(journal.read_logs(0))[:-1] == logs
        assert len(journal) == 1001


def test_pickles_to_a_small_handle_that_attaches(backend: SharedMemoryJournalBackend) -> None:
    backend.append_logs([{"pad": "x" * 100_000}])
    handle = pickle.dumps(backend)
    assert len(handle) < 200

    with pickle.loads(handle) as attached:
        assert attached is not backend
        assert len(attached) == 1
        attached.append_logs([{"from": "attached"}])
        assert list(backend.read_logs(1)) == [{"from": "attached"}]
    # Closing an attached copy leaves the journal to the others.
    backend.append_logs([{"from": "creator"}])
    assert len(backend) == 3


def test_closed_journal_says_so() -> None:
    journal = SharedMemoryJournalBackend()
    journal.close()
    journal.close()
    with pytest.raises(ValueError, match="closed"):
        journal.read_logs(0)
    with pytest.raises(ValueError, match="closed"):
        journal.append_logs([{}])
    with pytest.raises(ValueError, match="closed"):
        pickle.dumps(journal)


def test_attaching_to_a_vanished_journal_fails_clearly() -> None:
    journal = SharedMemoryJournalBackend()
    handle = pickle.dumps(journal)
    journal.close()
    with pytest.raises(OSError, match="cannot attach"):
        pickle.loads(handle)


@pytest.mark.parametrize("kind", LOCKING_KINDS)
def test_a_forked_child_and_its_parent_exclude_each_other(kind: str) -> None:
    with journal_class(kind)() as backend:
        take_lock(backend)  # as if this process were mid-append
        try:
            pid = os.fork()
            if pid == 0:  # the child: waits for the parent's lock, then appends
                try:
                    backend.append_logs([{"from": "child"}])
                finally:
                    os._exit(0)
            time.sleep(0.3)
            assert len(backend) == 0, "the child appended while the parent held the lock"
        finally:
            release_lock(backend)
        wait_for(lambda: len(backend) == 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert list(backend.read_logs(0)) == [{"from": "child"}]


def test_own_appends_read_back_in_order_between_other_writers(
    backend: SharedMemoryJournalBackend,
) -> None:
    with pickle.loads(pickle.dumps(backend)) as other:  # a second process's view of it
        other.append_logs([{"n": 0, "by": "other"}])
        backend.append_logs([{"n": 1, "by": "me"}])  # handed back without decoding...
        other.append_logs([{"n": 2, "by": "other"}])
        # ...but only in its place: after the other process's log, before the next one.
        assert [log["n"] for log in backend.read_logs(0)] == [0, 1, 2]
        backend.append_logs([{"n": 3, "by": "me"}])
        assert [log["n"] for log in backend.read_logs(3)] == [3]
        assert [log["n"] for log in other.read_logs(0)] == [0, 1, 2, 3]
        assert list(backend.read_logs(0)) == list(other.read_logs(0))


def test_what_is_read_back_does_not_change_with_the_callers_objects(
    backend: SharedMemoryJournalBackend,
) -> None:
    state = optuna.trial.TrialState.COMPLETE
    flat = {"op_code": state, "trial_id": 0, "value": 1.5}
    values = {"op_code": state, "trial_id": 0, "values": [1.5, 2.5]}
    nested = {"trial_id": 0, "values": [1.5], "attrs": {"k": "v"}}
    logs: list[dict[str, Any]] = []
    for log in (flat, values, nested):  # read back right after each append, as Optuna does
        backend.append_logs([log])
        logs.extend(backend.read_logs(len(logs)))
    for log in (flat, values, nested):
        log["trial_id"] = 99
    values["values"].append(99.0)
    nested["values"].append(99.0)
    nested["attrs"]["k"] = "changed"

    assert (
        logs
        == list(backend.read_logs(0))
        == [
            {"op_code": 1, "trial_id": 0, "value": 1.5},
            {"op_code": 1, "trial_id": 0, "values": [1.5, 2.5]},
            {"trial_id": 0, "values": [1.5], "attrs": {"k": "v"}},
        ]
    )
    # Read back as every other process decodes them: plain ints, not the caller's enums.
    assert type(logs[0]["op_code"]) is int


def test_a_read_interrupted_half_way_leaves_the_cursor_sound(
    backend: SharedMemoryJournalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pickle.loads(pickle.dumps(backend)) as reader:  # decodes everything it reads
        backend.append_logs([{"n": i} for i in range(5)])
        decode, calls = journal_module._loads, []

        def interrupted_on_the_third(record: bytes) -> Any:
            calls.append(record)
            if len(calls) == 3:
                raise KeyboardInterrupt  # what a signal landing during the read does
            return decode(record)

        monkeypatch.setattr(journal_module, "_loads", interrupted_on_the_third)
        with pytest.raises(KeyboardInterrupt):
            reader.read_logs(0)
        monkeypatch.setattr(journal_module, "_loads", decode)

        assert [log["n"] for log in reader.read_logs(0)] == [0, 1, 2, 3, 4]
        backend.append_logs([{"n": 5}])
        assert [log["n"] for log in reader.read_logs(5)] == [5]
        assert len(reader) == 6


@pytest.mark.parametrize("kind", LOCKING_KINDS)
def test_where_stores_may_be_reordered_a_reader_of_new_logs_takes_the_lock(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ARM rule (see optspec.storage.journal, "Ordering"), exercised on any CPU: a read that
    finds nothing new takes no lock; one that finds something new waits for the writers' lock,
    which orders it after the last writer's stores."""
    monkeypatch.setattr(journal_module, "STORES_IN_ORDER", False)
    with (
        journal_class(kind)() as journal,
        pickle.loads(pickle.dumps(journal)) as reader,
        pickle.loads(pickle.dumps(journal)) as idle,
    ):
        journal.append_logs([{"n": 0}])
        assert list(reader.read_logs(0)) == [{"n": 0}]
        journal.append_logs([{"n": 1}])
        assert list(idle.read_logs(0)) == [{"n": 0}, {"n": 1}]
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            take_lock(journal)
            held.set()
            release.wait(JOIN_TIMEOUT)
            release_lock(journal)

        read: list[Any] = []
        holder = threading.Thread(target=hold)
        holder.start()
        reading = threading.Thread(target=lambda: read.extend(reader.read_logs(1)))
        try:
            assert held.wait(JOIN_TIMEOUT)
            assert list(idle.read_logs(2)) == []  # nothing new: no lock, no wait
            reading.start()
            reading.join(0.3)
            assert reading.is_alive(), "read something new without taking the lock"
        finally:
            release.set()
            holder.join(JOIN_TIMEOUT)
        reading.join(JOIN_TIMEOUT)
        assert read == [{"n": 1}]


INTERRUPTED_APPENDS = textwrap.dedent(
    """
    import errno, random, signal, sys, threading, time
    from optspec.storage.select import journal_class
    from tests.test_journal import lock_is_free

    journal = journal_class(sys.argv[1])()
    main, stop, armed = threading.main_thread().ident, threading.Event(), threading.Event()

    def interrupt_often():
        # One signal per arming: none can land while the main thread checks the lock.
        while not stop.is_set():
            if armed.wait(0.1):
                time.sleep(random.uniform(0.0002, 0.002))
                armed.clear()
                signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt_often, daemon=True).start()
    log = {"trial_id": 1, "param_name": "x", "param_value_internal": 0.5}
    interrupts = 0
    while interrupts < 300:
        try:
            armed.set()
            while True:
                journal.append_logs([log])
        except KeyboardInterrupt:
            interrupts += 1
            # Nothing else appends: a busy lock now is one this thread leaked.
            if not lock_is_free(journal):
                print("lock left held after", interrupts, "interrupts", flush=True)
                stop.set()
                raise SystemExit(1)
    stop.set()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("ok", interrupts, len(journal), flush=True)
    """
)


@pytest.mark.slow
# Only memfd promises it: its unlock is a C call that no signal can precede (see portable.py).
@pytest.mark.parametrize("kind", ["memfd"])
def test_appends_interrupted_by_ctrl_c_never_leave_the_lock_held(kind: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_APPENDS, kind],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok 300 ")


CLOSE_WHILE_WAITING = textwrap.dedent(
    """
    import os, threading, time
    from optspec.storage import robust_mutex
    from optspec.storage.memfd import MemfdJournal

    journal = MemfdJournal()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # holds the lock for a while, as a slow writer would
        assert robust_mutex.try_lock(journal._pinned[1]) == 0
        os.write(ready_w, b"x")
        time.sleep(0.5)
        robust_mutex.unlock(journal._pinned[1])
        os._exit(0)
    os.read(ready_r, 1)
    errors = []

    def append():
        try:
            journal.append_logs([{"n": 1}])
        except ValueError as exc:
            errors.append(str(exc))

    waiter = threading.Thread(target=append)
    waiter.start()
    time.sleep(0.2)  # the thread now waits for the lock
    journal.close()
    os.waitpid(pid, 0)
    waiter.join()
    print("survived", errors, flush=True)
    """
)


def test_closing_while_another_thread_waits_to_append_does_not_crash() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CLOSE_WHILE_WAITING], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr  # was -11: the lock unmapped under the waiter
    assert result.stdout == "survived ['journal is closed']\n"


# -- processes ---------------------------------------------------------------------------------


def append_in_random_batches(
    journal: SharedMemoryJournalBackend, worker: int, count: int, total: int, results: Any
) -> None:
    rng = random.Random(worker)
    seen = []  # read incrementally while appending, as JournalStorage does
    seq = 0
    while seq < count:
        size = min(rng.randint(1, 40), count - seq)
        journal.append_logs(
            [{"w": worker, "seq": seq + i, "pad": "p" * rng.randint(0, 300)} for i in range(size)]
        )
        seq += size
        seen.extend(journal.read_logs(len(seen)))
    wait_for(lambda: len(journal) == total)
    seen.extend(journal.read_logs(len(seen)))
    everything = list(journal.read_logs(0))
    assert everything == seen
    results.put([(log["w"], log["seq"]) for log in everything])


@pytest.mark.slow
def test_concurrent_appends_have_one_order_everywhere() -> None:
    workers, per_worker = 4, 5000
    total = workers * per_worker
    # A small start, so the journal also grows while four processes use it.
    with SharedMemoryJournalBackend(initial_size=64 * 1024) as journal:
        results = spawn.Queue()
        processes = [
            start(append_in_random_batches, journal, w, per_worker, total, results)
            for w in range(workers)
        ]
        orders = receive(results, workers)
        join_all(processes)
        assert [(log["w"], log["seq"]) for log in journal.logs()] == orders[0]

    order = orders[0]
    assert all(other == order for other in orders[1:])
    assert len(order) == len(set(order)) == total
    for w in range(workers):
        assert [seq for who, seq in order if who == w] == list(range(per_worker))


def append_until_killed(journal: SharedMemoryJournalBackend, victim: int, started: Any) -> None:
    started.set()
    batch = 0
    while True:  # large batches, so a kill often lands inside a write or under the lock
        journal.append_logs(
            [
                {"victim": victim, "batch": batch, "i": i, "of": 64, "pad": "v" * 500}
                for i in range(64)
            ]
        )
        batch += 1


def append_and_check(
    journal: SharedMemoryJournalBackend, worker: int, stop: Any, results: Any
) -> None:
    read = 0
    appended = 0
    while not stop.is_set():
        journal.append_logs([{"survivor": worker, "seq": appended}])
        appended += 1
        for log in journal.read_logs(read):
            assert_well_formed(log)
            read += 1
        time.sleep(0.001)  # leave CPU to the victims' start-up on a 2-core machine
    results.put((worker, appended, read))


def assert_well_formed(log: dict[str, Any]) -> None:
    if "victim" in log:
        assert set(log) == {"victim", "batch", "i", "of", "pad"} and log["pad"] == "v" * 500
    else:
        assert set(log) == {"survivor", "seq"}


@pytest.mark.slow
def test_a_writer_killed_mid_append_leaves_no_trace_and_no_lock() -> None:
    kills = 20
    rng = random.Random(0)
    with SharedMemoryJournalBackend() as journal:
        stop, results = spawn.Event(), spawn.Queue()
        survivors = [start(append_and_check, journal, w, stop, results) for w in range(2)]
        for victim in range(kills):
            started = spawn.Event()
            process = start(append_until_killed, journal, victim, started)
            assert started.wait(JOIN_TIMEOUT)
            time.sleep(rng.uniform(0.005, 0.05))
            os.kill(process.pid, signal.SIGKILL)
            process.join(JOIN_TIMEOUT)
        # The survivors still make progress after the last kill: no lock was left held.
        before = len(journal)
        wait_for(lambda: len(journal) > before + 100)
        stop.set()
        reports = receive(results, 2)
        join_all(survivors)

        logs = list(journal.read_logs(0))
    for log in logs:
        assert_well_formed(log)
    for worker, appended, read in reports:
        assert [log["seq"] for log in logs if log.get("survivor") == worker] == list(
            range(appended)
        )
        assert read >= appended
    # Each victim's batches appear whole or not at all.
    batches: dict[tuple[int, int], list[int]] = {}
    for log in logs:
        if "victim" in log:
            batches.setdefault((log["victim"], log["batch"]), []).append(log["i"])
    assert batches and all(items == list(range(64)) for items in batches.values())


def hold_the_lock_until_killed(journal: SharedMemoryJournalBackend, holding: Any) -> None:
    take_lock(journal)
    holding.set()
    time.sleep(JOIN_TIMEOUT * 2)


def report_whether_the_lock_is_free(journal: Any, results: Any) -> None:
    if isinstance(journal, MemfdJournal):
        from optspec.storage import robust_mutex

        free = robust_mutex.try_lock(journal._pinned[1]) == 0
        if free:
            robust_mutex.unlock(journal._pinned[1])
    else:
        import fcntl

        try:
            fcntl.lockf(journal._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            free = False
        else:
            free = True
            fcntl.lockf(journal._lock_file, fcntl.LOCK_UN)
    results.put(free)


@pytest.mark.parametrize("kind", LOCKING_KINDS)
def test_growing_the_journal_under_the_lock_keeps_the_lock(kind: str) -> None:
    """Growth maps the file again and drops the old map, mid-append: the lock must survive it
    (a record lock on the mapped file itself would not: closing any descriptor drops it)."""
    with journal_class(kind)(initial_size=1) as journal:
        take_lock(journal)
        try:
            journal._grow(len(journal._data) * 4)  # as an append that needs room does
            results = spawn.Queue()
            child = start(report_whether_the_lock_is_free, journal, results)
            assert receive(results, 1) == [False]
        finally:
            release_lock(journal)
        join_all([child])
        child = start(report_whether_the_lock_is_free, journal, results)
        assert receive(results, 1) == [True]
        join_all([child])


def append_one(journal: SharedMemoryJournalBackend, results: Any) -> None:
    journal.append_logs([{"after": "the holder died"}])
    results.put(len(journal))


@pytest.mark.slow
@pytest.mark.parametrize("kind", LOCKING_KINDS)
def test_the_lock_of_a_process_killed_holding_it_passes_on(kind: str) -> None:
    with journal_class(kind)() as journal:
        journal.append_logs([{"before": "the holder"}])
        holding, results = spawn.Event(), spawn.Queue()
        holder = start(hold_the_lock_until_killed, journal, holding)
        assert holding.wait(JOIN_TIMEOUT)
        waiter = start(append_one, journal, results)
        time.sleep(0.3)
        assert len(journal) == 1, "appended while another process held the lock"
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(JOIN_TIMEOUT)
        assert receive(results, 1) == [2]
        join_all([waiter])
        journal.append_logs([{"and": "still usable"}])
        assert list(journal.read_logs(0)) == [
            {"before": "the holder"},
            {"after": "the holder died"},
            {"and": "still usable"},
        ]


# -- JournalStorage ----------------------------------------------------------------------------


def optimize_and_report(storage: optuna.storages.JournalStorage, seed: int, results: Any) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(
        study_name="shared", storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed)
    )
    written: dict[int, dict[str, Any]] = {}

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -10, 10)
        n = trial.suggest_int("n", 1, 8)
        kind = trial.suggest_categorical("kind", ["a", "b", "c"])
        record = written[trial.number] = {
            "params": {"x": x, "n": n, "kind": kind},
            "intermediate": {},
            "attrs": {"seed": seed, "kind": kind, "steps": [x, n]},
        }
        for key, value in record["attrs"].items():
            trial.set_user_attr(key, value)
        for step in range(n):
            record["intermediate"][step] = x * step
            trial.report(x * step, step)
        if kind == "b":
            record["state"] = optuna.trial.TrialState.PRUNED
            record["value"] = x * (n - 1)  # Optuna keeps a pruned trial's last report
            raise optuna.TrialPruned()
        if n == 8:
            record["state"] = optuna.trial.TrialState.FAIL
            raise ValueError("n == 8 fails on purpose")
        record["state"] = optuna.trial.TrialState.COMPLETE
        record["value"] = x * x + n
        return x * x + n

    study.optimize(objective, n_trials=40, catch=(ValueError,))
    results.put(written)


@pytest.mark.slow
def test_two_processes_optimize_one_study() -> None:
    with SharedMemoryJournalBackend() as journal:
        storage = optuna.storages.JournalStorage(journal)
        optuna.create_study(study_name="shared", storage=storage)
        results = spawn.Queue()
        processes = [start(optimize_and_report, storage, seed, results) for seed in (1, 2)]
        written = receive(results, 2)
        join_all(processes)
        trials = optuna.load_study(study_name="shared", storage=storage).get_trials()

    assert not set(written[0]) & set(written[1])
    expected = written[0] | written[1]
    assert [t.number for t in trials] == list(range(80)) == sorted(expected)
    assert [t._trial_id for t in trials] == list(range(80))
    for trial in trials:
        record = expected[trial.number]
        assert trial.params == record["params"]
        assert trial.intermediate_values == record["intermediate"]
        assert trial.user_attrs == record["attrs"]
        assert trial.state == record["state"]
        assert trial.value == record.get("value")
    states = {t.state for t in trials}
    assert {optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL} <= states


# -- growth across processes ---------------------------------------------------------------------


def append_big_logs(
    journal: SharedMemoryJournalBackend, tag: str, count: int, results: Any
) -> None:
    for i in range(count):
        journal.append_logs([{"tag": tag, "i": i, "pad": tag * 50_000}])
    wait_for(lambda: len(journal) == 2 * count)
    results.put(sorted((log["tag"], log["i"], len(log["pad"])) for log in journal.read_logs(0)))


@pytest.mark.slow
def test_growth_is_seen_by_every_process() -> None:
    count = 200  # 2 x 200 x 50 kB = 20 MB, from a 64 kB start
    with SharedMemoryJournalBackend(initial_size=64 * 1024) as journal:
        results = spawn.Queue()
        processes = [start(append_big_logs, journal, tag, count, results) for tag in "ab"]
        seen = receive(results, 2)
        join_all(processes)
        here = sorted((log["tag"], log["i"], len(log["pad"])) for log in journal.logs())
    expected = sorted((tag, i, 50_000) for tag in "ab" for i in range(count))
    assert seen == [expected, expected]
    assert here == expected


# -- leftovers -------------------------------------------------------------------------------------


# Not this run's: multiprocessing's semaphores of other test runs, PostgreSQL servers that
# other tests start (the journals here create no semaphores).
FOREIGN_SHM = ("sem.mp-", "PostgreSQL.")


def shm_entries() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if not e.startswith(FOREIGN_SHM)}


def holders_of_journal(pid: int) -> list[str]:
    """Every /proc/PID/fd link or mapping that still points at a journal that ``pid`` made.

    A memfd journal shows as ``/memfd:optspec-journal-PID``, a portable one as the deleted
    file ``.../optspec-journal-PID-XXXX (deleted)``.
    """
    name = f"optspec-journal-{pid}"
    found = []
    for link in glob.glob("/proc/[0-9]*/fd/*"):
        try:
            if f"/memfd:{name} " in os.readlink(link) + " " or f"/{name}-" in os.readlink(link):
                found.append(link)
        except OSError:
            pass  # the fd or process went away while we looked
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            text = Path(maps).read_text()
        except OSError:
            continue
        if f"/memfd:{name} " in text + " " or f"/{name}-" in text:
            found.append(maps)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


CREATOR = textwrap.dedent(
    """
    import sys
    from optspec.storage.select import SharedMemoryJournalBackend

    with SharedMemoryJournalBackend(initial_size=1 << 20) as journal:
        journal.append_logs([{"pad": "x" * 1000}] * 2000)
        manager = getattr(journal, "_manager", None)  # the manager journal's server process
        print("ready", manager._process.pid if manager else 0, flush=True)
        sys.stdin.readline()  # wait for the test: it checks the journal exists, then acts
        raise RuntimeError("boom")
    """
)


def run_creator(how: str, tmp_path: Path) -> bytes:
    creator = subprocess.Popen(
        [sys.executable, "-c", CREATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # a temp directory of its own, to inspect
    )
    try:
        assert creator.stdin is not None and creator.stdout is not None
        ready, server = creator.stdout.readline().split()
        assert ready == b"ready"
        server_pid = int(server)
        assert holders_of_journal(creator.pid) or alive(server_pid)
        if how == "sigkill":
            creator.kill()
        elif how == "sigint":
            creator.send_signal(signal.SIGINT)
        else:
            creator.stdin.write(b"go\n")
            creator.stdin.flush()
        creator.wait(JOIN_TIMEOUT)
    finally:
        creator.kill()
        creator.wait()
    assert creator.returncode != 0
    assert holders_of_journal(creator.pid) == []
    if server_pid:
        wait_for(lambda: not alive(server_pid))
    assert creator.stderr is not None
    return creator.stderr.read()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["raise", "sigint", "sigkill"])
def test_nothing_left_behind_when_the_creator_dies(how: str, tmp_path: Path) -> None:
    before = shm_entries()
    stderr = run_creator(how, tmp_path)
    assert shm_entries() - before == set()
    assert list(tmp_path.iterdir()) == []
    expected = {"raise": b"RuntimeError: boom", "sigint": b"KeyboardInterrupt", "sigkill": b""}
    assert expected[how] in stderr


def test_nothing_left_behind_after_close() -> None:
    before = shm_entries()
    journal = SharedMemoryJournalBackend()
    journal.append_logs([{"pad": "x" * 10_000}])
    attached = pickle.loads(pickle.dumps(journal))
    manager = getattr(journal, "_manager", None)
    assert holders_of_journal(os.getpid()) or manager
    attached.close()
    journal.close()
    assert holders_of_journal(os.getpid()) == []
    if manager is not None:
        wait_for(lambda: not manager._process.is_alive())
    assert shm_entries() - before == set()


def test_the_kind_is_the_one_asked_for() -> None:
    with SharedMemoryJournalBackend() as journal:
        assert journal.kind == chosen_kind()
        assert isinstance(journal, SharedMemoryJournalBackend)

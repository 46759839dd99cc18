"""IndexedJournalStorage: WAITING trials found from an index, with JournalStorage's answers.

What the speed relies on: every enqueued trial is still run exactly once when several worker
processes ask at the same time, a trial enqueued by another process is found, and a study
runs exactly as it does on Optuna's own JournalStorage. Multi-process tests use real ``spawn``
processes over the shared-memory journal, as optspec's workers do.
"""

from __future__ import annotations

import multiprocessing
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.storages import JournalStorage
from optuna.trial import TrialState

from optspec.storage.indexed import IndexedJournalStorage
from optspec.storage.journal import InProcessJournalBackend
from optspec.storage.optuna_compat import journal_backend, replay_snapshot, study_storage
from optspec.storage.replay import LogReplay, advance_followed, frozen_trial
from optspec.storage.select import SharedMemoryJournalBackend
from optspec.storage.studydb import dump_to_sqlite, load_from_sqlite
from tests.studies import ListBackend, assert_same_trials, study_in_journal

optuna.logging.set_verbosity(optuna.logging.WARNING)
spawn = multiprocessing.get_context("spawn")
TIMEOUT = 60.0

WAITING = (TrialState.WAITING,)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10, 10)
    n = trial.suggest_int("n", 1, 100)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    if n % 5 == 0:
        raise optuna.TrialPruned()
    return x * x + n + len(kind)


def summary(study: optuna.Study) -> list[tuple[Any, ...]]:
    return [(t.number, t.state, t.params, t.values, t.user_attrs) for t in study.trials]


def run_study(storage: Any) -> optuna.Study:
    """A study mixing enqueued trials, sampled ones and enqueues between optimize calls."""
    study = optuna.create_study(
        study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=3)
    )
    for x in (1.0, 2.0, 3.0):
        study.enqueue_trial({"x": x}, user_attrs={"enqueued": x})
    study.optimize(objective, n_trials=10)
    study.enqueue_trial({"x": 4.0, "n": 7})
    study.enqueue_trial({"x": 5.0, "kind": "b"})
    study.optimize(objective, n_trials=10, catch=(ValueError,))
    return study


def test_a_study_runs_exactly_as_on_optunas_journal_storage() -> None:
    theirs = run_study(JournalStorage(InProcessJournalBackend()))
    ours = run_study(IndexedJournalStorage(InProcessJournalBackend()))
    assert summary(ours) == summary(theirs)
    assert [t.params["x"] for t in ours.trials[:3]] == [1.0, 2.0, 3.0]
    assert ours.trials[10].params["x"] == 4.0 and ours.trials[10].params["n"] == 7


def test_waiting_trials_answered_as_journal_storage_answers() -> None:
    backend = InProcessJournalBackend()
    ours = IndexedJournalStorage(backend)
    first = ours.create_new_study([optuna.study.StudyDirection.MINIMIZE], "first")
    second = ours.create_new_study([optuna.study.StudyDirection.MINIMIZE], "second")
    waiting = optuna.trial.create_trial(state=TrialState.WAITING)
    # Interleaved studies: the journal's trial ids are not the second study's numbers.
    for number in range(6):
        study_id = first if number % 2 else second
        ours.create_new_trial(study_id, template_trial=waiting if number % 3 else None)
    theirs = JournalStorage(backend)

    def both(study_id: int, **kwargs: Any) -> tuple[list[Any], list[Any]]:
        return (
            [t.number for t in ours.get_all_trials(study_id, **kwargs)],
            [t.number for t in theirs.get_all_trials(study_id, **kwargs)],
        )

    for study_id in (first, second):
        mine, reference = both(study_id, states=WAITING)
        assert mine == reference and mine
    ours.set_trial_state_values(2, TrialState.RUNNING)  # trial id 2: second's number 1
    ours.set_trial_state_values(1, TrialState.COMPLETE, [1.0])
    for study_id in (first, second):
        for states in (WAITING, [TrialState.WAITING], None, (TrialState.RUNNING,)):
            mine, reference = both(study_id, states=states, deepcopy=False)
            assert mine == reference
    # A deep copy is the caller's own: changing it changes nothing stored.
    (copied, *_) = ours.get_all_trials(first, states=WAITING)
    copied.user_attrs["changed"] = True
    assert "changed" not in ours.get_trial(copied._trial_id).user_attrs
    with pytest.raises(KeyError):
        ours.get_all_trials(99, states=WAITING)


def test_its_replay_parses_each_distribution_once_and_gives_the_same_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from optuna.storages.journal import _storage

    # Optuna's own parsing for the reference replay, whatever earlier tests installed.
    monkeypatch.setattr(_storage, "json_to_distribution", optuna.distributions.json_to_distribution)
    backend = InProcessJournalBackend()
    run_study(JournalStorage(backend))
    reference = JournalStorage(backend)
    study_id = reference.get_study_id_from_name("s")
    expected = reference.get_all_trials(study_id)

    indexed = IndexedJournalStorage(backend)
    parse = _storage.json_to_distribution
    assert indexed.get_all_trials(study_id) == expected
    # Three distinct distributions in the study, parsed once each for ~60 logs.
    assert parse.cache_info().misses <= 4 < parse.cache_info().hits


def test_a_trial_taken_then_queued_again_by_another_process_is_found() -> None:
    """What a retry does with a queued ticket (``TicketIssuer.retry``), seen from a worker's
    storage that looked at the queue while the ticket was taken."""
    backend = InProcessJournalBackend()
    worker = IndexedJournalStorage(backend)
    controller = JournalStorage(backend)
    study = optuna.create_study(study_name="s", storage=controller)
    study.enqueue_trial({"x": 1.0})
    study_id = worker.get_study_id_from_name("s")
    (ticket,) = worker.get_all_trials(study_id, states=WAITING)
    controller.set_trial_state_values(ticket._trial_id, TrialState.RUNNING)
    assert worker.get_all_trials(study_id, states=WAITING) == []
    controller.set_trial_state_values(ticket._trial_id, TrialState.WAITING)
    assert [t.number for t in worker.get_all_trials(study_id, states=WAITING)] == [ticket.number]


def test_a_pickled_storage_indexes_the_study_again() -> None:
    with SharedMemoryJournalBackend() as backend:
        storage = IndexedJournalStorage(backend)
        study = optuna.create_study(study_name="s", storage=storage)
        study.enqueue_trial({"x": 1.5})
        assert len(storage.get_all_trials(study._study_id, states=WAITING)) == 1
        copy = pickle.loads(pickle.dumps(storage))
        (trial,) = copy.get_all_trials(study._study_id, states=WAITING)
        assert trial.system_attrs["fixed_params"] == {"x": 1.5}
        # From a snapshot too, as workers of a large resumed study start.
        copy.restore_replay_result(replay_snapshot(storage))
        assert len(copy.get_all_trials(study._study_id, states=WAITING)) == 1
        journal_backend(copy).close()


def _ask_until_empty(
    storage: IndexedJournalStorage, enqueued: int, start: Any, results: Any
) -> None:
    study = optuna.load_study(study_name="s", storage=storage)
    start.wait(TIMEOUT)  # every worker is ready: none takes all the trials before the others
    numbers = []
    while True:
        trial = study.ask()
        if trial.number >= enqueued:  # a new trial: nothing waiting was left for it
            study.tell(trial, state=TrialState.FAIL)
            break
        numbers.append(trial.number)
        study.tell(trial, trial.suggest_float("x", 0, 1000))
    results.put(numbers)


@pytest.mark.slow
def test_enqueued_trials_are_run_once_across_processes() -> None:
    count = 300
    with SharedMemoryJournalBackend() as backend:
        storage = IndexedJournalStorage(backend)
        study = optuna.create_study(study_name="s", storage=storage)
        for x in range(count):
            study.enqueue_trial({"x": float(x)})
        start, results = spawn.Barrier(3), spawn.Queue()
        args = (storage, count, start, results)
        workers = [spawn.Process(target=_ask_until_empty, args=args, daemon=True) for _ in range(3)]
        for worker in workers:
            worker.start()
        popped = [results.get(timeout=TIMEOUT) for _ in workers]
        for worker in workers:
            worker.join(TIMEOUT)
        numbers = sorted(number for numbers in popped for number in numbers)
        assert numbers == list(range(count))  # each enqueued trial once, by one process
        assert sum(1 for numbers in popped if numbers) >= 2  # they did compete
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert sorted(t.params["x"] for t in complete) == [float(x) for x in range(count)]


def _enqueue_later(backend: SharedMemoryJournalBackend, ready: Any) -> None:
    study = optuna.load_study(study_name="s", storage=JournalStorage(backend))
    ready.wait(TIMEOUT)
    study.enqueue_trial({"x": 42.0})


def test_a_trial_enqueued_by_another_process_is_found() -> None:
    with SharedMemoryJournalBackend() as backend:
        study = optuna.create_study(study_name="s", storage=IndexedJournalStorage(backend))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=5)  # the index is built
        ready = spawn.Event()
        process = spawn.Process(target=_enqueue_later, args=(backend, ready), daemon=True)
        process.start()
        ready.set()
        process.join(TIMEOUT)
        assert process.exitcode == 0
        deadline = time.monotonic() + TIMEOUT
        while len(study.get_trials(deepcopy=False)) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        trial = study.ask()
        assert trial.number == 5
        assert trial.suggest_float("x", 0, 100) == 42.0


# --------------------------------------------------------------------------------------------
# LogReplay: the trials JournalStorage would replay, from the logs alone


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(study_in_journal(), st.data())
def test_log_replay_gives_journal_storages_trials(
    journal: tuple[ListBackend, str], data: st.DataObject
) -> None:
    backend, name = journal
    logs = backend.read_logs(0)
    storage = JournalStorage(backend)
    study_id = storage.get_study_id_from_name(name)
    expected = storage.get_all_trials(study_id, deepcopy=False)

    replay = LogReplay()
    finished = replay.apply(logs)
    assert [frozen_trial(t) for t in replay.study_trials(study_id)] == expected
    assert [t.trial_id for t in finished] == [
        t._trial_id for t in expected if t.state.is_finished()
    ]

    # Following a storage from part-way: the rest of the logs finish the same trials.
    split = data.draw(st.integers(0, len(logs)))
    partial = ListBackend()
    partial._logs = logs[:split]
    follower, cursor = LogReplay.following(JournalStorage(partial))
    assert cursor == split
    reported = [frozen_trial(t) for t in follower.apply(logs[split:])]
    before = LogReplay()
    before.apply(logs[:split])
    finished_before = {t.trial_id for t in before.trials.values() if t.state in (1, 2, 3)}
    finished_after = [
        t for t in expected if t.state.is_finished() and t._trial_id not in finished_before
    ]
    assert sorted(reported, key=lambda t: t.number) == finished_after
    # It keeps only what may still change.
    assert all(t.state not in (1, 2, 3) for t in follower.trials.values())


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(study_in_journal(), st.data())
def test_a_storage_advanced_from_its_follower_is_what_optunas_replay_gives(
    journal: tuple[ListBackend, str], data: st.DataObject
) -> None:
    """The controller's storage, brought to the journal's end from its watcher's replay (the
    end of every run), holds what Optuna's replay of the same logs holds, and goes on alike."""
    backend, name = journal
    logs = backend.read_logs(0)
    split = data.draw(st.integers(0, len(logs)))
    growing = ListBackend()
    growing._logs = logs[:split]
    ours = JournalStorage(growing)
    follower, cursor = LogReplay.following(ours)
    assert cursor == split
    growing._logs.extend(logs[split:])
    finished = {r.trial_id: (r.study_id, frozen_trial(r)) for r in follower.apply(logs[split:])}

    # Refused only while the storage has not seen the study (created by the first log): a
    # refused storage is untouched and catches up by Optuna's replay on its next call.
    assert advance_followed(ours, follower, len(logs), finished) == (split > 0)
    theirs = JournalStorage(backend)
    assert [vars(s) for s in ours.get_all_studies()] == [vars(s) for s in theirs.get_all_studies()]
    study_id = theirs.get_study_id_from_name(name)
    assert_same_trials(ours.get_all_trials(study_id), theirs.get_all_trials(study_id))
    # Nothing was left to replay, and both go on alike: the next trial's id and number.
    new = [storage.create_new_trial(study_id) for storage in (ours, theirs)]
    assert new[0] == new[1]
    assert ours.get_trial(new[0]).number == theirs.get_trial(new[1]).number
    assert len(ours.get_all_trials(study_id)) == len(theirs.get_all_trials(study_id))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(study_in_journal())
def test_a_loaded_study_is_what_optunas_replay_of_its_logs_gives(
    journal: tuple[ListBackend, str],
) -> None:
    backend, name = journal
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, "study.db")
        dump_to_sqlite(backend, name, path)
        loaded_backend, loaded = load_from_sqlite(path, backend=ListBackend())
    ours = study_storage(loaded)
    theirs = JournalStorage(loaded_backend)  # Optuna's replay of the same logs
    study_id = ours.get_study_id_from_name(name)
    assert theirs.get_study_id_from_name(name) == study_id
    assert [vars(s) for s in ours.get_all_studies()] == [vars(s) for s in theirs.get_all_studies()]
    assert_same_trials(ours.get_all_trials(study_id), theirs.get_all_trials(study_id))
    # Both go on alike over the shared journal: new trials' ids and numbers, who owns what.
    for storage in (ours, theirs):
        trial_id = storage.create_new_trial(study_id)
        storage.set_trial_param(trial_id, "new", 0.5, optuna.distributions.FloatDistribution(0, 1))
        storage.set_trial_state_values(
            trial_id, TrialState.COMPLETE, [1.0] * len(loaded.directions)
        )
    assert ours.get_all_trials(study_id)[-1] == theirs.get_all_trials(study_id)[-1]

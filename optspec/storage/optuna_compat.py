"""Every use of a name Optuna keeps private, in one place.

Optuna may rename any of these in a minor release; when it does, this module and its test
(``tests/test_optuna_compat.py``, which pins :data:`CHECKED_VERSIONS`) are what changes. Each
function says why the public API does not serve and which Optuna version it was checked against.
Nothing else in optspec may touch an Optuna name that starts with an underscore.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

# Not re-exported by ``optuna.storages.journal`` (checked: 5.0.0). Logs carry these codes, and
# optspec reads logs itself (the controller's watcher, study.db written straight from logs).
from optuna.storages.journal import JournalRedisBackend
from optuna.storages.journal._storage import JournalOperation

# Not exported publicly; what ``storage.get_all_studies()`` returns (checked: 5.0.0).
from optuna.study._frozen import FrozenStudy
from optuna.trial import TrialState

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage, JournalStorage
    from optuna.storages.journal import BaseJournalBackend
    from optuna.trial import FrozenTrial

ReplayView = tuple[int, dict[int, FrozenStudy], dict[int, "FrozenTrial"], dict[int, list[int]]]

CHECKED_VERSIONS = ("5.0",)
"""Optuna releases (major.minor) whose private names below were read and tested."""

__all__ = [
    "CHECKED_VERSIONS",
    "FINISHED_STATES",
    "FIXED_PARAMS_ATTR",
    "SET_TRIAL_STATE_VALUES",
    "FrozenStudy",
    "JournalOperation",
    "RedisBackend",
    "advance_replay",
    "cache_distribution_parsing",
    "count_waiting_trials",
    "create_waiting_trials",
    "forget_cached_trials",
    "heartbeat_interval",
    "journal_backend",
    "make_grpc_server",
    "replay_snapshot",
    "stale_trial_ids",
    "study_id",
    "study_storage",
    "synced_replay",
    "tell",
    "trial_id",
]

FINISHED_STATES = frozenset(
    int(state) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
)
"""``state`` values of a SET_TRIAL_STATE_VALUES log that end a trial (plain ints, as in logs)."""

SET_TRIAL_STATE_VALUES = int(JournalOperation.SET_TRIAL_STATE_VALUES)

FIXED_PARAMS_ATTR = "fixed_params"
"""The trial system attribute where ``Study.enqueue_trial`` keeps a queued trial's parameters
and ``Trial`` reads them back (``optuna/study/study.py``, ``optuna/trial/_trial.py``; checked:
5.0.0). optspec sets it on a queued ticket to turn it into a retry."""


def study_storage(study: optuna.Study) -> BaseStorage:
    """The storage a Study runs on.

    Optuna 5 removed ``Study.set_system_attr``/``system_attrs``; the storage's own methods are the
    public way left to read and write study system attributes, but Study does not expose its
    storage (``Study._storage``, checked: 5.0.0).
    """
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study``, without the name lookup ``get_study_id_from_name`` costs
    (``Study._study_id``, checked: 5.0.0)."""
    return study._study_id


def trial_id(trial: FrozenTrial | optuna.Trial) -> int:
    """The storage's id of a trial: storage methods take ids, FrozenTrial and Trial carry only
    numbers publicly (``_trial_id``, checked: 5.0.0). The public alternative,
    ``get_trial_id_from_study_id_trial_number``, is a storage query per call."""
    return trial._trial_id


def journal_backend(storage: BaseStorage) -> BaseJournalBackend | None:
    """The backend a JournalStorage was built over, None for any other storage
    (``JournalStorage._backend``, checked: 5.0.0)."""
    return getattr(storage, "_backend", None)


def replay_snapshot(storage: JournalStorage) -> bytes:
    """A snapshot of a JournalStorage's replayed state, for another process's public
    ``JournalStorage.restore_replay_result``: a worker then starts in about a second instead of
    replaying every log.

    Optuna makes these bytes only inside ``create_new_trial`` for a backend that is a
    ``BaseJournalSnapshot`` (every 100 trials, pickling the whole state each time: far too costly
    to enable for the run), so they are taken here from ``JournalStorage._replay_result``, the
    object ``restore_replay_result`` unpickles (checked: 5.0.0).
    """
    with storage._thread_lock:
        return pickle.dumps(storage._replay_result)


@contextmanager
def synced_replay(storage: JournalStorage) -> Iterator[ReplayView]:
    """``(logs read, studies by id, trials by id, trial ids by study id)`` of ``storage``,
    synced with its journal and held still (under the storage's lock) for the duration; the
    caller must not change them.

    Why: a reader that follows the journal from where this storage is (the controller's
    watcher, :meth:`optspec.storage.replay.LogReplay.following`) must start at a log number
    consistent with the trials it takes from the storage; no public call gives the log number,
    and public getters sync again between calls. Checked: Optuna 5.0.0,
    ``JournalStorage._thread_lock``, ``_sync_with_backend``, ``_replay_result.log_number_read``,
    ``._studies``, ``._trials``, ``._study_id_to_trial_ids``.
    """
    with storage._thread_lock:
        storage._sync_with_backend()
        result = storage._replay_result
        yield (
            result.log_number_read,
            result._studies,
            result._trials,
            result._study_id_to_trial_ids,
        )


def install_replay(
    storage: JournalStorage,
    log_number: int,
    studies: dict[int, FrozenStudy],
    trials: dict[int, FrozenTrial],
    trial_ids_by_study: dict[int, list[int]],
) -> None:
    """Give a JournalStorage that has read nothing yet the state a replay of its journal's
    first ``log_number`` logs would give it, built by the caller.

    Why: a resumed 100k-trial study.db is 100k CREATE_TRIAL logs, and Optuna's replay parses
    every trial's distributions from JSON and copies it (about 4 s here); optspec builds the
    same trials with each distinct distribution parsed once
    (:func:`optspec.storage.replay.install_replayed`, tested equal to Optuna's replay). The
    public ``restore_replay_result`` would take the same state only as a pickle of this private
    class. Checked: Optuna 5.0.0, ``JournalStorageReplayResult`` fields ``log_number_read``,
    ``_studies``, ``_trials``, ``_study_id_to_trial_ids``, ``_trial_id_to_study_id``,
    ``_next_study_id``.
    """
    with storage._thread_lock:
        result = storage._replay_result
        if result.log_number_read != 0:
            raise ValueError("install_replay needs a JournalStorage that has read no log")
        result._studies = studies
        result._trials = trials
        result._study_id_to_trial_ids = trial_ids_by_study
        result._trial_id_to_study_id = {
            trial_id: study_id
            for study_id, trial_ids in trial_ids_by_study.items()
            for trial_id in trial_ids
        }
        result._next_study_id = max(trial_ids_by_study, default=-1) + 1
        result.log_number_read = log_number


def advance_replay(
    storage: JournalStorage,
    log_number: int,
    studies: dict[int, FrozenStudy],
    changed_trials: Callable[[int, list[int]], dict[int, tuple[int, FrozenTrial]] | None],
) -> bool:
    """Move a JournalStorage that has read some of its journal's logs to ``log_number``, with
    state built by the caller instead of Optuna's replay of the logs in between; False (the
    storage untouched) when the caller cannot build it.

    ``changed_trials(n_trials, unfinished_ids)`` is called under the storage's lock with the
    number of trials the storage holds and the ids of those not finished (the only ones a later
    log can change). It returns ``{trial_id: (study_id, trial)}`` for those and for every trial
    created since, or None. ``studies`` must be the same studies the storage holds.

    Why: the controller follows the journal with its own replay while workers run, and its
    storage would otherwise replay every log of the run at its end (3 s at 50k trials, before
    study.db can be written). Same private state as :func:`install_replay` (checked: 5.0.0);
    logs this storage wrote itself are never skipped, since JournalStorage reads everything up
    to its own write under the same lock.
    """
    with storage._thread_lock:
        result = storage._replay_result
        if result.log_number_read > log_number or set(studies) != set(result._studies):
            return False
        trials = result._trials
        unfinished = [id_ for id_, trial in trials.items() if not trial.state.is_finished()]
        changed = changed_trials(len(trials), unfinished)
        if changed is None:
            return False
        for trial_id in sorted(changed):
            study_id, trial = changed[trial_id]
            if trial_id not in trials:
                result._study_id_to_trial_ids[study_id].append(trial_id)
                result._trial_id_to_study_id[trial_id] = study_id
            trials[trial_id] = trial
        result._studies = studies
        result.log_number_read = log_number
        return True


def cache_distribution_parsing() -> None:
    """Make JournalStorage parse each distinct distribution JSON once per process.

    Its replay parses the distribution of every SET_TRIAL_PARAM log (and of every param of a
    CREATE_TRIAL log) with ``json_to_distribution``, and every worker replays every worker's
    logs: 10-14% of a worker's time on a trivial objective (50k trials, W=1 and W=2). A study
    has a handful of distinct distributions, and nothing in Optuna changes one after it is made,
    so trials may share them, as InMemoryStorage's trials share the objects they were given.
    The replay calls the name it imported into ``optuna.storages.journal._storage``; that is
    the name replaced, by a cached version of itself (checked: 5.0.0). Idempotent.
    """
    import functools

    from optuna.storages.journal import _storage

    parse = _storage.json_to_distribution
    if not hasattr(parse, "cache_info"):
        _storage.json_to_distribution = functools.lru_cache(maxsize=1024)(parse)


def make_grpc_server(storage: BaseStorage, host: str, port: int) -> tuple[Any, int]:
    """A gRPC proxy server for ``storage``, not started, and the port it bound.

    ``optuna.storages.run_grpc_proxy_server`` blocks for ever and hides the server, so a run
    could neither stop serving when it ends nor learn the port it got for port 0. This builds
    the same server as its helper ``optuna.storages._grpc.server.make_server`` (checked: 5.0.0).
    """
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from optuna.storages._grpc.auto_generated import api_pb2_grpc
    from optuna.storages._grpc.servicer import OptunaStorageProxyService

    server = grpc.server(ThreadPoolExecutor(max_workers=10))
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """The storage's Optuna heartbeat interval, or None when it has no heartbeat.

    ``optuna.load_study`` wraps an RDBStorage in its private ``_CachedStorage``, which is not an
    RDBStorage but is a ``BaseHeartbeat``, a class of the private module
    ``optuna.storages._heartbeat`` (checked: 5.0.0).
    """
    from optuna.storages._heartbeat import BaseHeartbeat

    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """RUNNING trials whose Optuna heartbeat is older than the storage's grace period.

    The public ``optuna.storages.fail_stale_trials`` fails them before anyone can record why;
    optspec records "worker lost" first and retries the trial, so it asks the storage's
    ``BaseHeartbeat._get_stale_trial_ids`` itself (checked: 5.0.0).
    """
    return list(storage._get_stale_trial_ids(study_id))  # type: ignore[attr-defined]


def forget_cached_trials(study: optuna.Study) -> None:
    """Make the study read its trials afresh, as ``Study.ask`` does before each trial.

    optspec takes a trial from the queue itself (only a WAITING trial, never a new one), so it
    must also drop the per-thread trial cache that ``Study.ask`` resets
    (``Study._thread_local.cached_all_trials``, checked: 5.0.0); samplers that read history
    would otherwise see a stale list.
    """
    study._thread_local.cached_all_trials = None


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    values: float | Sequence[float] | None = None,
    state: TrialState | None = None,
) -> None:
    """``study.tell(trial, values, state)`` without the deep copy of the trial it returns.

    ``Study.tell`` ends with ``copy.deepcopy`` of the finished trial, which workers never read:
    17% of a worker's time on a trivial objective. ``Study.optimize`` avoids it by calling
    ``optuna.study._tell._tell_with_warning`` itself; so does this (checked: 5.0.0).
    """
    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:  # renamed: the public call, copy included, is still right
        study.tell(trial, values, state)
        return
    _tell_with_warning(study=study, trial=trial, value_or_values=values, state=state)


def create_waiting_trials(storage: BaseStorage, study_id: int, count: int) -> None:
    """``count`` WAITING trials with nothing set, as ``count`` calls of
    ``storage.create_new_trial(study_id, template_trial=create_trial(state=TrialState.WAITING))``
    make them (same numbers, ids, states and datetimes; tested), in one write.

    Why: the public call is one transaction (RDBStorage: lock the study row, insert, count the
    study's trials, update) or one journal append plus a read of the journal per trial; the
    controller of a shared study queues its whole budget as such trials, and one by one they
    cost it about 7 ms each on PostgreSQL, CPU the workers' trials then lack (profiled).
    Optuna has no public batch. Checked: Optuna 5.0.0, ``_CachedStorage._backend``,
    ``optuna.storages._rdb.models.StudyModel/TrialModel``, ``_rdb.storage._create_scoped_session``,
    ``JournalStorage._backend``, ``._thread_lock``, ``._replay_result.worker_id``,
    ``._sync_with_backend`` and the CREATE_TRIAL log ``JournalStorage.create_new_trial`` writes.
    Other storages (the gRPC proxy, in-memory) get the public call ``count`` times.
    """
    if count <= 0:
        return
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    rdb = storage._backend if isinstance(storage, _CachedStorage) else storage
    if isinstance(rdb, RDBStorage):
        _insert_waiting_rows(rdb, study_id, count)
    elif isinstance(storage, JournalStorage):
        _append_waiting_logs(storage, study_id, count)
    else:
        from optuna.trial import create_trial

        for _ in range(count):
            ticket = create_trial(state=TrialState.WAITING)
            storage.create_new_trial(study_id, template_trial=ticket)


def count_waiting_trials(storage: BaseStorage, study_id: int) -> int:
    """How many trials of the study are WAITING, without reading them.

    Why: ``get_n_trials(study_id, state=WAITING)`` counts ``get_all_trials``, and on an RDB
    storage that loads every unfinished trial with its attributes: 65 ms a look at 50 queued
    tickets on PostgreSQL, most of the controller's time (profiled). One COUNT query instead
    (``_CachedStorage._backend``, ``optuna.storages._rdb.models.TrialModel``,
    ``_rdb.storage._create_scoped_session``; checked: 5.0.0); other storages hold their trials
    in memory and count them as Optuna does.
    """
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    rdb = storage._backend if isinstance(storage, _CachedStorage) else storage
    if not isinstance(rdb, RDBStorage):
        return storage.get_n_trials(study_id, state=TrialState.WAITING)
    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(rdb.scoped_session) as session:
        count = session.scalar(
            sqlalchemy.select(sqlalchemy.func.count(models.TrialModel.trial_id)).where(
                models.TrialModel.study_id == study_id,
                models.TrialModel.state == TrialState.WAITING,
            )
        )
        return count or 0


def _insert_waiting_rows(rdb: Any, study_id: int, count: int) -> None:
    import random
    import time

    import sqlalchemy
    from optuna.exceptions import StorageInternalError
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    # As RDBStorage._create_new_trial: the study row's lock makes the numbers consecutive (every
    # creator of a trial takes it), and a deadlock between hosts is retried after a random pause.
    attempts = 5
    for attempt in range(1, attempts + 1):
        try:
            with _create_scoped_session(rdb.scoped_session) as session:
                models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
                before = (
                    session.scalar(
                        sqlalchemy.select(sqlalchemy.func.count(models.TrialModel.trial_id)).where(
                            models.TrialModel.study_id == study_id
                        )
                    )
                    or 0
                )
                session.add_all(
                    [
                        models.TrialModel(
                            study_id=study_id,
                            number=before + i,
                            state=TrialState.WAITING,
                            datetime_start=None,
                            datetime_complete=None,
                        )
                        for i in range(count)
                    ]
                )
            return
        except StorageInternalError:
            if attempt == attempts:
                raise
            time.sleep(random.random() * 2.0)


def _append_waiting_logs(storage: JournalStorage, study_id: int, count: int) -> None:
    # The log create_new_trial writes for a WAITING template: no start, nothing set. Optuna
    # also saves a replay snapshot there every 100 trials on a snapshot-capable backend (Redis);
    # that only speeds up a new process's first read, so batches skip it.
    with storage._thread_lock:
        worker_id = storage._replay_result.worker_id
        logs: list[dict[str, Any]] = [
            {
                "op_code": JournalOperation.CREATE_TRIAL,
                "worker_id": worker_id,
                "study_id": study_id,
                "datetime_start": None,
                "state": TrialState.WAITING,
                "value": None,
                "values": None,
                "distributions": {},
                "params": {},
                "user_attrs": {},
                "system_attrs": {},
                "intermediate_values": {},
            }
            for _ in range(count)
        ]
        storage._backend.append_logs(logs)
        storage._sync_with_backend()


class RedisBackend(JournalRedisBackend):
    """Optuna's ``JournalRedisBackend``, reading and writing many logs per round trip.

    Why: Optuna's reads one log per ``GET``, and every process reads every log, so a study's
    Redis traffic is its logs times its processes, a round trip each; its append is a ``SETNX``
    plus one script per log. Profiled on a shared study (W=2, 800 trials), those round trips were
    most of a worker's time. Same keys and log format (``{prefix}:log_number``,
    ``{prefix}:log:{n}``), so plain Optuna processes share the study with these. Uses
    ``JournalRedisBackend._redis``, ``._prefix``, ``._use_cluster``, ``._key_log_id`` and the
    script of its ``append_logs`` (checked: 5.0.0).
    """

    CHUNK = 512
    # Optuna's per-log script for many logs at once: numbers stay consecutive and the logs
    # appear together, as a SETNX then one script per log would (minus the round trips).
    APPEND = (
        "local key = string.format('%s:log_number', ARGV[1]) "
        "redis.call('setnx', key, -1) "
        "for j = 2, #ARGV do "
        "local i = redis.call('incr', key) "
        "redis.call('set', string.format('%s:log:%d', ARGV[1], i), ARGV[j]) "
        "end"
    )

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        last_bytes = self._redis.get(f"{self._prefix}:log_number")
        if last_bytes is None:
            return
        last = int(last_bytes)
        for start in range(log_number_from, last + 1, self.CHUNK):
            numbers = range(start, min(start + self.CHUNK, last + 1))
            raws = self._redis.mget([self._key_log_id(n) for n in numbers])
            for number, raw in zip(numbers, raws, strict=True):
                if raw is None:  # numbered, not yet written (cluster mode): Optuna's own wait
                    yield from super().read_logs(number)
                    return
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    if number != last:
                        raise  # as Optuna: only the newest log may be half-written

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if self._use_cluster:  # keys in many slots: one script cannot touch them all
            super().append_logs(logs)
            return
        self._redis.eval(self.APPEND, 0, self._prefix, *[json.dumps(log) for log in logs])

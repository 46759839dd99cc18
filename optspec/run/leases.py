"""Trials whose worker on another machine is gone: heartbeats, leases, and who notices.

A controller sees its own workers die (their process ends); it cannot see a worker on another
host that was preempted or OOM-killed. So every running trial on a storage that other machines
reach gives a sign of life every ``[run] heartbeat`` seconds, and the controller fails a trial
that stays silent for two intervals with the reason :data:`WORKER_LOST`, then retries it once.

- RDBStorage (PostgreSQL, MySQL, SQLite): Optuna's own heartbeat. The storage is opened with
  ``heartbeat_interval`` (see :func:`optspec.storage.remote.open_storage`), workers call
  ``record_heartbeat`` and the controller asks the storage for stale trials; both sides use the
  database's clock.
- JournalStorage (Redis, and the controller's own journal served over gRPC) has no heartbeat.
  There the worker bumps the trial's :data:`LEASE_ATTR` system attribute instead, and the
  controller times how long it has not seen the value change on its own clock, so the clocks of
  other hosts never matter.

A worker beats first one interval into a trial, so a short trial writes nothing for it. The
controller times a trial that never beat from when it first saw it running, on its own clock:
a worker killed before its first beat is noticed as one killed later (RDB storages: the first
beat also sets :data:`LEASE_ATTR` to :data:`IN_HEARTBEAT_TABLE`, handing the trial over to
Optuna's stale-trial check).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING

from optuna.trial import TrialState

from optspec.storage.optuna_compat import (
    heartbeat_interval,
    stale_trial_ids,
    study_id,
    study_storage,
    trial_id,
)

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

LEASE_ATTR = "optspec:lease"
"""Trial system attribute a worker bumps while it runs the trial, on storages without heartbeat."""
WORKER_LOST = "worker lost"
"""The fail reason of a trial whose worker stopped beating."""
IN_HEARTBEAT_TABLE = "optuna"
""":data:`LEASE_ATTR` of a trial that beats in Optuna's heartbeat table (RDB storages)."""
MISSED_BEATS = 2
"""A trial is lost after this many intervals without a sign of life (Optuna's own default)."""


def uses_optuna_heartbeat(storage: BaseStorage) -> bool:
    return heartbeat_interval(storage) is not None


class Heartbeat:
    """A worker's side: one thread that beats for the trial the worker runs now, if any.

    Beating happens off the worker's main thread, so a trial pays for it only in the database,
    never in the objective's time. The first beat goes out one interval after the trial starts:
    a trial shorter than that writes nothing more than plain Optuna's would (a beat per trial
    was a sixth of the writes on Redis, profiled), and the controller times a trial that never
    beat from when it first saw it running (:class:`LostTrials`).
    """

    def __init__(self, storage: BaseStorage, interval: float) -> None:
        self.storage = storage
        self.interval = interval
        self.optuna_heartbeat = uses_optuna_heartbeat(storage)
        self.lock = threading.Lock()
        self.trial_id: int | None = None
        self.due = 0.0
        self.first = True
        self.beats = 0
        self.wake = threading.Event()
        threading.Thread(target=self._run, name="optspec-heartbeat", daemon=True).start()

    def start(self, trial_id: int) -> None:
        with self.lock:
            self.trial_id = trial_id
            self.due = time.monotonic() + self.interval
            self.first = True
        self.wake.set()

    def stop(self) -> None:
        with self.lock:
            self.trial_id = None
        self.wake.set()

    def _run(self) -> None:
        while True:
            # Read, then wait, then clear: a start() or stop() in between only shortens the wait.
            with self.lock:
                trial_id, due, first = self.trial_id, self.due, self.first
            if trial_id is None:
                self.wake.wait()
            elif time.monotonic() < due:
                self.wake.wait(due - time.monotonic())
            else:
                marked = self._beat(trial_id, first)
                with self.lock:
                    if self.trial_id == trial_id:
                        self.due = time.monotonic() + self.interval
                        self.first = first and not marked
                continue
            self.wake.clear()

    def _beat(self, trial_id: int, first: bool) -> bool:
        """One sign of life; True once the trial is marked as beating in Optuna's table."""
        self.beats += 1
        # The trial may finish while its beat is on the way; that beat is then refused.
        with contextlib.suppress(Exception):
            if not self.optuna_heartbeat:
                self.storage.set_trial_system_attr(trial_id, LEASE_ATTR, self.beats)
                return False
            self.storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
            if first:  # from now on Optuna's heartbeat table speaks for the trial
                self.storage.set_trial_system_attr(trial_id, LEASE_ATTR, IN_HEARTBEAT_TABLE)
            return True
        return False


class LostTrials:
    """The controller's side: RUNNING trials whose worker has stopped beating."""

    def __init__(self, study: optuna.Study, interval: float) -> None:
        self.storage = study_storage(study)
        self.study_id = study_id(study)
        self.interval = interval
        self.optuna_heartbeat = uses_optuna_heartbeat(self.storage)
        self.seen: dict[int, tuple[object, float]] = {}
        self.next_look = 0.0

    def find(self, now: float | None = None) -> list[FrozenTrial]:
        now = time.monotonic() if now is None else now
        if now < self.next_look:
            return []
        self.next_look = now + max(0.2, self.interval / 2)
        lost: dict[int, FrozenTrial] = {}
        if self.optuna_heartbeat:
            for id_ in stale_trial_ids(self.storage, self.study_id):
                lost[id_] = self.storage.get_trial(id_)
        running = self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        seen: dict[int, tuple[object, float]] = {}
        for trial in running:
            lease = trial.system_attrs.get(LEASE_ATTR)
            if self.optuna_heartbeat and lease == IN_HEARTBEAT_TABLE:
                continue  # beats in Optuna's heartbeat table: stale_trial_ids above
            # Timed on this controller's clock: a trial that has not beaten yet (workers beat
            # first one interval into a trial) from when it was first seen running, one with a
            # lease from the last change of it. Leases also on an RDB storage: workers that
            # joined through `run --serve` in front of it reach it over gRPC, which carries no
            # heartbeat.
            id_ = trial_id(trial)
            previous = self.seen.get(id_)
            since = previous[1] if previous is not None and previous[0] == lease else now
            seen[id_] = (lease, since)
            if now - since > MISSED_BEATS * self.interval:
                lost[id_] = trial
        self.seen = seen
        return list(lost.values())

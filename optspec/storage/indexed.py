"""A JournalStorage that finds WAITING trials without scanning the study.

``Study.ask`` looks for enqueued trials on every call:
``storage.get_all_trials(study_id, deepcopy=False, states=(WAITING,))``. Optuna's JournalStorage
answers by filtering every trial of the study, so each trial costs time proportional to the
study's size: 5 ms a trial at 10k trials, most of a worker's time at 50k.

:class:`IndexedJournalStorage` answers that one question from an index instead:

* Trial ids are dense and in creation order (the replay gives each new trial ``len(trials)``),
  so the trials created since the last question are the ids from the last count on, read from
  the replayed state (``optuna_compat.synced_replay``). Each is looked at once, whichever
  process created it.
* A trial is WAITING from its creation (``enqueue_trial`` and ``add_trial`` create it so; no
  Optuna 5.0 call sets WAITING later: checked in ``optuna/study``, ``optuna/storages``). Only
  optspec's own retry puts a queued ticket back: it takes it (RUNNING), gives it parameters and
  returns it to WAITING, in any process. So the newcomers found WAITING are the only
  candidates, and a candidate leaves the index once it is seen finished, never to come back.

A question therefore costs the trials created since the previous one plus the candidates still
WAITING: constant per trial for a study of any size. Every other call is JournalStorage's own,
with one change to its replay in each process that has such a storage: it parses each distinct
distribution once (``optuna_compat.cache_distribution_parsing``) instead of once per log.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Container
from typing import Any

from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from optspec.storage.optuna_compat import cache_distribution_parsing, synced_replay

__all__ = ["IndexedJournalStorage"]


class IndexedJournalStorage(JournalStorage):
    """``JournalStorage(backend)``, whose search for WAITING trials does not grow with the study."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._reset_index()
        super().__init__(*args, **kwargs)

    def _reset_index(self) -> None:
        # Here because every process that follows the study comes through here (a new storage,
        # or a worker's unpickled one): its replay then parses each distribution once.
        cache_distribution_parsing()
        self._index_lock = threading.Lock()
        self._seen = 0  # trial ids below this have been looked at
        self._waiting: list[int] = []  # ids of trials seen WAITING and not finished, in id order

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        if not _waiting_only(states):
            return super().get_all_trials(study_id, deepcopy=deepcopy, states=states)
        trials = self._waiting_trials(study_id)
        return copy.deepcopy(trials) if deepcopy else trials

    def _waiting_trials(self, study_id: int) -> list[FrozenTrial]:
        # The study's existence, checked as JournalStorage does: KeyError when it has none.
        self.get_study_name_from_id(study_id)
        with self._index_lock:
            # The newcomers straight from the replayed state: a worker that starts from the
            # snapshot of a large study looks at every trial once, without a call per trial.
            with synced_replay(self) as (_, _, trials, _):
                count = len(trials)
                self._waiting += [
                    trial_id
                    for trial_id in range(self._seen, count)
                    if trials[trial_id].state == TrialState.WAITING
                ]
            self._seen = count
            found = []
            still = []
            for trial_id in self._waiting:
                trial = self.get_trial(trial_id)
                if trial.state.is_finished():
                    continue
                # A RUNNING one stays: a retry may be returning it to the queue.
                still.append(trial_id)
                if trial.state == TrialState.WAITING and self._in_study(
                    study_id, trial_id, trial.number
                ):
                    found.append(trial)
            self._waiting = still
            return found

    def _in_study(self, study_id: int, trial_id: int, number: int) -> bool:
        try:
            return self.get_trial_id_from_study_id_trial_number(study_id, number) == trial_id
        except KeyError:
            return False

    def restore_replay_result(self, snapshot: bytes) -> None:
        with self._index_lock:
            super().restore_replay_result(snapshot)
            # The restored trials are new to the index, whatever it had seen before.
            self._seen = 0
            self._waiting = []

    def __getstate__(self) -> dict[Any, Any]:
        state = super().__getstate__()
        for name in ("_index_lock", "_seen", "_waiting"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # a fresh, empty replay: the index starts over with it
        self._reset_index()


def _waiting_only(states: Container[TrialState] | None) -> bool:
    if states is None:
        return False
    return TrialState.WAITING in states and not any(
        state in states for state in TrialState if state != TrialState.WAITING
    )

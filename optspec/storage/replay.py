"""Journal logs folded into trials, without Optuna's JournalStorage replay.

JournalStorage turns every log into a new FrozenTrial (a copy per log, distributions parsed
from JSON each time, datetimes parsed on arrival). That is most of the cost of two things
optspec does with a whole journal: the controller following the study (every log, once per
run) and ``dump_to_sqlite`` given only a backend (every log of the study at once).
:class:`LogReplay` keeps each trial as plain values as the logs give them (params in their
internal representation, distributions and datetimes as their JSON and ISO text) and builds a
FrozenTrial only when asked.

It follows JournalStorage's replay rules exactly, seen from a process that wrote none of the
logs (Optuna 5.0, ``JournalStorageReplayResult``): a study name already taken, a trial of a
missing study, a change to an unknown or finished trial, a second RUNNING and a parameter
whose distribution is incompatible with the one the study's first trial with that parameter
has are all ignored; trial ids count every trial in the journal, numbers count the study's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    check_distribution_compatibility,
    distribution_to_json,
    json_to_distribution,
)
from optuna.storages import JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from optspec.storage.optuna_compat import (
    FrozenStudy,
    JournalOperation,
    advance_replay,
    install_replay,
    synced_replay,
)

__all__ = ["LogReplay", "TrialRecord"]

_CREATE_STUDY = int(JournalOperation.CREATE_STUDY)
_DELETE_STUDY = int(JournalOperation.DELETE_STUDY)
_SET_STUDY_USER_ATTR = int(JournalOperation.SET_STUDY_USER_ATTR)
_SET_STUDY_SYSTEM_ATTR = int(JournalOperation.SET_STUDY_SYSTEM_ATTR)
_CREATE_TRIAL = int(JournalOperation.CREATE_TRIAL)
_SET_TRIAL_PARAM = int(JournalOperation.SET_TRIAL_PARAM)
_SET_TRIAL_STATE_VALUES = int(JournalOperation.SET_TRIAL_STATE_VALUES)
_SET_TRIAL_INTERMEDIATE_VALUE = int(JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE)
_SET_TRIAL_USER_ATTR = int(JournalOperation.SET_TRIAL_USER_ATTR)
_SET_TRIAL_SYSTEM_ATTR = int(JournalOperation.SET_TRIAL_SYSTEM_ATTR)
_DISCARD_TRIALS = int(JournalOperation.DISCARD_TRIALS)

_RUNNING = int(TrialState.RUNNING)
_EMPTY: dict[str, Any] = {}
_FINISHED = frozenset({int(TrialState.COMPLETE), int(TrialState.PRUNED), int(TrialState.FAIL)})


class StudyRecord:
    __slots__ = ("directions", "n_trials", "name", "study_id", "system_attrs", "user_attrs")

    def __init__(self, study_id: int, name: str, directions: list[int]) -> None:
        self.study_id = study_id
        self.name = name
        self.directions = directions
        self.user_attrs: dict[str, Any] = {}
        self.system_attrs: dict[str, Any] = {}
        self.n_trials = 0


class TrialRecord:
    """One trial as its logs describe it; ``params`` in internal representation, keyed like
    ``distributions`` (JSON text); datetimes are the logs' ISO text (UTC)."""

    __slots__ = (
        "complete",
        "distributions",
        "intermediate_values",
        "number",
        "params",
        "start",
        "state",
        "study_id",
        "system_attrs",
        "trial_id",
        "user_attrs",
        "values",
    )

    def __init__(self, trial_id: int, study_id: int, number: int, log: dict[str, Any]) -> None:
        self.trial_id = trial_id
        self.study_id = study_id
        self.number = number
        get = log.get
        self.state: int = get("state", _RUNNING)
        self.start: str | None = log["datetime_start"]
        self.complete: str | None = get("datetime_complete")
        value = get("value")
        self.values: list[float] | None = [value] if value is not None else get("values")
        # Copies: later logs change these, and the log's own dicts may be shared.
        self.distributions: dict[str, str] = dict(get("distributions") or _EMPTY)
        self.params: dict[str, Any] = dict(get("params") or _EMPTY)
        self.user_attrs: dict[str, Any] = dict(get("user_attrs") or _EMPTY)
        self.system_attrs: dict[str, Any] = dict(get("system_attrs") or _EMPTY)
        intermediate = get("intermediate_values")
        self.intermediate_values: dict[int, float] = (
            {int(step): value for step, value in intermediate.items()} if intermediate else {}
        )


class LogReplay:
    """The trials and studies of a journal, from its logs in order.

    ``keep_finished=False`` forgets a trial once it has finished (it cannot change any more),
    for a reader that only reports trials as they finish: its memory stays with the running
    trials, and logs of trials that arrive finished cost next to nothing.
    """

    def __init__(self, *, keep_finished: bool = True) -> None:
        self.studies: dict[int, StudyRecord] = {}
        self.trials: dict[int, TrialRecord] = {}
        self.n_trials = 0  # trial ids given so far: the next one
        self._keep_finished = keep_finished
        self._study_ids_given = 0
        self._study_ids_by_name: dict[str, int] = {}
        # (study id, param name) -> [number, distribution JSON] of the study's first trial (by
        # number) that has the param: the one JournalStorage checks a new distribution against.
        self._first_param: dict[tuple[int, str], list[Any]] = {}
        self._handlers = {
            _CREATE_STUDY: self._create_study,
            _DELETE_STUDY: self._delete_study,
            _SET_STUDY_USER_ATTR: self._set_study_user_attr,
            _SET_STUDY_SYSTEM_ATTR: self._set_study_system_attr,
            _CREATE_TRIAL: self._create_trial,
            _SET_TRIAL_PARAM: self._set_trial_param,
            _SET_TRIAL_STATE_VALUES: self._set_trial_state_values,
            _SET_TRIAL_INTERMEDIATE_VALUE: self._set_trial_intermediate_value,
            _SET_TRIAL_USER_ATTR: self._set_trial_user_attr,
            _SET_TRIAL_SYSTEM_ATTR: self._set_trial_system_attr,
            _DISCARD_TRIALS: _ignore,
        }
        self._finished: list[TrialRecord] = []

    @classmethod
    def following(cls, storage: JournalStorage) -> tuple[LogReplay, int]:
        """A replay that forgets finished trials, taking up ``storage``'s state, and the
        number of the first log it has not seen: what follows a running study costs only its
        unfinished trials, whatever the size of the study."""
        replay = cls(keep_finished=False)
        with synced_replay(storage) as (log_number, studies, trials, trial_ids_by_study):
            replay.n_trials = len(trials)
            for study_id, study in studies.items():
                trial_ids = trial_ids_by_study[study_id]
                directions = [int(direction) for direction in study.directions]
                replay.add_study(study_id, study.study_name, directions, len(trial_ids))
                # Copies: the storage's own dicts must not change under it.
                replay.studies[study_id].user_attrs = dict(study.user_attrs)
                replay.studies[study_id].system_attrs = dict(study.system_attrs)
                for trial_id in trial_ids:
                    trial = trials[trial_id]
                    if not trial.state.is_finished():
                        replay.add_trial(record_of(trial, trial_id, study_id))
                    else:
                        replay._note_distributions(study_id, trial.number, trial.distributions)
            # Deleted studies keep their trials' ids, and their names may be taken again.
            replay._study_ids_given = max(trial_ids_by_study, default=-1) + 1
        return replay, log_number

    @property
    def n_studies(self) -> int:
        """Study ids given so far, deleted studies included."""
        return self._study_ids_given

    def apply(self, logs: Iterable[dict[str, Any]]) -> list[TrialRecord]:
        """Apply ``logs``; the trials they finished, in the order they finished."""
        finished = self._finished = []
        handlers = self._handlers
        for log in logs:
            handlers[log["op_code"]](log)
        return finished

    def study_trials(self, study_id: int) -> list[TrialRecord]:
        """The study's trials in number order (all of them only with ``keep_finished``)."""
        return [trial for trial in self.trials.values() if trial.study_id == study_id]

    # -- studies ------------------------------------------------------------------------------

    def add_study(self, study_id: int, name: str, directions: list[int], n_trials: int) -> None:
        """A study that existed before the first log given to :meth:`apply`."""
        study = self.studies[study_id] = StudyRecord(study_id, name, directions)
        study.n_trials = n_trials
        self._study_ids_by_name[name] = study_id
        self._study_ids_given = max(self._study_ids_given, study_id + 1)

    def _create_study(self, log: dict[str, Any]) -> None:
        name = log["study_name"]
        if name in self._study_ids_by_name:
            return
        self.add_study(self._study_ids_given, name, list(log["directions"]), 0)

    def _delete_study(self, log: dict[str, Any]) -> None:
        study = self.studies.pop(log["study_id"], None)
        if study is not None:
            del self._study_ids_by_name[study.name]

    def _set_study_user_attr(self, log: dict[str, Any]) -> None:
        study = self.studies.get(log["study_id"])
        if study is not None:
            study.user_attrs.update(log["user_attr"])

    def _set_study_system_attr(self, log: dict[str, Any]) -> None:
        study = self.studies.get(log["study_id"])
        if study is not None:
            study.system_attrs.update(log["system_attr"])

    # -- trials -------------------------------------------------------------------------------

    def add_trial(self, trial: TrialRecord) -> None:
        """A trial that existed before the first log given to :meth:`apply`."""
        self.trials[trial.trial_id] = trial
        self._note_params(trial)

    def _create_trial(self, log: dict[str, Any]) -> None:
        study = self.studies.get(log["study_id"])
        if study is None:
            return
        trial_id = self.n_trials
        self.n_trials += 1
        number = study.n_trials
        study.n_trials += 1
        if not self._keep_finished and log.get("state") in _FINISHED:
            if log.get("params"):
                self._note_params(TrialRecord(trial_id, study.study_id, number, log))
            return
        trial = self.trials[trial_id] = TrialRecord(trial_id, study.study_id, number, log)
        self._note_params(trial)

    def _note_distributions(
        self, study_id: int, number: int, distributions: dict[str, BaseDistribution]
    ) -> None:
        first_param = self._first_param
        for name, distribution in distributions.items():
            if (study_id, name) not in first_param:
                first_param[study_id, name] = [number, _json_of(distribution)]

    def _note_params(self, trial: TrialRecord) -> None:
        first_param = self._first_param
        for name, distribution in trial.distributions.items():
            key = (trial.study_id, name)
            first = first_param.get(key)
            if first is None or trial.number <= first[0]:
                first_param[key] = [trial.number, distribution]

    def _updatable(self, log: dict[str, Any]) -> TrialRecord | None:
        trial = self.trials.get(log["trial_id"])
        if trial is None or trial.state in _FINISHED:
            return None
        return trial

    def _set_trial_param(self, log: dict[str, Any]) -> None:
        trial = self._updatable(log)
        if trial is None:
            return
        name = log["param_name"]
        distribution = log["distribution"]
        key = (trial.study_id, name)
        first = self._first_param.get(key)
        if first is not None and not _compatible(first[1], distribution):
            return
        trial.params[name] = log["param_value_internal"]
        trial.distributions[name] = distribution
        if first is None or trial.number <= first[0]:
            self._first_param[key] = [trial.number, distribution]

    def _set_trial_state_values(self, log: dict[str, Any]) -> None:
        trial = self._updatable(log)
        if trial is None:
            return
        state = log["state"]
        if state == _RUNNING:
            if trial.state == _RUNNING:
                return  # another process popped this enqueued trial first
            trial.start = log["datetime_start"]
        elif state in _FINISHED:
            trial.complete = log["datetime_complete"]
        trial.state = state
        if log["values"] is not None:
            trial.values = list(log["values"])
        if state in _FINISHED:
            self._finished.append(trial)
            if not self._keep_finished:
                del self.trials[trial.trial_id]

    def _set_trial_intermediate_value(self, log: dict[str, Any]) -> None:
        trial = self._updatable(log)
        if trial is not None:
            trial.intermediate_values[log["step"]] = log["intermediate_value"]

    def _set_trial_user_attr(self, log: dict[str, Any]) -> None:
        trial = self._updatable(log)
        if trial is not None:
            trial.user_attrs.update(log["user_attr"])

    def _set_trial_system_attr(self, log: dict[str, Any]) -> None:
        trial = self._updatable(log)
        if trial is not None:
            trial.system_attrs.update(log["system_attr"])


def frozen_trial(trial: TrialRecord) -> FrozenTrial:
    """The FrozenTrial JournalStorage would hold for ``trial``."""
    distributions = {name: distribution_of(text) for name, text in trial.distributions.items()}
    return FrozenTrial(
        number=trial.number,
        state=TrialState(trial.state),
        value=None,
        datetime_start=local_datetime(trial.start),
        datetime_complete=local_datetime(trial.complete),
        params={
            name: distributions[name].to_external_repr(value)
            for name, value in trial.params.items()
        },
        distributions=distributions,
        user_attrs=dict(trial.user_attrs),
        system_attrs=dict(trial.system_attrs),
        intermediate_values=dict(trial.intermediate_values),
        trial_id=trial.trial_id,
        values=trial.values,
    )


def install_replayed(storage: JournalStorage, logs: list[dict[str, Any]]) -> None:
    """Make ``storage``, which has read nothing yet, as if it had replayed ``logs``: the first
    logs of its journal. Several times faster than Optuna's own replay for a study loaded from
    study.db (one CREATE_TRIAL log per trial)."""
    replay = LogReplay()
    replay.apply(logs)
    trials = {trial_id: frozen_trial(trial) for trial_id, trial in replay.trials.items()}
    trial_ids_by_study: dict[int, list[int]] = {
        study_id: [] for study_id in range(replay.n_studies)
    }
    for trial_id, trial in replay.trials.items():
        trial_ids_by_study[trial.study_id].append(trial_id)
    install_replay(storage, len(logs), frozen_studies(replay), trials, trial_ids_by_study)


def advance_followed(
    storage: JournalStorage,
    replay: LogReplay,
    log_number: int,
    finished: dict[int, tuple[int, FrozenTrial]],
) -> bool:
    """Bring ``storage`` to ``log_number`` from what a replay that follows it has seen.

    ``replay`` came from :meth:`LogReplay.following` on ``storage`` and has applied the
    journal's logs up to ``log_number``; ``finished`` holds ``(study id, FrozenTrial)`` by trial
    id for the trials it reported finished. Those are installed as they are, so the catch-up
    costs only the trials still unfinished, not Optuna's replay of every log since.
    False (``storage`` untouched, to be synced the usual way) when the replay lacks a trial the
    storage would hold: one that arrived finished (``Study.add_trial``) and was never kept.
    """

    def changed(n_known: int, unfinished: list[int]) -> dict[int, tuple[int, FrozenTrial]] | None:
        trials: dict[int, tuple[int, FrozenTrial]] = {}
        for trial_id in [*unfinished, *range(n_known, replay.n_trials)]:
            if trial_id in finished:
                trials[trial_id] = finished[trial_id]
                continue
            record = replay.trials.get(trial_id)
            if record is None:
                return None
            trials[trial_id] = (record.study_id, frozen_trial(record))
        return trials

    return advance_replay(storage, log_number, frozen_studies(replay), changed)


def frozen_studies(replay: LogReplay) -> dict[int, FrozenStudy]:
    """The replay's studies as JournalStorage holds them."""
    return {
        study_id: FrozenStudy(
            study_name=study.name,
            direction=None,
            user_attrs=dict(study.user_attrs),
            system_attrs=dict(study.system_attrs),
            study_id=study_id,
            directions=[StudyDirection(direction) for direction in study.directions],
        )
        for study_id, study in replay.studies.items()
    }


def record_of(frozen: FrozenTrial, trial_id: int, study_id: int) -> TrialRecord:
    """A FrozenTrial as a TrialRecord: for trials that existed before a replay's first log."""
    distributions = frozen.distributions
    record = TrialRecord(
        trial_id,
        study_id,
        frozen.number,
        {
            "state": int(frozen.state),
            "datetime_start": _iso(frozen.datetime_start),
            "datetime_complete": _iso(frozen.datetime_complete),
            "values": frozen.values,
            "distributions": {n: distribution_to_json(d) for n, d in distributions.items()},
            "params": {n: distributions[n].to_internal_repr(v) for n, v in frozen.params.items()},
            "user_attrs": frozen.user_attrs,
            "system_attrs": frozen.system_attrs,
            "intermediate_values": frozen.intermediate_values,
        },
    )
    if frozen.datetime_complete is None:
        record.complete = None
    return record


def _iso(local: datetime | None) -> str | None:
    # FrozenTrial datetimes are naive local time; logs hold aware text.
    return None if local is None else local.astimezone().isoformat(timespec="microseconds")


def local_datetime(text: str | None) -> datetime | None:
    """A log's datetime as JournalStorage keeps it: naive, in local time."""
    if text is None:
        return None
    return datetime.fromisoformat(text).astimezone().replace(tzinfo=None)


@functools.lru_cache(maxsize=1024)
def distribution_of(text: str) -> BaseDistribution:
    """A distribution from its JSON; a study has few, so they are parsed once each."""
    return json_to_distribution(text)


@functools.lru_cache(maxsize=1024)
def _compatible(old: str, new: str) -> bool:
    try:
        check_distribution_compatibility(distribution_of(old), distribution_of(new))
    except Exception:  # noqa: BLE001 - JournalStorage ignores the log on any error here
        return False
    return True


def _json_of(distribution: BaseDistribution) -> str:
    return distribution_to_json(distribution)


def _ignore(log: dict[str, Any]) -> None:
    pass

"""The trial budget: how many trials the study still needs, and how workers claim them.

On one machine (:class:`Budget`) a semaphore holds one ticket per trial still to run. A worker
takes a ticket before each ``ask`` and exits when none is left, so no worker overshoots
``n_trials``. A worker killed between taking a ticket and creating its trial loses that ticket;
when every worker has exited, the controller compares the study with the target and hands out
what is missing.

On a storage that other machines reach, tickets live in the study itself. Workers on other
machines cannot share a semaphore, and counting the study's trials before each ``ask``
overshoots: every worker that counts at the same moment starts one more trial. So the budget
lives in the study. The controller enqueues WAITING trials with no parameters, the
*tickets*, never more than ``n_trials`` trials in all; a worker runs only a trial it pops from that
queue and never creates one. Popping is Optuna's own atomic step, the WAITING -> RUNNING update
that ``Study.ask`` uses for enqueued trials and that exactly one process wins (a row lock in
RDBStorage, the log order in JournalStorage, one lock in the gRPC proxy's process). The study
therefore ends with exactly ``n_trials`` trials, whatever the number of hosts and workers.

The controller keeps a window of tickets ahead of the workers rather than all of them (the window
doubles whenever the workers took most of it between two looks), so a trial whose worker was
lost is retried within the budget: as a new trial while the budget has room, else in place of
a queued ticket.
Two study system attributes tell workers elsewhere how the budget stands: :data:`ALL_ISSUED`
(no ticket will follow the ones queued) and :data:`STOPPED` (the run stopped: take no more).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from optspec.storage.optuna_compat import (
    FIXED_PARAMS_ATTR,
    count_waiting_trials,
    create_waiting_trials,
    forget_cached_trials,
    journal_backend,
    study_id,
    study_storage,
    trial_id,
)

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized

    import optuna

    from optspec.run.forkserver import WorkerContext

ALL_ISSUED = "optspec:all_tickets_issued"
"""Study system attribute: every ticket of the budget is queued; none will follow."""
STOPPED = "optspec:stopped"
"""Study system attribute: why the run stopped; workers take no more tickets."""

MIN_WINDOW = 8
JOURNAL_MIN_WINDOW = 128
"""On a journal (Redis, a served study) a queued ticket costs readers nothing: every process
holds every trial anyway. On a database each look at the queue reads every queued ticket."""
MAX_WINDOW = 1024
ISSUE_INTERVAL = 0.05
"""Seconds between the controller's looks at the queue (its loop's own pace)."""
IDLE_WAIT = 0.05
"""Seconds a worker waits when the queue is empty before it looks again."""
STOP_CHECK_INTERVAL = 1.0
"""Seconds between a worker's looks at :data:`STOPPED` while it finds tickets."""

_WAITING = (TrialState.WAITING,)


class Budget:
    """``n_trials`` for ``study``, with tickets (``tickets=True``) or counted in the study."""

    def __init__(
        self,
        study: optuna.Study,
        n_trials: int,
        context: WorkerContext,
        *,
        tickets: bool,
    ) -> None:
        self.study = study
        self.n_trials = n_trials
        # A counter rather than a semaphore released once per trial: handing out n_trials
        # tickets costs nothing, however large n_trials is (3e9 hung the start before).
        self.tickets: Synchronized[int] | None = context.Value("q", 0) if tickets else None

    def missing(self) -> int:
        """Trials the study needs to reach ``n_trials``; waiting (enqueued) ones do not count."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        counted = sum(1 for trial in trials if trial.state != TrialState.WAITING)
        return max(0, self.n_trials - counted)

    def hand_out(self, count: int) -> None:
        if self.tickets is not None:
            with self.tickets.get_lock():
                self.tickets.value += count

    def top_up(self) -> int:
        """Hand out what is missing (tickets lost with a dead worker); returns how many."""
        missing = self.missing()
        self.hand_out(missing)
        return missing

    def withdraw(self) -> None:
        """Take back every ticket not yet taken: workers start no further trial."""
        if self.tickets is not None:
            with self.tickets.get_lock():
                self.tickets.value = 0


class TicketIssuer:
    """The controller's side: keeps tickets queued until the study holds ``n_trials`` trials."""

    def __init__(self, study: optuna.Study, n_trials: int, window: int) -> None:
        self.study = study
        self.storage = study_storage(study)
        self.study_id = study_id(study)
        self.n_trials = n_trials
        # Only the controller adds trials in this mode, so it counts them itself: a count of
        # every trial on each look would read the whole study from the database.
        self.total = self.storage.get_n_trials(self.study_id)
        journal = journal_backend(self.storage) is not None
        self.window = max(JOURNAL_MIN_WINDOW if journal else MIN_WINDOW, window)
        self.next_look = 0.0
        self.looked_before = False
        self._mark_all_issued()

    @property
    def room(self) -> int:
        """Trials the budget still allows beyond those in the study, queued tickets included."""
        return max(0, self.n_trials - self.total)

    def waiting(self) -> int:
        return count_waiting_trials(self.storage, self.study_id)

    def issue(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now < self.next_look or self.room == 0:
            return
        self.next_look = now + ISSUE_INTERVAL
        waiting = self.waiting()
        if self.looked_before and waiting * 4 < self.window:
            # The workers took most of the queue between two looks: they would soon find it
            # empty (and wait) at this pace.
            self.window = min(MAX_WINDOW, self.window * 2)
        self.looked_before = True
        # One write for all of them: one by one, tickets cost the database (and the two cores
        # a small cluster shares with it) as much as the trials themselves (profiled).
        count = max(0, min(self.window - waiting, self.room))
        create_waiting_trials(self.storage, self.study_id, count)
        self.total += count
        self._mark_all_issued()

    def retry(self, params: dict[str, Any], user_attrs: dict[str, Any]) -> bool:
        """Queue a trial with these parameters within the budget; False when it has no room.

        With every ticket already issued, a queued ticket that no worker took yet becomes the
        retry: the controller takes it off the queue (the same atomic pop a worker does), gives
        it the parameters and puts it back. Only when no such ticket is left does the budget have
        no room: then every trial of the study has started.
        """
        if self.room > 0:
            self.study.enqueue_trial(params, user_attrs=user_attrs)
            self.total += 1
            self._mark_all_issued()
            return True
        for ticket in self.storage.get_all_trials(self.study_id, deepcopy=False, states=_WAITING):
            if FIXED_PARAMS_ATTR in ticket.system_attrs:
                continue  # an enqueued point or another retry
            id_ = trial_id(ticket)
            try:
                if not self.storage.set_trial_state_values(id_, TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_system_attr(id_, FIXED_PARAMS_ATTR, params)
            for key, value in user_attrs.items():
                self.storage.set_trial_user_attr(id_, key, value)
            self.storage.set_trial_state_values(id_, TrialState.WAITING)
            return True
        return False

    def stop(self, reason: str) -> None:
        self.storage.set_study_system_attr(self.study_id, STOPPED, reason)

    def finished(self) -> bool:
        """Every ticket issued and taken, and no trial of the study still running."""
        if self.room or self.waiting():
            return False
        running = self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        return not running

    def _mark_all_issued(self) -> None:
        if self.room == 0:
            self.storage.set_study_system_attr(self.study_id, ALL_ISSUED, True)


class StorageLost(Exception):
    """The shared storage stopped answering while the budget still had trials to run."""


class TicketTaker:
    """A worker's side: the next trial it may run, popped from the queue, or None when done."""

    def __init__(self, study: optuna.Study, keep_going: Any) -> None:
        self.study = study
        self.storage = study_storage(study)
        self.study_id = study_id(study)
        self.keep_going = keep_going
        self.next_stop_check = 0.0
        self.all_issued = False
        self.tickets: list[int] = []
        """Ids of tickets seen queued at the last look and not tried yet."""

    def next_trial(self) -> optuna.Trial | None:
        """Raises :class:`StorageLost` when the storage stops answering before the budget is
        spent; afterwards (a served study whose controller is done) that is a normal end."""
        try:
            return self._next_trial()
        except Exception as exc:  # each storage raises its own kinds
            if self.all_issued:
                return None
            raise StorageLost(f"{type(exc).__name__}: {exc}") from exc

    def _next_trial(self) -> optuna.Trial | None:
        while self.keep_going():
            now = time.monotonic()
            if now >= self.next_stop_check:
                self.next_stop_check = now + STOP_CHECK_INTERVAL
                if STOPPED in self._attrs():
                    return None
            trial = self._pop()
            if trial is not None:
                return trial
            attrs = self._attrs()
            self.all_issued = bool(attrs.get(ALL_ISSUED))
            if STOPPED in attrs or self.all_issued:
                # All issued: one more look, a ticket may have been queued since the last one.
                return None if STOPPED in attrs else self._pop()
            time.sleep(IDLE_WAIT)
        return None

    def _attrs(self) -> dict[str, Any]:
        return self.storage.get_study_system_attrs(self.study_id)

    def _pop(self) -> optuna.Trial | None:
        import optuna

        # Tickets seen at the last look first: a look reads every queued ticket (on a database,
        # each with its attributes), which cost more than the rest of a trial (profiled).
        while self.tickets:
            id_ = self.tickets.pop()
            if self._take(id_):
                return optuna.Trial(self.study, id_)
            # Another worker took it since: the rest of the list is as likely gone. Look again.
            self.tickets.clear()
        waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=_WAITING)
        ids = [trial_id(ticket) for ticket in waiting]
        # In random order: workers that all try the same ticket first collide on every pop.
        random.shuffle(ids)
        while ids:
            id_ = ids.pop()
            if self._take(id_):
                self.tickets = ids
                return optuna.Trial(self.study, id_)
        return None

    def _take(self, id_: int) -> bool:
        """Optuna's atomic WAITING -> RUNNING step: True for the one process that wins it."""
        try:
            if not self.storage.set_trial_state_values(id_, TrialState.RUNNING):
                return False
        except UpdateFinishedTrialError:
            return False
        forget_cached_trials(self.study)
        return True

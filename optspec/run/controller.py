"""The controller's loop: watching the journal, limits, signals; one invocation, one mode.

Modes (:class:`Mode`)
    ``LOCAL``: ``optspec run``/``resume``: only this controller's workers take trials, with
    tickets from a semaphore.
    ``HOST``: ``optspec run --storage`` or ``--serve``: the controller of a study that
    ``optspec worker`` processes elsewhere join; the tickets are WAITING trials in the study, and
    trials whose remote worker stopped beating are failed and retried (:mod:`optspec.run.leases`).
    ``JOIN``: ``optspec worker``: workers only, no study-level hooks, no study.db.
    Independently, the controller may hold the run's shared-memory journal (``run``, ``resume``,
    ``run --serve``) or not (a shared storage).

Watching
    The controller reads the shared journal through its own handle (polls the shared storage) and
    fires ``on_trial_end`` for each trial whose state became final, whichever process wrote it
    (its own failing of a dead worker's trial included).

Stopping
    The first SIGINT, SIGTERM or SIGHUP takes the remaining tickets back, says how many trials are
    still running, and waits for them however long they take; a second one stops them now. The
    timeout starts no new trial and waits for the running ones likewise (``trial_timeout`` bounds
    them). ``max_failed`` and a plugin's failure give running trials :data:`GRACE_PERIOD` seconds.
    Trials stopped by the run, or by a stop signal from outside (SIGTERM to the process group),
    are marked interrupted, so ``resume`` runs them again. Trials a dead or stopped worker leaves
    RUNNING become FAIL with the reason in the ``fail_reason`` user attribute.

Lifeline
    Every worker holds the reading end of a pipe whose only writing end is the controller's. When
    the controller dies, even by SIGKILL, the worker reads EOF and stops itself (and the command
    it runs) within a second: the forkserver, not the controller, is the workers' parent, so
    ``os.getppid()`` would never change.

The budget lives in :mod:`optspec.run.budget`, the processes in :mod:`optspec.run.pool`.
"""

from __future__ import annotations

import contextlib
import enum
import pickle
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from optspec import platform
from optspec.objectives.space import grid_size
from optspec.objectives.trial_dirs import BestTrialDirs
from optspec.outcome import Outcome
from optspec.run.budget import Budget, TicketIssuer
from optspec.run.forkserver import worker_context
from optspec.run.leases import WORKER_LOST, LostTrials
from optspec.run.pool import Pool
from optspec.run.signals import STOP_SIGNALS, signals_handled
from optspec.run.study_attrs import RETRY_OF_ATTR, record_fail_reason
from optspec.run.worker import (
    EXIT_PLUGIN_FAILED,
    EXIT_SETUP_FAILED,
    EXIT_STORAGE_LOST,
    IDLE,
    Slots,
    WorkerSetup,
)
from optspec.storage.optuna_compat import (
    replay_snapshot,
    study_id,
    study_storage,
)

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from optspec.config import Config
    from optspec.plugins.manager import PluginManager

GRACE_PERIOD = 10.0
"""Seconds running trials get once ``max_failed`` or a plugin's failure stopped the run."""
TRIAL_TIMEOUT_SLACK = 2.0
"""Extra seconds before the controller kills a worker over ``trial_timeout``: a command
objective stops its own process first and records a clearer reason."""
POLL_INTERVAL = 0.05
SNAPSHOT_MIN_LOGS = 10_000
"""From this many logs on, workers start from the controller's replayed state."""


class Mode(enum.Enum):
    LOCAL = "local"
    """Only this controller's workers take trials: a semaphore budget; study hooks fire here."""
    HOST = "host"
    """Workers on other machines join (``--storage``, ``--serve``): tickets in the study."""
    JOIN = "join"
    """``optspec worker``: trials only, for a study another controller hosts."""


class Watcher(Protocol):
    def finished_trials(self) -> list[FrozenTrial]: ...

    def update(self, storage: Any) -> None: ...

    def close(self) -> None: ...


class JournalWatcher:
    """Finished trials, read from the journal as they appear, each reported once.

    It follows the journal with a :class:`~optspec.storage.replay.LogReplay` from where the
    controller's storage is when it starts, so the controller does not replay every log
    through Optuna's JournalStorage while workers run: its cost per trial does not grow with
    the study, and it leaves the CPU to the workers. When the controller needs its storage
    current (every worker gone), :meth:`update` brings it there with the trials built for the
    reports, instead of Optuna's replay of every log of the run.
    """

    def __init__(self, backend: Any, storage: Any) -> None:
        from optspec.storage.replay import LogReplay

        # A handle of its own, so its read cursor never competes with the study's storage.
        self._backend = pickle.loads(pickle.dumps(backend))
        self._replay, self._cursor = LogReplay.following(storage)
        self._finished: dict[int, tuple[int, FrozenTrial]] = {}

    def finished_trials(self) -> list[FrozenTrial]:
        from optspec.storage.replay import frozen_trial

        logs = self._backend.read_logs(self._cursor)
        self._cursor += len(logs)
        trials = []
        for record in self._replay.apply(logs):
            trial = frozen_trial(record)
            self._finished[record.trial_id] = (record.study_id, trial)
            trials.append(trial)
        return trials

    def update(self, storage: Any) -> None:
        """Bring ``storage`` (the one this watcher follows) to the last log reported."""
        from optspec.storage.replay import advance_followed

        if advance_followed(storage, self._replay, self._cursor, self._finished):
            # The storage keeps them now; a later update needs only trials finished after this.
            self._finished.clear()

    def close(self) -> None:
        self._backend.close()


class StorageWatcher:
    """Finished trials of a study on a shared storage, found by polling it (no journal to read)."""

    POLL_INTERVAL = 0.5  # a query over the whole study: not every 50 ms

    def __init__(self, study: optuna.Study) -> None:
        self._study = study
        self._seen = {trial.number for trial in self._finished()}
        self._next_poll = 0.0

    def _finished(self) -> list[FrozenTrial]:
        from optuna.trial import TrialState

        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return self._study.get_trials(deepcopy=False, states=finished)

    def finished_trials(self) -> list[FrozenTrial]:
        now = time.monotonic()
        if now < self._next_poll:
            return []
        self._next_poll = now + self.POLL_INTERVAL
        new = [trial for trial in self._finished() if trial.number not in self._seen]
        self._seen.update(trial.number for trial in new)
        return new

    def update(self, storage: Any) -> None:
        pass  # the storage is the study's own: always current

    def close(self) -> None:
        pass


class Controller:
    """Runs the workers of one invocation and returns how it ended."""

    def __init__(
        self,
        *,
        config: Config,
        pm: PluginManager,
        study: optuna.Study,
        mode: Mode,
        backend: Any | None = None,
        plugin_objects: bytes = b"",
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """``backend`` is the run's shared-memory journal, None on a shared storage.
        ``on_tick`` is called on every turn of the loop (checkpoints)."""
        if mode is Mode.LOCAL and backend is None:
            raise ValueError("Mode.LOCAL runs on the run's own journal: backend is required")
        self.config = config
        self.pm = pm
        self.study = study
        self.mode = mode
        self.storage = study_storage(study)
        self.backend = backend
        self.on_tick = on_tick
        context = worker_context()
        # A grid-like sampler repeats points once every one was tried: no more trials than points.
        self.grid_size = grid_size(config.spec)
        self.n_trials = config.trial_budget
        self.budget = Budget(study, self.n_trials, context, tickets=mode is Mode.LOCAL)
        # No more workers than trials left: each would cost a process start for nothing.
        n_workers = max(1, min(config.spec.run.worker_count, self.budget.missing()))
        self.issuer: TicketIssuer | None = None
        self.lost: LostTrials | None = None
        self.retried: set[int] = set()
        self.announced_stop = False
        if mode is Mode.HOST:
            self.issuer = TicketIssuer(study, self.n_trials, 4 * n_workers)
            if config.spec.run.heartbeat is not None:
                self.lost = LostTrials(study, config.spec.run.heartbeat)
        self.slots = Slots(
            context.Array("q", [IDLE] * n_workers, lock=False),
            context.Array("d", [0.0] * n_workers, lock=False),
            context.Value("q", 0),
            context.Value("b", 0),
        )
        # The controller's end of the lifeline: never written, closed only by the controller's
        # exit, whichever way it happens.
        self.lifeline_end, self.lifeline = context.Pipe(duplex=False)  # (reader, writer)
        self.pool = Pool(context, n_workers, self._worker_setup(plugin_objects))
        # keep_trial_dirs = "best" / "none": only the controller sees every trial end.
        self.trial_dirs = BestTrialDirs(config.spec, config.output)
        if mode is not Mode.JOIN:
            self.trial_dirs.start(study.get_trials(deepcopy=False))
        self.failed = 0
        self.outcome: Outcome | None = None
        self.grace_ends: float | None = None
        self.signals = 0
        self.announce: str | None = None
        """A line for stderr, set by the signal handler and printed by the loop (printing
        inside the handler could interrupt a print of the main thread)."""

    def _worker_setup(self, plugin_objects: bytes) -> Callable[[int, int], WorkerSetup]:
        snapshot = None
        if self.backend is not None and len(self.backend) >= SNAPSHOT_MIN_LOGS:
            # Every worker would otherwise replay the whole journal on start (seconds for a
            # large resumed study); the controller has done that already.
            snapshot = replay_snapshot(self.storage)  # type: ignore[arg-type]
        # Part of every worker's seed: a resumed study must not replay its first trials' draws.
        trials_before = sum(
            1 for trial in self.study.get_trials(deepcopy=False) if trial.state.is_finished()
        )

        def setup(index: int, generation: int) -> WorkerSetup:
            return WorkerSetup(
                config=self.config,
                storage=self.storage if self.backend is not None else None,
                study_name=self.study.study_name,
                index=index,
                generation=generation,
                tickets=self.budget.tickets,
                slots=self.slots,
                plugin_objects=plugin_objects,
                sys_path=tuple(sys.path),
                trials_before=trials_before,
                snapshot=snapshot,
                lifeline=self.lifeline_end,
            )

        return setup

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        run = self.config.spec.run
        started = time.monotonic()
        watcher: Watcher = (
            JournalWatcher(self.backend, self.storage)
            if self.backend is not None
            else StorageWatcher(self.study)
        )
        try:
            with signals_handled(self._on_signal):
                self.budget.top_up()
                self._issue_tickets()
                self.pool.fill()
                if self.mode is Mode.LOCAL:  # a host serves other machines: not behind them
                    platform.yield_cpu_to_workers()
                while True:
                    self._report_finished(watcher)
                    self._reap()
                    if self.slots.stop.value and self.outcome is None:
                        # Only a worker whose sampler called study.stop() sets it on its own.
                        self.stop("done", self._exhausted())
                    now = time.monotonic()
                    if run.timeout is not None and now - started >= run.timeout:
                        self.stop("done", f"timeout of {_seconds(run.timeout)} reached", grace=None)
                    self._say_announcement()
                    self._enforce_deadlines(now)
                    self._issue_tickets()
                    self._fail_lost_trials()
                    # Every worker gone: stop, unless tickets died with a worker (then top up)
                    # or, on a shared storage, other machines still run trials of the study.
                    if (
                        not self.pool.alive()
                        and (self.outcome is not None or not self._top_up(watcher))
                        and (self.outcome is not None or not self._others_running())
                    ):
                        break
                    if self.on_tick is not None:
                        self.on_tick()
                    self.pool.wait(POLL_INTERVAL)
                self._terminate_all("the run stopped")
                self._catch_up(watcher)
                if self.backend is not None:  # on a shared storage, RUNNING may be elsewhere
                    self._fail_leftovers()
                self._catch_up(watcher)
        finally:
            self._terminate_all("the controller stopped")
            watcher.close()
            if self.mode is not Mode.JOIN:
                self.trial_dirs.close()
            self.lifeline.close()
            self.lifeline_end.close()
        if self.outcome is None and self.n_trials < self.config.spec.run.n_trials:
            return Outcome("done", self._exhausted())
        return self.outcome or Outcome("done", f"{self.n_trials} trials reached")

    def _exhausted(self) -> str:
        points = f"its {self.grid_size} points" if self.grid_size else "every point"
        return f"the search space is exhausted: {points} were tried"

    def stop(self, status: str, message: str, *, grace: float | None = GRACE_PERIOD) -> None:
        """Hand out no more trials; running ones get ``grace`` seconds (None: as long as they
        take). The first reason wins."""
        if self.outcome is None:
            self.outcome = Outcome(status, message)  # type: ignore[arg-type]
            self.grace_ends = None if grace is None else time.monotonic() + grace
        self.slots.stop.value = 1
        self.budget.withdraw()

    def _catch_up(self, watcher: Watcher) -> None:
        """Report what workers finished, then bring the study's storage up to date (cheaply:
        see :meth:`JournalWatcher.update`) before anything here reads the whole study."""
        self._report_finished(watcher)
        watcher.update(self.storage)

    def _top_up(self, watcher: Watcher) -> bool:
        """All workers exited: if trials are missing (tickets lost with a dead worker), run them."""
        if self.mode is not Mode.LOCAL:
            return False  # a ticket in the study outlives its worker
        self._catch_up(watcher)
        if self.budget.top_up() == 0:
            return False
        self.pool.fill()
        return True

    def _others_running(self) -> bool:
        """Hosting: tickets left, or trials that workers elsewhere still run. The study is not
        over until they finish (a first Ctrl-C stops waiting for them)."""
        return self.issuer is not None and not self.issuer.finished()

    def _issue_tickets(self) -> None:
        if self.issuer is None:
            return
        if self.outcome is not None:
            if not self.announced_stop:  # not from the signal handler: this does I/O
                self.announced_stop = True
                self.issuer.stop(self.outcome.message)
            return
        self.issuer.issue()

    def _fail_lost_trials(self) -> None:
        """Trials whose worker stopped beating: FAIL as "worker lost", retried once if the
        budget has room (as ``resume`` retries interrupted ones)."""
        if self.lost is None or self.issuer is None:
            return
        for trial in self.lost.find():
            if not self._fail_trial(trial.number, WORKER_LOST, interrupted=True):
                continue
            if trial.number not in self.retried and self.outcome is None:
                self.retried.add(trial.number)
                self.issuer.retry(trial.params, {RETRY_OF_ATTR: trial.number})

    # -- workers ----------------------------------------------------------------------------

    def _reap(self) -> None:
        for worker, code in self.pool.exited():
            trial_number = self.slots.trial_numbers[worker.index]
            self.slots.trial_numbers[worker.index] = IDLE
            if code == 0 and trial_number == IDLE:
                continue
            # Stopped by a signal from outside (SIGTERM to the whole process group), not by this
            # controller (trial_timeout): the trial did not fail, it was interrupted, and resume
            # runs it again.
            interrupted = worker.interrupted or (
                worker.stop_reason is None and code in _STOPPED_CODES
            )
            if trial_number != IDLE:
                self._fail_trial(trial_number, worker.exit_reason(code), interrupted=interrupted)
            if code == EXIT_SETUP_FAILED:
                self.stop("failed", f"worker {worker.index} could not start (see above)")
            elif code == EXIT_PLUGIN_FAILED:
                self.stop("failed", "a plugin raised in on_trial_start (see above)")
            elif code == EXIT_STORAGE_LOST:
                self._storage_lost(worker.index)
            elif self.outcome is None and not self.pool.terminating:
                self.pool.start(worker.index)

    def _storage_lost(self, index: int) -> None:
        url = self.config.storage_url or ""
        if url.startswith("grpc://"):
            # A served study lives in its controller: once it stops serving, the study is over
            # for everyone who joined it. Failing here would only make a job scheduler retry.
            self.stop("done", f"the controller at {url} stopped serving: the study is over")
        else:
            self.stop("failed", f"worker {index} lost the shared storage (see above)")

    def _enforce_deadlines(self, now: float) -> None:
        if self.grace_ends is not None and now >= self.grace_ends:
            message = self.outcome.message if self.outcome else ""
            self._terminate_all(f"still running when the run stopped ({message})")
        self.pool.enforce_kills(now)
        trial_timeout = self.config.spec.run.trial_timeout
        if trial_timeout is None:
            return
        for worker in self.pool.alive():
            number = self.slots.trial_numbers[worker.index]
            if worker.stop_reason is None and number != IDLE:
                ran = time.time() - self.slots.started[worker.index]
                if ran > trial_timeout + TRIAL_TIMEOUT_SLACK:
                    reason = f"trial_timeout of {_seconds(trial_timeout)} exceeded"
                    self.pool.terminate(worker, reason)

    def _terminate_all(self, reason: str) -> None:
        self.pool.terminate_all(reason)
        self._reap()

    # -- trials -----------------------------------------------------------------------------

    def _report_finished(self, watcher: Watcher) -> None:
        from optuna.trial import TrialState

        if self.mode is Mode.JOIN:
            self.failed = self.slots.failures.value
        else:
            for trial in watcher.finished_trials():
                if trial.state == TrialState.FAIL:
                    self.failed += 1
                self._trial_end(trial)
        max_failed = self.config.spec.run.max_failed
        if max_failed is not None and self.failed >= max_failed:
            self.stop("failed", f"max_failed = {max_failed} reached: {self.failed} trials failed")

    def _trial_end(self, trial: FrozenTrial) -> None:
        self.trial_dirs.finished(trial)
        try:
            self.pm.hook.on_trial_end(study=self.study, trial=trial)
        except Exception as exc:  # noqa: BLE001 - a plugin's bug stops the study, with its name
            self.stop("failed", f"a plugin raised in on_trial_end: {type(exc).__name__}: {exc}")

    def _fail_trial(self, number: int, reason: str, *, interrupted: bool) -> bool:
        """FAIL a RUNNING trial with its reason; False if it had finished meanwhile."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        id_ = self.storage.get_trial_id_from_study_id_trial_number(study_id(self.study), number)
        if self.storage.get_trial(id_).state != TrialState.RUNNING:
            return False  # it finished after all, just before its worker went away
        try:
            record_fail_reason(self.storage, id_, reason, interrupted=interrupted)
            self.storage.set_trial_state_values(id_, TrialState.FAIL)
        except UpdateFinishedTrialError:
            return False  # a worker elsewhere finished it between the look and the write
        return True

    def _fail_leftovers(self) -> None:
        """Trials still RUNNING once every worker is gone: their worker died unnoticed."""
        from optuna.trial import TrialState

        message = self.outcome.message if self.outcome else "the run ended"
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self._fail_trial(trial.number, f"left running when the run ended ({message})",
                             interrupted=True)  # fmt: skip

    # -- signals ----------------------------------------------------------------------------

    def _on_signal(self, name: str) -> None:
        self.signals += 1
        if self.signals == 1:
            self.outcome = None if self.outcome and self.outcome.status == "done" else self.outcome
            self.stop("interrupted", f"interrupted by {name}", grace=None)
            numbers = self.slots.trial_numbers
            running = sum(1 for index in range(self.pool.size) if numbers[index] != IDLE)
            again = "Ctrl-C" if name == "SIGINT" else name
            self.announce = (
                f"optspec: finishing {running} running trials; {again} again to stop them now"
            )
        else:
            self.grace_ends = time.monotonic()  # the loop terminates the workers now

    def _say_announcement(self) -> None:
        if self.announce is not None and not self.config.quiet:
            # No terminal any more after a SIGHUP: the line is best effort.
            with contextlib.suppress(OSError, ValueError, AttributeError):
                print(f"\n{self.announce}", file=sys.stderr, flush=True)
        self.announce = None


_STOPPED_CODES = frozenset(
    code
    for sig in STOP_SIGNALS
    for code in (-sig, 128 + sig)  # by the signal, or by its handler
)


def _seconds(value: float) -> str:
    return f"{value:g}s"

"""The controller's loop: worker processes, the trial budget, limits and signals.

Budget
    A semaphore holds one ticket per trial still to run. A worker takes a ticket before each
    ``ask`` and exits when none is left, so no worker overshoots ``n_trials``. A worker killed
    between taking a ticket and creating its trial loses that ticket; when every worker has
    exited, the controller compares the study with the target and hands out what is missing.
    On a storage that other machines reach (``--storage``, ``--serve``) the tickets are WAITING
    trials in the study instead (:mod:`optspec.run.budget`), and trials whose remote worker
    stopped beating are failed and retried (:mod:`optspec.run.leases`).

Watching
    The controller reads the shared journal through its own handle and fires ``on_trial_end``
    for each trial whose state became final, whichever process wrote it (its own failing of a
    dead worker's trial included).

Stopping
    The first SIGINT or SIGTERM, the timeout or ``max_failed`` take the remaining tickets back;
    running trials may finish for :data:`GRACE_PERIOD` seconds. A second signal or the end of the
    grace period terminates the workers. Trials a dead or stopped worker leaves RUNNING become
    FAIL with the reason in the ``fail_reason`` user attribute.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from optspec.objectives.trial_dirs import BestTrialDirs
from optspec.outcome import Outcome
from optspec.run.budget import TicketIssuer
from optspec.run.forkserver import worker_context
from optspec.run.leases import WORKER_LOST, LostTrials
from optspec.run.study_attrs import RETRY_OF_ATTR, record_fail_reason
from optspec.run.worker import (
    EXIT_PLUGIN_FAILED,
    EXIT_SETUP_FAILED,
    EXIT_STORAGE_LOST,
    IDLE,
    Slots,
    WorkerSetup,
    run_worker,
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
"""Seconds running trials get to finish once the run stops handing out trials."""
KILL_AFTER = 3.0
"""Seconds between SIGTERM and SIGKILL for a worker that must stop."""
TRIAL_TIMEOUT_SLACK = 2.0
"""Extra seconds before the controller kills a worker over ``trial_timeout``: a command
objective stops its own process first and records a clearer reason."""
POLL_INTERVAL = 0.05
SNAPSHOT_MIN_LOGS = 10_000
"""From this many logs on, workers start from the controller's replayed state."""


class JournalWatcher:
    """Finished trials, read from the journal as they appear, each reported once.

    It follows the journal with a :class:`~optspec.storage.replay.LogReplay` from where the
    controller's storage is when it starts, so the controller neither replays every log
    through Optuna's JournalStorage nor keeps finished trials: its cost per trial does not
    grow with the study, and it leaves the CPU to the workers.
    """

    def __init__(self, backend: Any, storage: Any) -> None:
        from optspec.storage.replay import LogReplay

        # A handle of its own, so its read cursor never competes with the study's storage.
        self._backend = pickle.loads(pickle.dumps(backend))
        self._replay, self._cursor = LogReplay.following(storage)

    def finished_trials(self) -> list[FrozenTrial]:
        from optspec.storage.replay import frozen_trial

        logs = self._backend.read_logs(self._cursor)
        self._cursor += len(logs)
        return [frozen_trial(trial) for trial in self._replay.apply(logs)]

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

    def close(self) -> None:
        pass


class _Worker:
    def __init__(self, index: int, generation: int, process: multiprocessing.process.BaseProcess):
        self.index = index
        self.generation = generation
        self.process = process
        self.stop_reason: str | None = None
        # Stopped because the run stopped (resume retries its trial), not for overrunning
        # trial_timeout (a retry would overrun again).
        self.interrupted = False
        self.kill_at: float | None = None


class Controller:
    """Runs the workers of one invocation and returns how it ended."""

    def __init__(
        self,
        *,
        config: Config,
        pm: PluginManager,
        study: optuna.Study,
        backend: Any | None,
        plugin_objects: bytes = b"",
        snapshot: bytes | None = None,
        on_tick: Callable[[], None] | None = None,
        join: bool = False,
    ) -> None:
        """``backend`` is the run's shared-memory journal, or None on a shared storage
        (``config.storage_url``). ``join`` is ``optspec worker``: trials only, no study hooks."""
        self.config = config
        self.pm = pm
        self.study = study
        self.storage = study_storage(study)
        self.backend = backend
        self.plugin_objects = plugin_objects
        self.snapshot = snapshot
        self.join = join
        if snapshot is None and backend is not None and len(backend) >= SNAPSHOT_MIN_LOGS:
            # Every worker would otherwise replay the whole journal on start (seconds for a
            # large resumed study); the controller has done that already.
            self.snapshot = replay_snapshot(self.storage)
        self.on_tick = on_tick
        self.context = worker_context()
        self.n_workers = config.spec.run.worker_count
        # On a shared storage, machines that this controller does not know take trials too:
        # the tickets are WAITING trials in the study, which the controller (not a joined
        # `optspec worker`) queues.
        shared = config.shared_storage
        self.tickets = None if shared else self.context.Semaphore(0)
        self.issuer: TicketIssuer | None = None
        self.lost: LostTrials | None = None
        self.retried: set[int] = set()
        self.announced_stop = False
        if shared and not join:
            self.issuer = TicketIssuer(study, config.spec.run.n_trials, 2 * self.n_workers)
            if config.spec.run.heartbeat is not None:
                self.lost = LostTrials(study, config.spec.run.heartbeat)
        self.slots = Slots(
            self.context.Array("q", [IDLE] * self.n_workers, lock=False),
            self.context.Array("d", [0.0] * self.n_workers, lock=False),
            self.context.Value("q", 0),
            self.context.Value("b", 0),
        )
        self.workers: list[_Worker] = []
        # Part of every worker's seed: a resumed study must not replay its first trials' draws.
        self.trials_before = sum(
            1 for trial in study.get_trials(deepcopy=False) if trial.state.is_finished()
        )
        # keep_trial_dirs = "best" / "none": only the controller sees every trial end.
        self.trial_dirs = BestTrialDirs(config.spec, config.output)
        if not join:
            self.trial_dirs.start(study.get_trials(deepcopy=False))
        self.failed = 0
        self.finished = 0
        self.outcome: Outcome | None = None
        self.grace_ends: float | None = None
        self.terminating = False
        self.signals = 0

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> Outcome:
        run = self.config.spec.run
        started = time.monotonic()
        watcher = (
            JournalWatcher(self.backend, self.storage)
            if self.backend is not None
            else StorageWatcher(self.study)
        )
        try:
            with self._signals_handled():
                self._hand_out(self._missing())
                self._issue_tickets()
                self._start_workers()
                while True:
                    self._report_finished(watcher)
                    self._reap()
                    now = time.monotonic()
                    if run.timeout is not None and now - started >= run.timeout:
                        self.stop("done", f"timeout of {_seconds(run.timeout)} reached")
                    self._enforce_deadlines(now)
                    self._issue_tickets()
                    self._fail_lost_trials()
                    # Every worker gone: stop, unless tickets died with a worker (then top up)
                    # or, on a shared storage, other machines still run trials of the study.
                    if (
                        not self._alive()
                        and (self.outcome is not None or not self._top_up())
                        and (self.outcome is not None or not self._others_running())
                    ):
                        break
                    if self.on_tick is not None:
                        self.on_tick()
                    self._wait()
                self._terminate_all("the run stopped")
                if self.backend is not None:  # on a shared storage, RUNNING may be elsewhere
                    self._fail_leftovers()
                self._report_finished(watcher)
        finally:
            self._terminate_all("the controller stopped")
            watcher.close()
            if not self.join:
                self.trial_dirs.close()
        return self.outcome or Outcome("done", f"{self.config.spec.run.n_trials} trials reached")

    def stop(self, status: str, message: str) -> None:
        """Hand out no more trials; running ones get the grace period. The first reason wins."""
        if self.outcome is None:
            self.outcome = Outcome(status, message)  # type: ignore[arg-type]
            self.grace_ends = time.monotonic() + GRACE_PERIOD
        self.slots.stop.value = 1
        while self.tickets is not None and self.tickets.acquire(block=False):
            pass

    # -- budget -----------------------------------------------------------------------------

    def _missing(self) -> int:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        counted = sum(1 for trial in trials if trial.state != TrialState.WAITING)
        return max(0, self.config.spec.run.n_trials - counted)

    def _hand_out(self, count: int) -> None:
        for _ in range(count if self.tickets is not None else 0):
            self.tickets.release()

    def _top_up(self) -> bool:
        """All workers exited: if tickets were lost with a dead worker, run the missing trials."""
        if self.tickets is None:
            return False  # a ticket in the study outlives its worker
        missing = self._missing()
        if missing == 0:
            return False
        self._hand_out(missing)
        self._start_workers()
        return True

    def _others_running(self) -> bool:
        """On a shared storage: tickets left, or trials that workers elsewhere still run. The
        study is not over until they finish (a first Ctrl-C stops waiting for them)."""
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

    def _start_workers(self) -> None:
        alive = {worker.index for worker in self.workers if worker.process.is_alive()}
        for index in range(self.n_workers):
            if index not in alive:
                self._start_worker(index)

    def _start_worker(self, index: int) -> None:
        generation = sum(1 for worker in self.workers if worker.index == index)
        setup = WorkerSetup(
            config=self.config,
            storage=self.storage if self.backend is not None else None,
            study_name=self.study.study_name,
            index=index,
            generation=generation,
            tickets=self.tickets,
            slots=self.slots,
            plugin_objects=self.plugin_objects,
            sys_path=tuple(sys.path),
            trials_before=self.trials_before,
            snapshot=self.snapshot,
        )
        process = self.context.Process(
            target=run_worker, args=(setup,), name=f"optspec-worker-{index}", daemon=True
        )
        process.start()
        self.workers.append(_Worker(index, generation, process))

    def _alive(self) -> list[_Worker]:
        return [worker for worker in self.workers if worker.process.exitcode is None]

    def _reap(self) -> None:
        for worker in list(self.workers):
            code = worker.process.exitcode
            if code is None:
                continue
            self.workers.remove(worker)
            worker.process.join()
            trial_number = self.slots.trial_numbers[worker.index]
            self.slots.trial_numbers[worker.index] = IDLE
            if code == 0 and trial_number == IDLE:
                continue
            reason = worker.stop_reason or _exit_reason(worker, code)
            if trial_number != IDLE:
                self._fail_trial(trial_number, reason, interrupted=worker.interrupted)
            if code == EXIT_SETUP_FAILED:
                self.stop("failed", f"worker {worker.index} could not start (see above)")
            elif code == EXIT_PLUGIN_FAILED:
                self.stop("failed", "a plugin raised in on_trial_start (see above)")
            elif code == EXIT_STORAGE_LOST:
                self.stop("failed", f"worker {worker.index} lost the shared storage (see above)")
            elif self.outcome is None and not self.terminating:
                self._start_worker(worker.index)

    def _enforce_deadlines(self, now: float) -> None:
        if self.grace_ends is not None and now >= self.grace_ends:
            self._terminate_all(f"still running when the run stopped ({self.outcome.message})")
        trial_timeout = self.config.spec.run.trial_timeout
        for worker in self._alive():
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.process.kill()
            elif trial_timeout is not None and worker.stop_reason is None:
                number = self.slots.trial_numbers[worker.index]
                if number != IDLE:
                    ran = time.time() - self.slots.started[worker.index]
                    if ran > trial_timeout + TRIAL_TIMEOUT_SLACK:
                        self._terminate(
                            worker, f"trial_timeout of {_seconds(trial_timeout)} exceeded"
                        )

    def _terminate(self, worker: _Worker, reason: str, *, interrupted: bool = False) -> None:
        if worker.stop_reason is None:
            worker.stop_reason = reason
            worker.interrupted = interrupted
            worker.kill_at = time.monotonic() + KILL_AFTER
            worker.process.terminate()

    def _terminate_all(self, reason: str) -> None:
        self.terminating = True  # no replacement for the workers that now exit
        for worker in self._alive():
            self._terminate(worker, reason, interrupted=True)
        deadline = time.monotonic() + KILL_AFTER
        for worker in self._alive():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
        self._reap()

    def _wait(self) -> None:
        sentinels = [worker.process.sentinel for worker in self.workers]
        multiprocessing.connection.wait(sentinels, timeout=POLL_INTERVAL)

    # -- trials -----------------------------------------------------------------------------

    def _report_finished(self, watcher: JournalWatcher | StorageWatcher) -> None:
        from optuna.trial import TrialState

        if self.join:
            self.failed = self.slots.failures.value
        else:
            for trial in watcher.finished_trials():
                self.finished += 1
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

    @contextmanager
    def _signals_handled(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # signal handlers can only be set from the main thread (API use in a thread)
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        if self.signals == 1:
            self.outcome = None if self.outcome and self.outcome.status == "done" else self.outcome
            self.stop("interrupted", f"interrupted by {name}")
        else:
            self.grace_ends = time.monotonic()  # the loop terminates the workers now


def _exit_reason(worker: _Worker, code: int) -> str:
    pid = worker.process.pid
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker {worker.index} (pid {pid}) died: killed by {name}"
    return f"worker {worker.index} (pid {pid}) died: exit status {code}"


def _seconds(value: float) -> str:
    return f"{value:g}s"

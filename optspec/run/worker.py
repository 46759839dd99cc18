"""A worker process: rebuild the plugins, then ask, evaluate and tell until the budget is spent.

Workers start from a ``forkserver`` (:mod:`optspec.run.pool`), never with plain ``fork``: a
forked JournalStorage keeps its parent's worker id, and Optuna then mixes up which process owns
which trial. The controller owns signals: a worker ignores SIGINT (the terminal sends it to the
whole process group) and turns SIGTERM into :class:`WorkerStopped`, so a running command
objective's process is stopped on the way out.

A worker ends with ``os._exit`` once its last result is told: a thread an objective started and
never stopped cannot keep it alive (the interpreter's normal exit would join it for ever).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import sysconfig
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import optuna
from attrs import frozen
from optuna.trial import TrialState

from optspec.config import Config
from optspec.objectives.results import TrialFailed, record_result
from optspec.objectives.space import suggest_params
from optspec.run.budget import StorageLost, TicketTaker
from optspec.run.leases import Heartbeat
from optspec.run.study_attrs import record_fail_reason
from optspec.storage.optuna_compat import study_storage, tell, trial_id

if TYPE_CHECKING:
    from collections.abc import Callable
    from multiprocessing.connection import Connection
    from multiprocessing.sharedctypes import Synchronized, SynchronizedArray

IDLE = -1
"""``Slots.trial_numbers`` value while a worker runs no trial."""

# Exit status of a worker that could not set itself up, and of one whose on_trial_start hook
# raised: a plugin bug that would fail every trial. The controller stops the run on either.
# Unusual numbers: an objective's own sys.exit(n) is a FAIL of its trial and never ends the
# worker, but an os._exit(n) in an objective still does, and must not read as one of these.
EXIT_SETUP_FAILED = 213
EXIT_PLUGIN_FAILED = 214
EXIT_STORAGE_LOST = 215
"""A worker's shared storage stopped answering (a database down, a served controller gone)."""


@frozen
class Slots:
    """Shared arrays, one slot per worker, written by that worker only.

    The controller reads them to find the trial of a worker that died or overran
    ``trial_timeout``: ``trial_numbers[i]`` is the number of the trial worker ``i`` runs (``IDLE``
    between trials), ``started[i]`` when it started (``time.time()``).
    """

    trial_numbers: SynchronizedArray[int]
    started: SynchronizedArray[float]
    failures: Synchronized[int]
    """FAIL trials of this invocation, counted by the workers themselves: with a fast failing
    objective, waiting for the controller to notice ``max_failed`` would spend the budget."""
    stop: Synchronized[int]
    """Set by the controller: take no more trials (on a shared storage, where the budget is
    queued in the study rather than handed out through the semaphore). Also set by a worker
    whose grid-like sampler has no point left (:class:`WorkerStudy`)."""


@frozen
class WorkerSetup:
    """Everything a worker needs, pickled into the new process."""

    config: Config
    storage: optuna.storages.BaseStorage | None
    """The run's journal storage; None on a shared storage, which the worker opens itself
    from ``config.storage_url``."""
    study_name: str
    index: int
    generation: int
    tickets: Synchronized[int] | None
    """One ticket per trial still to run; None on a shared storage, where other machines take
    trials too and the tickets are WAITING trials in the study (:mod:`optspec.run.budget`)."""
    slots: Slots
    trials_before: int = 0
    """Finished trials when the run started, part of the sampler's seed."""
    plugin_objects: bytes = b""
    """Pickled plugin objects, unpickled once ``sys_path`` is in place (their classes may live
    in modules only the controller's sys.path reaches, such as a test file)."""
    sys_path: tuple[str, ...] = ()
    snapshot: bytes | None = None
    lifeline: Connection | None = None
    """The reading end of a pipe only the controller can write to: EOF means it died."""


class WorkerStopped(BaseException):
    """SIGTERM from the controller: unwinds the running trial (its command is stopped on the
    way) without being taken for an objective's own ``sys.exit``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum


def run_worker(setup: WorkerSetup) -> None:
    """The worker process's entry point; never returns."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):  # a closed terminal: the controller decides, as for Ctrl-C
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _take_slot(setup)
    code = 0
    try:
        if setup.lifeline is not None:
            threading.Thread(
                target=_watch_lifeline, args=(setup.lifeline,), name="optspec-lifeline", daemon=True
            ).start()
        try:
            config, study, objective, pm = _prepare(setup)
        except Exception as exc:  # noqa: BLE001 - reported by the controller, which stops the run
            if _served_study_gone(setup, exc):
                _say(f"optspec: worker {setup.index}: {setup.config.storage_url} no longer "
                     "answers: its controller stopped serving")  # fmt: skip
                code = EXIT_STORAGE_LOST
            else:
                _say(f"optspec: worker {setup.index} could not start: {_reason(exc)}")
                code = EXIT_SETUP_FAILED
        else:
            code = _loop(setup, config, study, objective, pm)
    except WorkerStopped as exc:
        code = exc.exit_code
    _exit(code)


LIFELINE_GRACE = 5.0
"""Seconds a worker whose controller died gives its trial's command to stop, before exiting."""


def _watch_lifeline(lifeline: Connection) -> None:
    """Stop this worker when the controller dies: nobody would save its trials.

    The forkserver, not the controller, is a worker's parent, so ``os.getppid()`` never changes
    when the controller dies. SIGTERM to itself unwinds the running trial like the controller's
    own SIGTERM would, so a command objective's process group is stopped on the way out;
    ``os._exit`` follows in case the main thread is stuck in code that never returns to the
    interpreter.
    """
    try:
        while True:
            lifeline.recv_bytes()  # the controller never writes: this returns only at EOF
    except (EOFError, OSError):
        pass
    signal.raise_signal(signal.SIGTERM)
    time.sleep(LIFELINE_GRACE)
    _exit(128 + signal.SIGTERM)


def _exit(code: int) -> None:
    """Leave now, whatever threads the objectives left running; what was printed is flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)


def _say(message: str) -> None:
    with contextlib.suppress(OSError, ValueError, AttributeError):  # e.g. a closed pipe
        print(message, file=sys.stderr, flush=True)


WORKER_CONNECT_WAIT = 5.0
"""Seconds a worker process waits for a served (grpc://) study that its ``optspec worker``
reached already."""


def _served_study_gone(setup: WorkerSetup, exc: Exception) -> bool:
    """A served study (``grpc://``) that stopped answering while this worker started: its
    controller is done (or gone), which ends the study for everyone who joined it."""
    from optspec.storage.remote import GRPC_SCHEME, ServerGone

    url = setup.config.storage_url or ""
    return url.startswith(GRPC_SCHEME) and (
        isinstance(exc, ServerGone) or "RpcError" in type(exc).__name__
    )


def _take_slot(setup: WorkerSetup) -> None:
    """The worker's index and device entry in its environment, for its whole life.

    Set before the objective's module is imported: frameworks read ``CUDA_VISIBLE_DEVICES``
    when they initialise. A replacement worker gets the same index, hence the same entry.
    """
    run = setup.config.spec.run
    os.environ["OPTSPEC_WORKER"] = str(setup.index)
    device = run.device(setup.index)
    if device is not None:
        os.environ["OPTSPEC_DEVICE"] = device
        os.environ[run.device_env] = device


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise WorkerStopped(signum)


def _prepare(setup: WorkerSetup) -> tuple[Config, optuna.Study, Any, Any]:
    from optspec.run.setup import build_components, unpickle_plugins

    config = attrs.evolve(
        setup.config,
        role="worker",
        worker_index=setup.index,
        device=setup.config.spec.run.device(setup.index),
    )
    # One INFO line per trial from every worker would drown the progress display; `-v` asks.
    optuna.logging.set_verbosity(optuna.logging.INFO if config.verbose else optuna.logging.WARNING)
    # The controller's sys.path first: plugin objects' classes may live where only it looks.
    sys.path[:] = list(dict.fromkeys([*setup.sys_path, *sys.path]))
    components = build_components(
        config,
        unpickle_plugins(setup.plugin_objects),
        worker_index=setup.index,
        generation=setup.generation,
        trials_before=setup.trials_before,
    )
    storage = setup.storage
    if storage is None:
        from optspec.storage.remote import open_storage

        storage = open_storage(
            config.storage_url,  # type: ignore[arg-type]
            heartbeat=config.spec.run.heartbeat,
            # `optspec worker` itself reached the server just now: no long wait if it is gone.
            wait=WORKER_CONNECT_WAIT,
        )
    if setup.snapshot is not None and hasattr(storage, "restore_replay_result"):
        storage.restore_replay_result(setup.snapshot)
    study = WorkerStudy(
        study_name=setup.study_name,
        storage=storage,
        sampler=components.sampler,
        pruner=components.pruner,
    )
    return config, study, components.objective, components.pm


class WorkerStudy(optuna.Study):
    """The grid and brute-force samplers call ``study.stop()`` from ``tell`` once every point
    was tried. Optuna allows that only inside ``optimize``, which workers do not use: it would
    raise after the trial was stored. Here it ends the worker's run cleanly instead."""

    exhausted = False

    def stop(self) -> None:
        self.exhausted = True


def _loop(setup: WorkerSetup, config: Config, study: optuna.Study, objective: Any, pm: Any) -> int:
    """Trials until the budget is spent or the run stops; returns the exit status."""
    slots, index = setup.slots, setup.index
    max_failed = config.spec.run.max_failed or float("inf")

    def keep_going() -> bool:
        return not slots.stop.value and slots.failures.value < max_failed

    if setup.tickets is not None:
        next_trial = _counted_trials(setup.tickets, study)
    else:
        next_trial = TicketTaker(study, keep_going).next_trial
    heartbeat = None
    if config.shared_storage and config.spec.run.heartbeat is not None:
        heartbeat = Heartbeat(study_storage(study), config.spec.run.heartbeat)
    while keep_going():
        try:
            trial = next_trial()
        except StorageLost as exc:
            _say(f"optspec: worker {index}: lost the storage: {exc}")
            return EXIT_STORAGE_LOST
        if trial is None:
            break
        slots.started[index] = time.time()
        slots.trial_numbers[index] = trial.number
        if heartbeat is not None:
            heartbeat.start(trial_id(trial))
        # Not in a `finally`: a worker stopped mid-trial must leave the slot set, so the
        # controller knows which trial to fail.
        try:
            failed = not run_trial(study, trial, objective, pm, config)
        except PluginFailed as exc:
            slots.trial_numbers[index] = IDLE
            _say(f"optspec: worker {index}: {exc}")
            return EXIT_PLUGIN_FAILED
        if heartbeat is not None:
            heartbeat.stop()
        slots.trial_numbers[index] = IDLE
        if failed:
            with slots.failures.get_lock():
                slots.failures.value += 1
        if getattr(study, "exhausted", False):
            slots.stop.value = 1  # no point left: the controller ends the run as done
            break
    return 0


def _counted_trials(
    tickets: Synchronized[int], study: optuna.Study
) -> Callable[[], optuna.Trial | None]:
    """One machine: a trial for each ticket the controller's counter holds."""

    def next_trial() -> optuna.Trial | None:
        with tickets.get_lock():
            if tickets.value <= 0:
                return None
            tickets.value -= 1
        return study.ask()

    return next_trial


class PluginFailed(Exception):
    """A plugin raised in ``on_trial_start``: its trial failed, and so would every other."""


def run_trial(
    study: optuna.Study, trial: optuna.Trial, objective: Any, pm: Any, config: Config
) -> bool:
    """Suggest, evaluate and tell one trial; every failure becomes a FAIL with its reason.

    Returns False when the trial failed; raises PluginFailed (after failing the trial) when a
    plugin's ``on_trial_start`` raised.
    """
    try:
        params = suggest_params(trial, config.spec)
    except Exception as exc:  # noqa: BLE001 - e.g. a sampler that cannot sample this space
        _fail(study, trial, _reason(exc))
        return False
    try:
        pm.hook.on_trial_start(trial=trial, config=config)
    except Exception as exc:  # a plugin's bug: it stops the run, not just this trial
        reason = f"a plugin raised in on_trial_start: {_reason(exc)}"
        _fail(study, trial, reason)
        raise PluginFailed(reason) from exc
    try:
        values = record_result(trial, objective(trial, params), config.spec)
    except optuna.TrialPruned:
        tell(study, trial, state=TrialState.PRUNED)
    except TrialFailed as exc:
        _fail(study, trial, exc.reason)
        return False
    except Exception as exc:  # noqa: BLE001 - a failing objective fails its trial, not the run
        _fail(study, trial, _reason(exc))
        return False
    except SystemExit as exc:  # the objective's own sys.exit(n): its trial failed, nothing more
        _fail(study, trial, f"the objective called sys.exit({exc.code!r}){_where(exc)}")
        return False
    else:
        tell(study, trial, values)
        if config.verbose:
            _log_finished(study, trial.number, values, params)
    return True


def _log_finished(study: optuna.Study, number: int, values: Any, params: dict[str, Any]) -> None:
    """Optuna's own line for a finished trial, which only ``Study.optimize`` writes: the workers
    ask and tell, so ``-v`` would not show it otherwise."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    if len(values) > 1:
        message = f"Trial {number} finished with values: {values} and parameters: {params}."
    else:
        message = f"Trial {number} finished with value: {values[0]} and parameters: {params}."
        try:
            best = study.best_trial
            message += f" Best is trial {best.number} with value: {best.value}."
        except ValueError:  # no feasible trial completed yet
            pass
    optuna.logging.get_logger("optuna.study.study").info(message)


def _fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    record_fail_reason(study_storage(study), trial_id(trial), reason)
    tell(study, trial, state=TrialState.FAIL)


def _reason(exc: BaseException) -> str:
    """``Type: message`` and the objective's own line that raised it, short enough for a table."""
    return f"{type(exc).__name__}: {exc}{_where(exc)}"


def _where(exc: BaseException) -> str:
    frame = _own_frame(traceback.extract_tb(exc.__traceback__))
    return f" (at {frame.filename}:{frame.lineno})" if frame is not None else ""


_OPTSPEC_DIR = str(Path(__file__).resolve().parent.parent) + os.sep
_LIBRARY_DIRS = tuple(
    str(Path(path).resolve()) + os.sep
    for name in ("stdlib", "platstdlib", "purelib", "platlib")
    if (path := sysconfig.get_paths().get(name))
)


def _own_frame(frames: traceback.StackSummary) -> traceback.FrameSummary | None:
    """The deepest frame of the user's code: not optspec's, and not a library's (Optuna raising
    for ``trial.report`` says less than the objective's line that called it). An objective
    installed as a package is in site-packages: then the deepest frame outside optspec."""

    def resolved(frame: traceback.FrameSummary) -> str:
        return str(Path(frame.filename).resolve())

    outside = [f for f in frames if not resolved(f).startswith(_OPTSPEC_DIR)]
    own = [f for f in outside if not resolved(f).startswith(_LIBRARY_DIRS)]
    for candidates in (own, outside, list(frames)):
        if candidates:
            return candidates[-1]
    return None

"""Where worker processes come from: a forkserver started first thing in a run.

This module imports nothing heavy on purpose: the run starts the forkserver before it reads
the spec or imports optuna, so the forkserver's own imports (optuna, the worker module) run on
the other core while the controller does the same, instead of after it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

from optspec import platform
from optspec.run.signals import stop_signals_ignored

# The built-in objective kinds' modules, not optspec.builtin.objectives: that plugin resolves
# them through the optspec facade only when a worker calls register_objectives. The last one
# does something only in the forkserver: see optspec/run/forkserver_exit.py.
PRELOAD = [
    "optspec.run.worker",
    "optspec.objectives.python",
    "optspec.objectives.command",
    "optuna",
    "optspec.run.forkserver_exit",
]


#: What workers start from: either context has ``Process``, ``Event``, ``Value`` and the rest.
WorkerContext = multiprocessing.context.ForkServerContext | multiprocessing.context.SpawnContext


def worker_context() -> WorkerContext:
    """Where workers come from: a forkserver that has imported optuna and optspec already,
    where there is one (:func:`optspec.platform.worker_start_method`); else ``spawn``.

    Never plain ``fork``: a forked JournalStorage keeps its parent's worker id. The forkserver
    is a fresh interpreter, so its forks are clean; :func:`start_worker_server` starts it early,
    so its imports overlap with the controller's own setup and every worker, respawns
    included, starts in milliseconds instead of importing optuna again. With spawn every
    worker imports them itself (Windows, or ``OPTSPEC_START_METHOD=spawn``).
    """
    if platform.worker_start_method() == "spawn":
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_worker_server() -> None:
    """Start the forkserver now (it imports in the background), where workers come from one;
    idempotent.

    It starts deaf to the stop signals, and so does multiprocessing's resource tracker: both are
    in the terminal's process group. A Ctrl-C during the forkserver's imports killed it with a
    traceback (the run then failed with EOFError), and a SIGHUP to the group killed the resource
    tracker, which then never removed the run's semaphores from /dev/shm. An ignored signal stays
    ignored across exec, and the forkserver's children (the workers) inherit that too; the
    controller stops them itself.
    """
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver, resource_tracker

        with stop_signals_ignored():
            resource_tracker.ensure_running()
            forkserver.ensure_running()

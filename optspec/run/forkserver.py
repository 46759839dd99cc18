"""Where worker processes come from: a forkserver started first thing in a run.

This module imports nothing heavy on purpose: the run starts the forkserver before it reads
the spec or imports optuna, so the forkserver's own imports (optuna, the worker module) run on
the other core while the controller does the same, instead of after it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context

# The built-in objective kinds' modules, not optspec.builtin.objectives: that plugin resolves
# them through the optspec facade only when a worker calls register_objectives.
PRELOAD = [
    "optspec.run.worker",
    "optspec.objectives.python",
    "optspec.objectives.command",
    "optuna",
]


def worker_context() -> multiprocessing.context.ForkServerContext:
    """Where workers come from: a forkserver that has imported optuna and optspec already.

    Never plain ``fork``: a forked JournalStorage keeps its parent's worker id. The forkserver
    is a fresh interpreter, so its forks are clean; :func:`start_worker_server` starts it early,
    so its imports overlap with the controller's own setup and every worker, respawns
    included, starts in milliseconds instead of importing optuna again.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_worker_server() -> None:
    """Start the forkserver now (it imports in the background); idempotent."""
    from multiprocessing import forkserver

    worker_context()
    forkserver.ensure_running()

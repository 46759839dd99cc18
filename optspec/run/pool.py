"""The worker processes of one invocation: started from the forkserver
(:mod:`optspec.run.forkserver`), replaced, stopped."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from optspec.run.worker import WorkerSetup, run_worker
from optspec.util import flush_or_silence

if TYPE_CHECKING:
    from optspec.run.forkserver import WorkerContext

KILL_AFTER = 3.0
"""Seconds between SIGTERM and SIGKILL for a worker that must stop."""


class WorkerProcess:
    """One worker process, and why the controller stopped it if it did."""

    def __init__(self, index: int, generation: int, process: multiprocessing.process.BaseProcess):
        self.index = index
        self.generation = generation
        self.process = process
        self.stop_reason: str | None = None
        # Stopped because the run stopped (resume retries its trial), not for overrunning
        # trial_timeout (a retry would overrun again).
        self.interrupted = False
        self.kill_at: float | None = None

    def exit_reason(self, code: int) -> str:
        """Why the process ended, for the fail reason of the trial it left."""
        if self.stop_reason is not None:
            return self.stop_reason
        pid = self.process.pid
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"worker {self.index} (pid {pid}) died: killed by {name}"
        return f"worker {self.index} (pid {pid}) died: exit status {code}"


class Pool:
    """W worker slots, each run by one process at a time; ``setup(index, generation)`` says
    what a new process of a slot gets."""

    def __init__(
        self,
        context: WorkerContext,
        size: int,
        setup: Callable[[int, int], WorkerSetup],
    ) -> None:
        self.context = context
        self.size = size
        self.setup = setup
        self.workers: list[WorkerProcess] = []
        self.terminating = False
        """Set once the run stops: no replacement for the workers that exit from then on."""

    def fill(self) -> None:
        """A process for every slot that has none."""
        alive = {worker.index for worker in self.workers if worker.process.is_alive()}
        for index in range(self.size):
            if index not in alive:
                self.start(index)

    def start(self, index: int) -> None:
        generation = sum(1 for worker in self.workers if worker.index == index)
        process = self.context.Process(
            target=run_worker,
            args=(self.setup(index, generation),),
            name=f"optspec-worker-{index}",
            daemon=True,
        )
        # multiprocessing flushes stdout and stderr before it starts a process, and lets a
        # closed pipe's error through: that must not stop the study.
        for stream in (sys.stdout, sys.stderr):
            flush_or_silence(stream)
        process.start()
        self.workers.append(WorkerProcess(index, generation, process))

    def alive(self) -> list[WorkerProcess]:
        return [worker for worker in self.workers if worker.process.exitcode is None]

    def exited(self) -> list[tuple[WorkerProcess, int]]:
        """The processes that ended since the last call, with their exit status."""
        ended = []
        for worker in list(self.workers):
            code = worker.process.exitcode
            if code is None:
                continue
            self.workers.remove(worker)
            worker.process.join()
            ended.append((worker, code))
        return ended

    def terminate(self, worker: WorkerProcess, reason: str, *, interrupted: bool = False) -> None:
        """SIGTERM now, SIGKILL after :data:`KILL_AFTER` (see :meth:`enforce_kills`)."""
        if worker.stop_reason is None:
            worker.stop_reason = reason
            worker.interrupted = interrupted
            worker.kill_at = time.monotonic() + KILL_AFTER
            worker.process.terminate()

    def enforce_kills(self, now: float) -> None:
        for worker in self.alive():
            if worker.kill_at is not None and now >= worker.kill_at:
                worker.process.kill()

    def terminate_all(self, reason: str) -> None:
        """Stop every process and wait until each is gone (killed if it does not stop)."""
        self.terminating = True
        for worker in self.alive():
            self.terminate(worker, reason, interrupted=True)
        deadline = time.monotonic() + KILL_AFTER
        for worker in self.alive():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()

    def wait(self, timeout: float) -> None:
        """Until a process ends or ``timeout`` seconds pass."""
        sentinels = [worker.process.sentinel for worker in self.workers]
        multiprocessing.connection.wait(sentinels, timeout=timeout)

"""The shared journal on any POSIX system (macOS, BSD, Linux without memfd): a deleted file.

The design (records, cursor, publication) is :mod:`optspec.storage.journal`'s; this module
shares the memory and locks it, with nothing Linux-specific.

Memory
    A temporary file (in /dev/shm where it exists, else the temp directory), deleted the moment
    it is created: it has no name from then on, so nothing can leak whatever way the processes
    end; the OS frees it when the last descriptor and mapping are gone. A regular file can grow
    (POSIX shared memory objects cannot, on macOS, once sized).

Sharing
    Workers receive the descriptor from multiprocessing itself, as it starts them
    (``multiprocessing.reduction.DupFd``: passed on the command line's inherited descriptors
    with spawn, over the forkserver's socket with forkserver), instead of by ``/proc``. A
    handle unpickled in the process that made it duplicates the descriptor; elsewhere, outside
    a process start, it reopens ``/proc/<pid>/fd/<fd>`` where that exists.

Locking
    A POSIX record lock (``lockf``) on the whole file. The OS drops it when its holder dies,
    even by SIGKILL, so a killed writer never deadlocks the study, and the publication rule
    leaves nothing to repair. Not ``flock``: that lock belongs to the open file, which a
    descriptor passed between processes shares, so it would not exclude them; a record lock
    belongs to the process. For the same reason it does not exclude the threads of one process,
    so a re-entrant thread lock per (process, file), shared by every handle of the file in the
    process, is taken first; and since closing any descriptor of the file drops the process's
    record locks, a handle closes under that thread lock. Two system calls per append: the
    benchmark (benchmarks/bench_journal.py) measures what that costs against memfd.

Ordering
    The lock is a system call, a full barrier, so the rule in :mod:`optspec.storage.journal`
    (on weakly ordered CPUs readers read ``end`` under the lock) holds here too.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from typing import Any

from optspec import platform
from optspec.storage.journal import MappedJournal, check_identity, memory_error

__all__ = ["FileJournal", "unavailable"]

_SHM_DIR = "/dev/shm"
# One thread lock per (process, file): see "Locking".
_thread_locks: dict[tuple[int, int, int], Any] = {}


def unavailable() -> str | None:
    """Why this journal cannot work here, or None when it can."""
    if not platform.HAS_FCNTL:
        return "no fcntl (POSIX file locks)"
    from multiprocessing import reduction

    if not reduction.HAVE_SEND_HANDLE:
        return "multiprocessing cannot pass descriptors"
    return None


def _thread_lock(identity: tuple[int, int]) -> Any:
    return _thread_locks.setdefault((os.getpid(), *identity), threading.RLock())


class FileJournal(MappedJournal):
    """The shared journal in a deleted temporary file; see the module docstring."""

    kind = "portable"

    def _create_file(self) -> int:
        directory = _SHM_DIR if os.access(_SHM_DIR, os.W_OK | os.X_OK) else None
        fd, path = tempfile.mkstemp(prefix=f"optspec-journal-{os.getpid()}-", dir=directory)
        os.unlink(path)  # from here on nothing can be left behind
        return fd

    def _allocate(self, fd: int, offset: int, length: int) -> None:
        try:
            platform.allocate(fd, offset, length)
        except OSError as exc:
            error = memory_error(offset, length, exc)
            if error is None:
                raise
            raise error from exc

    def _attach_lock(self) -> None:
        self._thread_lock = _thread_lock(self._identity)
        self._lock_fd = self._fd

    def _detach_lock(self) -> None:
        self._lock_fd = -1

    def _lock_token(self) -> tuple[None, tuple[int, Any]]:
        fd = self._lock_fd
        if fd < 0:
            raise ValueError("journal is closed")
        return None, (fd, self._thread_lock)

    def _acquire(self, lock: tuple[int, Any]) -> None:
        fd, thread_lock = lock
        thread_lock.acquire()
        platform.lock_file(fd)

    def _release(self, lock: tuple[int, Any]) -> None:
        # A Python function, unlike memfd's unlock: a KeyboardInterrupt landing just as it
        # starts leaves this process holding the lock until it exits (then the OS drops it).
        # optspec's own processes never raise one there: workers ignore SIGINT, and the
        # controller turns signals into a flag.
        fd, thread_lock = lock
        # Only the thread that holds the thread lock may touch the process's record lock.
        if thread_lock._is_owned():
            try:
                platform.unlock_file(fd)
            finally:
                thread_lock.release()

    def close(self) -> None:
        if self._fd < 0:
            return
        with self._thread_lock:  # closing a descriptor drops this process's record lock
            super().close()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._thread_lock = _thread_lock(self._identity)  # the child's own: a new pid

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._fd < 0:
            raise ValueError("cannot pickle a closed journal")
        from multiprocessing import context, reduction

        # Starting a process: multiprocessing hands it a duplicate of the descriptor.
        passed = reduction.DupFd(self._fd) if context.get_spawning_popen() is not None else None
        return _attach_to, (os.getpid(), self._fd, *self._identity, passed)


def _attach_to(pid: int, fd: int, st_dev: int, st_ino: int, passed: Any) -> FileJournal:
    """Unpickle: open the journal behind ``passed``, or ``fd`` of process ``pid``."""
    if passed is not None:
        own_fd = passed.detach()
    elif pid == os.getpid():
        try:
            own_fd = os.dup(fd)
        except OSError:
            own_fd = -1
        if own_fd < 0:
            raise OSError(errno.ENOENT, "cannot attach to the journal: it was closed")
    elif os.path.isdir(f"/proc/{pid}/fd"):
        try:
            own_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(
                errno.ENOENT,
                f"cannot attach to the journal: process {pid} has exited or closed it",
            ) from None
    else:
        raise OSError(
            errno.EOPNOTSUPP,
            "cannot attach to the journal: on this system a handle attaches only in the process"
            " that made it or in a process it starts",
        )
    check_identity(own_fd, (st_dev, st_ino), f"process {pid}")
    journal = FileJournal.__new__(FileJournal)
    journal._attach(own_fd)  # owns own_fd from here on, closing it if attaching fails
    return journal

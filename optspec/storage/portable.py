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
    A POSIX record lock (``lockf``) on a second deleted file, which is never mapped. The OS
    drops the lock when its holder dies, even by SIGKILL, so a killed writer never deadlocks
    the study, and the publication rule leaves nothing to repair. Not ``flock``: that lock
    belongs to the open file, which a descriptor passed between processes shares, so it would
    not exclude them; a record lock belongs to the process. A file of its own, because closing
    *any* descriptor of a file drops the process's record locks on it, and every ``mmap``
    holds a duplicate descriptor that it closes when it goes: remapping the journal to grow it
    would drop the lock mid-append. A record lock does not exclude the threads of one process
    either, so a re-entrant thread lock per (process, journal), shared by every handle of the
    journal in the process, is taken first, and a handle closes under it. Two system calls per
    append: the benchmark (benchmarks/bench_journal.py) measures what that costs against memfd.

Ordering
    The lock is a system call, a full barrier, so the rule in :mod:`optspec.storage.journal`
    (on weakly ordered CPUs readers read ``end`` under the lock) holds here too.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import weakref
from typing import Any

from optspec import platform
from optspec.storage.journal import (
    DEFAULT_INITIAL_SIZE,
    MappedJournal,
    check_identity,
    memory_error,
)

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

    def __init__(self, initial_size: int = DEFAULT_INITIAL_SIZE) -> None:
        self._own_lock_file(_deleted_file("lock"))
        try:
            super().__init__(initial_size)
        except BaseException:
            self._lock_finalizer()
            raise

    def _own_lock_file(self, fd: int) -> None:
        self._lock_file = fd
        self._lock_finalizer = weakref.finalize(self, os.close, fd)

    def _create_file(self) -> int:
        return _deleted_file("data")

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
        self._lock_fd = self._lock_file

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
            self._lock_finalizer()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._thread_lock = _thread_lock(self._identity)  # the child's own: a new pid

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        if self._fd < 0:
            raise ValueError("cannot pickle a closed journal")
        from multiprocessing import context, reduction

        fds = (self._fd, self._lock_file)
        # Starting a process: multiprocessing hands it duplicates of the descriptors.
        spawning = context.get_spawning_popen() is not None
        passed = tuple(reduction.DupFd(fd) for fd in fds) if spawning else None
        return _attach_to, (os.getpid(), fds, self._identity, passed)


def _deleted_file(what: str) -> int:
    directory = _SHM_DIR if os.access(_SHM_DIR, os.W_OK | os.X_OK) else None
    fd, path = tempfile.mkstemp(prefix=f"optspec-journal-{os.getpid()}-{what}-", dir=directory)
    os.unlink(path)  # from here on nothing can be left behind
    return fd


def _attach_to(
    pid: int, fds: tuple[int, int], identity: tuple[int, int], passed: Any
) -> FileJournal:
    """Unpickle: open the journal behind ``passed``, or the ``fds`` of process ``pid``."""
    if passed is not None:
        own = [shared.detach() for shared in passed]
    else:
        own = []
        try:
            for fd in fds:
                own.append(_reopen(pid, fd))
        except BaseException:
            for fd in own:
                os.close(fd)
            raise
    data_fd, lock_fd = own
    try:
        check_identity(data_fd, identity, f"process {pid}")
    except BaseException:
        os.close(lock_fd)
        raise
    journal = FileJournal.__new__(FileJournal)
    journal._own_lock_file(lock_fd)
    journal._attach(data_fd)  # owns data_fd from here on, closing it if attaching fails
    return journal


def _reopen(pid: int, fd: int) -> int:
    """A descriptor of this process for the file that ``fd`` of process ``pid`` refers to."""
    if pid == os.getpid():
        try:
            return os.dup(fd)
        except OSError:
            raise OSError(errno.ENOENT, "cannot attach to the journal: it was closed") from None
    if os.path.isdir(f"/proc/{pid}/fd"):
        try:
            return os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise OSError(
                errno.ENOENT,
                f"cannot attach to the journal: process {pid} has exited or closed it",
            ) from None
    raise OSError(
        errno.EOPNOTSUPP,
        "cannot attach to the journal: on this system a handle attaches only in the process"
        " that made it or in a process it starts",
    )

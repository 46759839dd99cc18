"""Linux's shared journal: an anonymous memory file and a robust mutex in its header.

The design (records, cursor, publication) is :mod:`optspec.storage.journal`'s; this module
shares the memory and locks it.

Locking
    A robust, process-shared pthread mutex in the header (:mod:`optspec.storage.robust_mutex`).
    When its holder dies, even by SIGKILL, the kernel hands it to the next locker with
    "owner died" instead of leaving it held forever, as a ``multiprocessing.Lock`` would; the
    publication rule means there is nothing to repair. Taking it free costs no system call,
    where a file lock costs two per append, and it excludes threads of one process too.

Sharing, and why nothing leaks
    The memory file (``os.memfd_create``) has no name. A pickled journal is a handle
    ``(pid, fd, st_dev, st_ino)``; unpickling opens ``/proc/<pid>/fd/<fd>``, which reopens that
    same memory, and checks the inode so a reused pid or fd is refused. The memory lives exactly
    as long as some process holds a descriptor or a mapping, and the kernel closes those on any
    exit: normal, exception, Ctrl-C, crash or SIGKILL. There is nothing in ``/dev/shm`` to
    unlink and no resource tracker. Attaching needs the handle's process to be alive, which
    holds for workers that the controller starts (the controller pickles the handle).

Growth
    ``posix_fallocate`` reserves the pages before anyone touches them: touching an unbacked page
    of a memory file raises SIGBUS, a failed allocation a ``MemoryError``.
"""

from __future__ import annotations

import errno
import mmap
import os
from typing import Any

from optspec.storage import robust_mutex
from optspec.storage.journal import LOCK_OFFSET, MappedJournal, check_identity, memory_error

__all__ = ["MemfdJournal", "unavailable"]

_try_lock_mutex = robust_mutex.try_lock
_unlock_mutex = robust_mutex.unlock


def unavailable() -> str | None:
    """Why this journal cannot work here, or None when it can."""
    if not hasattr(os, "memfd_create"):
        return "no os.memfd_create"
    if not hasattr(os, "posix_fallocate"):
        return "no os.posix_fallocate"
    if not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        return "no /proc/<pid>/fd"
    return None


class MemfdJournal(MappedJournal):
    """The shared journal in a Linux memory file; see the module docstring."""

    kind = "memfd"

    def _create_file(self) -> int:
        return os.memfd_create(f"optspec-journal-{os.getpid()}", os.MFD_CLOEXEC)

    def _allocate(self, fd: int, offset: int, length: int) -> None:
        try:
            os.posix_fallocate(fd, offset, length)
        except OSError as exc:
            error = memory_error(offset, length, exc)
            if error is None:
                raise
            raise error from exc

    def _initialize_lock(self, header: mmap.mmap) -> None:
        anchor, address = robust_mutex.pin(header, LOCK_OFFSET)
        robust_mutex.initialize(address)
        del anchor

    def _attach_lock(self) -> None:
        # (anchor, address): whoever uses the address holds the anchor, which keeps the header
        # mapped; close() in another thread then cannot unmap the mutex under a waiter.
        self._pinned: tuple[Any, int] = robust_mutex.pin(self._header, LOCK_OFFSET)

    def _detach_lock(self) -> None:
        self._pinned = (None, 0)

    def _lock_token(self) -> tuple[Any, int]:
        pinned = self._pinned
        if not pinned[1]:
            raise ValueError("journal is closed")
        return pinned  # (anchor, address)

    def _acquire(self, mutex: int) -> None:
        error = _try_lock_mutex(mutex)
        if error:  # busy, or its holder died
            robust_mutex.acquire(mutex, error)

    # A C function, called with no Python frame between ``finally`` and the unlock; unlocking
    # a mutex this thread does not hold is refused, harmlessly.
    _release = staticmethod(_unlock_mutex)

    def __reduce__(self) -> tuple[Any, tuple[int, int, int, int]]:
        if self._fd < 0:
            raise ValueError("cannot pickle a closed journal")
        return _attach_to, (os.getpid(), self._fd, *self._identity)


def _attach_to(pid: int, fd: int, st_dev: int, st_ino: int) -> MemfdJournal:
    """Unpickle: open the journal that ``fd`` of process ``pid`` refers to."""
    try:
        own_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            f"cannot attach to the journal: process {pid} has exited or closed it",
        ) from None
    check_identity(own_fd, (st_dev, st_ino), f"process {pid}")
    journal = MemfdJournal.__new__(MemfdJournal)
    journal._attach(own_fd)  # owns own_fd from here on, closing it if attaching fails
    return journal

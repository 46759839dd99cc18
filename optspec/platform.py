"""What optspec needs from the operating system that not every one has, with the fallback beside it.

Everything POSIX-only that optspec calls goes through here, and is chosen by capability (does the
function exist?), never by ``sys.platform``. Importing this module imports nothing POSIX-only, so
every command may use it; the run itself says clearly what is missing (see :func:`run_blockers`).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable

try:  # POSIX only
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None  # type: ignore[assignment]

__all__ = [
    "HAS_FCNTL",
    "allocate",
    "lock_file",
    "register_at_fork",
    "unlock_file",
    "worker_context",
    "worker_start_method",
]

HAS_FCNTL = _fcntl is not None


def register_at_fork(*, after_in_child: Callable[[], None]) -> None:
    """``os.register_at_fork``; where processes cannot fork there is nothing to do after one."""
    register = getattr(os, "register_at_fork", None)
    if register is not None:
        register(after_in_child=after_in_child)


def allocate(fd: int, offset: int, length: int) -> None:
    """Reserve ``length`` bytes of the file ``fd`` from ``offset``, so that touching them later
    cannot fail (a SIGBUS on a mapped page); raises OSError (ENOSPC, ENOMEM) when it cannot.

    ``posix_fallocate`` where it exists (Linux, BSD); elsewhere (macOS) the file is extended
    and the new range written with zeros, which makes the file system allocate it.
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is not None:
        fallocate(fd, offset, length)
        return
    os.ftruncate(fd, offset + length)
    chunk = b"\0" * min(length, 1 << 20)
    done = 0
    while done < length:
        done += os.pwrite(fd, chunk[: length - done], offset + done)


def lock_file(fd: int) -> None:
    """Wait for the POSIX record lock on the whole file ``fd``; it belongs to this process and
    the OS drops it when the process dies. Raises OSError where there are no such locks."""
    if _fcntl is None:
        raise OSError("file locks need fcntl (POSIX)")
    _fcntl.lockf(fd, _fcntl.LOCK_EX)


def unlock_file(fd: int) -> None:
    """Release :func:`lock_file`'s lock (harmless when this process does not hold it)."""
    if _fcntl is not None:
        _fcntl.lockf(fd, _fcntl.LOCK_UN)


def flock(fd: int, exclusive: bool = True, blocking: bool = True) -> None:
    """``flock`` on ``fd`` (a lock of the open file, dropped when its last descriptor closes).

    Raises BlockingIOError when ``blocking`` is false and someone else holds it, and OSError
    where there is no flock (Windows).
    """
    if _fcntl is None:
        raise OSError("flock needs fcntl (POSIX)")
    operation = _fcntl.LOCK_EX if exclusive else _fcntl.LOCK_SH
    _fcntl.flock(fd, operation if blocking else operation | _fcntl.LOCK_NB)


def funlock(fd: int) -> None:
    if _fcntl is not None:
        _fcntl.flock(fd, _fcntl.LOCK_UN)


START_METHOD_VARIABLE = "OPTSPEC_START_METHOD"


def worker_start_method() -> str:
    """How worker processes start: ``forkserver`` where it exists (POSIX with fork and descriptor
    passing), else ``spawn``. ``OPTSPEC_START_METHOD=spawn`` forces spawn (tests use it)."""
    if os.environ.get(START_METHOD_VARIABLE, "").strip().lower() == "spawn":
        return "spawn"
    if hasattr(os, "fork") and "forkserver" in multiprocessing.get_all_start_methods():
        from multiprocessing import reduction

        if reduction.HAVE_SEND_HANDLE:
            return "forkserver"
    return "spawn"


def worker_context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(worker_start_method())

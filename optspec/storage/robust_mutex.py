"""A lock in shared memory that the kernel releases when its holder dies.

This is a POSIX mutex made ``PTHREAD_PROCESS_SHARED`` (it lives in memory every process maps)
and ``PTHREAD_MUTEX_ROBUST``: when a thread dies holding it, even by SIGKILL, the kernel marks
it "owner died" and the next locker gets it with ``EOWNERDEAD`` instead of waiting forever.
A ``multiprocessing.Lock`` has no such rescue, and ``fcntl.flock`` costs two system calls per
use where this costs none unless processes collide.

It is called through :mod:`ctypes`. A thread that has to wait for the mutex releases the GIL,
so it does not stop the other threads of its process. The mutex belongs to a thread,
so it excludes the threads of one process from each other as well. It is not re-entrant.

The journal's append path calls :data:`try_lock` and :data:`unlock` directly, without a
Python frame in between, and :func:`acquire` only when the mutex was not free.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

__all__ = ["SIZE", "acquire", "initialize", "pin", "try_lock", "unlock"]

# Room for a pthread_mutex_t: 40 bytes on x86-64 glibc, 48 on aarch64.
SIZE = 64
_ATTR_SIZE = 64  # pthread_mutexattr_t is 4 or 8 bytes; generous room costs nothing
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1

# Two views of the C library: calls through CDLL release the GIL, calls through PyDLL keep
# it. Keeping it is cheaper, and right for anything that cannot block for long.
try:
    _libc = ctypes.CDLL(None)
    _libc_holding_gil = ctypes.PyDLL(None)
except (OSError, TypeError) as exc:  # Windows: no C library to load by the name None
    raise ImportError(f"no C library with pthreads ({exc})") from None


def _function(library: ctypes.CDLL, name: str) -> Any:
    function = getattr(library, name)
    function.argtypes = [ctypes.c_void_p]
    function.restype = ctypes.c_int
    return function


try:
    #: ``try_lock(address) -> int``: 0 once held, else an errno; hand that to :func:`acquire`.
    try_lock = _function(_libc_holding_gil, "pthread_mutex_trylock")
    #: ``unlock(address) -> int``
    unlock = _function(_libc_holding_gil, "pthread_mutex_unlock")
    # Waiting must release the GIL: the holder may be another thread of this process.
    _lock = _function(_libc, "pthread_mutex_lock")
    _consistent = _function(_libc_holding_gil, "pthread_mutex_consistent")
    _libc.pthread_mutexattr_setrobust  # noqa: B018 - missing on macOS: no robust mutexes there
except AttributeError as exc:  # the C library has no robust mutexes (macOS, musl before 1.1)
    raise ImportError(f"the C library has no robust process-shared mutexes ({exc})") from None


def pin(buffer: Any, offset: int) -> tuple[ctypes.c_char, int]:
    """The address of ``buffer[offset]``, and an object that keeps ``buffer`` from closing.

    Hold on to the first item for as long as the address is used: while it lives, an
    ``mmap`` refuses to close, so the address can never point at unmapped memory.
    """
    anchor = ctypes.c_char.from_buffer(buffer, offset)
    return anchor, ctypes.addressof(anchor)


def initialize(address: int) -> None:
    """Make the ``SIZE`` bytes at ``address`` an unlocked process-shared robust mutex.

    Call it once, before any process can see the memory.
    """
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    calls = (
        (_libc.pthread_mutexattr_init, (attr,)),
        (_libc.pthread_mutexattr_setpshared, (attr, _PTHREAD_PROCESS_SHARED)),
        (_libc.pthread_mutexattr_setrobust, (attr, _PTHREAD_MUTEX_ROBUST)),
        (_libc.pthread_mutex_init, (ctypes.c_void_p(address), attr)),
    )
    try:
        for function, args in calls:
            _check(function(*args))
    finally:
        _libc.pthread_mutexattr_destroy(attr)


def acquire(address: int, error: int) -> None:
    """Finish taking the mutex after :data:`try_lock` returned ``error``; it is held afterwards.

    ``EBUSY``: someone holds it, so wait. ``EOWNERDEAD``: the previous holder died holding
    it; this thread now holds it and, the data it guards being sound by construction, marks
    it consistent again. Any other error is raised.

    Call it inside the ``try`` whose ``finally`` unlocks: an exception from a signal handler
    can surface whenever a call returns, and the unlock must run whether or not the mutex
    was taken (unlocking a mutex this thread does not hold is refused, harmlessly).
    """
    if error == errno.EBUSY:
        try:
            error = _lock(address)
        except BaseException:
            # Raised as the wait returned: the mutex is ours, perhaps from a dead holder.
            # Unlocking it unmarked would make it unusable for good, so mark it first (a
            # no-op that fails harmlessly when it is consistent already).
            _consistent(address)
            raise
    if error == errno.EOWNERDEAD:
        error = _consistent(address)
    _check(error)


def _check(error: int) -> None:
    if error:
        raise OSError(error, os.strerror(error))

"""What optspec needs from the operating system that not every one has, with the fallback beside it.

Everything POSIX-only that optspec calls goes through here, and is chosen by capability (does the
function exist?), never by ``sys.platform``. Importing this module imports nothing POSIX-only, so
every command may use it; the run itself says clearly what is missing (see :func:`run_blockers`).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from typing import Any

try:  # POSIX only
    import fcntl as _fcntl
except ImportError:  # Windows
    _fcntl = None  # type: ignore[assignment]

__all__ = [
    "HAS_FCNTL",
    "HAS_PROCESS_GROUPS",
    "allocate",
    "end_process_tree",
    "leader_exited",
    "lock_directory",
    "lock_file",
    "new_process_group",
    "process_exists",
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


def lock_directory(path: str | os.PathLike[str]) -> Callable[[], None]:
    """Hold an exclusive lock on the directory ``path`` until the returned function is called.

    Raises BlockingIOError when another process holds it. ``flock`` on the directory itself,
    so no lock file is left behind and the OS drops the lock when its holder dies. Where
    directories cannot be locked (Windows) nothing is locked: the returned function does
    nothing, and two processes are not kept from resuming the same study at once.
    """
    if _fcntl is None or not hasattr(os, "O_DIRECTORY"):
        return lambda: None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return lambda: os.close(fd)


# -- processes ------------------------------------------------------------------------------------


def process_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists. POSIX probes it with signal 0; elsewhere (on Windows
    ``os.kill`` would end it) the answer is yes: callers use it to clean up after dead
    processes, and keeping a leftover is better than touching a live process's files."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, but belongs to someone else
        return True
    return True


HAS_PROCESS_GROUPS = hasattr(os, "killpg")


def new_process_group() -> dict[str, Any]:
    """``subprocess.Popen`` keyword arguments that start a command in a group of its own, so
    that it and every process it starts can be ended together (:func:`end_process_tree`)."""
    if HAS_PROCESS_GROUPS:
        return {"start_new_session": True}
    flag = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)  # Windows
    return {"creationflags": flag} if flag else {}


def leader_exited(process: subprocess.Popen) -> bool:
    """Whether the process exited, without reaping it where the OS allows (``waitid``).

    Unreaped, its zombie keeps the process group id reserved, so signalling what is left of the
    group afterwards cannot hit an unrelated process that got the id.
    """
    if process.returncode is not None:
        return True
    if hasattr(os, "waitid"):
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, process.pid, flags) is not None
    return process.poll() is not None


def end_process_tree(process: subprocess.Popen, *, force: bool) -> None:
    """Ask (``force=False``: SIGTERM) or make (``force=True``: SIGKILL) the process started with
    :func:`new_process_group` and everything it started end.

    POSIX: the signal goes to its process group. Windows: ``taskkill /T`` ends the tree (with
    ``/F`` when forced). Elsewhere, or when taskkill is missing, only the process itself.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        if HAS_PROCESS_GROUPS:
            os.killpg(process.pid, getattr(signal, "SIGKILL" if force else "SIGTERM"))
            return
        taskkill = shutil.which("taskkill")
        if taskkill is not None:
            argv = [taskkill, "/T", "/PID", str(process.pid)] + (["/F"] if force else [])
            subprocess.run(argv, capture_output=True, check=False)
            return
        if process.returncode is None:
            process.kill() if force else process.terminate()


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


CONTROLLER_NICENESS = 10
"""How much the controller lowers its own priority once its workers run (see below)."""


def yield_cpu_to_workers() -> None:
    """Give this process (a controller whose workers run) a lower CPU priority than theirs.

    The controller only watches and reports, a few microseconds per trial, but with as many
    workers as cores it takes CPU from them: 8% of two workers' time on two cores (50k trials,
    span 6.15 -> 5.65 s). Workers from the forkserver started before this, so they keep their
    priority. Spawned workers (Windows, ``OPTSPEC_START_METHOD=spawn``) would inherit a lower
    one when restarted, so there this does nothing; nor where ``os.nice`` is missing.
    """
    if worker_start_method() != "forkserver" or not hasattr(os, "nice"):
        return
    with contextlib.suppress(OSError):
        os.nice(CONTROLLER_NICENESS)


def worker_context() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context(worker_start_method())

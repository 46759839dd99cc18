"""One lock per output directory, held by `run` and `resume` for their whole invocation.

Two runs into one directory both printed "saved" and study.db held only the second; a `resume` of
a live run's checkpoint was overwritten by the run's final dump. The lock is
:func:`optspec.platform.lock_directory` (flock on the directory: no lock file, released by the OS
when its holder dies); the second invocation exits 2 with the holder's pid, read from
``/proc/locks`` where the system has it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from optspec.errors import UsageError


@contextlib.contextmanager
def output_locked(directory: Path, what: str) -> Iterator[None]:
    """Hold the lock of ``directory`` (made if missing, removed again if still empty at the end).

    :param what: what the caller could do instead, for the message of a second invocation.
    :raises UsageError: another process holds it.
    """
    from optspec import platform

    made = not directory.exists()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {directory}: {exc.strerror}") from None
    try:
        release = platform.lock_directory(directory)
    except BlockingIOError:
        holder = _holder_pid(directory)
        who = f"optspec process {holder}" if holder else "another optspec process"
        raise UsageError(
            f"{directory} is in use by {who} (a run, resume or checkpoint of a study there); "
            f"wait for it to finish, or {what}"
        ) from None
    try:
        yield
    finally:
        release()
        if made:
            with contextlib.suppress(OSError):  # only when nothing was written
                directory.rmdir()


def _holder_pid(directory: Path) -> int | None:
    """The pid holding a flock on ``directory``, from Linux's /proc/locks."""
    try:
        stat = directory.stat()
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device:
            with contextlib.suppress(ValueError):
                return int(fields[4])
    return None

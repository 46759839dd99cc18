"""Which shared journal this machine gets: chosen by what it can do, never by its name.

``memfd`` where Linux's memory files, ``/proc`` and robust mutexes exist; else ``portable``
where POSIX file locks and descriptor passing exist; else ``manager``, which needs nothing but
``multiprocessing``. ``OPTSPEC_JOURNAL=auto|memfd|portable|manager`` forces one (for tests,
and for users who hit a platform problem); forcing one that cannot work here is an error
that says what is missing.
"""

from __future__ import annotations

import os
from typing import Any

from optspec.errors import UsageError
from optspec.storage import manager, portable
from optspec.storage.journal import DEFAULT_INITIAL_SIZE, SharedJournal

__all__ = ["KINDS", "VARIABLE", "SharedMemoryJournalBackend", "chosen_kind", "journal_class"]

VARIABLE = "OPTSPEC_JOURNAL"
KINDS = ("memfd", "portable", "manager")


def _memfd_class() -> tuple[type[SharedJournal] | None, str | None]:
    try:
        from optspec.storage import memfd
    except ImportError as exc:  # no robust mutexes in this C library (macOS), or no C library
        return None, str(exc)
    reason = memfd.unavailable()
    return (None, reason) if reason else (memfd.MemfdJournal, None)


def unavailable(kind: str) -> str | None:
    """Why the journal ``kind`` cannot work here, or None when it can."""
    if kind == "memfd":
        return _memfd_class()[1]
    if kind == "portable":
        return portable.unavailable()
    return None


def chosen_kind() -> str:
    """The kind of journal a run gets here; raises UsageError for a bad ``OPTSPEC_JOURNAL``."""
    wanted = os.environ.get(VARIABLE, "").strip().lower() or "auto"
    if wanted == "auto":
        return next(kind for kind in KINDS if unavailable(kind) is None)
    if wanted not in KINDS:
        raise UsageError(
            f"{VARIABLE}={wanted!r} is not a journal kind: use auto, memfd, portable or manager"
        )
    reason = unavailable(wanted)
    if reason is not None:
        raise UsageError(f"{VARIABLE}={wanted} cannot work on this system: {reason}")
    return wanted


def journal_class(kind: str | None = None) -> type[SharedJournal]:
    kind = kind or chosen_kind()
    if kind == "memfd":
        memfd_class, reason = _memfd_class()
        if memfd_class is None:
            raise UsageError(f"the memfd journal cannot work on this system: {reason}")
        return memfd_class
    return portable.FileJournal if kind == "portable" else manager.ManagerJournal


class SharedMemoryJournalBackend(SharedJournal):
    """A new shared journal of the best kind this machine has (see :func:`chosen_kind`).

    ``SharedMemoryJournalBackend()`` returns a :class:`~optspec.storage.journal.SharedJournal`
    of that kind, which is also an instance of this class. Its contract: pickles to a small
    handle that unpickles attached (in this process or one started with spawn or forkserver);
    ``close()`` detaches and, in the creator, frees the memory; ``len()`` counts the logs and
    ``logs()`` iterates over them in order.
    """

    def __new__(cls, initial_size: int = DEFAULT_INITIAL_SIZE) -> Any:
        return journal_class()(initial_size)


# Every kind is a SharedMemoryJournalBackend to isinstance().
SharedMemoryJournalBackend.register(portable.FileJournal)
SharedMemoryJournalBackend.register(manager.ManagerJournal)
if (_memfd_journal := _memfd_class()[0]) is not None:
    SharedMemoryJournalBackend.register(_memfd_journal)

"""The shared journal: one design, several ways to share its memory and lock.

This module is the design every process-shared journal follows: the record format, the
read cursor, the publication rule and the contract of :class:`SharedJournal`. How the memory
is shared and locked depends on the platform; :mod:`optspec.storage.select` picks one:

``memfd`` (:mod:`optspec.storage.memfd`)
    Linux: an anonymous memory file and a robust pthread mutex in its header. Fastest.
``portable`` (:mod:`optspec.storage.portable`)
    Any POSIX (macOS, BSD): an already-unlinked temporary file, handed to workers as a
    descriptor, with a POSIX record lock on it. The OS drops the lock when its holder dies.
``manager`` (:mod:`optspec.storage.manager`)
    Anywhere (Windows): a list held by a multiprocessing manager process. Slow, correct.

Contract (:class:`SharedJournal`)
    An Optuna ``BaseJournalBackend`` with one global log order for all processes, in which a
    process reads its own append back. It pickles to a small handle that unpickles attached
    to the same journal (in this process, or one started with ``spawn`` or ``forkserver``);
    ``close()`` detaches (in the creator it also frees the memory once others have detached or
    exited); ``len()`` counts the logs and ``logs()`` iterates over all of them in order. A
    writer killed mid-append leaves nothing visible and no lock held. Nothing outlives the
    processes using it: no name in /dev/shm or the temp directory, whatever way they end.

Memory of a mapped journal (:class:`MappedJournal`: memfd and portable)
    One file, mapped by every process::

        0       8           16        64              128         PAGESIZE
        | magic | end (u64) | unused  | lock area     | unused ... |
        PAGESIZE
        | len (u32) | marshal(log) | len | marshal(log) | ...

    ``end`` is the byte offset just past the last *published* record. Everything a reader
    may see lies below it; bytes above it are free space or a dead writer's leftovers.

Publishing
    ``append_logs`` takes the lock, writes its records at ``end``, and only then stores the
    new ``end`` with one aligned 8-byte store. A reader therefore sees a batch entirely or
    not at all, and a writer killed half-way leaves nothing visible: the next writer starts
    at the same ``end`` and overwrites the garbage. One lock over the whole append gives one
    global log order, and because ``end`` is shared memory a process sees its own append as
    soon as the call returns.

Ordering on weakly ordered CPUs (ARM, POWER)
    A reader's first look at ``end`` takes no lock: it only decides whether anything is new,
    and a stale answer is merely "not yet". When ``end`` has moved, the reader must also see
    the record bytes below it. On x86 (total store order) a store never overtakes an earlier
    one, so the value read is enough. Everywhere else the reader reads ``end`` again *under
    the writers' lock* (:meth:`MappedJournal._published_end`): the writer's unlock is a
    release and the reader's lock an acquire (a pthread mutex, or the kernel's own barriers
    around a record lock), so every record store before the writer's unlock happens-before
    the reader's loads. Correct by construction, not by the CPU being kind; the price is one
    lock per read that finds something new, never for the read that finds nothing. Records
    below ``end`` never change, so they are decoded outside the lock.

Reading
    Each process keeps a cursor: how many logs it has indexed and the byte offset after
    them, plus an array of every record's offset. ``read_logs(n)`` with nothing new compares
    the cursor to ``end``: one memory read, no lock, no syscall. New records are decoded once
    and indexed, so reading again from an earlier log number starts at the right byte. A
    ``threading.Lock`` guards the cursor; appends never take it.

Reading back one's own appends
    JournalStorage reads back every log right after appending it. So ``append_logs`` keeps
    the copy of a single log that it encoded (op codes and states already plain ints, as
    any reader decodes them), and the process's next read hands that copy back instead of
    decoding the record, when every value in it is immutable (str, int, float, bool or
    None) or a list of such values, which it copies: trial creation, params, intermediate
    values and results, nearly all of a study's logs. Logs holding dicts (attributes, trials
    made from a template), other processes, and reads from an earlier log number get copies
    decoded from memory.

Growth
    The writer that needs room extends the file (doubling) and maps it again; readers map
    again when ``end`` passes their mapping. Allocating before touching the pages turns "out
    of memory" into a ``MemoryError`` instead of a SIGBUS where the OS can allocate up front.

Encoding
    ``marshal`` format 2: about 5x faster than JSON for these small dicts, and logs hold only
    JSON-compatible values. (Format 2 has no back-references, which these flat dicts never
    use; skipping their bookkeeping makes each append cheaper.) Values marshal refuses
    (Optuna's ``IntEnum`` op codes and states) are written as JSON would write them. Unlike a
    JSON journal, tuples and non-string dict keys read back as they were written (as from
    Optuna's in-memory storage). Every kind of journal stores the same records.

Forking
    Not how optspec starts workers, but harmless: the lock lives in shared memory or belongs
    to a process, so a forked child and its parent exclude each other; an at-fork hook gives
    the child a fresh cursor lock, since another thread may have held the parent's at the fork.
"""

from __future__ import annotations

import contextlib
import errno
import json
import marshal
import mmap
import os
import platform
import struct
import threading
import weakref
from array import array
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import Any, ClassVar

from optuna.storages.journal import BaseJournalBackend

from optspec import platform as optspec_platform

__all__ = ["InProcessJournalBackend", "MappedJournal", "SharedJournal"]

MAGIC = b"optspecJ"
# Seen as uint64s, the header holds the published end offset at index 1; the hot paths write
# that index as a literal, since a global lookup shows in their profiles.
LOCK_OFFSET = 64  # a cache line of its own, away from ``end`` which readers poll
HEADER_SIZE = mmap.PAGESIZE
DEFAULT_INITIAL_SIZE = 1 << 20
_LENGTH = struct.Struct("<I")
_pack_length = _LENGTH.pack
_unpack_length = _LENGTH.unpack_from
_dumps = marshal.dumps
_loads = marshal.loads
_MARSHAL_VERSION = 2
# x86 never lets a store overtake an earlier one, so a reader that sees a new ``end`` sees the
# records below it. Other CPUs (ARM) may, so there a reader reads ``end`` under the lock.
# platform.machine(), not os.uname(): it exists on Windows too.
STORES_IN_ORDER = platform.machine().lower() in ("x86_64", "amd64", "i686", "i386", "x86")
# Types whose values cannot change once appended: a log holding only these may be handed
# back to the process that appended it without decoding (see "Reading back one's own appends").
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
_NOTHING: Sequence[dict[str, Any]] = ()


class SharedJournal(BaseJournalBackend):
    """The contract every shared journal keeps; see the module docstring.

    Create one with ``optspec.SharedMemoryJournalBackend()``, which picks the kind.
    """

    #: The name ``OPTSPEC_JOURNAL`` gives this kind of journal.
    kind: ClassVar[str] = ""

    def __init__(self, initial_size: int = DEFAULT_INITIAL_SIZE) -> None:
        """A new journal; ``initial_size`` is a hint for the memory reserved up front."""
        raise NotImplementedError

    def read_logs(self, log_number_from: int) -> Sequence[dict[str, Any]]:
        raise NotImplementedError

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def logs(self) -> Iterator[dict[str, Any]]:
        """Every log in order, as published when the iteration starts."""
        raise NotImplementedError

    def close(self) -> None:
        """Detach this process; the memory is freed when the last process has detached."""
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class MappedJournal(SharedJournal):
    """The journal in one file mapped by every process; subclasses share and lock it.

    A subclass provides the file (``_create_file``), the lock (``_lock_token``, ``_acquire``,
    ``_release``), how the file grows (``_allocate``) and the pickled handle (``__reduce__``);
    it calls :meth:`_attach` with its descriptor, the header already written.
    """

    def __init__(self, initial_size: int = DEFAULT_INITIAL_SIZE) -> None:
        fd = self._create_file()
        try:
            self._allocate(fd, 0, max(page_round(initial_size), 2 * HEADER_SIZE))
            with mmap.mmap(fd, HEADER_SIZE) as header:
                self._initialize_lock(header)
                # The magic goes last: a header without it is never attached to.
                header[:16] = MAGIC + HEADER_SIZE.to_bytes(8, "little")  # magic, end
        except BaseException:
            os.close(fd)
            raise
        self._attach(fd)

    # -- what a subclass provides ---------------------------------------------------------------

    def _create_file(self) -> int:
        raise NotImplementedError

    def _allocate(self, fd: int, offset: int, length: int) -> None:
        raise NotImplementedError

    def _initialize_lock(self, header: mmap.mmap) -> None:
        """Prepare the lock area of a new journal's header (before anyone can see it)."""

    def _attach_lock(self) -> None:
        """Set up this process's side of the lock, once ``_header`` is mapped."""

    def _lock_token(self) -> tuple[Any, Any]:
        """``(keep, lock)``: ``lock`` is what ``_acquire`` and ``_release`` take, and ``keep``
        keeps alive what it refers to (the caller holds it while it uses the lock), even if
        another thread closes the journal meanwhile. Raises ValueError once it is closed.

        Taken before the ``try`` that releases.
        """
        raise NotImplementedError

    def _acquire(self, lock: Any) -> None:
        raise NotImplementedError

    def _release(self, lock: Any) -> None:
        """Release the lock; harmless when this thread does not hold it.

        It runs in ``finally`` also when a signal's exception came before the lock was
        taken: leaking the lock would hang every process, so releasing must never fail. Best
        a C function: Python runs signal handlers as a Python function starts, so one could
        raise before its first line.
        """
        raise NotImplementedError

    def _detach_lock(self) -> None:
        """Called by close(): appends from here on must find the journal closed."""

    # -- attaching --------------------------------------------------------------------------------

    def _attach(self, fd: int) -> None:
        """Map the journal that ``fd`` (now owned by this object) refers to."""
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        stat = os.fstat(fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._header = mmap.mmap(fd, HEADER_SIZE)
        if self._header[: len(MAGIC)] != MAGIC:
            self._header.close()
            self._finalizer()
            raise OSError(errno.EINVAL, "not an optspec journal")
        self._end: Any = memoryview(self._header).cast("Q")
        self._data = mmap.mmap(fd, stat.st_size)
        self._lock = threading.Lock()  # guards the cursor
        # Cursor: logs indexed so far, the byte after them, and where each one starts.
        self._count = 0
        self._offset = HEADER_SIZE
        self._index = array("Q")
        # This process's latest single-log append, (start, stop, log), until read back.
        self._own: tuple[int, int, dict[str, Any]] | None = None
        self._attach_lock()
        _open_journals.add(self)

    # -- BaseJournalBackend ------------------------------------------------------------------

    def read_logs(self, log_number_from: int) -> Sequence[dict[str, Any]]:
        # The hot path: JournalStorage calls this before nearly every operation. Under the GIL
        # the check is atomic: nothing in it can switch threads.
        if log_number_from == self._count and self._end[1] == self._offset:
            return _NOTHING
        with self._lock:
            own, self._own = self._own, None  # before ``end``: its record is below that end
            end = self._end[1] if STORES_IN_ORDER else self._published_end()
            if log_number_from != self._count:
                return self._reread(log_number_from, end)
            if own is None or own[0] < self._offset:  # none, or already read from memory
                return self._catch_up(end)
            start, stop, log = own
            # Others may have published before our log and after it; those are decoded.
            logs = self._catch_up(start) if start > self._offset else []
            self._count += 1  # count, then offset, as everywhere: see _move_cursor
            self._offset = stop
            self._index.append(start)
            logs.append(log)
            if end > stop:
                logs += self._catch_up(end)
            return logs

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if len(logs) == 1:
            log = logs[0].copy()  # ours from here: the caller may change theirs
            record = encode(log)
            own = log if _IMMUTABLE.issuperset(map(type, log.values())) else _frozen(log)
        else:
            record = b"".join([encode(log.copy()) for log in logs])
            own = None
        _keep, lock = self._lock_token()
        try:
            self._acquire(lock)  # a dead holder's unpublished bytes are dead: see Publishing
            end = self._end[1]
            stop = end + len(record)
            data = self._data
            if stop > len(data):
                data = self._grow(stop)
            data[end:stop] = record
            self._end[1] = stop  # publish: the batch becomes visible here
        finally:
            self._release(lock)
        if own is not None:
            self._own = (end, stop, own)

    # -- the rest of the public API -----------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._index_to_end(self._published_end())
            return self._count

    def logs(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            end = self._published_end()
            data = self._map_at_least(end)
        # Decoded lazily: a dump of a large study need not hold every log twice.
        return decode_records(data, HEADER_SIZE, end)

    def close(self) -> None:
        if self._fd < 0:
            return
        _open_journals.discard(self)
        self._detach_lock()
        self._own = None
        self._end.release()
        self._end = _Closed()
        # An append in another thread may hold a view of the header (the lock's token): the
        # header is then unmapped when that thread lets go of it, not under its feet.
        with contextlib.suppress(BufferError):
            self._header.close()
        self._data.close()
        self._fd = -1
        self._finalizer()

    def __repr__(self) -> str:
        state = "closed" if self._fd < 0 else f"end={self._end[1]}"
        return f"<{type(self).__name__} pid={os.getpid()} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _catch_up(self, until: int) -> list[dict[str, Any]]:
        """Decode and index the records from the cursor to ``until``; the caller holds _lock.

        One pass that indexes and decodes together: this runs after nearly every append by
        another process. ``until`` is the published end, or the start of one of its records.
        """
        data = self._map_at_least(until)
        index = self._index
        pos = self._offset
        logs = []
        try:
            while pos < until:
                index.append(pos)
                start = pos + 4
                pos = start + _unpack_length(data, pos)[0]
                logs.append(_loads(data[start:pos]))
        except BaseException:  # Ctrl-C, say: forget the half-indexed records
            del index[self._count :]
            raise
        self._move_cursor(pos, until)
        return logs

    def _reread(self, log_number_from: int, end: int) -> list[dict[str, Any]]:
        """Logs from an earlier (or later) number than the cursor; the caller holds _lock.

        Records before ``log_number_from`` are indexed but not decoded: a worker that starts
        from a snapshot of a large study reads only what came after it.
        """
        self._index_to_end(end)
        if log_number_from >= self._count:
            return []
        return list(decode_records(self._data, self._index[log_number_from], self._offset))

    def _index_to_end(self, end: int) -> None:
        """Move the cursor to ``end``, noting record offsets but decoding nothing."""
        data = self._map_at_least(end)
        index = self._index
        pos = self._offset
        try:
            while pos < end:
                index.append(pos)
                pos += 4 + _unpack_length(data, pos)[0]
        except BaseException:  # as in _catch_up
            del index[self._count :]
            raise
        self._move_cursor(pos, end)

    def _move_cursor(self, pos: int, until: int) -> None:
        """Advance the cursor over the records indexed past it; the caller holds _lock.

        They end at ``pos``, which is ``until`` unless the journal is damaged.
        """
        index = self._index
        if pos != until:
            del index[self._count :]
            raise RuntimeError(f"journal corrupt: a record runs past offset {until}")
        count = len(index)
        # Count first, then offset, with no call between: read_logs' lock-free check reads
        # them in the other order, so it can never see a new offset with an old count.
        self._count = count
        self._offset = pos

    def _published_end(self) -> int:
        """``end``, such that this thread sees every record below it.

        On x86 reading it is enough. Elsewhere it is read under the lock: no writer is then
        half-way, and taking the lock orders this thread after the last writer's stores.
        """
        if STORES_IN_ORDER:
            return self._end[1]
        _keep, lock = self._lock_token()
        try:
            self._acquire(lock)
            return self._end[1]
        finally:
            self._release(lock)

    def _map_at_least(self, size: int) -> mmap.mmap:
        data = self._data
        if size > len(data):
            data = self._data = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        return data

    def _grow(self, needed: int) -> mmap.mmap:
        """Make the file hold ``needed`` bytes and map it; the caller holds the lock."""
        size = os.fstat(self._fd).st_size  # another process may have grown it already
        if size < needed:
            new_size = max(page_round(needed), 2 * size)
            self._allocate(self._fd, size, new_size - size)
            size = new_size
        # Callers use the returned map: a reader thread may replace self._data meanwhile.
        data = self._data = mmap.mmap(self._fd, size)
        return data

    def _after_fork_in_child(self) -> None:
        # Another thread may have held the cursor lock when this process forked.
        self._lock = threading.Lock()


class _Closed:
    """Stands in for the header after close, so the lock-free read path needs no check."""

    def __getitem__(self, index: int) -> int:
        raise ValueError("journal is closed")


def check_identity(fd: int, identity: tuple[int, int], source: str) -> None:
    """Close ``fd`` and raise unless it is the journal file ``identity`` (st_dev, st_ino) names."""
    stat = os.fstat(fd)
    if (stat.st_dev, stat.st_ino) != identity:
        os.close(fd)
        raise OSError(errno.ESTALE, f"cannot attach to the journal: {source} no longer has it")


# -- records -------------------------------------------------------------------------------


def encode(log: dict[str, Any]) -> bytes:
    """One log as it is stored: its length, then its marshal encoding.

    ``log`` must be a copy the caller owns: its IntEnums are replaced by their ints. marshal
    refuses int subclasses, and JournalStorage writes IntEnums under these keys: op_code in
    every log, state once per trial. Writing their ints up front, as JSON would, is far
    cheaper than letting marshal fail first, and leaves the copy equal to what a reader
    decodes.
    """
    op_code = log.get("op_code")
    if isinstance(op_code, IntEnum):
        log["op_code"] = op_code._value_
    state = log.get("state")
    if isinstance(state, IntEnum):
        log["state"] = state._value_
    try:
        data = _dumps(log, _MARSHAL_VERSION)
    except ValueError:  # another value that JSON writes but marshal refuses: write it as JSON
        data = _dumps(json.loads(json.dumps(log)), _MARSHAL_VERSION)
    return _pack_length(len(data)) + data


def _frozen(log: dict[str, Any]) -> dict[str, Any] | None:
    """``log``, once its lists of immutable values are copies of its own; None if it has others.

    Trial values arrive as such a list, once per trial; the caller may change its list later.
    """
    for key, value in log.items():
        if type(value) not in _IMMUTABLE:
            if type(value) is not list or not _IMMUTABLE.issuperset(map(type, value)):
                return None
            log[key] = value.copy()  # replaces a value, so the iteration goes on unharmed
    return log


def decode_records(data: Any, pos: int, end: int) -> Iterator[dict[str, Any]]:
    """The logs of the records in ``data[pos:end]``, in order."""
    while pos < end:
        start = pos + 4
        pos = start + _unpack_length(data, pos)[0]
        yield _loads(data[start:pos])


def decode_record(record: bytes) -> dict[str, Any]:
    """The log of one record as :func:`encode` made it."""
    return _loads(memoryview(record)[4:])


def page_round(size: int) -> int:
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


def memory_error(offset: int, length: int, exc: OSError) -> MemoryError | None:
    """The MemoryError for ``exc`` from growing a journal, or None if ``exc`` is another error."""
    if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
        return None
    return MemoryError(f"shared journal cannot grow to {offset + length} bytes: {exc.strerror}")


_open_journals: weakref.WeakSet[MappedJournal] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for journal in list(_open_journals):
        journal._after_fork_in_child()


optspec_platform.register_at_fork(after_in_child=_after_fork_in_child)


class InProcessJournalBackend(BaseJournalBackend):
    """A journal that is a Python list: for a study that lives in one process only.

    ``optspec show`` and ``export`` read study.db into one; it needs no shared memory and
    leaves nothing to clean up.
    """

    def __init__(self) -> None:
        self._logs: list[dict[str, Any]] = []

    def read_logs(self, log_number_from: int) -> Sequence[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._logs.extend(logs)

    def __len__(self) -> int:
        return len(self._logs)

    def logs(self) -> Iterator[dict[str, Any]]:
        return iter(self._logs)

"""A JournalStorage backend in shared memory, for worker processes on one machine.

Memory
    One anonymous memory file (``os.memfd_create``), mapped by every process::

        0       8           16        64              128         PAGESIZE
        | magic | end (u64) | unused  | mutex         | unused ... |
        PAGESIZE
        | len (u32) | marshal(log) | len | marshal(log) | ...

    ``end`` is the byte offset just past the last *published* record. Everything a reader
    may see lies below it; bytes above it are free space or a dead writer's leftovers.

Publishing
    ``append_logs`` takes the mutex, writes its records at ``end``, and only then stores the
    new ``end`` with one aligned 8-byte store. A reader therefore sees a batch entirely or
    not at all, and a writer killed half-way leaves nothing visible: the next writer starts
    at the same ``end`` and overwrites the garbage. One lock over the whole append gives one
    global log order, and because ``end`` is shared memory a process sees its own append as
    soon as the call returns. On x86 a store never overtakes an earlier one, so readers take
    no lock to observe ``end``. On other CPUs (ARM) a reader that finds ``end`` moved reads it
    again under the mutex, which orders it after the writer's record stores (untested here:
    this project's machines are x86-64).

Locking
    A robust, process-shared pthread mutex in the header (:mod:`optspec.storage.robust_mutex`).
    When its holder dies, even by SIGKILL, the kernel hands it to the next locker with
    "owner died" instead of leaving it held forever, as a ``multiprocessing.Lock`` would; the
    protocol above means there is nothing to repair. Taking it free costs no system call,
    where ``fcntl.flock`` cost two per append, and it excludes threads of one process too.

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
    The writer that needs room extends the file with ``posix_fallocate`` (doubling) and maps
    it again; readers map again when ``end`` passes their mapping. Allocating before touching
    the pages turns "out of memory" into a ``MemoryError`` instead of a SIGBUS.

Sharing, and why nothing leaks
    The memory file has no name. A pickled backend is a handle ``(pid, fd, st_dev, st_ino)``;
    unpickling opens ``/proc/<pid>/fd/<fd>``, which reopens that same memory, and checks the
    inode so a reused pid or fd is refused. The memory lives exactly as long as some process
    holds a descriptor or a mapping, and the kernel closes those on any exit: normal,
    exception, Ctrl-C, crash or SIGKILL. There is nothing in ``/dev/shm`` to unlink and no
    resource tracker. ``close()`` releases this process's share; in the creator that is the
    last reference once workers have closed or exited. Attaching needs the handle's process
    to be alive, which holds for workers that the controller starts (the controller pickles
    the handle). The price is Linux only.

Encoding
    ``marshal`` format 2: about 5x faster than JSON for these small dicts, and logs hold only
    JSON-compatible values. (Format 2 has no back-references, which these flat dicts never
    use; skipping their bookkeeping makes each append cheaper.) Values marshal refuses
    (Optuna's ``IntEnum`` op codes and states) are written as JSON would write them. Unlike a
    JSON journal, tuples and non-string dict keys read back as they were written (as from
    Optuna's in-memory storage).

Forking
    Not how optspec starts workers, but harmless: the mutex is in shared memory, so a forked
    child and its parent exclude each other; an at-fork hook gives the child a fresh cursor
    lock, since another thread may have held the parent's at the fork.
"""

from __future__ import annotations

import contextlib
import errno
import json
import marshal
import mmap
import os
import struct
import threading
import weakref
from array import array
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import Any

from optuna.storages.journal import BaseJournalBackend

from optspec.storage import robust_mutex

__all__ = ["InProcessJournalBackend", "SharedMemoryJournalBackend"]

_MAGIC = b"optspecJ"
# Seen as uint64s, the header holds the published end offset at index 1; the hot paths write
# that index as a literal, since a global lookup shows in their profiles.
_MUTEX_OFFSET = 64  # a cache line of its own, away from ``end`` which readers poll
_HEADER_SIZE = mmap.PAGESIZE
_LENGTH = struct.Struct("<I")
_pack_length = _LENGTH.pack
_unpack_length = _LENGTH.unpack_from
_dumps = marshal.dumps
_loads = marshal.loads
_MARSHAL_VERSION = 2
_try_lock_mutex = robust_mutex.try_lock
_unlock_mutex = robust_mutex.unlock
_DEFAULT_INITIAL_SIZE = 1 << 20
# x86 never lets a store overtake an earlier one, so a reader that sees a new ``end`` sees the
# records below it. Other CPUs (ARM) may, so there a reader reads ``end`` under the mutex.
_STORES_IN_ORDER = os.uname().machine in ("x86_64", "AMD64", "i686", "i386")
# Types whose values cannot change once appended: a log holding only these may be handed
# back to the process that appended it without decoding (see "Reading back one's own appends").
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})
_NOTHING: Sequence[dict[str, Any]] = ()


class SharedMemoryJournalBackend(BaseJournalBackend):
    """Optuna journal in memory shared by processes; see the module docstring.

    ``SharedMemoryJournalBackend()`` creates a journal. Pickling gives a small handle that
    unpickles attached to the same journal, in this process or in one started with ``spawn``
    or ``forkserver``. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, initial_size: int = _DEFAULT_INITIAL_SIZE) -> None:
        fd = os.memfd_create(f"optspec-journal-{os.getpid()}", os.MFD_CLOEXEC)
        try:
            _allocate(fd, 0, max(_page_round(initial_size), 2 * _HEADER_SIZE))
            with mmap.mmap(fd, _HEADER_SIZE) as header:
                anchor, address = robust_mutex.pin(header, _MUTEX_OFFSET)
                robust_mutex.initialize(address)
                del anchor
                # The magic goes last: a header without it is never attached to.
                header[:16] = _MAGIC + _HEADER_SIZE.to_bytes(8, "little")  # magic, end
        except BaseException:
            os.close(fd)
            raise
        self._attach(fd)

    def _attach(self, fd: int) -> None:
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        stat = os.fstat(fd)
        self._identity = (stat.st_dev, stat.st_ino)
        self._header = mmap.mmap(fd, _HEADER_SIZE)
        if self._header[: len(_MAGIC)] != _MAGIC:
            self._header.close()
            self._finalizer()
            raise OSError(errno.EINVAL, "not an optspec journal")
        self._end: Any = memoryview(self._header).cast("Q")
        # (anchor, address): whoever uses the address holds the anchor, which keeps the header
        # mapped; close() in another thread then cannot unmap the mutex under a waiter.
        self._pinned: tuple[Any, int] = robust_mutex.pin(self._header, _MUTEX_OFFSET)
        self._data = mmap.mmap(fd, stat.st_size)
        self._lock = threading.Lock()  # guards the cursor
        # Cursor: logs indexed so far, the byte after them, and where each one starts.
        self._count = 0
        self._offset = _HEADER_SIZE
        self._index = array("Q")
        # This process's latest single-log append, (start, stop, log), until read back.
        self._own: tuple[int, int, dict[str, Any]] | None = None
        _open_backends.add(self)

    # -- BaseJournalBackend ------------------------------------------------------------------

    def read_logs(self, log_number_from: int) -> Sequence[dict[str, Any]]:
        # The hot path: JournalStorage calls this before nearly every operation. Under the GIL
        # the check is atomic: nothing in it can switch threads.
        if log_number_from == self._count and self._end[1] == self._offset:
            return _NOTHING
        with self._lock:
            own, self._own = self._own, None  # before ``end``: its record is below that end
            end = self._end[1] if _STORES_IN_ORDER else self._published_end()
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
            record = _encode(log)
            own = log if _IMMUTABLE.issuperset(map(type, log.values())) else _frozen(log)
        else:
            record = b"".join([_encode(log.copy()) for log in logs])
            own = None
        _anchor, mutex = self._pinned  # the anchor is held, not used: see _attach
        if not mutex:
            raise ValueError("journal is closed")
        try:
            error = _try_lock_mutex(mutex)
            if error:  # busy, or its holder died: that holder's unpublished bytes are dead
                robust_mutex.acquire(mutex, error)
            end = self._end[1]
            stop = end + len(record)
            data = self._data
            if stop > len(data):
                data = self._grow(stop)
            data[end:stop] = record
            self._end[1] = stop  # publish: the batch becomes visible here
        finally:
            # Also when a signal's exception came before the mutex was ours: unlocking is
            # then refused, harmlessly, and leaking it would hang every process.
            _unlock_mutex(mutex)
        if own is not None:
            self._own = (end, stop, own)

    # -- the rest of the public API -----------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._index_to_end(self._published_end())
            return self._count

    def logs(self) -> Iterator[dict[str, Any]]:
        """Every log in order, as published when the iteration starts."""
        with self._lock:
            end = self._published_end()
            data = self._map_at_least(end)
        # Decoded lazily: a dump of a large study need not hold every log twice.
        return _decode(data, _HEADER_SIZE, end)

    def close(self) -> None:
        """Detach this process; the memory is freed when the last process has detached."""
        if self._fd < 0:
            return
        _open_backends.discard(self)
        self._pinned = (None, 0)  # appends from here on find the journal closed
        self._own = None
        self._end.release()
        self._end = _Closed()
        # An append in another thread may hold the mutex's anchor: the header is then unmapped
        # when that thread lets go of it, not under its feet.
        with contextlib.suppress(BufferError):
            self._header.close()
        self._data.close()
        self._fd = -1
        self._finalizer()

    def __enter__(self) -> SharedMemoryJournalBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[int, int, int, int]]:
        if self._fd < 0:
            raise ValueError("cannot pickle a closed journal")
        return _attach_to, (os.getpid(), self._fd, *self._identity)

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
        return list(_decode(self._data, self._index[log_number_from], self._offset))

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

        On x86 reading it is enough. Elsewhere it is read under the mutex: no writer is then
        half-way, and taking the mutex orders this thread after the last writer's stores.
        """
        if _STORES_IN_ORDER:
            return self._end[1]
        _anchor, mutex = self._pinned  # held, not used: see _attach
        if not mutex:
            raise ValueError("journal is closed")
        try:
            error = _try_lock_mutex(mutex)
            if error:
                robust_mutex.acquire(mutex, error)
            return self._end[1]
        finally:
            _unlock_mutex(mutex)

    def _map_at_least(self, size: int) -> mmap.mmap:
        data = self._data
        if size > len(data):
            data = self._data = mmap.mmap(self._fd, os.fstat(self._fd).st_size)
        return data

    def _grow(self, needed: int) -> mmap.mmap:
        """Make the file hold ``needed`` bytes and map it; the caller holds the mutex."""
        size = os.fstat(self._fd).st_size  # another process may have grown it already
        if size < needed:
            new_size = max(_page_round(needed), 2 * size)
            _allocate(self._fd, size, new_size - size)
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


def _attach_to(pid: int, fd: int, st_dev: int, st_ino: int) -> SharedMemoryJournalBackend:
    """Unpickle: open the journal that ``fd`` of process ``pid`` refers to."""
    try:
        own_fd = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(
            errno.ENOENT,
            f"cannot attach to the journal: process {pid} has exited or closed it",
        ) from None
    stat = os.fstat(own_fd)
    if (stat.st_dev, stat.st_ino) != (st_dev, st_ino):
        os.close(own_fd)
        raise OSError(errno.ESTALE, f"cannot attach to the journal: process {pid} no longer has it")
    backend = SharedMemoryJournalBackend.__new__(SharedMemoryJournalBackend)
    backend._attach(own_fd)  # owns own_fd from here on, closing it if attaching fails
    return backend


def _encode(log: dict[str, Any]) -> bytes:
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


def _decode(data: mmap.mmap, pos: int, end: int) -> Iterator[dict[str, Any]]:
    while pos < end:
        start = pos + 4
        pos = start + _unpack_length(data, pos)[0]
        yield _loads(data[start:pos])


def _allocate(fd: int, offset: int, length: int) -> None:
    # Reserve the pages now: touching an unbacked page of a memory file raises SIGBUS.
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise
        raise MemoryError(
            f"shared-memory journal cannot grow to {offset + length} bytes: {exc.strerror}"
        ) from exc


def _page_round(size: int) -> int:
    return -(-size // mmap.PAGESIZE) * mmap.PAGESIZE


_open_backends: weakref.WeakSet[SharedMemoryJournalBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_open_backends):
        backend._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


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

"""The shared journal anywhere Python runs (Windows, or where no other kind works): a manager.

The records are :mod:`optspec.storage.journal`'s; they live in a list held by a
``multiprocessing`` manager process (the design optspec started from), and every read and
append is one round trip to it. Slower than the mapped journals, and correct everywhere:

- One global order: the manager appends each batch under its own lock, in one step.
- A writer killed mid-append leaves nothing visible and no lock held: its batch is one message,
  which the manager either received whole (and appends whole) or not at all.
- Nothing leaks: the manager listens on an address with no file behind it (an abstract socket
  on Linux, a named pipe on Windows, else a loopback TCP port guarded by the manager's random
  authentication key), ignores Ctrl-C (multiprocessing's managers do), and exits when the
  journal's creator closes it or dies: it waits on a pipe whose other end only the creator
  holds, which the OS closes on any exit, SIGKILL included.
- Ordering needs no care on any CPU: every record crosses a process boundary in a message.

A pickled journal is a handle (address, key); unpickling connects to the manager.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import connection, managers, util
from typing import Any

from optspec import platform
from optspec.storage.journal import (
    DEFAULT_INITIAL_SIZE,
    SharedJournal,
    decode_record,
    encode,
)

__all__ = ["ManagerJournal"]

_CHUNK = 10_000  # logs() fetches this many records per round trip


class _Records:
    """The journal itself, in the manager process."""

    def __init__(self) -> None:
        self._records: list[bytes] = []
        self._lock = threading.Lock()

    def append(self, records: list[bytes]) -> None:
        with self._lock:
            self._records.extend(records)

    def read(self, start: int, stop: int | None = None) -> list[bytes]:
        return self._records[start:stop]

    def count(self) -> int:
        return len(self._records)


_records: _Records | None = None
_records_lock = threading.Lock()


def _the_records() -> _Records:
    """Every client gets the same list (called in the manager process)."""
    global _records
    with _records_lock:
        if _records is None:
            _records = _Records()
        return _records


class _JournalManager(managers.BaseManager):
    pass


_JournalManager.register("records", callable=_the_records)


def _exit_with_creator(creator_alive: Any) -> None:
    """Runs in the manager process: exit once the creator's end of the pipe is closed.

    On Linux the process also takes the name ``optspec-journal``, as ps and top show it.
    """
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("optspec-journal")

    def watch() -> None:
        connection.wait([creator_alive])
        os._exit(0)

    threading.Thread(target=watch, name="optspec-journal-watch", daemon=True).start()


def _address() -> Any:
    """Where the manager listens: an address with no file behind it (see the module docstring)."""
    if util.abstract_sockets_supported:
        return f"\0optspec-journal-{os.getpid()}-{secrets.token_hex(8)}"
    if getattr(connection, "default_family", None) == "AF_PIPE":
        return None  # a fresh named pipe
    return ("127.0.0.1", 0)


class ManagerJournal(SharedJournal):
    """The shared journal in a manager process; see the module docstring."""

    kind = "manager"

    def __init__(self, initial_size: int = DEFAULT_INITIAL_SIZE) -> None:
        del initial_size  # the list grows by itself
        context = platform.worker_context()
        authkey = secrets.token_bytes(32)
        manager = _JournalManager(address=_address(), authkey=authkey, ctx=context)
        creator_alive, keep_alive = context.Pipe(duplex=False)
        try:
            manager.start(_exit_with_creator, (creator_alive,))
        finally:
            creator_alive.close()
        self._manager: _JournalManager | None = manager
        self._keep_alive: Any = keep_alive
        self._connect(manager.address, authkey)

    def _connect(self, address: Any, authkey: bytes) -> None:
        client = _JournalManager(address=address, authkey=authkey)
        client.connect()
        self._address = address
        self._authkey = authkey
        self._records: Any = client.records()  # type: ignore[attr-defined]

    # -- BaseJournalBackend ------------------------------------------------------------------

    def read_logs(self, log_number_from: int) -> Sequence[dict[str, Any]]:
        return [decode_record(record) for record in self._proxy().read(log_number_from)]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        records = [encode(log.copy()) for log in logs]  # copies: encode rewrites enums
        self._proxy().append(records)

    # -- the rest of the public API -----------------------------------------------------------

    def __len__(self) -> int:
        return int(self._proxy().count())

    def logs(self) -> Iterator[dict[str, Any]]:
        records = self._proxy()
        end = records.count()

        def chunks() -> Iterator[dict[str, Any]]:
            for start in range(0, end, _CHUNK):
                for record in records.read(start, min(start + _CHUNK, end)):
                    yield decode_record(record)

        return chunks()

    def close(self) -> None:
        if self._records is None:
            return
        self._records = None
        manager, self._manager = self._manager, None
        if manager is not None:  # the creator: the memory goes with the manager
            self._keep_alive.close()
            manager.shutdown()

    def __reduce__(self) -> tuple[Any, tuple[Any, bytes]]:
        if self._records is None:
            raise ValueError("cannot pickle a closed journal")
        return _attach_to, (self._address, self._authkey)

    def __repr__(self) -> str:
        state = "closed" if self._records is None else f"at {self._address!r}"
        return f"<{type(self).__name__} pid={os.getpid()} {state}>"

    def _proxy(self) -> Any:
        records = self._records
        if records is None:
            raise ValueError("journal is closed")
        return records


def _attach_to(address: Any, authkey: bytes) -> ManagerJournal:
    """Unpickle: connect to the journal's manager."""
    journal = ManagerJournal.__new__(ManagerJournal)
    journal._manager = None
    try:
        journal._connect(address, authkey)
    except (OSError, EOFError) as exc:
        raise OSError(f"cannot attach to the journal: its manager is gone ({exc})") from None
    return journal

"""Storages that several machines reach, for ``run --storage URL`` and ``optspec worker``.

The shared-memory journal serves one machine. Beyond it, the same spec runs on Optuna's own
storages: ``RDBStorage`` for SQLAlchemy URLs (``postgresql://``, ``mysql://``, ``sqlite:///``)
and ``JournalStorage`` over ``JournalRedisBackend`` for ``redis://`` URLs. Workers receive the
URL, not a storage object, and open their own connection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from optspec.errors import UsageError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


OPEN_ATTEMPTS = 3


class _CannotOpen(UsageError):
    """The storage is there but would not open: maybe a passing race, worth another try."""


def open_storage(url: str) -> BaseStorage:
    """The Optuna storage behind ``url``; a usage error names the URL and what would work.

    Processes started together on a new database race to create Optuna's tables; the loser's
    error goes away when it tries again, so opening is retried a few times.
    """
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            return _open(url)
        except _CannotOpen:
            if attempt == OPEN_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def _open(url: str) -> BaseStorage:
    import optuna

    try:
        if url.startswith(REDIS_SCHEMES):
            from optuna.storages.journal import JournalRedisBackend

            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        return optuna.storages.RDBStorage(url)
    except ImportError as exc:
        extra = "redis" if url.startswith(REDIS_SCHEMES) else "postgres"
        raise UsageError(
            f"--storage {url}: {exc}; install the driver with: pip install 'optspec[{extra}]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and redis raise many kinds
        raise _CannotOpen(
            f"--storage {url}: cannot open it ({type(exc).__name__}: {exc}); expected a "
            "SQLAlchemy URL such as postgresql://user@host/db or sqlite:///path, or redis://host"
        ) from None

"""Storages that several machines reach, for ``run --storage URL``, ``run --serve`` and ``worker``.

The shared-memory journal serves one machine. Beyond it, the same spec runs on Optuna's own
storages: ``RDBStorage`` for SQLAlchemy URLs (``postgresql://``, ``mysql://``, ``sqlite:///``),
``JournalStorage`` over ``JournalRedisBackend`` for ``redis://`` URLs, and ``GrpcStorageProxy``
for ``grpc://HOST:PORT``, a controller's own study served by :func:`serve`. Workers receive the
URL, not a storage object, and open their own connection.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from optspec.errors import UsageError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
GRPC_SCHEME = "grpc://"

OPEN_ATTEMPTS = 3


class _CannotOpen(UsageError):
    """The storage is there but would not open: maybe a passing race, worth another try."""


class ServerGone(UsageError):
    """Nothing answers at a ``grpc://`` address: no controller serves there (any more)."""


def open_storage(
    url: str, *, heartbeat: float | None = None, wait: float | None = None
) -> BaseStorage:
    """The Optuna storage behind ``url``; a usage error names the URL and what would work.

    :param heartbeat: seconds between heartbeats of a running trial. On an RDB storage it turns
        on Optuna's own heartbeat (``heartbeat_interval``, stale after two intervals); other
        storages have none, and optspec's lease (:mod:`optspec.run.leases`) stands in.
    :param wait: seconds to wait for a ``grpc://`` server to answer (default
        :data:`GRPC_CONNECT_TIMEOUT`).

    Processes started together on a new database race to create Optuna's tables; the loser's
    error goes away when it tries again, so opening is retried a few times.
    """
    import warnings

    from optuna.exceptions import ExperimentalWarning

    for attempt in range(1, OPEN_ATTEMPTS + 1):
        try:
            # Redis, gRPC and the RDB heartbeat are marked experimental; a warning on every
            # worker's start would say nothing the README does not.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return _open(url, heartbeat, GRPC_CONNECT_TIMEOUT if wait is None else wait)
        except _CannotOpen:
            if attempt == OPEN_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def heartbeat_seconds(heartbeat: float) -> int:
    """Optuna's RDB heartbeat counts whole seconds, at least one."""
    return max(1, math.ceil(heartbeat))


def _open(url: str, heartbeat: float | None, wait: float) -> BaseStorage:
    import optuna

    try:
        if url.startswith(REDIS_SCHEMES):
            from optspec.storage.optuna_compat import RedisBackend

            return optuna.storages.JournalStorage(RedisBackend(url))
        if url.startswith(GRPC_SCHEME):
            return _open_grpc(url, wait)
        if heartbeat is None:
            return optuna.storages.RDBStorage(url)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_seconds(heartbeat), grace_period=None
        )
    except ImportError as exc:
        raise UsageError(
            f"--storage {url}: {exc}; install the driver with: pip install 'optspec[{_extra(url)}]'"
        ) from None
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy and redis raise many kinds
        raise _CannotOpen(
            f"--storage {url}: cannot open it ({type(exc).__name__}: {exc}); expected a "
            "SQLAlchemy URL such as postgresql://user@host/db or sqlite:///path, redis://host, "
            "or grpc://HOST:PORT of an `optspec run --serve`"
        ) from None


def _extra(url: str) -> str:
    if url.startswith(REDIS_SCHEMES):
        return "redis"
    return "grpc" if url.startswith(GRPC_SCHEME) else "postgres"


GRPC_CONNECT_TIMEOUT = 30.0
"""Seconds a worker waits for ``grpc://HOST:PORT`` to answer: workers may start before the
controller serves, as they may start before it creates the study on a database."""


def _open_grpc(url: str, wait: float) -> BaseStorage:
    import grpc
    from optuna.storages import GrpcStorageProxy

    host, port = parse_address(url[len(GRPC_SCHEME) :].rstrip("/"), f"--storage {url}")
    proxy = GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=wait)
    except (ConnectionError, grpc.FutureTimeoutError, grpc.RpcError):
        raise ServerGone(
            f"--storage {url}: nothing answers there after {wait:g}s; start the "
            f"controller with `optspec run SPEC --serve {host}:{port}` (an SSH tunnel works too)"
        ) from None
    return proxy


def parse_address(text: str, what: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``[HOST:]PORT`` as ``(host, port)``; a usage error names ``what`` otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = default_host
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 < int(port) <= 65535:
        raise UsageError(f"{what}: expected [HOST:]PORT with a port from 1 to 65535, got {text!r}")
    return host, int(port)


def serve(storage: BaseStorage, host: str, port: int) -> tuple[Any, int]:
    """Serve ``storage`` over Optuna's gRPC proxy at ``host:port`` (port 0: any free one).

    Returns the started server and the port it listens on.
    The proxy has no authentication: anyone who reaches the port can read and write the study.
    A busy port is a usage error, raised before anything is written.
    """
    try:
        import grpc  # noqa: F401 - only to name the extra when it is missing

        from optspec.storage.optuna_compat import make_grpc_server
    except ImportError as exc:
        raise UsageError(
            f"--serve: {exc}; install gRPC with: pip install 'optspec[grpc]'"
        ) from None
    try:
        server, bound = make_grpc_server(storage, host, port)
        server.start()
    except RuntimeError as exc:  # grpc's "Failed to bind"
        raise UsageError(f"--serve {host}:{port}: cannot listen there ({exc})") from None
    return server, bound

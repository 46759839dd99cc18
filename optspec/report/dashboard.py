"""optuna-dashboard for a finished study.db (``optspec dashboard``) or a running study
(``optspec run --dashboard``), always on 127.0.0.1.

optuna-dashboard is an optional extra (``pip install 'optspec[dashboard]'``). Without it,
``optspec dashboard`` prints one line saying how to install it and exits 2; nothing else in
optspec needs it, and it is imported only when a dashboard is asked for.

Both entry points serve ``optuna_dashboard.wsgi(storage)`` with the stdlib's wsgiref in a
threading server of our own rather than ``optuna_dashboard.run_server``, because:

* the live dashboard runs beside the study in a background thread and must stop when the run
  ends: ``run_server`` blocks and cannot be shut down from another thread;
* the server binds before we print its URL, so the URL is the real one (also for port 0) and a
  busy port is a clear error, not a traceback;
* one request per thread: the page keeps loading while a large study's trials are serialised;
* wsgiref's line per request would scroll the run's progress away, so requests are not logged.

``optspec dashboard`` opens study.db with ``RDBStorage(url, skip_compatibility_check=True,
skip_table_creation=True)``, as optuna-dashboard's own command does: no table is created and no
schema check refuses a file another Optuna wrote. Ctrl-C stops it with exit code 0: stopping is
the normal way to end a dashboard, not an interruption of work.
"""

from __future__ import annotations

import os
import socketserver
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from optspec.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from optuna.storages import BaseStorage

__all__ = ["INSTALL_HINT", "LiveDashboard", "serve_study_db", "start_live_dashboard"]

HOST = "127.0.0.1"  # never reachable from other machines: the dashboard can edit studies
INSTALL_HINT = (
    "optspec: optuna-dashboard is not installed; install it with: pip install 'optspec[dashboard]'"
)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection must not keep the process alive
    allow_reuse_address = True  # a restarted dashboard gets its port back at once


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _dashboard_app(storage: BaseStorage | str) -> Callable[..., Any]:
    """optuna-dashboard's WSGI app; ImportError when the extra is not installed."""
    import optuna_dashboard

    return optuna_dashboard.wsgi(storage)


def _bind(app: Callable[..., Any], port: int) -> _ThreadingWSGIServer:
    try:
        server = _ThreadingWSGIServer((HOST, port), _QuietHandler)
    except OSError as error:
        raise UsageError(
            f"cannot serve the dashboard on {HOST}:{port}: {error.strerror}; choose another port"
        ) from None
    server.set_app(app)
    return server


def _url(server: _ThreadingWSGIServer) -> str:
    return f"http://{HOST}:{server.server_port}/dashboard"


# -- optspec dashboard STUDY_DB -----------------------------------------------------------------


def serve_study_db(path: str | os.PathLike[str], *, port: int = 8080) -> None:
    """Serve the study in ``path`` until Ctrl-C.

    :raises StudyFileError: ``path`` is not an Optuna study (the message names it).
    :raises UsageError: optuna-dashboard is not installed, or the port cannot be bound.
    """
    try:
        import optuna_dashboard  # noqa: F401 - only asking whether the extra is there
    except ImportError:
        raise UsageError(INSTALL_HINT.removeprefix("optspec: ")) from None
    from optspec.report.results import open_study_file
    from optspec.storage.optuna_compat import study_storage
    from optspec.storage.studydb import is_sqlite_file

    # Reading the file first turns "not a study" into a clear exit 2 before any server starts,
    # and gives the study's name for the message.
    study = open_study_file(path)
    storage = _open_rdb_storage(Path(path)) if is_sqlite_file(path) else study_storage(study)
    server = _bind(_dashboard_app(storage), port)
    try:  # from here on Ctrl-C is how a user ends it: even during the prints, it is success
        print(f"optuna-dashboard for study {study.study_name!r} ({path}): {_url(server)}")
        print("press Ctrl-C to stop", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _open_rdb_storage(path: Path) -> Any:
    """study.db for the dashboard. (A fallback study.journal is served from memory instead.)"""
    import optuna

    # Exactly how optuna-dashboard opens SQLite itself: no tables created, no version check.
    return optuna.storages.RDBStorage(
        f"sqlite:///{path.absolute()}",
        skip_compatibility_check=True,
        skip_table_creation=True,
    )


# -- optspec run --dashboard --------------------------------------------------------------------


class LiveDashboard:
    """A dashboard served from a background thread; :meth:`stop` ends it and frees the port."""

    def __init__(self, server: _ThreadingWSGIServer) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},  # how long stop() may wait for the loop to notice
            name="optspec-dashboard",
            daemon=True,  # never keeps a finished run's process alive
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return _url(self._server)

    @property
    def port(self) -> int:
        return self._server.server_port

    def stop(self) -> None:
        """Stop serving and close the socket; calling it again does nothing."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> LiveDashboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_live_dashboard(storage: BaseStorage, port: int) -> LiveDashboard:
    """Serve optuna-dashboard over ``storage`` (the run's live JournalStorage) on 127.0.0.1.

    The dashboard reads the same storage object the controller reads: JournalStorage takes a lock
    around every call, so both threads see one consistent study that grows as trials finish.

    :raises UsageError: optuna-dashboard is not installed, or the port cannot be bound.
    """
    try:
        app = _dashboard_app(storage)
    except ImportError:
        raise UsageError(INSTALL_HINT.removeprefix("optspec: ")) from None
    return LiveDashboard(_bind(app, port))

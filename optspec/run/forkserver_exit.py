"""Preloaded by the worker forkserver only: its socket goes when it does.

multiprocessing's forkserver listens on a socket file in the controller's ``pymp-*`` temporary
directory, which the controller removes when it exits normally. A controller killed by SIGKILL
removes nothing; its forkserver notices and exits, and on the way out this module removes the
socket and, if nothing else is left in it, the directory. On import it finds the listening
socket among the descriptors the forkserver inherited; anywhere else (there is none) it does
nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import stat


def _listening_socket_paths() -> list[str]:
    paths = []
    for fd in range(3, 256):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.family != socket.AF_UNIX:
                    continue
                if not sock.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", 30)):
                    continue
                name = sock.getsockname()
        except OSError:
            continue
        if isinstance(name, str) and name and not name.startswith("\0"):
            paths.append(name)
    return paths


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
        directory = os.path.dirname(path)
        if os.path.basename(directory).startswith("pymp-"):
            with contextlib.suppress(OSError):  # not empty: the controller's, still in use
                os.rmdir(directory)


_paths = _listening_socket_paths() if hasattr(socket, "AF_UNIX") else []
if _paths:
    atexit.register(_remove, _paths)

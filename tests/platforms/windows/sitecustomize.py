"""Makes this Python look like Windows's to optspec, by removing what Windows lacks.

Put this directory on PYTHONPATH. ``fcntl`` cannot be imported; ``os.fork``,
``os.register_at_fork``, ``os.killpg`` and the other process-group and memory-file calls are
gone, and the C library's robust-mutex functions are hidden from ctypes. ``sys.platform`` stays
as it is: changing it breaks the standard library; optspec chooses by capability.
"""

import ctypes
import os
import sys

sys.modules["fcntl"] = None  # type: ignore[assignment]  # "import fcntl" raises ImportError

for _name in (
    "fork",
    "forkpty",
    "register_at_fork",
    "killpg",
    "getpgid",
    "setpgid",
    "setsid",
    "waitid",
    "memfd_create",
    "posix_fallocate",
    "MFD_CLOEXEC",
):
    if hasattr(os, _name):
        delattr(os, _name)

_HIDDEN = frozenset({"pthread_mutexattr_setrobust", "pthread_mutex_consistent"})


def _hiding(base):
    class Library(base):
        def __getattr__(self, name):
            if name in _HIDDEN:
                raise AttributeError(f"symbol {name} not found (hidden: as on Windows)")
            return super().__getattr__(name)

    Library.__name__ = base.__name__
    return Library


ctypes.CDLL = _hiding(ctypes.CDLL)
ctypes.PyDLL = _hiding(ctypes.PyDLL)

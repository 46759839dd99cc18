"""Makes this Python look like macOS's to optspec, by removing what macOS lacks.

Put this directory on PYTHONPATH. Removed: ``os.memfd_create``, ``os.posix_fallocate`` and the C
library's robust-mutex functions (hidden from ctypes). ``sys.platform`` stays as it is: changing
it breaks the standard library; optspec chooses by capability.
"""

import ctypes
import os

for _name in ("memfd_create", "posix_fallocate", "MFD_CLOEXEC"):
    if hasattr(os, _name):
        delattr(os, _name)

_HIDDEN = frozenset({"pthread_mutexattr_setrobust", "pthread_mutex_consistent"})


def _hiding(base):
    class Library(base):
        def __getattr__(self, name):
            if name in _HIDDEN:
                raise AttributeError(f"symbol {name} not found (hidden: as on macOS)")
            return super().__getattr__(name)

        def __getitem__(self, name):
            if name in _HIDDEN:
                raise AttributeError(f"symbol {name} not found (hidden: as on macOS)")
            return super().__getitem__(name)

    Library.__name__ = base.__name__
    return Library


ctypes.CDLL = _hiding(ctypes.CDLL)
ctypes.PyDLL = _hiding(ctypes.PyDLL)

"""SIGINT and SIGTERM handled by the controller for a while, then handed back."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_handled(on_signal: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_signal(name)`` for SIGINT and SIGTERM for the duration, then restore the
    previous handlers. Outside the main thread (the API run from a thread) Python cannot set
    handlers: signals then keep their usual effect."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: on_signal(signal.Signals(signum).name))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""SIGINT, SIGTERM and SIGHUP handled by the controller for a while, then handed back."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""Signals that stop a run gracefully: a closed terminal or ssh session (SIGHUP) too."""


@contextmanager
def signals_handled(on_signal: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_signal(name)`` for :data:`STOP_SIGNALS` for the duration, then restore the
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


@contextmanager
def stop_signals_ignored() -> Iterator[None]:
    """:data:`STOP_SIGNALS` ignored for the duration (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal dispositions can only be changed from the main thread
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""SIGTERM and SIGINT as a stop event, for the processes that run until an operator stops them; SIGHUP
as a callback (up passes it on to its bridge, which reads the node token again).

Libraries take a stop event; the process entries (node/child.py, cli.py, node/supervisor.py) install
the handlers that set it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM or SIGINT (only the main thread may install handlers; elsewhere: nothing)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def on_hangup(callback: Callable[[], None]) -> None:
    """Call ``callback`` on SIGHUP instead of dying of it (main thread only, as stop_on_signals)."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        callback()

    signal.signal(signal.SIGHUP, handle)


def stopped_by_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (see stop_on_signals)."""
    stop = threading.Event()
    stop_on_signals(stop)
    return stop

"""Graceful stop on SIGTERM (what Kubernetes sends): unbounded sources end their input, so the
flow completes, sinks flush and confirm, and the process exits 0. Ctrl-C (SIGINT) keeps
Bytewax's own behaviour: an immediate abort, safe because nothing is acknowledged early."""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = threading.Event()


def install_graceful_shutdown() -> None:
    """Turn SIGTERM into a shutdown request. Call from the main thread."""

    def request(_signum: int, _frame: FrameType | None) -> None:
        _requested.set()

    signal.signal(signal.SIGTERM, request)


def shutdown_requested() -> bool:
    return _requested.is_set()

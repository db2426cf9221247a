"""How the runner's processes end: with the process that started them, and on Ctrl-C.

:func:`die_with_parent` is what every worker process (the local pool's, and Dask's local
workers through :mod:`medload.dask_worker`) calls first; :class:`InterruptFlag` is how the
parent turns a first Ctrl-C into "stop feeding tasks" and a second into "stop now".
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

__all__ = ["InterruptFlag", "die_with_parent"]


def die_with_parent(parent_pid: int, *, poll_s: float = 1.0) -> None:
    """End this process when ``parent_pid`` ends, even by SIGKILL (the OOM killer's signal).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` ends us when our parent process ends (with
    forkserver that is the fork server, which itself ends when the main process does). Every
    platform: a daemon thread checks once a second that ``parent_pid`` still exists and exits
    if not. A worker left behind would hold its shard's lock and keep the next run out.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the watchdog below does it
        pass

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(70)
            except PermissionError:  # pragma: no cover - exists, owned by someone else: pid reused
                os._exit(70)

    threading.Thread(target=watch, name="medload-parent-watch", daemon=True).start()


class InterruptFlag:
    """First SIGINT sets the flag (stop feeding); the second raises KeyboardInterrupt.

    Installed only in the main thread (the one Python delivers signals to); elsewhere the flag
    stays unset and Ctrl-C is Python's usual KeyboardInterrupt.

    Examples
    --------
    >>> with InterruptFlag() as flag:
    ...     bool(flag)
    False
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        self.event.set()

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            # None: the handler before was not set from Python (an embedding program's); it cannot be
            # put back, and signal.signal refuses None: Python's own handler is the nearest.
            previous = signal.default_int_handler if self._previous is None else self._previous
            signal.signal(signal.SIGINT, previous)

    def __bool__(self) -> bool:
        return self.event.is_set()

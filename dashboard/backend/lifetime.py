"""Child processes that end with their parent (a server killed with ``kill -9`` leaves none).

:func:`die_with_parent` is the first call of a child's entry point (training jobs, upload
validation). On Linux it asks the kernel for ``SIGKILL`` when the parent dies
(``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if that call fails, a daemon thread polls the
parent pid and ends the process once it changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, *, poll: float = 1.0) -> None:
    """Make this process end when ``parent_pid`` (the pid its parent had) ends.

    Exits at once if the parent is already gone (it died before this call: the race that
    ``PR_SET_PDEATHSIG`` alone leaves open). ``poll``: seconds between checks of the watchdog
    thread used where ``prctl`` is unavailable.

    Linux sends the signal when the parent *thread* that started the child ends: start the
    child from a thread that lives as long as the child (the job runner's worker waits for it).
    """
    if sys.platform.startswith("linux") and _set_pdeathsig():
        if os.getppid() != parent_pid:
            os._exit(1)
        return
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid, poll), name="parent-watchdog", daemon=True
    ).start()


def _set_pdeathsig() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``; False if libc or the call is unavailable."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    return False


def _watch_parent(parent_pid: int, poll: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(poll)
    os._exit(1)

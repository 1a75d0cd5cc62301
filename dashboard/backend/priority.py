"""Background work yields the CPU to page requests: a thread's scheduling priority.

On a two-core lab server a job (a model's warm steps, a DE, training) keeps both cores busy
for minutes; at equal priority every page request then gets a third of a core, and a
million-cell Explore view took seconds longer to reach the browser. Job threads therefore
run at a lower priority (a higher nice value) than the threads serving requests. Linux
schedules threads one by one, and the threads a job thread starts (torch's OpenMP team, a
training child process) inherit its nice value. When nothing else wants the CPU a job
runs as fast as before.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger(__name__)

#: The largest nice value (lowest priority) Linux allows.
MAX_NICE = 19


def thread_nice() -> int:
    """The calling thread's nice value (0 where threads cannot be told apart)."""
    if not sys.platform.startswith("linux"):
        return 0
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(by: int) -> int:
    """Raise the calling thread's nice value by ``by`` (at most to 19); returns the nice
    value it runs at. Only on Linux, where a thread's priority is its own; elsewhere (and
    for ``by <= 0``) nothing changes. Raising it needs no privilege; it cannot be undone
    by an unprivileged process, so call it in threads that only run background work."""
    if by <= 0 or not sys.platform.startswith("linux"):
        return thread_nice()
    tid = threading.get_native_id()
    target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + by)
    try:
        os.setpriority(os.PRIO_PROCESS, tid, target)
    except OSError as err:  # e.g. a seccomp profile forbidding it: run at the same priority
        logger.warning("could not lower a job thread's priority: %s", err)
    return thread_nice()

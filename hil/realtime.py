"""Real-time scheduling for the HIL loops: SCHED_FIFO where permitted, else a higher nice priority.

A fixed-rate loop on a loaded machine is preempted for milliseconds by ordinary processes; SCHED_FIFO
(Linux, needs root or CAP_SYS_NICE) lets it run as soon as it wakes. Torch-free (the device agent uses it).
The previous policy is restored on exit, so a test process does not keep real-time priority.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["realtime", "FIFO_PRIORITY"]

FIFO_PRIORITY = 50  # above ordinary threads and below the kernel's own real-time threads (99)


@contextlib.contextmanager
def realtime(enabled: bool = True, priority: int = FIFO_PRIORITY):
    """Context that runs the calling thread as SCHED_FIFO (or nice −10); yields what it obtained.

    Yields `"fifo"`, `"nice"`, `"normal"` (not enabled) or `"normal (...)"` with why nothing was granted.
    The loop inside must sleep every period: the kernel's RT throttling (95% per second) is the only brake.
    """
    if not enabled:
        yield "normal"
        return
    restore = None
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        got = "fifo"

        def restore():
            os.sched_setscheduler(0, policy, param)
    except (AttributeError, OSError) as exc:  # not Linux, or no CAP_SYS_NICE
        try:
            before = os.nice(0)
            os.nice(-10)
            got = "nice"

            def restore():
                os.nice(before - os.nice(0))
        except OSError:
            got = f"normal ({exc.__class__.__name__}: no permission for SCHED_FIFO or a negative nice)"
    try:
        yield got
    finally:
        if restore is not None:
            with contextlib.suppress(OSError):
                restore()

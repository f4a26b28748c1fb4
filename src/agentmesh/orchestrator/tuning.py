"""The process tuned for a long-running orchestrator, once it has started: the garbage
collector and the GIL's switch interval."""

from __future__ import annotations

import gc
import sys

#: Allocations between young collections. The default (700) runs a collection every few
#: steps, each walking the young objects of every in-flight task; most of them are freed by
#: reference counting anyway (the events and messages of one step), so fewer, larger passes
#: cost far less CPU for the same garbage.
YOUNG_THRESHOLD = 10_000

#: Seconds a thread holds the GIL before it must offer it. Big payloads are converted and
#: checked in worker threads (agents/intake.py, engine/readable.py); with the default 5 ms
#: each hand-back to the event loop can wait that long, and one health check needs many.
#: 1 ms keeps the loop answering within its deadlines while a thread churns through megabytes.
SWITCH_INTERVAL = 0.001

_settled = False


def settle() -> None:
    """Move everything alive after start-up (modules, descriptors, table metadata) out of the
    collector's sight, collect the young generation less often, and let the event loop have
    the GIL back sooner from busy worker threads.

    Process-wide, and meant for processes that serve an orchestrator: objects created before
    this are never scanned again, which is why start-up garbage is collected first. Only the
    first orchestrator of a process pays for that full collection (tests start many).
    """
    global _settled
    if _settled:
        return
    _settled = True
    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)

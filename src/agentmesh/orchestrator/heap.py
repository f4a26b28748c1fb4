"""The garbage collector tuned for a long-running orchestrator, once it has started."""

from __future__ import annotations

import gc

#: Allocations between young collections. The default (700) runs a collection every few
#: steps, each walking the young objects of every in-flight task; most of them are freed by
#: reference counting anyway (the events and messages of one step), so fewer, larger passes
#: cost far less CPU for the same garbage.
YOUNG_THRESHOLD = 10_000

_settled = False


def settle() -> None:
    """Move everything alive after start-up (modules, descriptors, table metadata) out of the
    collector's sight, and collect the young generation less often.

    Process-wide, and meant for processes that serve an orchestrator: objects created before
    this are never scanned again, which is why start-up garbage is collected first. Only the
    first orchestrator of a process pays for that full collection (tests start many).
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(YOUNG_THRESHOLD, young), middle, old)

"""Bounds on the progress agents report, before it becomes task events.

Progress is advisory, but every report used to become a stored, streamed event: an agent
could write 10,000 events in a second or megabytes of text into every watcher, and send
fractions (NaN, infinities, 1e308) that mean nothing. Per attempt of a step:

- **rate**: at most one event per :data:`INTERVAL_SECONDS`. A report arriving sooner is held
  back, replacing any report held before it (superseded reports are dropped), and goes out
  when the interval is over, or when the attempt ends, so the latest report before a
  result always reaches watchers, ahead of the result's events;
- **size**: a message is cut to :data:`MAX_MESSAGE_BYTES` of UTF-8, between characters,
  ending in ``…``; the rest of the report is kept;
- **fraction**: a report above 1, NaN or infinite never gets here (the link refuses it,
  see :func:`agentmesh.orchestrator.agents.link.progress_problem`); a negative one, the
  protocol's "unknown", becomes -1.0.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

#: The most UTF-8 bytes of a progress message that are kept.
MAX_MESSAGE_BYTES = 4096
#: The shortest time between two progress events of one attempt.
INTERVAL_SECONDS = 0.1

_ELLIPSIS = "…"

Emit = Callable[[float, str], None]


def clamp_fraction(fraction: float) -> float:
    """``fraction`` as the protocol defines it: 0..1, or -1.0 when unknown."""
    if math.isnan(fraction) or fraction < 0:
        return -1.0
    return min(fraction, 1.0)


def cut_message(message: str, limit: int = MAX_MESSAGE_BYTES) -> str:
    """``message`` if it fits in ``limit`` UTF-8 bytes, else its start and ``…`` in as many."""
    encoded = message.encode()
    if len(encoded) <= limit:
        return message
    room = limit - len(_ELLIPSIS.encode())
    # "ignore" drops only the character the cut went through: the bytes came from a str.
    return encoded[:room].decode(errors="ignore") + _ELLIPSIS


class ProgressLimiter:
    """Turns an attempt's progress reports into bounded events (see the module docstring).

    :meth:`report` is the link's progress callback; :meth:`close` must be called when the
    attempt ends (it emits the report still held back, and nothing comes after it).
    """

    def __init__(self, emit: Emit, *, interval: float = INTERVAL_SECONDS) -> None:
        self._emit = emit
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._emitted_at = -math.inf
        self._held: tuple[float, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def report(self, fraction: float, message: str) -> None:
        """Take one report from the agent: emit it now, or hold it until the interval ends."""
        if self._closed:
            return
        # Bounded lazily (in _release): of a burst, only the reports that go out are cut.
        self._held = (fraction, message)
        due = self._emitted_at + self._interval
        if self._loop.time() >= due:
            self._release()
        elif self._timer is None:
            self._timer = self._loop.call_at(due, self._release)

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held is None:
            return
        (fraction, message), self._held = self._held, None
        self._emitted_at = self._loop.time()
        self._emit(clamp_fraction(fraction), cut_message(message))

    def close(self) -> None:
        """Emit the report held back, if any; ignore every report after this."""
        if not self._closed:
            self._release()
            self._closed = True

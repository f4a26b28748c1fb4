"""Turns: at most a few calls of one kind at once, the rest waiting, none past its deadline.

A caller whose deadline would pass before its turn came and went is told to come back
(:class:`~agentmesh.errors.TryLater`, with about when) while it still has time to hear it,
instead of having its deadline pass in the queue: a thousand agents registering at once
saw ~700 DEADLINE_EXCEEDED that said nothing of why, or of when to try again (issue 9).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from prometheus_client import Gauge

from agentmesh.errors import TryLater

#: A turn's length before any has been measured.
FIRST_GUESS_SECONDS = 0.25
#: The longest wait a caller is told to make: past it the queue will have changed anyway.
MAX_RETRY_AFTER = 30.0
#: The least time kept for the turn itself and the answer's way back to the caller.
MIN_MARGIN_SECONDS = 1.0
#: The weight of the newest turn in the running mean of turn lengths.
_WEIGHT = 0.2


class Turns:
    """``async with turns.turn(time_left):`` runs when one of ``size`` turns is free."""

    def __init__(self, size: int, what: str, waiting: Gauge) -> None:
        self.size = size
        self._what = what
        self._free = asyncio.Semaphore(size)
        self._waiting_gauge = waiting
        self.waiting = 0
        #: Running mean of how long a turn takes, in seconds.
        self.turn_seconds = FIRST_GUESS_SECONDS

    def retry_after(self) -> float:
        """About how long the callers waiting now will take to have their turns."""
        rounds = (self.waiting + 1) / self.size
        return min(MAX_RETRY_AFTER, max(self.turn_seconds, rounds * self.turn_seconds))

    @contextlib.asynccontextmanager
    async def turn(self, time_left: float | None) -> AsyncIterator[None]:
        """Wait for a free turn and hold it inside; ``time_left``: the caller's deadline
        (None: none). TryLater when the turn would not end before that deadline."""
        patience = None
        if time_left is not None and self._free.locked():
            # It would wait: keep time for the turn itself and for the caller to hear the
            # answer. (A free turn is taken whatever the deadline.)
            patience = time_left - max(MIN_MARGIN_SECONDS, 2 * self.turn_seconds)
            if patience <= 0:
                raise self._try_later()
        self.waiting += 1
        self._waiting_gauge.inc()
        try:
            async with asyncio.timeout(patience):
                await self._free.acquire()
        except TimeoutError:
            raise self._try_later() from None
        finally:
            self.waiting -= 1
            self._waiting_gauge.dec()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            yield
        finally:
            self._free.release()
            took = loop.time() - started
            self.turn_seconds += _WEIGHT * (took - self.turn_seconds)

    def _try_later(self) -> TryLater:
        seconds = self.retry_after()
        return TryLater(
            f"too many {self._what} at once ({self.waiting} waiting, {self.size} at a time): "
            f"come back in {seconds:.1f} s",
            retry_after=seconds,
        )

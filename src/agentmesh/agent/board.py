"""The Session streams open right now, as registration keepers and the drain see them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from agentmesh.agent.session import Session


class SessionBoard:
    """Counts open sessions, tells them when the agent drains, and closes them at shutdown."""

    def __init__(self) -> None:
        self._open: set[Session] = set()
        self._ended = 0
        self._changed = asyncio.Event()
        self._draining = False
        self._closed = False

    @property
    def open_count(self) -> int:
        """Sessions open now."""
        return len(self._open)

    @property
    def ended(self) -> int:
        """Sessions that have ended so far; compare two readings to see whether one ended."""
        return self._ended

    @contextmanager
    def track(self, session: Session) -> Iterator[None]:
        """Count ``session`` as open for the duration of the block."""
        self._open.add(session)
        if self._draining:
            session.draining()
        if self._closed:
            session.close()
        self._notify()
        try:
            yield
        finally:
            self._open.discard(session)
            self._ended += 1
            self._notify()

    def drain(self) -> None:
        """Tell every open session, and every session opened from now on, that the agent drains."""
        self._draining = True
        for session in self._open:
            session.draining()

    def close_all(self) -> None:
        """End every session (once its queued replies are written), and any opened later."""
        self._closed = True
        for session in self._open:
            session.close()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; it is re-checked whenever a session opens or ends."""
        while not predicate():
            await self._changed.wait()

    def _notify(self) -> None:
        # Wake the current waiters, and give later ones a fresh event to wait on.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

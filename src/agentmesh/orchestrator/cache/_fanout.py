"""In-process pub/sub: each subscription gets every message of its channel, in order."""

from __future__ import annotations

import asyncio
import json
from collections import deque

import structlog

from agentmesh.models import JSON

_log = structlog.get_logger(__name__)


class Subscription:
    """The messages published on one channel since the subscription opened, as an async iterator.

    Iteration ends when the owning :class:`~agentmesh.orchestrator.cache.Cache` closes. A
    subscriber that falls more than ``max_pending`` messages behind loses the oldest ones (logged as
    ``cache.subscriber_overflow``): events are persisted elsewhere, and an unbounded queue
    behind a stuck consumer would take the whole process down instead.
    """

    def __init__(self, channel: str, *, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.channel = channel
        self._max_pending = max_pending
        self._queue: deque[str] = deque()
        self._ready = asyncio.Event()
        self._closed = False
        self._overflowing = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> JSON:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._overflowing = False
            self._ready.clear()
            await self._ready.wait()
        return json.loads(self._queue.popleft())

    def _put(self, raw: str) -> None:
        if len(self._queue) >= self._max_pending:
            self._queue.popleft()
            if not self._overflowing:
                # Once per backlog, not per dropped message, or the log becomes the problem.
                self._overflowing = True
                _log.warning(
                    "cache.subscriber_overflow", channel=self.channel, max_pending=self._max_pending
                )
        self._queue.append(raw)
        self._ready.set()

    def _close(self) -> None:
        self._closed = True
        self._ready.set()


class LocalFanout:
    """Which subscriptions listen on which channel, and delivery to them."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}

    def add(self, channel: str, *, max_pending: int) -> tuple[Subscription, bool]:
        """Open a subscription; the flag says whether it is the channel's first."""
        subscription = Subscription(channel, max_pending=max_pending)
        listeners = self._subscriptions.setdefault(channel, set())
        listeners.add(subscription)
        return subscription, len(listeners) == 1

    def remove(self, subscription: Subscription) -> bool:
        """Close a subscription; True when it was the channel's last."""
        subscription._close()
        listeners = self._subscriptions[subscription.channel]
        listeners.discard(subscription)
        if listeners:
            return False
        del self._subscriptions[subscription.channel]
        return True

    def deliver(self, channel: str, raw: str) -> int:
        """Hand JSON text to every subscription of ``channel``; returns how many got it."""
        listeners = self._subscriptions.get(channel, ())
        for subscription in listeners:
            subscription._put(raw)
        return len(listeners)

    def channels(self) -> list[str]:
        """Channels with at least one subscription."""
        return list(self._subscriptions)

    def count(self, channel: str) -> int:
        """How many subscriptions ``channel`` has."""
        return len(self._subscriptions.get(channel, ()))

    def close_all(self) -> None:
        """End every subscription's iteration; used when the cache shuts down."""
        for listeners in self._subscriptions.values():
            for subscription in listeners:
                subscription._close()

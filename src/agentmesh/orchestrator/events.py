"""Ordered, persisted task events and their fan-out to watchers.

Watchers always read events from the store, after the last sequence they saw;
a publish only wakes them up. That makes every stream gapless by construction
(a watcher that wakes late, or a replica whose Redis message was lost, simply
reads more rows) and lets a reconnecting subscriber resume from any sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator

import structlog

from agentmesh._tasks import TaskSet
from agentmesh.errors import OutOfRange
from agentmesh.models import EventKind, TaskEvent, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.store import Store

log = structlog.get_logger(__name__)

_CHANNEL = "task-events"


class EventBus:
    """Wakes the watchers of a task when new events of it are committed, here or on a replica."""

    def __init__(self, store: Store, cache: Cache) -> None:
        self._store = store
        self._cache = cache
        self._wakeups: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._tasks = TaskSet()

    async def __aenter__(self) -> EventBus:
        self._tasks.spawn(self._listen(), name="events-listener")
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._tasks.aclose()

    async def _listen(self) -> None:
        # Other replicas announce committed events; we only need to know which task moved.
        async with self._cache.subscribe(_CHANNEL) as messages:
            async for message in messages:
                if isinstance(message, str):
                    self._wake(message)

    def _wake(self, task_id: str) -> None:
        for wakeup in self._wakeups.get(task_id, ()):
            wakeup.set()

    async def published(self, task_id: str) -> None:
        """Announce that events of ``task_id`` were committed to the store."""
        self._wake(task_id)
        await self._cache.publish(_CHANNEL, task_id)

    async def watch(
        self, task_id: str, after_sequence: int = 0, *, poll_seconds: float = 2.0
    ) -> AsyncIterator[TaskEvent]:
        """Yield the task's events after ``after_sequence`` in order; end after its final state.

        A cursor past the task's newest event raises :class:`OutOfRange` (field
        ``after_sequence``): the events it would wait for, the final one included, can never
        come. A cursor at or past the final event of a final task ends the stream at once.
        ``poll_seconds`` bounds how long a lost wake-up can delay an event.
        """
        wakeup = asyncio.Event()
        self._wakeups[task_id].add(wakeup)
        last = after_sequence
        try:
            while True:
                wakeup.clear()
                events = await self._store.events_after(task_id, last)
                for event in events:
                    last = event.sequence
                    yield event
                    if event.kind is EventKind.TASK_STATE and TaskState(event.state).final:
                        return
                if events:
                    continue
                if self._ended(await self._store.stream_end(task_id), last):
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(poll_seconds):
                        await wakeup.wait()
        finally:
            watchers = self._wakeups.get(task_id)
            if watchers is not None:
                watchers.discard(wakeup)
                if not watchers:
                    del self._wakeups[task_id]

    async def check_cursor(self, task_id: str, after_sequence: int) -> None:
        """Raise :class:`OutOfRange` now when a watch from ``after_sequence`` would (being past
        the task's newest event), so that it is refused before a stream starts."""
        self._ended(await self._store.stream_end(task_id), after_sequence)

    @staticmethod
    def _ended(end: tuple[bool, int] | None, cursor: int) -> bool:
        """True when a watch at ``cursor`` has nothing more to wait for (see :meth:`watch`)."""
        if end is None:
            return True  # no such task (any more): no event will ever come
        final, last_sequence = end
        if cursor > last_sequence:
            # Only the caller's cursor can be past the newest event: ours come from the store.
            raise OutOfRange(
                f"beyond the task's last event (sequence {last_sequence})",
                field="after_sequence",
            )
        # Events committed since our read (the final one among them) are still to be read.
        return final and cursor == last_sequence

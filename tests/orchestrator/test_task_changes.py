"""The event bus tells task-list watchers which tasks changed: coalesced, in order, bounded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmesh.models import EventKind, TaskEvent
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.events import MAX_CHANGED, EventBus, TaskChanges
from agentmesh.orchestrator.store import Store


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[EventBus]:
    async with (
        Store(f"sqlite+aiosqlite:///{tmp_path / 'bus.db'}") as store,
        Cache(None) as cache,
        EventBus(store, cache) as running,
    ):
        yield running


def _event(task_id: str, kind: EventKind, sequence: int = 1) -> TaskEvent:
    return TaskEvent(task_id=task_id, sequence=sequence, time=datetime.now(UTC), kind=kind)


async def _next(changes: AsyncIterator[TaskChanges]) -> TaskChanges:
    async with asyncio.timeout(10):
        return await anext(changes)


async def test_a_watch_starts_with_a_relist_then_gets_each_changed_task_once_in_order(
    bus: EventBus,
) -> None:
    changes = bus.task_changes()
    assert await _next(changes) == TaskChanges((), lost=True)
    bus.committed("t1", [_event("t1", EventKind.TASK_STATE)])
    bus.committed("t2", [_event("t2", EventKind.STEP_STATE)])
    bus.committed("t1", [_event("t1", EventKind.STEP_STATE, 2)])
    # Progress alone changes nothing a list shows.
    bus.committed("t3", [_event("t3", EventKind.STEP_PROGRESS)])
    assert await _next(changes) == TaskChanges(("t1", "t2"))
    bus.committed("t3", [_event("t3", EventKind.TASK_STATE, 2)])
    assert await _next(changes) == TaskChanges(("t3",))
    await changes.aclose()  # type: ignore[attr-defined]


async def test_too_many_changes_at_once_become_one_relist(bus: EventBus) -> None:
    changes = bus.task_changes()
    await _next(changes)
    for i in range(MAX_CHANGED + 5):
        bus.committed(f"t{i}", [_event(f"t{i}", EventKind.TASK_STATE)])
    assert await _next(changes) == TaskChanges((), lost=True)
    bus.committed("after", [_event("after", EventKind.TASK_STATE)])
    assert await _next(changes) == TaskChanges(("after",))
    await changes.aclose()  # type: ignore[attr-defined]

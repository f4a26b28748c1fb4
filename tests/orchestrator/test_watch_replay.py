"""A watch that starts behind reads the store page after page, never waiting between them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmesh.models import EventKind, Plan, StepSpec, TaskEvent, TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.events import PAGE, EventBus
from agentmesh.orchestrator.store import Store

PLAN = Plan(steps=(StepSpec(id="a", capability="echo"),))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}") as running:
        yield running


async def _finished_task(store: Store, events: int) -> str:
    """A finished task in the store with ``events`` events, the last its final state."""
    now = datetime.now(UTC)
    task = TaskRecord(
        id="t-replay", owner="spiffe://x/client/alice", plan=PLAN, created_at=now, updated_at=now
    )
    await store.create_task(task)
    stream = [
        TaskEvent(task_id=task.id, sequence=n, time=now, kind=EventKind.STEP_PROGRESS)
        for n in range(1, events)
    ]
    stream.append(
        TaskEvent(
            task_id=task.id,
            sequence=events,
            time=now,
            kind=EventKind.TASK_STATE,
            state=TaskState.SUCCEEDED,
        )
    )
    task.state = TaskState.SUCCEEDED
    await store.commit(task, events=stream)
    return task.id


async def test_a_replay_of_many_pages_reads_them_back_to_back(store: Store) -> None:
    task_id = await _finished_task(store, 2 * PAGE + 7)
    async with Cache(None) as cache, EventBus(store, cache) as bus:
        # A poll longer than the test may take: only reading on at once can finish in time.
        async with asyncio.timeout(60):
            sequences = [e.sequence async for e in bus.watch(task_id, poll_seconds=3600)]
    assert sequences == list(range(1, 2 * PAGE + 8))

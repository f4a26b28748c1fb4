"""Where a watch starts reading: the store page after page, never waiting between pages; or
the events a run on this replica keeps in memory, but only where they are all there is."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentmesh.errors import OutOfRange
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


def _progress(task_id: str, first: int, last: int) -> list[TaskEvent]:
    now = datetime.now(UTC)
    return [
        TaskEvent(task_id=task_id, sequence=n, time=now, kind=EventKind.STEP_PROGRESS)
        for n in range(first, last + 1)
    ]


async def test_a_cursor_past_what_this_replica_wrote_is_answered_by_the_store(
    store: Store,
) -> None:
    # This replica still runs the task (its lease not yet seen lost) and committed events
    # 1-3; the replica that took the task over has written 4 and 5 already.
    now = datetime.now(UTC)
    task = TaskRecord(
        id="t-moved", owner="spiffe://x/client/alice", plan=PLAN, created_at=now, updated_at=now
    )
    await store.create_task(task)
    async with Cache(None) as cache, EventBus(store, cache) as bus:
        with bus.owning(task.id, last_sequence=0):
            ours = _progress(task.id, 1, 3)
            await store.commit(task, events=ours)
            bus.committed(task.id, ours)
            await store.commit(task, events=_progress(task.id, 4, 5))

            await bus.check_cursor(task.id, 5)  # not OUT_OF_RANGE: the store has event 5
            with pytest.raises(OutOfRange):
                await bus.check_cursor(task.id, 6)
            behind = bus.watch(task.id, 4)
            async with asyncio.timeout(60):
                assert (await anext(behind)).sequence == 5
            await behind.aclose()  # type: ignore[attr-defined]
            # Within what this replica wrote, memory answers, from any cursor it covers.
            kept = bus.watch(task.id, 1)
            async with asyncio.timeout(60):
                assert [(await anext(kept)).sequence for _ in range(2)] == [2, 3]
            await kept.aclose()  # type: ignore[attr-defined]

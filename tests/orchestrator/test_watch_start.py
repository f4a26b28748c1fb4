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
from agentmesh.orchestrator import events
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


def _ended_here(bus: EventBus, task: TaskRecord, stream: list[TaskEvent]) -> None:
    """Hand ``stream`` (the last its final state) to ``bus`` as a run here commits it."""
    task.state = TaskState(stream[-1].state)
    bus.committed(task.id, stream, task.model_copy())


def _stream(task_id: str, events: int) -> list[TaskEvent]:
    final = TaskEvent(
        task_id=task_id,
        sequence=events,
        time=datetime.now(UTC),
        kind=EventKind.TASK_STATE,
        state=TaskState.SUCCEEDED,
    )
    return [*_progress(task_id, 1, events - 1), final]


def _task(task_id: str) -> TaskRecord:
    now = datetime.now(UTC)
    return TaskRecord(
        id=task_id, owner="spiffe://x/client/alice", plan=PLAN, created_at=now, updated_at=now
    )


async def test_a_task_that_ended_here_is_watched_and_read_from_memory(tmp_path: Path) -> None:
    # A short task may end before its submitter's watch arrives: the watch, its cursor
    # check and the read of the task are answered from memory. The store is closed by
    # then, so a read of it would fail the test.
    task = _task("t-short")
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'ended.db'}")
    async with Cache(None) as cache, EventBus(store, cache) as bus:
        async with store:
            await store.create_task(task)
            stream = _stream(task.id, 3)
            with bus.owning(task.id, task.model_copy(), last_sequence=0):
                await store.commit(task, events=stream)
                _ended_here(bus, task, stream)
        async with asyncio.timeout(60):
            finished = bus.finished(task.id)
            assert finished is not None
            assert finished.state is TaskState.SUCCEEDED
            await bus.check_cursor(task.id, 0)
            assert [e.sequence async for e in bus.watch(task.id)] == [1, 2, 3]
            assert [e.sequence async for e in bus.watch(task.id, 2)] == [3]
            assert [e.sequence async for e in bus.watch(task.id, 3)] == []


async def test_only_a_whole_stream_of_a_task_that_ended_is_kept(store: Store) -> None:
    # Resumed here after event 2 (another replica wrote 1-2), or not ended: the store answers.
    resumed, stopped = _task("t-resumed"), _task("t-stopped")
    async with Cache(None) as cache, EventBus(store, cache) as bus:
        for task in (resumed, stopped):
            await store.create_task(task)
        await store.commit(resumed, events=_stream(resumed.id, 4)[:2])
        with bus.owning(resumed.id, resumed.model_copy(), last_sequence=2):
            rest = _stream(resumed.id, 4)[2:]
            await store.commit(resumed, events=rest)
            _ended_here(bus, resumed, rest)
        with bus.owning(stopped.id, stopped.model_copy(), last_sequence=0):
            progress = _progress(stopped.id, 1, 2)
            await store.commit(stopped, events=progress)
            bus.committed(stopped.id, progress, stopped.model_copy())
        assert bus.finished(resumed.id) is None
        assert bus.finished(stopped.id) is None
        async with asyncio.timeout(60):
            assert [e.sequence async for e in bus.watch(resumed.id)] == [1, 2, 3, 4]


async def test_the_oldest_ended_task_is_forgotten_first(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(events, "FINISHED_EVENTS", 4)  # two tasks of two events each
    tasks = [_task(f"t-{n}") for n in range(3)]
    async with Cache(None) as cache, EventBus(store, cache) as bus:
        for task in tasks:
            await store.create_task(task)
            stream = _stream(task.id, 2)
            with bus.owning(task.id, task.model_copy(), last_sequence=0):
                await store.commit(task, events=stream)
                _ended_here(bus, task, stream)
        assert [bus.finished(t.id) is not None for t in tasks] == [False, True, True]
        async with asyncio.timeout(60):  # the forgotten one from the store, whole
            assert [e.sequence async for e in bus.watch(tasks[0].id)] == [1, 2]

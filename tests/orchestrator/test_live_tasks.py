"""The index of live tasks in Redis pages as the store does, and says when it cannot tell.

A real Redis (a namespace of each test's own) and a real store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from agentmesh.models import Plan, StepRecord, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.live_tasks import LiveTasks
from agentmesh.orchestrator.store import Store
from tests.conftest import REDIS_URL
from tests.support.waiting import eventually

ALICE = "spiffe://agentmesh.test/client/alice"
BOB = "spiffe://agentmesh.test/client/bob"
LIVE = [s for s in TaskState if not s.final]


@pytest.fixture
async def cache() -> AsyncIterator[Cache]:
    namespace = f"test-live-{uuid.uuid4().hex}"
    async with Cache(REDIS_URL, namespace=namespace) as opened:
        yield opened
    async with Redis.from_url(REDIS_URL) as plain:
        names = [n async for n in plain.scan_iter(match=f"{namespace}:*")]
        if names:
            await plain.delete(*names)


@pytest.fixture
async def store(database: dict[str, str]) -> AsyncIterator[Store]:
    async with Store(database["database_url"], schema=database.get("database_schema", "")) as s:
        yield s


def task(number: int, at: datetime, owner: str = ALICE, **fields: object) -> TaskRecord:
    spec = StepSpec(id="work", capability="test.echo", input={"n": number})
    return TaskRecord(
        id=str(uuid.uuid4()),
        owner=owner,
        input={"n": number},
        plan=Plan(steps=(spec,)),
        steps={"work": StepRecord(spec=spec)},
        created_at=at,
        updated_at=at,
        **fields,  # type: ignore[arg-type]
    )


def listed(*tasks: TaskRecord) -> list[TaskRecord]:
    """The tasks as a list has them: without their steps."""
    return [t.model_copy(update={"steps": {}}) for t in tasks]


async def test_pages_are_the_stores_pages_in_order_owner_and_states(
    cache: Cache, store: Store
) -> None:
    start = datetime.now(UTC)
    tasks = []
    for n in range(24):
        # Three tasks at each instant: ties are ordered by id, as the store orders them.
        at = start + timedelta(microseconds=n // 3)
        state = (TaskState.PENDING, TaskState.RUNNING, TaskState.COMPENSATING)[n % 3]
        tasks.append(task(n, at, BOB if n % 4 == 0 else ALICE, state=state))
    for t in tasks:
        await store.create_task(t)
    index = LiveTasks(cache, fresh_seconds=600)
    await index.rebuild(await store.list_tasks(states=LIVE, limit=100))
    await index.complete()

    for owner in (None, ALICE, BOB):
        for states in ([TaskState.RUNNING], [TaskState.PENDING, TaskState.COMPENSATING], LIVE):
            for offset, limit in ((0, 100), (0, 5), (5, 5), (17, 4), (30, 3)):
                expected = await store.list_tasks(
                    owner=owner, states=states, limit=limit, offset=offset
                )
                found = await index.page(owner=owner, states=states, limit=limit, offset=offset)
                assert found == expected, (owner, states, offset, limit)


async def test_an_ended_task_leaves_and_a_late_write_does_not_bring_it_back(cache: Cache) -> None:
    index = LiveTasks(cache, fresh_seconds=600)
    await index.rebuild([])
    await index.complete()
    first, second = task(1, datetime.now(UTC)), task(2, datetime.now(UTC), BOB)
    await index.write([first, second], [])
    await index.write([], [(first.id, first.owner)])
    await index.write([first], [])  # the replica that ran it before, late
    assert await index.page(owner=None, states=LIVE, limit=10, offset=0) == listed(second)
    assert await index.page(owner=ALICE, states=LIVE, limit=10, offset=0) == []
    assert await index.page(owner=BOB, states=LIVE, limit=10, offset=0) == listed(second)


async def test_a_rebuild_keeps_what_was_written_meanwhile(cache: Cache) -> None:
    index = LiveTasks(cache, fresh_seconds=600)
    read = task(1, datetime.now(UTC))  # as the rebuild read it from the store
    newer = read.model_copy(update={"state": TaskState.COMPENSATING})
    ended = task(2, datetime.now(UTC))
    await index.write([newer], [(ended.id, ended.owner)])
    await index.rebuild([read, ended])
    await index.complete()
    assert await index.page(owner=None, states=LIVE, limit=10, offset=0) == listed(newer)


async def test_a_rebuild_replaces_a_row_older_than_the_stores(cache: Cache) -> None:
    # As after a failover to a replica that had not yet got the task's last update.
    index = LiveTasks(cache, fresh_seconds=600)
    lost = task(1, datetime.now(UTC))
    stored = lost.model_copy(
        update={
            "state": TaskState.COMPENSATING,
            "updated_at": lost.updated_at + timedelta(seconds=1),
        }
    )
    await index.write([lost], [])
    await index.rebuild([stored])
    await index.complete()
    assert await index.page(owner=None, states=LIVE, limit=10, offset=0) == listed(stored)


async def test_an_incomplete_index_or_a_row_nobody_vouches_for_answers_nothing(
    cache: Cache,
) -> None:
    vouched = LiveTasks(cache, fresh_seconds=600)
    one = task(1, datetime.now(UTC))
    await vouched.write([one], [])
    # Written, but never called complete (after a rebuild from the store): a task written
    # by nobody may be missing.
    assert await vouched.page(owner=None, states=LIVE, limit=10, offset=0) is None
    await vouched.rebuild([])
    await vouched.complete()
    assert await vouched.page(owner=None, states=LIVE, limit=10, offset=0) is not None
    # A row written for a moment only, and not renewed: until a replica vouches for it (or
    # takes it out), the index cannot tell.
    briefly = LiveTasks(cache, fresh_seconds=0.05)
    two = task(2, datetime.now(UTC))
    await briefly.write([two], [])

    async def page() -> list[TaskRecord] | None:
        return await vouched.page(owner=None, states=LIVE, limit=10, offset=0)

    await eventually(page, lambda found: found is None, within=10)
    renewal = await vouched.renew([one.id])
    assert renewal.complete
    assert renewal.stale == ((two.id, ALICE),)
    await vouched.renew([two.id])
    assert await page() == listed(two, one)


async def test_the_snapshot_a_replica_has_not_written_yet_is_the_one_it_answers_with(
    cache: Cache, store: Store
) -> None:
    # A watcher that just got a task's final event asks GetTask at once: Redis may still hold
    # the snapshot before it; the replica that handed the newer one over answers with that.
    running = task(1, datetime.now(UTC), state=TaskState.RUNNING)
    await store.create_task(running)
    async with EventBus(store, cache) as bus:
        bus.committed(running.id, [], running)
        await eventually(
            lambda: cache.get(f"tasks:{running.id}"), lambda document: document is not None
        )
        finished = running.model_copy(update={"state": TaskState.SUCCEEDED})
        bus.committed(finished.id, [], finished)
        answered = await bus.snapshot(finished.id)
    assert answered is not None
    assert answered.state is TaskState.SUCCEEDED

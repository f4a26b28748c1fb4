"""Group commit: many tasks' writes in one transaction, each write keeping its guarantees.

Concurrent writes are issued together (``asyncio.gather``) so that they queue up behind
one another and share transactions; what is checked is what each caller is told and what
the database holds afterwards, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest

from agentmesh.errors import AlreadyExists
from agentmesh.models import (
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator.store import Lease, LeaseLost, Store
from agentmesh.orchestrator.store.group import GroupWriter

OWNER = "spiffe://x/client/alice"


@pytest.fixture
async def store(database: dict[str, str]) -> AsyncIterator[Store]:
    async with Store(database["database_url"], schema=database.get("database_schema", "")) as s:
        yield s


def _task(task_id: str, *, input_: int = 1) -> TaskRecord:
    now = datetime.now(UTC)
    plan = Plan(steps=(StepSpec(id="a", capability="echo"), StepSpec(id="b", capability="echo")))
    return TaskRecord(
        id=task_id,
        owner=OWNER,
        input={"n": input_},
        plan=plan,
        steps={s.id: StepRecord(spec=s) for s in plan.steps},
        created_at=now,
        updated_at=now,
    )


def _event(task_id: str, sequence: int) -> TaskEvent:
    return TaskEvent(
        task_id=task_id,
        sequence=sequence,
        time=datetime.now(UTC),
        kind=EventKind.STEP_STATE,
        step_id="a",
        state="succeeded",
        output={"n": sequence},
    )


async def test_many_creations_at_once_are_all_durable_with_their_steps(store: Store) -> None:
    ids = [f"t{i:03}" for i in range(60)]
    created = await asyncio.gather(*(store.create_task(_task(i)) for i in ids))
    assert [t.id for t in created] == ids
    for task_id in ids:
        loaded = await store.get_task(task_id)
        assert loaded is not None
        assert list(loaded.steps) == ["a", "b"]


async def test_one_idempotency_key_submitted_many_times_at_once_makes_one_task(
    store: Store,
) -> None:
    results = await asyncio.gather(
        *(store.create_task(_task(f"t{i}"), "key-1", fingerprint="f") for i in range(12)),
        store.create_task(_task("other"), "key-2", fingerprint="f"),
    )
    winners = {t.id for t in results[:12]}
    assert len(winners) == 1  # everyone got the one task that went in
    assert results[12].id == "other"
    assert len(await store.list_tasks(owner=OWNER)) == 2


async def test_a_key_reused_with_another_request_in_the_same_batch_is_refused(
    store: Store,
) -> None:
    first, second = await asyncio.gather(
        store.create_task(_task("t1"), "key", fingerprint="one"),
        store.create_task(_task("t2"), "key", fingerprint="two"),
        return_exceptions=True,
    )
    outcomes = sorted([first, second], key=lambda o: isinstance(o, BaseException))
    assert isinstance(outcomes[0], TaskRecord)
    assert isinstance(outcomes[1], AlreadyExists)


async def test_a_fenced_task_in_a_batch_loses_only_its_own_writes(store: Store) -> None:
    ours, theirs = Lease("a", 60), Lease("b", 60)
    tasks = [_task(f"t{i}") for i in range(8)]
    for task in tasks:
        await store.create_task(task, lease=ours)
    stolen = tasks[3]
    # Replica "b" takes t3 over once our lease on it ran out: only b may write it now.
    assert await store.renew_leases(Lease("a", -1), [stolen.id]) == {stolen.id}
    assert await store.claim_tasks(theirs, skip=set()) == [stolen.id]

    for task in tasks:
        task.state = TaskState.RUNNING
        task.steps["a"].state = StepState.SUCCEEDED
    outcomes = await asyncio.gather(
        *(store.commit(t, [t.steps["a"]], [_event(t.id, 1)], lease=ours) for t in tasks),
        return_exceptions=True,
    )
    assert [type(o) for o in outcomes] == [LeaseLost if t is stolen else type(None) for t in tasks]
    for task in tasks:
        loaded = await store.get_task(task.id)
        assert loaded is not None
        events = await store.events_after(task.id, 0)
        if task is stolen:
            assert loaded.state is TaskState.PENDING
            assert events == []
            assert loaded.steps["a"].state is StepState.PENDING
        else:
            assert loaded.state is TaskState.RUNNING
            assert [e.sequence for e in events] == [1]
            assert loaded.steps["a"].state is StepState.SUCCEEDED


async def test_a_task_written_alone_is_fenced_by_its_update(store: Store) -> None:
    # One task a transaction (a chain's steps): the update's own row count fences it, on
    # PostgreSQL too, where several tasks at once take a locking read first.
    ours, theirs = Lease("a", 60), Lease("b", 60)
    kept, stolen = _task("kept"), _task("stolen")
    for task in (kept, stolen):
        await store.create_task(task, lease=ours)
    assert await store.renew_leases(Lease("a", -1), [stolen.id]) == {stolen.id}
    assert await store.claim_tasks(theirs, skip={kept.id}) == [stolen.id]
    for task in (kept, stolen):
        task.state = TaskState.RUNNING
        task.steps["a"].state = StepState.SUCCEEDED
    with pytest.raises(LeaseLost):
        await store.commit(stolen, [stolen.steps["a"]], [_event(stolen.id, 1)], lease=ours)
    await store.commit(kept, [kept.steps["a"]], [_event(kept.id, 1)], lease=ours)
    lost = await store.get_task(stolen.id)
    assert lost is not None
    assert lost.state is TaskState.PENDING
    assert lost.steps["a"].state is StepState.PENDING
    assert await store.events_after(stolen.id, 0) == []
    # Its new owner writes it, alone, as it may.
    await store.commit(stolen, [stolen.steps["a"]], [_event(stolen.id, 1)], lease=theirs)
    taken = await store.get_task(stolen.id)
    assert taken is not None
    assert taken.state is TaskState.RUNNING
    written = await store.get_task(kept.id)
    assert written is not None
    assert written.steps["a"].state is StepState.SUCCEEDED
    assert [e.sequence for e in await store.events_after(kept.id, 0)] == [1]


async def test_a_write_that_fails_fails_alone(store: Store) -> None:
    good = [_task(f"t{i}") for i in range(5)]
    for task in good:
        await store.create_task(task)
    await store.commit(good[0], [], [_event(good[0].id, 1)])
    # Sequence 1 of t0 exists already: this batch member breaks the events' primary key.
    writes = [store.commit(good[0], [], [_event(good[0].id, 1)])]
    writes += [store.commit(t, [], [_event(t.id, 1)]) for t in good[1:]]
    outcomes = await asyncio.gather(*writes, return_exceptions=True)
    assert isinstance(outcomes[0], Exception)
    assert outcomes[1:] == [None] * 4
    for task in good[1:]:
        assert [e.sequence for e in await store.events_after(task.id, 0)] == [1]


async def test_writes_after_the_store_closed_are_refused(database: dict[str, str]) -> None:
    store = Store(database["database_url"], schema=database.get("database_schema", ""))
    async with store:
        await store.create_task(_task("t1"))
    with pytest.raises(RuntimeError, match=r"outside|closed"):
        await store.create_task(_task("t2"))


async def test_the_writer_groups_what_queues_up_while_a_batch_is_written() -> None:
    batches: list[list[int]] = []
    release, writing = asyncio.Event(), asyncio.Event()

    async def write_batch(batch: Sequence[int]) -> list[object]:
        batches.append(list(batch))
        writing.set()
        if len(batches) == 1:
            await release.wait()  # the first transaction is slow: the rest queue up
        return [w * 10 for w in batch]

    writer: GroupWriter[int] = GroupWriter(write_batch, bound=3)
    writer.start()
    first = asyncio.ensure_future(writer.submit(0))
    await writing.wait()
    rest = [asyncio.ensure_future(writer.submit(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    await writer.aclose()
    assert batches == [[0], [1, 2, 3], [4, 5]]  # no timer: the first went out alone

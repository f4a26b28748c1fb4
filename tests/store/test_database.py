"""The SQL store, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from agentmesh.models import (
    AgentCard,
    Capability,
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator.store import Lease, Store


@pytest.fixture
async def store(database: dict[str, str]) -> AsyncIterator[Store]:
    async with Store(database["database_url"], schema=database.get("database_schema", "")) as s:
        yield s


def _task(task_id: str = "t1", owner: str = "spiffe://x/client/alice") -> TaskRecord:
    now = datetime.now(UTC)
    plan = Plan(steps=(StepSpec(id="a", capability="echo"), StepSpec(id="b", capability="echo")))
    return TaskRecord(
        id=task_id,
        owner=owner,
        input={"n": 1},
        plan=plan,
        steps={s.id: StepRecord(spec=s) for s in plan.steps},
        created_at=now,
        updated_at=now,
    )


def _event(task_id: str, sequence: int, state: str = "running") -> TaskEvent:
    return TaskEvent(
        task_id=task_id,
        sequence=sequence,
        time=datetime.now(UTC),
        kind=EventKind.STEP_STATE,
        step_id="a",
        state=state,
        output={"x": [1, 2]} if state == "succeeded" else None,
    )


async def test_task_round_trips_with_its_steps(store: Store) -> None:
    await store.create_task(_task())
    loaded = await store.get_task("t1")
    assert loaded is not None
    assert loaded.state is TaskState.PENDING
    assert list(loaded.steps) == ["a", "b"]
    assert loaded.plan is not None
    assert loaded.plan.steps[1].id == "b"
    assert loaded.created_at.tzinfo is not None
    assert await store.get_task("nope") is None


async def test_commit_writes_state_steps_and_events_together(store: Store) -> None:
    task = _task()
    await store.create_task(task)
    task.state = TaskState.RUNNING
    step = task.steps["a"]
    step.state, step.output, step.agent, step.attempts = (
        StepState.SUCCEEDED,
        {"x": [1, 2]},
        "echo-1",
        1,
    )
    extra = StepRecord(spec=StepSpec(id="b[0]", capability="echo"))
    await store.commit(
        task, [step], [_event("t1", 1), _event("t1", 2, "succeeded")], new_steps=[(2, extra)]
    )
    loaded = await store.get_task("t1")
    assert loaded is not None
    assert loaded.state is TaskState.RUNNING
    assert loaded.steps["a"].output == {"x": [1, 2]}
    assert loaded.steps["a"].agent == "echo-1"
    assert list(loaded.steps) == ["a", "b", "b[0]"]
    assert await store.last_sequence("t1") == 2
    events = await store.events_after("t1", 0)
    assert [e.sequence for e in events] == [1, 2]
    assert events[1].output == {"x": [1, 2]}
    assert [e.sequence for e in await store.events_after("t1", 1)] == [2]


async def test_idempotency_key_returns_the_first_task_of_the_same_owner(store: Store) -> None:
    first = await store.create_task(_task("t1"), "key-1")
    again = await store.create_task(_task("t2"), "key-1")
    other_owner = await store.create_task(_task("t3", owner="spiffe://x/client/bob"), "key-1")
    assert first.id == "t1"
    assert again.id == "t1"
    assert other_owner.id == "t3"


async def test_listing_by_owner_and_state(store: Store) -> None:
    done = _task("t1")
    await store.create_task(done)
    await store.create_task(_task("t2"))
    await store.create_task(_task("t3", owner="spiffe://x/client/bob"))
    done.state = TaskState.SUCCEEDED
    await store.commit(done)
    alice = await store.list_tasks(owner="spiffe://x/client/alice")
    assert {t.id for t in alice} == {"t1", "t2"}
    finished = await store.list_tasks(states=[TaskState.SUCCEEDED])
    assert [t.id for t in finished] == ["t1"]
    assert len(await store.list_tasks(limit=2)) == 2


async def test_agents_are_saved_replaced_and_deleted(store: Store) -> None:
    card = AgentCard(name="echo-1", endpoint="127.0.0.1:1", capabilities=(Capability(name="echo"),))
    now = datetime.now(UTC)
    await store.save_agent(card, "spiffe://x/agent/echo-1", now)
    await store.save_agent(
        card.model_copy(update={"endpoint": "127.0.0.1:2"}), "spiffe://x/agent/echo-1", now
    )
    agents = await store.agents()
    assert [(c.name, c.endpoint) for c, _, _ in agents] == [("echo-1", "127.0.0.1:2")]
    await store.delete_agent("echo-1")
    assert await store.agents() == []


async def test_store_used_outside_its_context_says_so() -> None:
    store = Store("sqlite+aiosqlite:///:memory:")
    with pytest.raises(RuntimeError, match="outside"):
        await store.get_task("x")


async def test_a_dead_replicas_task_is_claimed_however_many_older_tasks_we_run(
    store: Store,
) -> None:
    ours = Lease("a", 60)
    running = [f"t{i:03}" for i in range(120)]
    for task_id in running:
        await store.create_task(_task(task_id), lease=ours)
    await store.create_task(_task("orphan"), lease=Lease("dead", -1))  # already expired
    claimed = await store.claim_tasks(ours, skip=running)
    assert claimed == ["orphan"]
    assert await store.renew_leases(ours, ["orphan"]) == {"orphan"}


async def test_a_pooled_connection_dropped_while_idle_is_replaced_before_use(
    postgres_database: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server (or the network) drops a connection the pool holds: the next transaction
    # must get a live one, not fail. Pinged because it was idle; in steady use, none is.
    import asyncpg

    from agentmesh.orchestrator.store import connection

    schema = postgres_database["database_schema"]
    async with Store(postgres_database["database_url"], schema=schema) as store:
        await store.create_task(_task("before"))
        admin = await asyncpg.connect(
            postgres_database["database_url"].replace("postgresql+asyncpg://", "postgresql://")
        )
        try:
            dropped = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                connection.application_name(schema),
            )
        finally:
            await admin.close()
        assert dropped >= 1
        monkeypatch.setattr(connection, "PING_AFTER_IDLE_SECONDS", 0.0)
        await store.create_task(_task("after"))
        assert (await store.get_task("after")) is not None
        assert (await store.get_task("before")) is not None

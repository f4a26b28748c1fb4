"""Hot task state in Redis: GetTask on any replica is answered from Redis, not the store.

Two orchestrators in this process (so the test can count the SQL one of them runs) on one
PostgreSQL schema and one Redis namespace; a real agent process registered with both.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, StepState, TaskRecord
from agentmesh.orchestrator import Orchestrator
from tests.conftest import REDIS_URL
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A Redis namespace of this test's own; its keys are removed afterwards."""
    name = f"test-hot-{uuid.uuid4().hex}"
    yield name
    async with Redis.from_url(REDIS_URL) as plain:
        names = [n async for n in plain.scan_iter(match=f"{name}:*")]
        if names:
            await plain.delete(*names)


@pytest.fixture
async def pair(
    settings: Settings, postgres_database: dict[str, str], namespace: str
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Replicas a and b of one mesh, in this process."""
    shared = {**postgres_database, "redis_url": REDIS_URL, "redis_namespace": namespace}
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                Orchestrator(settings.model_copy(update={**shared, "replica_id": name}))
            )
            for name in ("a", "b")
        ]
        yield a, b


class StepReads:
    """Counts the SELECTs on the ``steps`` table an orchestrator's store runs."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.count = 0
        engine = orchestrator.store._engine
        assert engine is not None
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " steps" in statement:
            self.count += 1


async def test_get_task_on_another_replica_is_answered_from_redis(
    pair: tuple[Orchestrator, Orchestrator],
    certs: Path,
    agents: AgentProcesses,
    namespace: str,
) -> None:
    a, b = pair
    agents.start("tests.support.agents", "echo-1", [f"localhost:{a.port}", f"localhost:{b.port}"])
    reads = StepReads(b)
    async with client(a, certs) as on_a, client(b, certs) as on_b:
        await wait_for_agents(on_a, "echo-1")
        plan = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={}),))
        task_id = await on_a.submit(plan=plan)

        key = f"{namespace}:tasks:{task_id}"

        async def snapshot() -> TaskRecord | None:
            async with Redis.from_url(REDIS_URL, decode_responses=True) as plain:
                text = await plain.get(key)
            return None if text is None else TaskRecord.model_validate_json(text)

        # Replica a writes its snapshot after the step's state is durable (and so after b
        # could read it from the store): wait for the snapshot itself, not for b's answer.
        found = await eventually(
            snapshot,
            lambda t: t is not None and t.steps["wait"].state is StepState.RUNNING,
            within=30,
        )
        before = reads.count
        task = await on_b.get(task_id)
        # Replica a wrote the snapshot; replica b read it and not the store.
        assert reads.count == before
        async with Redis.from_url(REDIS_URL, decode_responses=True) as plain:
            assert found is not None
            assert task.steps["wait"].agent == found.steps["wait"].agent == "echo-1"
            # Without the snapshot b reads the store (the count would have seen it).
            await plain.delete(key)
        from_store = await on_b.get(task_id)
        assert reads.count > before
        assert from_store.steps["wait"].state is StepState.RUNNING
        await on_a.cancel(task_id)

"""Two orchestrator replicas sharing PostgreSQL and Redis: leases, takeover, shared events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.models import Plan, StepSpec, StepState, TaskEvent, TaskRecord, TaskState
from tests.conftest import REDIS_URL
from tests.support.mesh import submit_when_offered, wait_for_agents
from tests.support.orchestrator import OrchestratorProcess
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow

AGENT = "tests.support.agents"
#: A step that has been given to an agent (or has already finished).
STARTED = {StepState.RUNNING, StepState.SUCCEEDED}
FINAL = {
    TaskState.SUCCEEDED,
    TaskState.FAILED,
    TaskState.CANCELLED,
    TaskState.ROLLED_BACK,
    TaskState.ROLLBACK_FAILED,
}


@pytest.fixture
async def replicas(
    certs: Path, tmp_path: Path, postgres_database: dict[str, str]
) -> AsyncIterator[tuple[OrchestratorProcess, OrchestratorProcess]]:
    """Two replicas on one PostgreSQL schema and one Redis, with 2-second task leases."""
    database = postgres_database
    # A namespace of their own: other tests' agents and holds stay out of this mesh.
    common = {
        "redis_url": REDIS_URL,
        "redis_namespace": f"test-{uuid.uuid4().hex}",
        "lease_seconds": "2",
    }
    a = OrchestratorProcess(certs, tmp_path / "a", database, replica_id="a", **common)
    b = OrchestratorProcess(certs, tmp_path / "b", database, replica_id="b", **common)
    async with a, b:
        yield a, b


def _slow_plan(seconds: float) -> Plan:
    return Plan(
        steps=(
            StepSpec(id="first", capability="test.echo", input={"value": 1, "delay": seconds}),
            StepSpec(
                id="second",
                capability="test.echo",
                input={"value": "${steps.first.output.value}", "delay": seconds},
            ),
        )
    )


async def test_a_killed_replicas_tasks_are_finished_by_the_other(
    replicas: tuple[OrchestratorProcess, OrchestratorProcess],
    certs: Path,
    agents: AgentProcesses,
) -> None:
    a, b = replicas
    for name in ("echo-1", "echo-2"):
        agents.start(AGENT, name, [a.address, b.address])
    async with Client(a.address, certs, "alice") as on_a, Client(b.address, certs, "alice") as on_b:
        await wait_for_agents(on_a, "echo-1", "echo-2")
        await wait_for_agents(on_b, "echo-1", "echo-2")
        task_ids = [await submit_when_offered(on_a, _slow_plan(0.6)) for _ in range(5)]
        # A watcher on replica b follows a task that replica a runs (Redis fan-out).
        watched = asyncio.create_task(_collect(on_b, task_ids[0]))
        # Killed with every task under way on a.
        await eventually(lambda: _states(on_a, task_ids, "first"), lambda found: found <= STARTED)
        a.kill()
        async with asyncio.timeout(40):
            events = await watched
            finals = [await _final(on_b, task_id) for task_id in task_ids]
    assert all(t.state == TaskState.SUCCEEDED for t in finals), [t.error for t in finals]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert "task.resumed" in b.log()


async def test_cancel_sent_to_the_other_replica_reaches_the_owner(
    replicas: tuple[OrchestratorProcess, OrchestratorProcess],
    certs: Path,
    agents: AgentProcesses,
) -> None:
    a, b = replicas
    agents.start(AGENT, "echo-1", [a.address, b.address])
    async with Client(a.address, certs, "alice") as on_a, Client(b.address, certs, "alice") as on_b:
        await wait_for_agents(on_a, "echo-1")
        plan = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={"seconds": 60}),))
        task_id = await submit_when_offered(on_a, plan)
        await eventually(
            lambda: _states(on_a, [task_id], "wait"), lambda found: found == {StepState.RUNNING}
        )
        async with asyncio.timeout(20):
            task = await on_b.cancel(task_id, "changed my mind")
    assert task.state == TaskState.CANCELLED
    assert "replica" not in task.error


async def _states(client: Client, task_ids: list[str], step_id: str) -> set[StepState]:
    """The states that step ``step_id`` of the tasks is in."""
    tasks = [await client.get(task_id) for task_id in task_ids]
    return {t.steps[step_id].state for t in tasks if step_id in t.steps}


async def _collect(client: Client, task_id: str) -> list[TaskEvent]:
    return [event async for event in client.watch(task_id)]


async def _final(client: Client, task_id: str) -> TaskRecord:
    async def probe() -> TaskRecord:
        return await client.get(task_id)

    return await eventually(probe, lambda task: task.state in FINAL, within=30)

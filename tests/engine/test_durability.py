"""A step's success is durable before anything that depends on it is sent to an agent.

The dependant's agent reads the orchestrator's database itself (SQLite, from its own
process) when its assignment arrives: the success it was built on must be there already.
"""

from __future__ import annotations

from pathlib import Path

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"


async def test_a_dependant_is_sent_only_once_the_success_it_needs_is_stored(
    orchestrator: Orchestrator, settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    database = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    # A chain, so that each check follows a success at once (no other step in between).
    steps = [StepSpec(id="s0", capability="test.echo", input={"value": 0})]
    for i in range(1, 6):
        steps.append(
            StepSpec(
                id=f"s{i}",
                capability="test.stored_state",
                input={"database": database, "step": f"s{i - 1}"},
                needs=(f"s{i - 1}",),
            )
        )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=Plan(steps=tuple(steps)))
        task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=60)
    assert task.state == TaskState.SUCCEEDED
    stored = {f"s{i - 1}": (task.steps[f"s{i}"].output or {})["value"] for i in range(1, 6)}
    assert stored == {f"s{i}": "succeeded" for i in range(5)}


async def test_fan_out_instances_are_sent_only_once_their_rows_are_stored(
    orchestrator: Orchestrator, settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    # A step may go out before its running state is written (a resumed run sends it again
    # with the same idempotency key), but not before the task has the step at all.
    database = settings.database_url.removeprefix("sqlite+aiosqlite:///")
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    instances = [f"each[{i}]" for i in range(4)]
    plan = Plan(
        steps=(
            StepSpec(id="list", capability="test.echo", input={"value": instances}),
            StepSpec(
                id="each",
                capability="test.stored_state",
                input={"database": database, "step": "${item}"},
                for_each="${steps.list.output.value}",
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=60)
    assert task.state == TaskState.SUCCEEDED
    stored = {i: (task.steps[i].output or {})["value"] for i in instances}
    assert all(state is not None for state in stored.values()), stored

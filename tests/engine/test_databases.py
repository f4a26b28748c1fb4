"""The core path on both supported databases: a plan runs, and what is read back is the store's.

The fan-out test (``test_fan_out``) and the crash test (``test_restart``) run on both too.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, step_states, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


async def test_a_plan_runs_on_agents_and_its_record_is_read_back_from_the_database(
    orchestrator_on_database: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator_on_database.port}"])
    plan = Plan(
        steps=(
            StepSpec(id="ask", capability="test.echo", input={"value": "${input.question}"}),
            StepSpec(
                id="answer",
                capability="test.echo",
                input={"value": "${steps.ask.output.value} 42", "progress": 1},
            ),
        ),
        aggregate={"strategy": "pick", "step": "answer"},
    )
    async with client(orchestrator_on_database, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan, input={"question": "why?"}, priority=3)
        async with asyncio.timeout(15):
            events = await watch_all(alice, task_id)
        # Finished tasks are no longer live: these come from the database.
        task = await alice.get(task_id)
        listed = await alice.list_tasks(states=[TaskState.SUCCEEDED])
        replayed = await watch_all(alice, task_id)

    assert orchestrator_on_database.engine.live(task_id) is None
    assert task.state == TaskState.SUCCEEDED
    assert task.result == {"value": "why? 42", "agent": "echo-1"}
    assert task.input == {"question": "why?"}
    assert task.priority == 3
    assert {i: (s.state, s.agent, s.attempts) for i, s in task.steps.items()} == {
        "ask": (StepState.SUCCEEDED, "echo-1", 1),
        "answer": (StepState.SUCCEEDED, "echo-1", 1),
    }
    assert [t.id for t in listed.tasks] == [task_id]
    assert_gapless(events)
    assert step_states(events, "answer") == [StepState.RUNNING, StepState.SUCCEEDED]
    assert replayed == events

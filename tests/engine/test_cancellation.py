"""CancelTask: scheduling stops, the agent running a step is told to stop, done work is undone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import step_states, task_states, watch_all
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


async def test_cancelling_a_task_cancels_its_running_step_on_the_agent(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, journal: Journal
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(
                id="wait",
                capability="test.hang",
                input={"journal": str(journal), "entry": "wait"},
            ),
            StepSpec(id="after", capability="test.echo", needs=("wait",)),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        await journal.wait_for("start", "wait")
        async with asyncio.timeout(10):
            cancelled = await alice.cancel(task_id, reason="changed my mind")
        events = await watch_all(alice, task_id)

    assert cancelled.state == TaskState.CANCELLED
    # The agent's own word: its handler was interrupted (by the Cancel on the Session).
    heard = await journal.wait_for("cancelled", "wait", within=5)
    assert heard.agent == "echo-1"
    assert "assignment.cancelling" in agents.log("echo-1")
    assert journal.events("end") == []

    assert step_states(events, "wait")[-1] == StepState.CANCELLED
    assert step_states(events, "after") == []
    assert task_states(events)[-1] == TaskState.CANCELLED
    assert events[-1].reason == "changed my mind"
    assert cancelled.steps["after"].state == StepState.PENDING


async def test_cancelling_a_task_rolls_back_the_steps_it_completed(
    orchestrator: Orchestrator,
    certs: Path,
    agents: AgentProcesses,
    tmp_path: Path,
    journal: Journal,
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    record = tmp_path / "records.txt"
    plan = Plan(
        steps=(
            StepSpec(
                id="book",
                capability="test.record",
                input={"log": str(record), "entry": "room"},
                compensation="test.undo",
            ),
            StepSpec(
                id="wait",
                capability="test.hang",
                input={"journal": str(journal), "entry": "wait"},
                needs=("book",),
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        await journal.wait_for("start", "wait")
        async with asyncio.timeout(10):
            cancelled = await alice.cancel(task_id)
        events = await watch_all(alice, task_id)

    assert cancelled.state == TaskState.ROLLED_BACK
    assert record.read_text().splitlines() == ["do room", "undo room"]
    await journal.wait_for("cancelled", "wait", within=5)
    assert step_states(events, "book")[-1] == StepState.COMPENSATED
    assert step_states(events, "wait")[-1] == StepState.CANCELLED
    assert task_states(events)[-2:] == [TaskState.COMPENSATING, TaskState.ROLLED_BACK]

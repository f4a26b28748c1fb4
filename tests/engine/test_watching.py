"""WatchTask subscribers: leaving mid-task and coming back from the last sequence loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.models import Plan, StepSpec, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, final_state, kind, watch_all
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


async def test_a_watcher_that_disconnects_while_the_task_runs_resumes_without_a_gap(
    orchestrator: Orchestrator,
    certs: Path,
    agents: AgentProcesses,
    journal: Journal,
    tmp_path: Path,
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    gate = tmp_path / "gate"
    plan = Plan(
        steps=(
            StepSpec(id="first", capability="test.echo", input={"value": 1, "progress": 2}),
            StepSpec(
                id="held",
                capability="test.work",
                input={"journal": str(journal), "entry": "held", "gate": str(gate)},
                needs=("first",),
            ),
            StepSpec(id="last", capability="test.echo", input={"value": 3}, needs=("held",)),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        before: list[TaskEvent] = []
        async with asyncio.timeout(10):
            async for event in alice.watch(task_id):
                before.append(event)
                if kind(event) == "step_state" and event.step_id == "held":
                    break  # the watcher goes away while "held" runs
        assert (await alice.get(task_id)).state == TaskState.RUNNING
        # Work goes on without the watcher; what it misses meanwhile is kept for it.
        gate.touch()
        await journal.wait_for("end", "held")
        async with asyncio.timeout(10):
            after = await watch_all(alice, task_id, after=before[-1].sequence)
            everything = await watch_all(alice, task_id)

    assert_gapless(before + after)
    assert before + after == everything
    assert final_state(after) == TaskState.SUCCEEDED
    assert any(e.step_id == "last" for e in after if kind(e) == "step_state")

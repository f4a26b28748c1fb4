"""A capability that crashes fails its one assignment, fast, and costs the agent nothing else."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.models import Plan, RetryPolicy, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

#: About 1 MB, all of it in the crashing frames' locals. (One string: many small items would
#: cost the in-process orchestrator more to convert than the agent to crash.)
BIG_INPUT = {"value": "abcdefgh" * 125_000}


async def test_a_crash_on_a_large_input_fails_the_assignment_and_the_agent_keeps_its_session(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start("tests.support.agents", "echo-1", [f"localhost:{orchestrator.port}"])
    step = StepSpec(
        id="boom", capability="test.raise", input=BIG_INPUT, retry=RetryPolicy(max_attempts=1)
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=Plan(steps=(step,)))
        async with asyncio.timeout(30):
            await watch_all(alice, task_id)
        task = await alice.get(task_id)
        (after,) = await alice.list_agents()

    boom = task.steps["boom"]
    assert task.state == TaskState.FAILED
    assert (boom.state, boom.attempts) == (StepState.FAILED, 1)
    # The agent's own error, come back on the Session, not agent_lost: its event loop was
    # never held up long enough for the orchestrator to give up on the Session.
    assert "ValueError: this capability is broken" in boom.error, boom.error
    assert after.connected
    # Logged with a plain traceback: no frame's locals (the input among them) were rendered.
    log = agents.log("echo-1")
    assert "assignment.crashed" in log
    assert "Traceback (most recent call last)" in log
    assert "locals" not in log
    assert "abcdefgh" not in log

"""Deadlines: a task's ``timeout_seconds`` fails it; a step's times an attempt out, retried."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.models import Plan, RetryPolicy, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import step_events, step_states, watch_all
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


async def test_a_task_past_its_deadline_fails_with_the_reason_and_its_step_is_cancelled(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, journal: Journal
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(
                id="wait", capability="test.hang", input={"journal": str(journal), "entry": "wait"}
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan, timeout_seconds=1.0)
        async with asyncio.timeout(10):
            events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state == TaskState.FAILED
    assert task.error == "task deadline exceeded"
    assert events[-1].reason == "task deadline exceeded"
    assert step_states(events, "wait")[-1] == StepState.CANCELLED
    # Running out of time stops the work on the agent too.
    await journal.wait_for("cancelled", "wait", within=5)
    elapsed = task.updated_at - task.created_at
    assert 1.0 <= elapsed.total_seconds() < 5.0


async def test_an_attempt_past_the_step_deadline_times_out_and_the_step_is_retried(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, journal: Journal
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(
                id="slow_once",
                capability="test.work",
                # The first attempt would take a minute, the second answers at once.
                input={"journal": str(journal), "entry": "slow_once", "delays": [60, 0]},
                timeout_seconds=0.5,
                retry=RetryPolicy(max_attempts=2, initial_backoff_seconds=0.05),
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        async with asyncio.timeout(10):
            events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    assert task.steps["slow_once"].attempts == 2
    assert task.result["slow_once"] == {"entry": "slow_once"}
    changes = [(e.state, e.attempt) for e in step_events(events, "slow_once")]
    assert changes == [
        (StepState.RUNNING, 1),
        (StepState.PENDING, 1),
        (StepState.RUNNING, 2),
        (StepState.SUCCEEDED, 2),
    ]
    retried = step_events(events, "slow_once")[1]
    assert "timeout" in retried.reason
    # The agent saw the first attempt stopped at its deadline, the second one finish.
    assert [(e.event, e.attempt) for e in journal.entries()] == [
        ("start", 1),
        ("cancelled", 1),
        ("start", 2),
        ("end", 2),
    ]

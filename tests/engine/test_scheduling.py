"""Scheduling across tasks: priorities decide who gets a busy agent; capacity is never exceeded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.client import Client
from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import watch_all
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"


def work(journal: Journal, entry: str, **fields: object) -> Plan:
    """A one-step plan: ``test.work`` journaling as ``entry``."""
    return Plan(
        steps=(
            StepSpec(
                id="work",
                capability="test.work",
                input={"journal": str(journal), "entry": entry, **fields},
            ),
        )
    )


async def wait_until_waiting(alice: Client, task_id: str) -> None:
    """Wait until the task's step is queued for an agent slot."""

    async def state() -> int:
        return (await alice.get(task_id)).steps["work"].state

    await eventually(state, lambda s: s == StepState.WAITING, within=10)


async def test_a_high_priority_step_gets_a_busy_agent_before_earlier_low_priority_ones(
    orchestrator: Orchestrator,
    certs: Path,
    agents: AgentProcesses,
    journal: Journal,
    tmp_path: Path,
) -> None:
    agents.start(AGENT, "slow", [f"localhost:{orchestrator.port}"], TEST_AGENT_MAX_CONCURRENCY="1")
    gate = tmp_path / "gate"
    async with client(orchestrator, certs) as alice:
        (slow,) = await wait_for_agents(alice, "slow")
        assert slow.card.max_concurrency == 1
        blocker = await alice.submit(plan=work(journal, "blocker", gate=str(gate)))
        await journal.wait_for("start", "blocker")
        queued = []
        for entry, priority in (("low-1", 0), ("low-2", 0), ("high", 5)):
            queued.append(await alice.submit(plan=work(journal, entry), priority=priority))
            await wait_until_waiting(alice, queued[-1])
        gate.touch()
        async with asyncio.timeout(15):
            for task_id in (blocker, *queued):
                await watch_all(alice, task_id)
                assert (await alice.get(task_id)).state == TaskState.SUCCEEDED

    assert journal.started() == ["blocker", "high", "low-1", "low-2"]
    assert journal.max_concurrent() == 1


async def test_an_agent_never_runs_more_assignments_than_its_declared_concurrency(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, journal: Journal
) -> None:
    address = f"localhost:{orchestrator.port}"
    agents.start(AGENT, "echo-1", [address], TEST_AGENT_MAX_CONCURRENCY="2")
    # Two tasks of three independent steps each compete for the agent's two slots.
    plans = [
        Plan(
            steps=tuple(
                StepSpec(
                    id=f"w{i}",
                    capability="test.work",
                    input={"journal": str(journal), "entry": f"{name}.w{i}", "delay": 0.3},
                )
                for i in range(3)
            )
        )
        for name in ("a", "b")
    ]
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_ids = [await alice.submit(plan=plan) for plan in plans]
        async with asyncio.timeout(15):
            for task_id in task_ids:
                await watch_all(alice, task_id)
        tasks = [await alice.get(task_id) for task_id in task_ids]

    assert all(t.state == TaskState.SUCCEEDED for t in tasks)
    assert len(journal.events("end")) == 6
    # Counted by the agent itself: busy, but never over its limit ...
    assert journal.max_concurrent("echo-1") == 2
    # ... and never asked to be: an agent refuses work beyond its limit as "busy",
    # which would show up as a failed first attempt.
    assert all(s.attempts == 1 for t in tasks for s in t.steps.values())
    assert "assignment.refused" not in agents.log("echo-1")

"""Graceful degradation: no capable agent means waiting, not failing; optional steps may fail.

A step with no live agent for its capability waits, visibly, until one registers or
the task's deadline passes. An optional step that fails is skipped with its reason (and
so are the steps that need it); the task still succeeds, its result marked partial.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agentmesh.client import Client
from agentmesh.models import Plan, StepSpec, StepState, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import first_sequence, step_events, watch_all
from tests.support.mesh import client, wait_for_agent_gone, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"
ONE_ECHO = Plan(steps=(StepSpec(id="echo", capability="test.echo", input={"value": "hi"}),))


async def _only_agent_dies(alice: Client, agents: AgentProcesses, address: str) -> None:
    """Let the orchestrator learn test.echo from an agent, then lose that agent."""
    agents.start(AGENT, "echo-1", [address])
    await wait_for_agents(alice, "echo-1")
    agents.kill("echo-1")
    await wait_for_agent_gone(alice, "echo-1")


async def _waiting_seen(alice: Client, task_id: str) -> TaskEvent:
    """Watch the task until a step says it is waiting; that event."""
    async with asyncio.timeout(10):
        async for event in alice.watch(task_id):
            if event.state == StepState.WAITING:
                return event
    raise AssertionError("the task ended without a step waiting")


async def test_a_step_with_no_capable_agent_waits_until_one_registers_then_finishes(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    address = f"localhost:{orchestrator.port}"
    async with client(orchestrator, certs) as alice:
        await _only_agent_dies(alice, agents, address)
        task_id = await alice.submit(plan=ONE_ECHO)
        waiting = await _waiting_seen(alice, task_id)
        assert waiting.step_id == "echo"
        assert "test.echo" in waiting.reason
        assert (await alice.get(task_id)).state == TaskState.RUNNING

        agents.start(AGENT, "echo-2", [address])
        events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state == TaskState.SUCCEEDED
    assert task.steps["echo"].agent == "echo-2"
    assert task.steps["echo"].output == {"value": "hi", "agent": "echo-2"}
    assert first_sequence(events, "echo", StepState.WAITING) < first_sequence(
        events, "echo", StepState.RUNNING
    )


async def test_a_step_waiting_for_an_agent_fails_when_the_task_deadline_passes(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    async with client(orchestrator, certs) as alice:
        await _only_agent_dies(alice, agents, f"localhost:{orchestrator.port}")
        submitted = time.monotonic()
        task_id = await alice.submit(plan=ONE_ECHO, timeout_seconds=1.0)
        await _waiting_seen(alice, task_id)
        events = await watch_all(alice, task_id)
        waited = time.monotonic() - submitted
        task = await alice.get(task_id)

    assert task.state == TaskState.FAILED
    assert task.error == "task deadline exceeded"
    assert events[-1].reason == "task deadline exceeded"
    assert 1.0 <= waited < 5.0
    assert [e.state for e in step_events(events, "echo")] == [
        StepState.WAITING,
        StepState.CANCELLED,
    ]


async def test_a_failed_optional_step_is_skipped_with_its_reason_and_the_result_is_partial(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    plan = Plan(
        steps=(
            StepSpec(id="draft", capability="test.echo", input={"value": "draft"}),
            StepSpec(
                id="enrich",
                capability="test.fail",
                input={"message": "enrichment service down"},
                optional=True,
            ),
            StepSpec(
                id="cite",
                capability="test.echo",
                input={"value": "${steps.enrich.output.value}"},
                needs=("enrich",),
            ),
            StepSpec(
                id="final",
                capability="test.echo",
                input={"value": "${steps.draft.output.value}"},
                needs=("draft",),
            ),
        )
    )
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    def last(step_id: str) -> TaskEvent:
        return step_events(events, step_id)[-1]

    assert task.state == TaskState.SUCCEEDED
    assert task.partial
    assert events[-1].partial
    assert last("enrich").state == StepState.SKIPPED
    assert "optional step failed" in last("enrich").reason
    assert "enrichment service down" in last("enrich").reason
    assert last("cite").state == StepState.SKIPPED
    assert "enrich" in last("cite").reason
    assert last("final").state == StepState.SUCCEEDED
    assert set(task.result) == {"draft", "final"}

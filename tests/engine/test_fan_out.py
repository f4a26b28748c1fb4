"""A ``for_each`` fan-out and its join through the demo agents, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agentmesh.examples import sample_document
from agentmesh.models import StepRecord, StepState, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import (
    assert_gapless,
    first_sequence,
    step_events,
    step_states,
    task_states,
    watch_all,
)
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

TITLE = "Riverside solar"


def start_demo_agents(agents: AgentProcesses, address: str) -> None:
    """The demo's splitter, two analysts and writer, each its own process."""
    # Enough simulated work per section that instances visibly overlap.
    latency = {"AGENTMESH_DEMO_LATENCY": "0.3"}
    agents.start("agentmesh.examples.splitter", "splitter", [address], **latency)
    agents.start("agentmesh.examples.analyst", "analyst-1", [address], **latency)
    agents.start("agentmesh.examples.analyst", "analyst-2", [address], **latency)
    agents.start("agentmesh.examples.writer", "writer", [address], **latency)


def instances(task: TaskRecord) -> dict[str, StepRecord]:
    """The fan-out instances ``analyze[i]`` of a document-brief task, by id."""
    return {i: s for i, s in task.steps.items() if i.startswith("analyze[")}


async def test_join_starts_only_after_every_fan_out_instance_succeeded(
    orchestrator_on_database: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    start_demo_agents(agents, f"localhost:{orchestrator_on_database.port}")
    async with client(orchestrator_on_database, certs) as alice:
        await wait_for_agents(alice, "splitter", "analyst-1", "analyst-2", "writer")
        task_id = await alice.submit(
            workflow="document-brief", input={"text": sample_document(), "title": TITLE}
        )
        async with asyncio.timeout(30):
            events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    assert_gapless(events)
    sections = task.steps["split"].output["sections"]
    fanned = instances(task)
    assert len(sections) > 2
    assert sorted(fanned) == sorted(f"analyze[{i}]" for i in range(len(sections)))
    assert all(s.state == StepState.SUCCEEDED for s in fanned.values())

    # The join waits for every instance, and for the fan-out step they make up.
    summarize_started = first_sequence(events, "summarize", StepState.RUNNING)
    for step_id in fanned:
        assert first_sequence(events, step_id, StepState.SUCCEEDED) < summarize_started
    assert first_sequence(events, "analyze", StepState.SUCCEEDED) < summarize_started
    assert step_states(events, "summarize") == [StepState.RUNNING, StepState.SUCCEEDED]

    result = task.result
    assert result["summary"].startswith(TITLE)
    assert result["words"] == sum(s.output["words"] for s in fanned.values())
    assert task_states(events)[-1] == TaskState.SUCCEEDED


async def test_fan_out_instances_run_in_parallel_across_both_analysts(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    start_demo_agents(agents, f"localhost:{orchestrator.port}")
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "splitter", "analyst-1", "analyst-2", "writer")
        task_id = await alice.submit(
            workflow="document-brief", input={"text": sample_document(), "title": TITLE}
        )
        async with asyncio.timeout(30):
            events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    fanned = list(instances(task))
    spans: dict[str, tuple[str, int, int]] = {}
    for step_id in fanned:
        running = [e for e in step_events(events, step_id) if e.state == StepState.RUNNING]
        spans[step_id] = (
            running[-1].agent,
            running[-1].sequence,
            first_sequence(events, step_id, StepState.SUCCEEDED),
        )
    assert {agent for agent, _, _ in spans.values()} == {"analyst-1", "analyst-2"}
    # Some instance on one analyst was running while another ran on the other analyst.
    overlapping = [
        (a, b)
        for a, (agent_a, start_a, end_a) in spans.items()
        for b, (agent_b, start_b, end_b) in spans.items()
        if agent_a != agent_b and start_a < end_b and start_b < end_a
    ]
    assert overlapping, spans

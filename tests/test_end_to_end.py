"""One task end to end: real agent processes, mTLS Sessions, a watcher that sees everything."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import json_format

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.models import Plan, StepSpec
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


def _kind(event: pb.TaskEvent) -> str:
    return event.WhichOneof("kind") or ""


async def test_dependent_steps_run_on_agents_and_the_watcher_sees_every_event_in_order(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    address = f"localhost:{orchestrator.port}"
    agents.start(AGENT, "echo-1", [address])
    agents.start(AGENT, "echo-2", [address])
    plan = Plan(
        steps=(
            StepSpec(
                id="fetch", capability="test.echo", input={"value": "${input.topic}", "progress": 2}
            ),
            StepSpec(
                id="shout",
                capability="test.echo",
                input={"value": "${steps.fetch.output.value}!", "delay": 0.1},
            ),
            StepSpec(id="count", capability="test.echo", input={"value": 3}),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1", "echo-2")
        task_id = await alice.submit(plan=plan, input={"topic": "mesh"})
        events = [event async for event in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert all(e.task_id == task_id for e in events)
    assert events[0].task_state.state == pb.TASK_STATE_RUNNING
    assert events[-1].task_state.state == pb.TASK_STATE_SUCCEEDED

    def step_states(step: str) -> list[int]:
        return [
            e.step_state.state
            for e in events
            if _kind(e) == "step_state" and e.step_state.step_id == step
        ]

    for step in ("fetch", "shout", "count"):
        assert step_states(step) == [pb.STEP_STATE_RUNNING, pb.STEP_STATE_SUCCEEDED]
    progress = [e.step_progress for e in events if _kind(e) == "step_progress"]
    assert [p.message for p in progress] == ["step 1 of 2", "step 2 of 2"]
    assert all(p.step_id == "fetch" for p in progress)
    # shout depends on fetch: it starts only after fetch succeeded.
    position = {
        (e.step_state.step_id, e.step_state.state): i
        for i, e in enumerate(events)
        if _kind(e) == "step_state"
    }
    assert position[("fetch", pb.STEP_STATE_SUCCEEDED)] < position[("shout", pb.STEP_STATE_RUNNING)]

    assert task.state == pb.TASK_STATE_SUCCEEDED
    result = json_format.MessageToDict(task.result)
    assert result["shout"]["value"] == "mesh!"
    assert result["count"]["value"] == 3
    assert {s.agent for s in task.steps} <= {"echo-1", "echo-2"}
    assert events[-1].task_state.result == task.result


async def test_a_watcher_that_reconnects_from_its_last_sequence_misses_nothing(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=tuple(
            StepSpec(id=f"s{i}", capability="test.echo", input={"value": i, "progress": 1})
            for i in range(4)
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        first: list[pb.TaskEvent] = []
        async for event in alice.watch(task_id):
            first.append(event)
            if len(first) == 3:
                break
        rest = [e async for e in alice.watch(task_id, after_sequence=first[-1].sequence)]
        everything = [e async for e in alice.watch(task_id)]
    assert [e.sequence for e in first + rest] == [e.sequence for e in everything]
    assert everything[-1].task_state.state == pb.TASK_STATE_SUCCEEDED

"""One task end to end: real agent processes, mTLS Sessions, a watcher that sees everything."""

from __future__ import annotations

from pathlib import Path

from agentmesh.models import EventKind, Plan, StepSpec, StepState, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import final_state
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


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
    assert (events[0].kind, events[0].state) == (EventKind.TASK_STATE, TaskState.RUNNING)
    assert final_state(events) == TaskState.SUCCEEDED

    def step_states(step: str) -> list[str]:
        return [e.state for e in events if e.kind is EventKind.STEP_STATE and e.step_id == step]

    for step in ("fetch", "shout", "count"):
        assert step_states(step) == [StepState.RUNNING, StepState.SUCCEEDED]
    progress = [e for e in events if e.kind is EventKind.STEP_PROGRESS]
    assert [p.message for p in progress] == ["step 1 of 2", "step 2 of 2"]
    assert all(p.step_id == "fetch" for p in progress)
    # shout depends on fetch: it starts only after fetch succeeded.
    position = {
        (e.step_id, e.state): i for i, e in enumerate(events) if e.kind is EventKind.STEP_STATE
    }
    assert position[("fetch", StepState.SUCCEEDED)] < position[("shout", StepState.RUNNING)]

    assert task.state == TaskState.SUCCEEDED
    result = task.result
    assert result["shout"]["value"] == "mesh!"
    assert result["count"]["value"] == 3
    assert {s.agent for s in task.steps.values()} <= {"echo-1", "echo-2"}
    assert events[-1].output == task.result


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
        first: list[TaskEvent] = []
        async for event in alice.watch(task_id):
            first.append(event)
            if len(first) == 3:
                break
        rest = [e async for e in alice.watch(task_id, after=first[-1].sequence)]
        everything = [e async for e in alice.watch(task_id)]
    assert [e.sequence for e in first + rest] == [e.sequence for e in everything]
    assert final_state(everything) == TaskState.SUCCEEDED

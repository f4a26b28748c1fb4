"""Dynamic decomposition: an agent's result adds follow-up steps to the running plan."""

from __future__ import annotations

from pathlib import Path

from agentmesh.models import EventKind, Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


async def test_follow_up_steps_run_after_the_step_that_added_them(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(id="plan", capability="test.expand", input={"count": 3}),
            StepSpec(id="other", capability="test.echo", input={"value": 1}),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        events = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    added = ["plan_more0", "plan_more1", "plan_more2"]
    assert [s.spec.id for s in task.steps.values()] == ["plan", "other", *added]
    result = task.result
    assert [result[step]["value"] for step in added] == added
    order = [(e.step_id, e.state) for e in events if e.kind is EventKind.STEP_STATE]
    plan_done = order.index(("plan", StepState.SUCCEEDED))
    for step in added:
        assert order.index((step, StepState.PENDING)) < plan_done
        assert order.index((step, StepState.RUNNING)) > plan_done


async def test_follow_ups_naming_an_unknown_capability_fail_the_step_without_retry(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(
                id="plan",
                capability="test.expand",
                input={"count": 1, "capability": "no.such.thing"},
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        _ = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)
    assert task.state == TaskState.FAILED
    assert "invalid follow-up steps" in task.error
    assert "no.such.thing" in task.error
    (step,) = task.steps.values()
    assert step.attempts == 1

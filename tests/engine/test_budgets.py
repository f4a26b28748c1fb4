"""Task budgets: usage reported by agents, summed across parallel steps, stopping the task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.errors import ValidationError
from agentmesh.models import Budget, EventKind, Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, step_events, watch_all
from tests.support.mesh import client, wait_for_agents


class Items(BaseModel):
    count: int


class Listed(BaseModel):
    items: list[int]


class Item(BaseModel):
    item: int


class Done(BaseModel):
    item: int


class Anything(BaseModel):
    model_config = {"extra": "allow"}


class CostlyAgent(Agent):
    """Lists items and "calls a model" on each, reporting 10 tokens and 0.5 of cost a call."""

    name = "echo-1"
    version = "1.0.0"
    max_concurrency = 2

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.undone = 0

    @capability("test.list", description="A list of as many items as asked.")
    async def list_items(self, data: Items, ctx: AssignmentContext) -> Listed:
        return Listed(items=list(range(data.count)))

    @capability("test.unlist", description="Compensate test.list.")
    async def unlist(self, data: Anything, ctx: AssignmentContext) -> Anything:
        self.undone += 1
        return Anything()

    @capability("test.costly", description="One model call: 4 input and 6 output tokens.")
    async def costly(self, data: Item, ctx: AssignmentContext) -> Done:
        self.calls.append(data.item)
        await asyncio.sleep(0.05)  # long enough for two calls to overlap
        ctx.report_usage(input_tokens=4, output_tokens=2)
        ctx.report_usage(output_tokens=4, cost=0.5)
        return Done(item=data.item)


def fan_out(count: int) -> Plan:
    return Plan(
        steps=(
            StepSpec(
                id="list",
                capability="test.list",
                input={"count": count},
                compensation="test.unlist",
            ),
            StepSpec(
                id="each",
                capability="test.costly",
                input={"item": "${item}"},
                for_each="${steps.list.output.items}",
            ),
        )
    )


def serve(agent: Agent, orchestrator: Orchestrator, certs: Path) -> AgentServer:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    return AgentServer(agent, config)


async def test_a_budget_spent_by_parallel_steps_mid_fan_out_fails_and_rolls_back_the_task(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = CostlyAgent()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=fan_out(10), budget=Budget(tokens=25))
        async with asyncio.timeout(60):
            events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert task.state is TaskState.ROLLED_BACK, task.error
    assert task.error.startswith("budget_exceeded: tokens"), task.error
    assert agent.undone == 1
    # Three calls pass 25 tokens (two may still have been running together then): the
    # fan-out stopped in its middle, far from its ten items.
    assert 3 <= len(agent.calls) <= 4, agent.calls
    # Every call that answered counts (one cut short by the stop reports nothing).
    assert task.usage.tokens in (30, 40), task.usage
    assert task.usage.tokens <= 10 * len(agent.calls)
    assert task.usage.cost == pytest.approx(task.usage.tokens / 20)
    assert task.usage.seconds > 0
    assert task.budget == Budget(tokens=25)
    assert_gapless(events)

    # Once the totals an event carries reached the budget, no instance started.
    reached = next(
        e.sequence for e in step_events(events) if e.usage is not None and e.usage.tokens >= 25
    )
    started_after = [
        e.step_id
        for e in step_events(events)
        if e.sequence > reached and e.state == StepState.RUNNING and e.step_id != "each"
    ]
    assert started_after == []
    final = events[-1]
    assert final.kind is EventKind.TASK_STATE
    assert final.usage is not None
    assert final.usage.tokens == task.usage.tokens


async def test_a_steps_budget_lets_that_many_steps_run_and_no_more(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = CostlyAgent()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        # "list" is one step, so three instances fit a budget of four.
        task_id = await alice.submit(plan=fan_out(6), budget=Budget(steps=4))
        async with asyncio.timeout(60):
            await watch_all(alice, task_id)
        task = await alice.get(task_id)
        first_calls = len(agent.calls)
        within = await alice.submit(plan=fan_out(3), budget=Budget(steps=4, cost=10))
        async with asyncio.timeout(60):
            await watch_all(alice, within)
        fitting = await alice.get(within)

    assert task.state is TaskState.ROLLED_BACK
    assert task.error == "budget_exceeded: steps 4 of 4 used"
    assert task.usage.steps == 4
    # The fifth step was refused before it went out (the fourth may have been cut short).
    assert 2 <= first_calls <= 3, agent.calls
    assert fitting.state is TaskState.SUCCEEDED, fitting.error
    assert fitting.usage.steps == 4
    assert fitting.usage.cost == pytest.approx(1.5)


async def test_a_negative_budget_is_refused_naming_its_field(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.submit(plan=fan_out(1), budget=Budget.model_construct(cost=-1.0))

    assert refused.value.field == "budget.cost"

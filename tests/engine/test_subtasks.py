"""Sub-tasks: an agent submits tasks from its handler (``ctx.submit``); a tree of them is
owned by the top task's owner and ends from the leaves up when the top is cancelled."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.client import Client
from agentmesh.errors import PermissionDenied
from agentmesh.models import (
    EventKind,
    ParentStep,
    Plan,
    StepSpec,
    TaskEvent,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.support.events import watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

ALICE = "spiffe://agentmesh.test/client/alice"


class Depth(BaseModel):
    depth: int
    hang: bool = False


class Spawned(BaseModel):
    depth: int
    below: object = None


class Spawner(Agent):
    """At depth N > 0 runs a sub-task at depth N - 1 and returns its result; at 0 answers
    (or, with ``hang``, waits until cancelled)."""

    name = "echo-1"
    version = "1.0.0"
    max_concurrency = 8

    def __init__(self) -> None:
        super().__init__()
        #: The task of every run, in the order the runs began.
        self.tasks: list[str] = []
        self.cancelled: list[str] = []

    @capability("test.spawn", description="Spawn a chain of sub-tasks.")
    async def spawn(self, data: Depth, ctx: AssignmentContext) -> Spawned:
        self.tasks.append(ctx.task_id)
        try:
            if data.depth == 0:
                if data.hang:
                    await asyncio.sleep(3600)
                return Spawned(depth=0)
            below = await ctx.submit(plan=chain(data.depth - 1, hang=data.hang))
        except asyncio.CancelledError:
            self.cancelled.append(ctx.task_id)
            raise
        return Spawned(depth=data.depth, below=below)


def chain(depth: int, *, hang: bool = False) -> Plan:
    return Plan(
        steps=(StepSpec(id="spawn", capability="test.spawn", input={"depth": depth, "hang": hang}),)
    )


def serve(agent: Agent, orchestrator: Orchestrator, certs: Path) -> AgentServer:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    return AgentServer(agent, config)


def child_refs(events: list[TaskEvent]) -> list[tuple[str, str]]:
    """(child task, what happened) of every progress event naming a sub-task."""
    return [
        (e.child_task_id, e.message.rsplit(" ", 1)[-1])
        for e in events
        if e.kind is EventKind.STEP_PROGRESS and e.child_task_id
    ]


async def test_a_sub_tasks_result_is_its_parent_steps_and_it_belongs_to_the_parents_owner(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = Spawner()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        top = await alice.submit(plan=chain(2))
        async with asyncio.timeout(60):
            events = await watch_all(alice, top)
        task = await alice.get(top)
        _, middle, leaf = agent.tasks
        children = [await alice.get(middle), await alice.get(leaf)]

    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.result == {
        "spawn": {
            "depth": 2,
            "below": {"spawn": {"depth": 1, "below": {"spawn": {"depth": 0, "below": None}}}},
        }
    }
    assert [c.owner for c in children] == [ALICE, ALICE]
    assert children[0].parent == ParentStep(task_id=top, step_id="spawn")
    assert children[1].parent == ParentStep(task_id=middle, step_id="spawn")
    # The parent's watchers see the child come and go, by reference.
    assert child_refs(events) == [(middle, "submitted"), (middle, "succeeded")]


async def test_a_three_level_tree_cancelled_from_the_top_ends_every_level(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = Spawner()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        top = await alice.submit(plan=chain(2, hang=True))
        # The leaf runs (and hangs): the whole tree is live.
        await eventually(lambda: asyncio.sleep(0, len(agent.tasks)), lambda n: n == 3, within=30)
        _, middle, leaf = agent.tasks
        cancelled = await alice.cancel(top, "stop the tree")
        tree = [cancelled, await alice.get(middle), await alice.get(leaf)]
        events = {t.id: await watch_all(alice, t.id) for t in tree}

    assert [t.state for t in tree] == [TaskState.CANCELLED] * 3
    # Each says why: its parent stopped, because of the cancel at the top.
    assert events[leaf][-1].reason == (
        f"parent task {middle} is stopping: parent task {top} is stopping: stop the tree"
    )
    # Leaves first: each child was final before its parent.
    ended = {task_id: e[-1].time for task_id, e in events.items()}
    assert ended[leaf] <= ended[middle] <= ended[top]
    assert sorted(agent.cancelled) == sorted([top, middle, leaf])


async def test_only_the_agent_running_a_step_submits_its_sub_tasks(
    orchestrator: Orchestrator, certs: Path
) -> None:
    agent = Spawner()
    async with serve(agent, orchestrator, certs), client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        top = await alice.submit(plan=chain(0))
        await eventually(lambda: alice.get(top), lambda t: t.state.final, within=30)
        parent = ParentStep(task_id=top, step_id="spawn")
        with pytest.raises(PermissionDenied) as by_client:
            await alice.submit(plan=chain(0), parent=parent)
        # The agent itself, once its step is over, may not either.
        async with Client(
            f"localhost:{orchestrator.port}", certs, "echo-1", kind=IdentityKind.AGENT
        ) as echo:
            with pytest.raises(PermissionDenied):
                await echo.submit(plan=chain(0), parent=parent)

    assert by_client.value.field == "parent"

"""Sub-tasks: an agent submits tasks from its handler (``ctx.submit``); a tree of them is
owned by the top task's owner and ends from the leaves up when the top is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.errors import PermissionDenied
from agentmesh.models import (
    EventKind,
    ParentStep,
    Plan,
    StepSpec,
    StepState,
    TaskEvent,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.conftest import REDIS_URL
from tests.support.events import watch_all
from tests.support.mesh import client, unserve, wait_for_agents
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

    def __init__(self, before_submitting: asyncio.Event | None = None) -> None:
        super().__init__()
        #: The task of every run, in the order the runs began.
        self.tasks: list[str] = []
        self.cancelled: list[str] = []
        #: Set by the test when a run may submit its sub-task (None: at once).
        self.before_submitting = before_submitting
        #: Awaited with the run's task id once its sub-task has ended, before it returns.
        self.after_child: Callable[[str], Awaitable[None]] | None = None

    @capability("test.spawn", description="Spawn a chain of sub-tasks.")
    async def spawn(self, data: Depth, ctx: AssignmentContext) -> Spawned:
        self.tasks.append(ctx.task_id)
        try:
            if data.depth == 0:
                if data.hang:
                    await asyncio.sleep(3600)
                return Spawned(depth=0)
            if self.before_submitting is not None:
                await self.before_submitting.wait()
            below = await ctx.submit(plan=chain(data.depth - 1, hang=data.hang))
            if self.after_child is not None:
                await self.after_child(ctx.task_id)
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


@contextlib.asynccontextmanager
async def two_replicas(
    settings: Settings, postgres_database: dict[str, str]
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Replicas a and b of one mesh (one PostgreSQL schema, one Redis namespace)."""
    shared = {
        **postgres_database,
        "redis_url": REDIS_URL,
        "redis_namespace": f"test-children-{uuid.uuid4().hex}",
    }
    async with (
        Orchestrator(settings.model_copy(update={**shared, "replica_id": "a"})) as a,
        Orchestrator(settings.model_copy(update={**shared, "replica_id": "b"})) as b,
    ):
        yield a, b


def serve_on(agent: Agent, certs: Path, *orchestrators: Orchestrator) -> AgentServer:
    """``agent`` registered with each of ``orchestrators``; it submits sub-tasks to the
    first one that takes them, in this order."""
    addresses = [f"localhost:{o.port}" for o in orchestrators]
    return AgentServer(
        agent, AgentSettings(certs_dir=certs, name="echo-1", orchestrators=addresses)
    )


async def registered(orchestrator: Orchestrator, name: str) -> None:
    await eventually(
        lambda: asyncio.sleep(0, {s.card.name for s in orchestrator.registry.statuses()}),
        lambda names: name in names,
        within=30,
    )


async def test_a_parent_hears_of_a_child_that_runs_on_another_replica(
    settings: Settings, postgres_database: dict[str, str], certs: Path
) -> None:
    may_submit = asyncio.Event()
    agent = Spawner(before_submitting=may_submit)
    # The parent runs on a; its agent asks b first, once b's store shows the parent step
    # running: b takes the child and runs it, and a hears of it through Redis.
    async with (
        two_replicas(settings, postgres_database) as (a, b),
        serve_on(agent, certs, b, a),
        client(a, certs) as alice,
    ):
        await registered(a, "echo-1")
        await registered(b, "echo-1")

        async def heard_of_the_childs_end(task_id: str) -> None:
            # The news of the child's end travels b -> Redis -> a, the parent step's result
            # agent -> a: the step ends only once a has heard, or the parent (one step)
            # could end first and the news find no run to tell (a race, not a loss).
            async for event in alice.watch(task_id):
                if event.child_task_id and event.message.endswith(" succeeded"):
                    return

        agent.after_child = heard_of_the_childs_end
        top = await alice.submit(plan=chain(1))

        async def parent_step_in_store() -> StepState | None:
            task = await b.store.get_task(top)
            return task.steps["spawn"].state if task is not None else None

        await eventually(parent_step_in_store, lambda state: state is StepState.RUNNING)
        may_submit.set()
        async with asyncio.timeout(60):
            events = await watch_all(alice, top)
        task = await alice.get(top)
        _, child = agent.tasks

    assert task.state is TaskState.SUCCEEDED, task.error
    assert child_refs(events) == [(child, "submitted"), (child, "succeeded")]


async def test_a_child_goes_to_an_orchestrator_that_knows_its_parent_step(
    settings: Settings, certs: Path, tmp_path: Path
) -> None:
    agent = Spawner()
    # Another mesh's orchestrator first in the agent's list: it has never heard of the parent,
    # refuses (PERMISSION_DENIED), and the agent asks the next, which runs the parent.
    elsewhere = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}"}
    )
    async with (
        Orchestrator(settings) as home,
        Orchestrator(elsewhere) as other,
        serve_on(agent, certs, other, home),
        client(home, certs) as alice,
    ):
        await registered(home, "echo-1")
        top = await alice.submit(plan=chain(1))
        async with asyncio.timeout(60):
            events = await watch_all(alice, top)
        task = await alice.get(top)
        _, child = agent.tasks

    assert task.state is TaskState.SUCCEEDED, task.error
    assert child_refs(events) == [(child, "submitted"), (child, "succeeded")]


@pytest.mark.parametrize("unserved", ["WatchTask", "WatchTaskBatches"])
async def test_an_agent_follows_its_sub_task_whichever_watch_its_orchestrator_serves(
    settings: Settings, certs: Path, monkeypatch: pytest.MonkeyPatch, unserved: str
) -> None:
    # An orchestrator from older protos does not serve WatchTaskBatches: the agent falls
    # back to WatchTask. One without WatchTask shows the agent follows with batches.
    unserve(monkeypatch, unserved)
    agent = Spawner()
    async with (
        Orchestrator(settings) as orchestrator,
        serve(agent, orchestrator, certs),
        client(orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        top = await alice.submit(plan=chain(2))
        # Polled: the test's own watch may be the method not served.
        task = await eventually(lambda: alice.get(top), lambda t: t.state.final, within=60)

    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.result == {
        "spawn": {
            "depth": 2,
            "below": {"spawn": {"depth": 1, "below": {"spawn": {"depth": 0, "below": None}}}},
        }
    }

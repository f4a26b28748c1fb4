"""Hot task state in Redis: GetTask, and ListTasks of live tasks, on any replica are answered
from Redis, not the store.

Two orchestrators in this process (so the test can count the SQL one of them runs) on one
PostgreSQL schema and one Redis namespace; a real agent process registered with both.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import event

from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, StepState, TaskPage, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.conftest import REDIS_URL
from tests.orchestrator.http.conftest import tls
from tests.support.mesh import client
from tests.support.network import free_port
from tests.support.processes import AgentProcesses
from tests.support.redis_server import RedisServer
from tests.support.waiting import eventually


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A Redis namespace of this test's own; its keys are removed afterwards."""
    name = f"test-hot-{uuid.uuid4().hex}"
    yield name
    async with Redis.from_url(REDIS_URL) as plain:
        names = [n async for n in plain.scan_iter(match=f"{name}:*")]
        if names:
            await plain.delete(*names)


@contextlib.asynccontextmanager
async def replicas(
    settings: Settings, **shared: object
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Replicas a and b of one mesh, in this process, with the ``shared`` settings."""
    async with AsyncExitStack() as stack:
        a, b = [
            await stack.enter_async_context(
                Orchestrator(settings.model_copy(update={**shared, "replica_id": name}))
            )
            for name in ("a", "b")
        ]
        yield a, b


@pytest.fixture
async def pair(
    settings: Settings, postgres_database: dict[str, str], namespace: str
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Replicas a and b of one mesh on the shared Redis.

    Snapshots and index rows live 10 minutes, so that the index is rebuilt only when the
    replicas start: a test that takes it away sees the store answer for as long as it runs.
    """
    async with replicas(
        settings,
        **postgres_database,
        redis_url=REDIS_URL,
        redis_namespace=namespace,
        cache_ttl_seconds=600.0,
        http_listen="127.0.0.1:0",
    ) as both:
        yield both


async def serve_echo(agents: AgentProcesses, a: Orchestrator, b: Orchestrator) -> None:
    """Agent echo-1 as a process registered with both replicas; returns once a has it, as
    the tests submit to a."""
    agents.start("tests.support.agents", "echo-1", [f"localhost:{a.port}", f"localhost:{b.port}"])
    await registered(a, "echo-1")


async def registered(orchestrator: Orchestrator, name: str) -> None:
    """Wait until agent ``name`` is registered with ``orchestrator`` itself: ListAgents lists
    the agents of the whole mesh (those of other replicas through Redis), but a replica
    plans only with its own."""

    async def names() -> set[str]:
        return {s.card.name for s in orchestrator.registry.statuses()}

    await eventually(names, lambda found: name in found, within=20)


class Selects:
    """Counts the SELECTs an orchestrator's store runs that contain ``fragment``."""

    def __init__(self, orchestrator: Orchestrator, fragment: str) -> None:
        self.count = 0
        self._fragment = fragment
        engine = orchestrator.store._engine
        assert engine is not None
        event.listen(engine.sync_engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and self._fragment in statement:
            self.count += 1


def step_reads(orchestrator: Orchestrator) -> Selects:
    """The store's reads of steps (GetTask's)."""
    return Selects(orchestrator, " steps")


def list_reads(orchestrator: Orchestrator) -> Selects:
    """The store's ListTasks queries (tasks newest first)."""
    return Selects(orchestrator, "ORDER BY tasks.created_at DESC")


async def test_get_task_on_another_replica_is_answered_from_redis(
    pair: tuple[Orchestrator, Orchestrator],
    certs: Path,
    agents: AgentProcesses,
    namespace: str,
) -> None:
    a, b = pair
    await serve_echo(agents, a, b)
    reads = step_reads(b)
    async with client(a, certs) as on_a, client(b, certs) as on_b:
        plan = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={}),))
        task_id = await on_a.submit(plan=plan)

        key = f"{namespace}:tasks:{task_id}"

        async def snapshot() -> TaskRecord | None:
            async with Redis.from_url(REDIS_URL, decode_responses=True) as plain:
                text = await plain.get(key)
            return None if text is None else TaskRecord.model_validate_json(text)

        # Replica a writes its snapshot after the step's state is durable (and so after b
        # could read it from the store): wait for the snapshot itself, not for b's answer.
        found = await eventually(
            snapshot,
            lambda t: t is not None and t.steps["wait"].state is StepState.RUNNING,
            within=30,
        )
        before = reads.count
        task = await on_b.get(task_id)
        # Replica a wrote the snapshot; replica b read it and not the store.
        assert reads.count == before
        async with Redis.from_url(REDIS_URL, decode_responses=True) as plain:
            assert found is not None
            assert task.steps["wait"].agent == found.steps["wait"].agent == "echo-1"
            # Without the snapshot b reads the store (the count would have seen it).
            await plain.delete(key)
        from_store = await on_b.get(task_id)
        assert reads.count > before
        assert from_store.steps["wait"].state is StepState.RUNNING
        await on_a.cancel(task_id)


HANG = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={}),))


async def indexed(url: str, namespace: str) -> tuple[bool, dict[str, str]]:
    """The live-task index in Redis: whether it is complete, and task id to state."""
    async with Redis.from_url(url, decode_responses=True) as plain:
        complete = bool(await plain.exists(f"{namespace}:live-tasks:complete"))
        rows = await plain.hgetall(f"{namespace}:live-tasks:rows")
    return complete, {task_id: row.split("\t", 1)[0] for task_id, row in rows.items()}


async def settled(namespace: str, *task_ids: str) -> bool:
    """Whether each task's snapshot in Redis shows step ``wait`` running and its index row is
    the task as of that snapshot (same ``updated_at``)."""
    async with Redis.from_url(REDIS_URL, decode_responses=True) as plain:
        texts = [await plain.get(f"{namespace}:tasks:{task_id}") for task_id in task_ids]
        rows = await plain.hgetall(f"{namespace}:live-tasks:rows")
    for task_id, text in zip(task_ids, texts, strict=True):
        if text is None or task_id not in rows:
            return False
        task = TaskRecord.model_validate_json(text)
        if "wait" not in task.steps or task.steps["wait"].state is not StepState.RUNNING:
            return False
        listed = TaskRecord.model_validate_json(rows[task_id].split("\t", 3)[3])
        if listed.updated_at != task.updated_at:
            return False
    return True


def running(*task_ids: str) -> Callable[[tuple[bool, dict[str, str]]], bool]:
    """Whether the index is complete and has (at least) ``task_ids``, each running."""
    return lambda index: (
        index[0] and all(index[1].get(t) == TaskState.RUNNING.value for t in task_ids)
    )


async def every_page(on: Client, states: list[TaskState], size: int) -> list[TaskPage]:
    pages = [await on.list_tasks(states=states, page_size=size)]
    while pages[-1].next_page_token:
        token = pages[-1].next_page_token
        pages.append(await on.list_tasks(states=states, page_size=size, page_token=token))
    return pages


async def test_list_tasks_of_live_states_on_another_replica_is_answered_from_redis(
    pair: tuple[Orchestrator, Orchestrator],
    certs: Path,
    agents: AgentProcesses,
    namespace: str,
) -> None:
    a, b = pair
    await serve_echo(agents, a, b)
    reads = list_reads(b)
    root = client(b, certs, "root", kind=IdentityKind.ADMIN)
    async with (
        client(a, certs) as on_a,
        client(b, certs) as on_b,
        client(a, certs, "bob") as bob_a,
        client(b, certs, "bob") as bob_b,
        root,
    ):
        alices = [await on_a.submit(plan=HANG) for _ in range(3)]
        bobs = await bob_a.submit(plan=HANG)
        await eventually(lambda: indexed(REDIS_URL, namespace), running(*alices, bobs), within=30)
        # A task is indexed as running before its step goes out, and the step's start
        # changes the task again (its updated_at): until the index has that too, a page read
        # now is older than the store's answer read below (seen under a busy core).
        await eventually(lambda: settled(namespace, *alices, bobs), bool, within=30)

        before = reads.count
        page = await on_b.list_tasks(states=[TaskState.RUNNING])
        pages = await every_page(on_b, [TaskState.RUNNING], 2)
        bob_page = await bob_b.list_tasks(states=[TaskState.PENDING, TaskState.RUNNING])
        everyone = await root.list_tasks(states=[TaskState.RUNNING])
        async with httpx.AsyncClient(
            base_url=f"https://localhost:{b.http_port}", verify=tls(certs, "client", "alice")
        ) as http:
            over_http = (await http.get("/v1/tasks", params={"state": "running"})).json()
        # Replica a ran them and wrote the index; replica b answered from it, not the store.
        assert reads.count == before
        # Newest first, as the store lists them; a page at a time; policy filters still.
        assert [t.id for t in page.tasks] == alices[::-1]
        assert [len(p.tasks) for p in pages] == [2, 1]
        assert [t for p in pages for t in p.tasks] == list(page.tasks)
        assert [t.id for t in bob_page.tasks] == [bobs]
        assert [t.id for t in everyone.tasks] == [bobs, *alices[::-1]]
        assert [t["task_id"] for t in over_http["tasks"]] == alices[::-1]

        # The same answers from the store (a mixed request is the store's to answer).
        mixed = await on_b.list_tasks(states=[TaskState.RUNNING, TaskState.SUCCEEDED])
        assert reads.count == before + 1
        async with Redis.from_url(REDIS_URL) as plain:
            await plain.delete(f"{namespace}:live-tasks:complete")
        assert await on_b.list_tasks(states=[TaskState.RUNNING]) == page == mixed
        assert await every_page(on_b, [TaskState.RUNNING], 2) == pages
        assert await bob_b.list_tasks(states=[TaskState.PENDING, TaskState.RUNNING]) == bob_page
        assert await root.list_tasks(states=[TaskState.RUNNING]) == everyone
        assert reads.count > before + 1

        # Complete again, but a row nobody vouches for (as when its replica died): the
        # store answers.
        async with Redis.from_url(REDIS_URL) as plain:
            await plain.set(f"{namespace}:live-tasks:complete", "1")
            before = reads.count
            assert await on_b.list_tasks(states=[TaskState.RUNNING]) == page
            assert reads.count == before
            await plain.zadd(f"{namespace}:live-tasks:fresh", {alices[0]: 0})
            assert await on_b.list_tasks(states=[TaskState.RUNNING]) == page
            assert reads.count == before + 1

        # Ended tasks leave the index.
        for task_id in (*alices, bobs):
            await (bob_a if task_id == bobs else on_a).cancel(task_id)
        await eventually(lambda: indexed(REDIS_URL, namespace), lambda i: i[1] == {}, within=30)
        assert (await on_b.list_tasks(states=[TaskState.RUNNING])).tasks == ()


async def test_list_tasks_of_live_states_is_answered_by_the_store_while_redis_cannot(
    settings: Settings,
    postgres_database: dict[str, str],
    redis_server: RedisServer,
    certs: Path,
    agents: AgentProcesses,
) -> None:
    # Rows live 3 seconds: replica a vouches for them again every second.
    shared = {**postgres_database, "redis_url": redis_server.url, "cache_ttl_seconds": 3.0}
    async with AsyncExitStack() as stack:
        a, b = await stack.enter_async_context(replicas(settings, **shared))
        await serve_echo(agents, a, b)
        reads = list_reads(b)
        on_a = await stack.enter_async_context(client(a, certs))
        on_b = await stack.enter_async_context(client(b, certs))
        ids = [await on_a.submit(plan=HANG) for _ in range(2)]
        await eventually(lambda: indexed(redis_server.url, "agentmesh"), running(*ids), within=30)

        async def answer() -> tuple[list[str], bool]:
            """The ids b lists as running, and whether the store answered."""
            before = reads.count
            page = await on_b.list_tasks(states=[TaskState.RUNNING])
            return [t.id for t in page.tasks], reads.count > before

        assert await answer() == (ids[::-1], False)
        await redis_server.kill()
        assert await answer() == (ids[::-1], True)
        # Back, but empty: the index is rebuilt from the store, then it answers again.
        await redis_server.start()
        await eventually(answer, lambda found: found == (ids[::-1], False), within=30)
        for task_id in ids:
            await on_a.cancel(task_id)


async def test_a_task_that_ended_is_not_listed_after_redis_came_back_without_its_removal(
    settings: Settings,
    postgres_database: dict[str, str],
    tmp_path: Path,
    certs: Path,
    agents: AgentProcesses,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    # Restarted, this Redis comes back as it was at its last SAVE, as a failover to a
    # replica that was behind would: the index complete, the ended task's row in it and
    # vouched for ten minutes more.
    server = RedisServer(free_port(), "--dir", str(tmp_path))
    await server.start()
    try:
        shared = {**postgres_database, "redis_url": server.url, "cache_ttl_seconds": 600.0}
        async with AsyncExitStack() as stack:
            a, b = await stack.enter_async_context(replicas(settings, **shared))
            await serve_echo(agents, a, b)
            reads = list_reads(b)
            on_a = await stack.enter_async_context(client(a, certs))
            on_b = await stack.enter_async_context(client(b, certs))
            ended, live = [await on_a.submit(plan=HANG) for _ in range(2)]
            await eventually(lambda: indexed(server.url, "agentmesh"), running(ended, live))
            async with server.client() as plain:
                await plain.save()
            await on_a.cancel(ended)
            await eventually(lambda: indexed(server.url, "agentmesh"), lambda i: ended not in i[1])

            await server.kill()
            await server.start()
            answers: list[list[str]] = []

            async def answer() -> tuple[list[str], bool]:
                before = reads.count
                page = await on_b.list_tasks(states=[TaskState.RUNNING])
                answers.append([t.id for t in page.tasks])
                return answers[-1], reads.count > before

            # From the store until the replicas made up for the outage, then from Redis.
            await eventually(answer, lambda found: found == ([live], False), within=30)
            assert all(ended not in ids for ids in answers), answers
            await on_a.cancel(live)
    finally:
        await server.kill()

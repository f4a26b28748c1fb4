"""Redis behind Sentinel: the primary is killed while 30 tasks run; the sentinels promote the
replica; the mesh carries on (on memory meanwhile) and catches the new primary up."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, TaskEvent, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.agents import FaultyAgent
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.sentinel import SentinelGroup, sentinel_group
from tests.support.waiting import eventually

#: Starts redis-server and sentinel processes of its own.
pytestmark = pytest.mark.slow

TASKS = 30


@pytest.fixture
async def sentinels(tmp_path: Path) -> AsyncIterator[SentinelGroup]:
    async with sentinel_group(tmp_path) as group:
        yield group


def _plan(journal: Path, task: int) -> Plan:
    return Plan(
        steps=tuple(
            StepSpec(
                id=step,
                capability="test.work",
                input={"journal": str(journal), "entry": f"{task}/{step}", "delay": 0.5},
                needs=needs,
            )
            for step, needs in (("first", ()), ("second", ("first",)))
        )
    )


def _agent(certs: Path, name: str, orchestrator: Orchestrator) -> AgentServer:
    config = AgentSettings(
        certs_dir=certs, name=name, orchestrators=[f"localhost:{orchestrator.port}"]
    )
    return AgentServer(FaultyAgent(), config)


async def _collect(alice: Client, task_id: str) -> list[TaskEvent]:
    return [event async for event in alice.watch(task_id)]


async def _final(alice: Client, task_id: str) -> TaskRecord:
    return await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=90)


def _started(journal: Path) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(await asyncio.to_thread(Journal(journal).started))

    return count


async def _cards(redis: Redis) -> set[str]:
    names = set()
    async for key in redis.scan_iter(match="agentmesh:agents:*"):
        raw = await redis.get(key)
        if raw is not None:
            names.add(json.loads(raw)["card"]["name"])
    return names


async def test_tasks_run_through_a_sentinel_failover_and_redis_catches_up(
    sentinels: SentinelGroup, settings: Settings, certs: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    # Cards live 3 s in Redis (renewed every second): stale ones expire during the switch,
    # so finding them on the new primary means the mesh wrote them there.
    configured = settings.model_copy(update={"redis_url": sentinels.url, "cache_ttl_seconds": 3})
    async with (
        Orchestrator(configured) as orchestrator,
        client(orchestrator, certs) as alice,
        _agent(certs, "echo-1", orchestrator),
    ):
        await wait_for_agents(alice, "echo-1")
        async with sentinels.primary.client() as old:
            assert await _cards(old) == {"echo-1"}
        task_ids = [await alice.submit(plan=_plan(journal, i)) for i in range(TASKS)]
        watchers = [asyncio.create_task(_collect(alice, t)) for t in task_ids[:5]]
        # Killed once a few steps have started (30 tasks of two 0.5 s steps take seconds).
        await eventually(_started(journal), lambda count: count >= 4)
        running = [t for t in [await alice.get(t) for t in task_ids] if not t.state.final]
        await sentinels.primary.kill()
        # An agent that comes while Redis has no primary: only the replay can put it there.
        async with _agent(certs, "echo-2", orchestrator):
            await wait_for_agents(alice, "echo-2")
            await eventually(
                sentinels.primary_port, lambda port: port == sentinels.replica.port, within=60
            )
            finals = [await _final(alice, t) for t in task_ids]
            async with asyncio.timeout(30):
                streams = await asyncio.gather(*watchers)
            async with sentinels.replica.client() as new:
                cards = await eventually(
                    lambda: _cards(new), lambda names: names == {"echo-1", "echo-2"}
                )
                role = (await new.info("replication"))["role"]
            # Live work on the new primary: a task run now is watched through its pub/sub.
            after = await alice.submit(plan=_plan(journal, TASKS))
            async with asyncio.timeout(60):
                after_events = await _collect(alice, after)
    assert len(running) > TASKS // 2  # the primary died in the middle of the work
    assert role == "master"
    assert cards == {"echo-1", "echo-2"}
    assert [t.state for t in finals] == [TaskState.SUCCEEDED] * TASKS, [t.error for t in finals]
    assert all(s.attempts == 1 for t in finals for s in t.steps.values())
    starts = collections.Counter(
        entry["entry"]
        for line in journal.read_text().splitlines()
        if (entry := json.loads(line))["event"] == "start"
    )
    # Each of the 30 tasks' two steps ran once: none lost, none doubled.
    assert len([e for e in starts if not e.startswith(f"{TASKS}/")]) == 2 * TASKS
    assert max(starts.values()) == 1
    for events in streams:
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert events[-1].state == TaskState.SUCCEEDED.value
    assert after_events[-1].state == TaskState.SUCCEEDED.value

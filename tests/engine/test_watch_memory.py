"""A live watcher of a task run on this replica gets its events from memory, not the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from agentmesh.models import (
    EventKind,
    HumanInput,
    Plan,
    StepKind,
    StepSpec,
    StepState,
    TaskEvent,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, final_state, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"
STEPS = 20
#: EventBus.watch's default poll: the store is read at most once per poll when idle.
POLL_SECONDS = 2.0


@contextmanager
def event_reads() -> Iterator[list[str]]:
    """Every SELECT on the events table any engine of this process runs while inside."""
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        text = statement.lstrip().upper()
        if text.startswith("SELECT") and "FROM EVENTS" in text:
            reads.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield reads
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


async def test_a_live_watcher_reads_the_store_once_not_once_per_batch(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=tuple(
            StepSpec(
                id=f"s{i}",
                capability="test.echo",
                # One step outlasts two polls: an idle watcher of a local task reads nothing.
                input={"value": i, "delay": 2.5 * POLL_SECONDS if i == 1 else 0},
                needs=(f"s{i - 1}",) if i else (),
            )
            for i in range(STEPS)
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        with event_reads() as reads:
            started = time.monotonic()
            async with asyncio.timeout(60):
                events: list[TaskEvent] = await watch_all(alice, task_id)
            elapsed = time.monotonic() - started
        everything = await watch_all(alice, task_id)

    assert_gapless(events)
    assert events == everything
    assert final_state(events) == TaskState.SUCCEEDED
    # A chain commits at least one batch per step; read per batch, that was >= STEPS reads,
    # and a poll read per POLL_SECONDS idle. From memory: the first read, no more.
    assert len(reads) <= 2, (len(reads), elapsed)


async def test_a_watch_that_starts_while_the_task_runs_here_reads_no_event_from_the_store(
    orchestrator: Orchestrator, certs: Path
) -> None:
    # A step of kind input keeps the run live (and its events recent) until Bob answers.
    ask = StepSpec(
        id="approve",
        kind=StepKind.INPUT,
        human_input=HumanInput(prompt="Go?", approvers=("spiffe://agentmesh.test/client/bob",)),
    )
    async with client(orchestrator, certs) as alice, client(orchestrator, certs, "bob") as bob:
        task_id = await alice.submit(plan=Plan(steps=(ask,)))
        await eventually(
            lambda: alice.get(task_id),
            lambda t: t.steps["approve"].state is StepState.INPUT_REQUIRED,
            within=30,
        )
        events: list[TaskEvent] = []
        with event_reads() as reads:
            async with asyncio.timeout(60):
                async for event in alice.watch(task_id):
                    events.append(event)
                    if event.kind is EventKind.STEP_STATE and event.state == "input_required":
                        await bob.provide_input(task_id, "approve", {"yes": True})
        everything = await watch_all(alice, task_id)

    assert events == everything  # the same stream the store replays, from the first event
    assert final_state(events) == TaskState.SUCCEEDED
    assert reads == []

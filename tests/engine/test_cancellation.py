"""CancelTask: scheduling stops, the agent running a step is told to stop, done work is undone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, step_states, task_states, watch_all
from tests.support.journal import Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"


async def test_cancelling_a_task_cancels_its_running_step_on_the_agent(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, journal: Journal
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(
        steps=(
            StepSpec(
                id="wait",
                capability="test.hang",
                input={"journal": str(journal), "entry": "wait"},
            ),
            StepSpec(id="after", capability="test.echo", needs=("wait",)),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        await journal.wait_for("start", "wait")
        async with asyncio.timeout(10):
            cancelled = await alice.cancel(task_id, reason="changed my mind")
        events = await watch_all(alice, task_id)

    assert cancelled.state == TaskState.CANCELLED
    # The agent's own word: its handler was interrupted (by the Cancel on the Session).
    heard = await journal.wait_for("cancelled", "wait", within=5)
    assert heard.agent == "echo-1"
    assert "assignment.cancelling" in agents.log("echo-1")
    assert journal.events("end") == []

    assert step_states(events, "wait")[-1] == StepState.CANCELLED
    assert step_states(events, "after") == []
    assert task_states(events)[-1] == TaskState.CANCELLED
    assert events[-1].reason == "changed my mind"
    assert cancelled.steps["after"].state == StepState.PENDING


async def test_cancelling_a_task_rolls_back_the_steps_it_completed(
    orchestrator: Orchestrator,
    certs: Path,
    agents: AgentProcesses,
    tmp_path: Path,
    journal: Journal,
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    record = tmp_path / "records.txt"
    plan = Plan(
        steps=(
            StepSpec(
                id="book",
                capability="test.record",
                input={"log": str(record), "entry": "room"},
                compensation="test.undo",
            ),
            StepSpec(
                id="wait",
                capability="test.hang",
                input={"journal": str(journal), "entry": "wait"},
                needs=("book",),
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        await journal.wait_for("start", "wait")
        async with asyncio.timeout(10):
            cancelled = await alice.cancel(task_id)
        events = await watch_all(alice, task_id)

    assert cancelled.state == TaskState.CANCELLED
    assert record.read_text().splitlines() == ["do room", "undo room"]
    await journal.wait_for("cancelled", "wait", within=5)
    assert step_states(events, "book")[-1] == StepState.COMPENSATED
    assert step_states(events, "wait")[-1] == StepState.CANCELLED
    assert task_states(events)[-2:] == [TaskState.COMPENSATING, TaskState.CANCELLED]


async def test_a_cancel_cut_off_during_its_rollback_compensates_each_step_once(
    settings: Settings, certs: Path, agents: AgentProcesses, tmp_path: Path, journal: Journal
) -> None:
    gate = tmp_path / "undo-may-finish"
    plan = Plan(
        steps=(
            StepSpec(
                id="book",
                capability="test.record",
                # test.record ignores journal and gate; its compensation test.work (given the
                # same input) journals each run and keeps undoing until the test opens the gate.
                input={
                    "log": str(tmp_path / "records.txt"),
                    "entry": "room",
                    "journal": str(journal),
                    "gate": str(gate),
                },
                compensation="test.work",
            ),
            StepSpec(
                id="wait",
                capability="test.hang",
                input={"journal": str(journal), "entry": "wait"},
                needs=("book",),
            ),
        )
    )
    # Short leases: the lease loop comes round often while the rollback waits on the gate.
    configured = settings.model_copy(update={"lease_seconds": 1.5})
    with capture_logs() as logs:
        async with Orchestrator(configured) as orchestrator, client(orchestrator, certs) as alice:
            agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
            await wait_for_agents(alice, "echo-1")
            task_id = await alice.submit(plan=plan)
            await journal.wait_for("start", "wait")

            # The caller gives up after 0.5 s: its CancelTask call is cancelled mid-rollback.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(alice.cancel(task_id, reason="changed my mind"), 0.5)
            await journal.wait_for("start", "room")

            # A second cancel while compensating: it changes nothing and answers once final.
            again = asyncio.create_task(alice.cancel(task_id, reason="really"))

            async def cancels() -> int:
                return sum(e["event"] == "task.cancel_requested" for e in logs)

            await eventually(cancels, lambda n: n == 2)
            gate.touch()
            async with asyncio.timeout(30):
                cancelled = await again
            events = await watch_all(alice, task_id)

    # The agent's word: the undo was sent to it once (not replayed or attached to), and ran once.
    undo_sent = [
        line
        for line in agents.log("echo-1").splitlines()
        if "capability=test.work" in line
        and any(f"assignment.{how}" in line for how in ("accepted", "replayed", "attached"))
    ]
    assert len(undo_sent) == 1, undo_sent
    assert [e.event for e in journal.entries() if e.entry == "room"] == ["start", "end"]
    # As docs/protocol.rst has it: a cancelled task that compensated ends CANCELLED,
    # giving the (first) cancel's reason.
    assert cancelled.state == TaskState.CANCELLED
    assert cancelled.error == "changed my mind"
    assert_gapless(events)
    assert task_states(events) == [
        TaskState.RUNNING,
        TaskState.COMPENSATING,
        TaskState.CANCELLED,
    ]
    assert events[-1].reason == "changed my mind"
    assert step_states(events, "book")[-1] == StepState.COMPENSATED
    assert step_states(events, "book").count(StepState.COMPENSATED) == 1
    assert step_states(events, "wait")[-1] == StepState.CANCELLED

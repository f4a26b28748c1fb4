"""An agent frozen mid-assignment (SIGSTOP) loses its step to another agent within seconds.

A frozen process keeps its sockets open but answers no ping; the orchestrator declares it
lost after ``agent_timeout_seconds`` and fails the step over. Once thawed (SIGCONT) the
frozen agent finishes its abandoned run and tries to answer: that late result must change
nothing.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import step_events, watch_all
from tests.support.journal import Entry, Journal
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"
PAIR = ("echo-1", "echo-2")


async def test_a_frozen_agents_step_fails_over_and_its_late_result_is_ignored(
    orchestrator: Orchestrator,
    settings: Settings,
    certs: Path,
    agents: AgentProcesses,
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    address = f"localhost:{orchestrator.port}"
    for name in PAIR:
        agents.start(AGENT, name, [address])
    # The first attempt works long enough to be frozen mid-way; a second one is quick.
    plan = Plan(
        steps=(
            StepSpec(
                id="work",
                capability="test.work",
                input={"journal": str(journal), "entry": "work", "delays": [2.0, 0.05]},
                timeout_seconds=60,  # only the lost pings may end the first attempt
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, *PAIR)
        task_id = await alice.submit(plan=plan)
        first = await journal.wait_for("start", "work")
        frozen = agents.running[first.agent]
        other = next(name for name in PAIR if name != first.agent)
        frozen.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            async with asyncio.timeout(15):
                second = await journal.wait_for("end", "work")
            failover = time.monotonic() - stopped
            events = await watch_all(alice, task_id)
        finally:
            frozen.send_signal(signal.SIGCONT)

        # Thawed, the frozen agent completes its abandoned run and tries to answer.
        async def ends() -> list[Entry]:
            return journal.events("end", "work")

        finished = await eventually(ends, lambda found: len(found) == 2, within=10)
        late = next(e for e in finished if e.agent == first.agent)
        await wait_for_agents(alice, first.agent)  # back, on a fresh session
        after = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert second.agent == other
    assert second.attempt == 2
    assert failover < settings.agent_timeout_seconds + 3, f"failover took {failover:.1f}s"
    assert late.attempt == 1

    attempts = [
        (e.state, e.agent, e.attempt)
        for e in step_events(events, "work")
        if e.state != StepState.WAITING
    ]
    assert attempts == [
        (StepState.RUNNING, first.agent, 1),
        (StepState.PENDING, first.agent, 1),
        (StepState.RUNNING, other, 2),
        (StepState.SUCCEEDED, other, 2),
    ]
    assert "agent_lost" in step_events(events, "work")[1].reason
    # The late result changed nothing: same events, the other agent's output.
    assert after == events
    assert task.state == TaskState.SUCCEEDED
    assert task.steps["work"].agent == other
    assert task.steps["work"].output == {"entry": "work"}

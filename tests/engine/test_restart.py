"""An orchestrator killed with SIGKILL mid-task, restarted on its port and database, carries on.

The orchestrator runs as ``agentmesh serve`` in a subprocess; the agent is a subprocess too
and outlives the crash. The plan holds two steps in flight when the orchestrator dies: one
the agent finishes while no orchestrator is there, one it is still running when the new
orchestrator comes back. Both are re-sent with the idempotency key of their attempt, and the
agent SDK answers from its outcome cache or attaches to the run in progress, so no step runs
twice.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.models import Plan, StepSpec, StepState, TaskEvent, TaskRecord, TaskState
from tests.support.events import (
    ResumingWatcher,
    assert_gapless,
    final_state,
    step_events,
    watch_all,
)
from tests.support.journal import Journal
from tests.support.mesh import wait_for_agents
from tests.support.orchestrator import OrchestratorProcess
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow

AGENT = "tests.support.agents"


@dataclass
class Crash:
    """What one run of the crash scenario left behind, for the tests to judge."""

    task: TaskRecord
    #: Every event the task has, read after the end from sequence 0.
    events: list[TaskEvent]
    #: The watcher that was connected when the orchestrator died.
    watcher: ResumingWatcher
    agent_log: str
    orchestrator_log: str
    starts: int


def running(watcher: ResumingWatcher, *step_ids: str) -> bool:
    """True once the watcher saw every one of ``step_ids`` RUNNING (so it is in the store)."""
    seen = {e.step_id for e in step_events(watcher.events) if e.state == StepState.RUNNING}
    return set(step_ids) <= seen


async def crash_mid_task(
    certs: Path,
    agents: AgentProcesses,
    journal: Journal,
    tmp_path: Path,
    database: dict[str, str],
) -> Crash:
    """Run a task, SIGKILL the orchestrator with two steps in flight, restart it, finish."""
    attached_gate, replayed_gate = tmp_path / "attached.gate", tmp_path / "replayed.gate"

    def work(step_id: str, *needs: str, **fields: object) -> StepSpec:
        return StepSpec(
            id=step_id,
            capability="test.work",
            input={"journal": str(journal), "entry": step_id, **fields},
            needs=needs,
        )

    plan = Plan(
        steps=(
            work("one", delay=0.1),
            work("attached", "one", gate=str(attached_gate)),
            work("replayed", "one", gate=str(replayed_gate)),
            work("last", "attached", "replayed"),
        )
    )
    async with OrchestratorProcess(certs, tmp_path / "orchestrator", database) as orchestrator:
        # Two agents: a re-sent step must go back to the agent that ran it, the only one
        # whose outcome cache knows its idempotency key.
        agents.start(AGENT, "echo-1", [orchestrator.address])
        agents.start(AGENT, "echo-2", [orchestrator.address])
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1", "echo-2")
            task_id = await alice.submit(plan=plan)
            watcher = ResumingWatcher(alice, task_id)
            watching = asyncio.create_task(watcher.run())

            async def in_flight() -> bool:
                return running(watcher, "attached", "replayed")

            await eventually(in_flight, bool)
            orchestrator.kill()
            # The agent finishes one step while no orchestrator is there to hear it ...
            replayed_gate.touch()
            await journal.wait_for("end", "replayed")
            await orchestrator.start()

            # ... and is still running the other when the new orchestrator re-sends it.
            async def agent_log() -> str:
                return agents.log("echo-1") + agents.log("echo-2")

            attached = f"{task_id}/attached/1"
            await eventually(
                agent_log, lambda log: _logged(log, "assignment.attached", attached), within=20
            )
            attached_gate.touch()
            async with asyncio.timeout(20):
                await watching
            task = await alice.get(task_id)
            events = await watch_all(alice, task_id)
        return Crash(
            task=task,
            events=events,
            watcher=watcher,
            agent_log=agents.log("echo-1") + agents.log("echo-2"),
            orchestrator_log=orchestrator.log(),
            starts=orchestrator.starts,
        )


def _logged(log: str, event: str, key: str) -> bool:
    return any(event in line and key in line for line in log.splitlines())


async def test_after_kill_9_the_task_finishes_and_no_step_runs_twice(
    certs: Path,
    agents: AgentProcesses,
    journal: Journal,
    tmp_path: Path,
    database: dict[str, str],
) -> None:
    crash = await crash_mid_task(certs, agents, journal, tmp_path, database)
    task_id = crash.task.id

    assert crash.starts == 2
    assert '"task.resumed"' in crash.orchestrator_log
    assert crash.task.state == TaskState.SUCCEEDED, crash.task.error
    # Counted by the agent: every step ran exactly once, the one done before the crash too.
    assert sorted(journal.started()) == ["attached", "last", "one", "replayed"]
    assert sorted(e.entry for e in journal.events("end")) == ["attached", "last", "one", "replayed"]
    # Both in-flight steps were re-sent with the idempotency key of their first attempt:
    # the finished one was answered from the agent's outcome cache, the running one joined.
    assert _logged(crash.agent_log, "assignment.replayed", f"{task_id}/replayed/1")
    assert _logged(crash.agent_log, "assignment.attached", f"{task_id}/attached/1")
    (attached_run,) = journal.events("start", "attached")
    assert attached_run.key == f"{task_id}/attached/1"
    # The step completed before the crash was not even re-sent.
    assert not _logged(crash.agent_log, "assignment.replayed", f"{task_id}/one/")
    assert not _logged(crash.agent_log, "assignment.attached", f"{task_id}/one/")
    by_id = crash.task.steps
    assert [by_id[s].attempts for s in ("one", "attached", "replayed", "last")] == [1, 1, 1, 1]


async def test_a_watcher_resumes_across_the_orchestrator_restart_without_a_gap(
    certs: Path, agents: AgentProcesses, journal: Journal, tmp_path: Path
) -> None:
    database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
    crash = await crash_mid_task(certs, agents, journal, tmp_path, database)

    assert crash.watcher.reconnects >= 1
    assert_gapless(crash.watcher.events)
    assert crash.watcher.events == crash.events
    assert final_state(crash.watcher.events) == TaskState.SUCCEEDED

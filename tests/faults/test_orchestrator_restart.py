"""An orchestrator that dies (SIGKILL) or stops (SIGTERM) with ~20 tasks in flight comes back
and finishes every one of them.

The orchestrator is ``agentmesh serve`` in a subprocess on a fixed port and a SQLite file;
the agents are subprocesses that outlive it. Each task is a chain of three ``test.work``
steps that journal every run, so the agents themselves tell how often each step ran. The
second step of every other task waits on a gate the test opens only after the interruption,
so some steps are surely mid-run then, whatever the machine's load; the others run freely,
so that some finish right around it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.errors import DeadlineExceeded, Unavailable
from agentmesh.models import EventKind, Plan, StepSpec, TaskEvent, TaskRecord, TaskState
from agentmesh.orchestrator.store import Store
from tests.support.events import assert_gapless, final_state, watch_all
from tests.support.journal import Journal
from tests.support.mesh import wait_for_agents
from tests.support.orchestrator import OrchestratorProcess
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow

AGENT = "tests.support.agents"
TASKS = 20
STEPS = ("a", "b", "c")
#: Tasks whose step ``b`` waits on the gate.
GATED = range(0, TASKS, 2)


def _plan(number: int, journal: Journal, gate: Path) -> Plan:
    def work(step_id: str, *needs: str) -> StepSpec:
        entry = f"{number}-{step_id}"
        held = {"gate": str(gate)} if step_id == "b" and number in GATED else {}
        return StepSpec(
            id=step_id,
            capability="test.work",
            input={"journal": str(journal), "entry": entry, "delay": 0.4, **held},
            needs=needs,
        )

    return Plan(steps=(work("a"), work("b", "a"), work("c", "b")))


async def _states(alice: Client) -> dict[str, TaskState]:
    """Task states by id; empty while the orchestrator is away."""
    try:
        page = await alice.list_tasks(page_size=100)
    except (Unavailable, DeadlineExceeded):
        return {}
    return {t.id: t.state for t in page.tasks}


async def _interrupted_mid_run(
    certs: Path,
    agents: AgentProcesses,
    tmp_path: Path,
    interrupt: Callable[[OrchestratorProcess], Awaitable[None]],
) -> tuple[list[TaskRecord], dict[str, list[TaskEvent]], Journal, int]:
    """Run TASKS tasks, ``interrupt`` the orchestrator with all of them in flight, wait for
    the end; returns the tasks, their events, the agents' journal and the final events
    counted in the database."""
    journal = Journal(tmp_path / "journal.jsonl")
    gate = tmp_path / "gate"
    database = tmp_path / "mesh.db"
    async with OrchestratorProcess(
        certs,
        tmp_path / "orchestrator",
        {"database_url": f"sqlite+aiosqlite:///{database}"},
        lease_seconds="3",
    ) as orchestrator:
        for name in ("echo-1", "echo-2"):
            agents.start(AGENT, name, [orchestrator.address], TEST_AGENT_MAX_CONCURRENCY="12")
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1", "echo-2")
            ids = await asyncio.gather(
                *(alice.submit(plan=_plan(n, journal, gate)) for n in range(TASKS))
            )

            # Every task in flight: its first step done, its second one running.
            def in_flight() -> bool:
                started = {e.entry for e in journal.events("start")}
                return all(f"{n}-b" in started for n in range(TASKS))

            await eventually(_sync(in_flight), bool, within=20)
            await interrupt(orchestrator)
            gate.touch()
            await orchestrator.start()

            states = await eventually(
                lambda: _states(alice),
                lambda found: set(found) == set(ids) and all(s.final for s in found.values()),
                within=40,
                interval=0.2,
            )
            assert set(states) == set(ids)
            tasks = [await alice.get(task_id) for task_id in ids]
            events = {task_id: await watch_all(alice, task_id) for task_id in ids}
    async with Store(f"sqlite+aiosqlite:///{database}") as store:
        finals = 0
        for task_id in ids:
            finals += sum(
                e.kind is EventKind.TASK_STATE and TaskState(e.state).final
                for e in await store.events_after(task_id, 0, limit=10_000)
            )
    return tasks, events, journal, finals


def _sync(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


def _every_task_finished_with_every_output(
    tasks: list[TaskRecord], events: dict[str, list[TaskEvent]], finals: int
) -> None:
    assert Counter(t.state.value for t in tasks) == {"succeeded": TASKS}
    for number, task in enumerate(tasks):
        by_id = task.steps
        assert {s: by_id[s].output for s in STEPS} == {s: {"entry": f"{number}-{s}"} for s in STEPS}
        history = events[task.id]
        assert_gapless(history)
        assert final_state(history) == TaskState.SUCCEEDED
    assert finals == TASKS, "a task reached a final state more than once"


async def test_after_kill_9_with_20_tasks_in_flight_all_finish_and_no_agent_reruns_an_attempt(
    certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    async def crash(orchestrator: OrchestratorProcess) -> None:
        orchestrator.kill()

    tasks, events, journal, finals = await _interrupted_mid_run(certs, agents, tmp_path, crash)

    _every_task_finished_with_every_output(tasks, events, finals)
    # Counted by the agents: no agent ran one attempt twice. A step in flight at the crash
    # is re-sent under its attempt's idempotency key, which its agent answers from the run
    # in progress or its cached outcome.
    starts = Counter((e.agent, e.key) for e in journal.events("start"))
    assert max(starts.values()) == 1, [run for run, count in starts.items() if count > 1]
    every_entry = Counter(f"{n}-{s}" for n in range(TASKS) for s in STEPS)
    assert set(journal.started()) == set(every_entry)
    assert all(s.attempts == 1 for task in tasks for s in task.steps.values())


async def test_after_a_graceful_stop_with_20_tasks_in_flight_the_stopped_steps_run_again(
    certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    async def stop(orchestrator: OrchestratorProcess) -> None:
        await asyncio.to_thread(orchestrator.stop)

    tasks, events, journal, finals = await _interrupted_mid_run(certs, agents, tmp_path, stop)

    _every_task_finished_with_every_output(tasks, events, finals)
    # The steps running at the stop were cancelled on the agents and ran again afterwards;
    # every step finished exactly once.
    every_entry = Counter(f"{n}-{s}" for n in range(TASKS) for s in STEPS)
    ends = journal.events("end")
    assert Counter(e.entry for e in ends) == every_entry
    cancelled = {e.entry: e.key for e in journal.events("cancelled")}
    assert cancelled, "no step was in flight at the stop"
    # ... under the idempotency key of the attempt the stop interrupted: a step that finished
    # on its agent just as the orchestrator stopped is answered from the agent's cache
    # instead of running a second time under a new key, and the stop costs no attempt.
    ended = {e.entry: e.key for e in ends}
    assert cancelled == {entry: ended[entry] for entry in cancelled}
    assert all(s.attempts == 1 for task in tasks for s in task.steps.values())

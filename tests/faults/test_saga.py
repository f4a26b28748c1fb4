"""Saga rollback: a task that cannot finish undoes its completed steps, newest first.

The steps are declared in another order than they complete, so only undoing them in
reverse *completion* order passes.
"""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec, StepState, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import assert_gapless, step_events, task_states, watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"


def _order_plan(log: Path, *, charge_undo: str = "test.undo") -> Plan:
    """reserve -> charge -> ship complete in that order; notify then fails for good."""

    def record(step_id: str, **extra: object) -> dict[str, object]:
        return {"log": str(log), "entry": step_id, **extra}

    return Plan(
        steps=(
            StepSpec(
                id="ship",
                capability="test.record",
                input=record("ship"),
                needs=("charge",),
                compensation="test.undo",
            ),
            StepSpec(
                id="reserve",
                capability="test.record",
                input=record("reserve"),
                compensation="test.undo",
            ),
            StepSpec(
                id="charge",
                capability="test.record",
                input=record("charge"),
                needs=("reserve",),
                compensation=charge_undo,
            ),
            StepSpec(
                id="notify",
                capability="test.record",
                input=record("notify", fail=True),
                needs=("ship",),
            ),
        )
    )


def _compensated(events: list[TaskEvent]) -> list[str]:
    return [e.step_id for e in step_events(events) if e.state == StepState.COMPENSATED]


async def test_a_failed_task_undoes_its_completed_steps_in_reverse_completion_order(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    log = tmp_path / "order.log"
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=_order_plan(log))
        events = await watch_all(alice, task_id)
        task = await alice.get(task_id)

    assert log.read_text().splitlines() == [
        "do reserve",
        "do charge",
        "do ship",
        "undo ship",
        "undo charge",
        "undo reserve",
    ]
    assert_gapless(events)
    assert task_states(events) == [
        TaskState.RUNNING,
        TaskState.COMPENSATING,
        TaskState.ROLLED_BACK,
    ]
    assert _compensated(events) == ["ship", "charge", "reserve"]
    failed = [e for e in step_events(events, "notify") if e.state == StepState.FAILED]
    assert len(failed) == 1
    assert "record told to fail" in failed[0].reason
    assert task.state == TaskState.ROLLED_BACK
    assert "notify" in task.error
    states = {s.spec.id: s.state for s in task.steps.values()}
    assert states == {
        "ship": StepState.COMPENSATED,
        "reserve": StepState.COMPENSATED,
        "charge": StepState.COMPENSATED,
        "notify": StepState.FAILED,
    }


async def test_a_compensation_that_fails_leaves_the_task_rollback_failed_naming_what_remains(
    settings: Settings, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    log = tmp_path / "order.log"
    # charge's "undo" always fails, for good: the rollback cannot complete.
    plan = _order_plan(log, charge_undo="test.fail")
    with capture_logs() as logs:
        async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
            agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
            await wait_for_agents(alice, "echo-1")
            task_id = await alice.submit(plan=plan)
            events = await watch_all(alice, task_id)
            task = await alice.get(task_id)

    # The rollback went on past the failed compensation: what could be undone was.
    assert log.read_text().splitlines() == [
        "do reserve",
        "do charge",
        "do ship",
        "undo ship",
        "undo reserve",
    ]
    assert task_states(events)[-1] == TaskState.ROLLBACK_FAILED
    assert _compensated(events) == ["ship", "reserve"]
    assert task.state == TaskState.ROLLBACK_FAILED
    assert "compensation failed for ['charge']" in task.error
    assert {s.spec.id: s.state for s in task.steps.values()}["charge"] == StepState.SUCCEEDED
    alerts = [e for e in logs if e["event"] == "task.rollback_failed"]
    assert len(alerts) == 1
    assert alerts[0]["log_level"] == "error"
    assert alerts[0]["task_id"] == task_id
    assert "charge" in alerts[0]["reason"]

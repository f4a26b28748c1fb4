"""Rollback: undo the completed steps of a task that will not finish.

Each step that succeeded and names a ``compensation`` is undone once, in reverse completion
order. A task a client cancelled ends CANCELLED once its compensations ran (its steps
COMPENSATED, the cancel's reason kept as its error); a task that failed ends ROLLED_BACK; a
compensation that fails for good gives ROLLBACK_FAILED either way.
"""

from __future__ import annotations

import structlog

from agentmesh.errors import AgentMeshError, StepFailed
from agentmesh.models import JSON, StepRecord, StepState, TaskState
from agentmesh.orchestrator.agents.dispatch import Dispatcher, Job
from agentmesh.orchestrator.engine.journal import Journal, now
from agentmesh.orchestrator.planning import resolve, split_instance_id

log = structlog.get_logger(__name__)


async def roll_back(
    journal: Journal, dispatcher: Dispatcher, reason: str, *, cancelled: bool = False
) -> None:
    """Run the compensations of completed steps, newest first, and end the task."""
    task = journal.task
    done = [
        s for s in task.steps.values() if s.state is StepState.SUCCEEDED and s.spec.compensation
    ]
    if not done:
        journal.task_state(TaskState.CANCELLED if cancelled else TaskState.FAILED, reason)
        return
    task.error = reason
    if task.state is not TaskState.COMPENSATING:
        journal.task_state(TaskState.COMPENSATING, reason)
    done.sort(key=lambda s: s.finished_at or s.started_at or now(), reverse=True)
    # The outputs as the steps left them: a step's undo sees what its inputs referenced.
    outputs = {
        step_id: step.output
        for step_id, step in task.steps.items()
        if step.state is StepState.SUCCEEDED and split_instance_id(step_id)[1] is None
    }
    remaining = []
    for step in done:
        try:
            await dispatcher.send(_undo(journal, step, outputs))
        except StepFailed as exc:
            remaining.append(step.spec.id)
            log.error(
                "task.compensation_failed", task_id=task.id, step=step.spec.id, error=str(exc)
            )
            continue
        journal.step_state(step, StepState.COMPENSATED, f"undone by {step.spec.compensation}")
    if remaining:
        journal.task_state(
            TaskState.ROLLBACK_FAILED, f"{reason}; compensation failed for {remaining}"
        )
    else:
        journal.task_state(TaskState.CANCELLED if cancelled else TaskState.ROLLED_BACK, reason)


def _undo(journal: Journal, step: StepRecord, outputs: dict[str, JSON]) -> Job:
    task, spec = journal.task, step.spec
    try:
        payload = resolve(spec.input, input=task.input, outputs=outputs)
    except AgentMeshError:
        payload = dict(spec.input)
    return Job(
        task_id=task.id,
        step_id=spec.id,
        capability=spec.compensation,
        payload={**(payload if isinstance(payload, dict) else {}), "output": step.output},
        pin=spec.pin_agent,
        exclude=frozenset(spec.exclude_agents),
        priority=task.priority,
        retry=spec.retry,
        timeout=spec.timeout_seconds,
        compensation=True,
    )

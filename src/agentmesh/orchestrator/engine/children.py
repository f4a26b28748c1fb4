"""Sub-tasks: tasks an agent submits while it runs a step of another task (its parent).

A child records its parent (task and step) and is owned by the parent's owner. Two duties
follow. Before a parent rolls back (it failed, or was cancelled) its live children are
cancelled, and waited for, each cascading to its own children the same way, so a tree ends
from the leaves up. And the parent's watchers hear of its children: the step that submitted
one gets a progress event naming the child when it is submitted and when it ends (a
reference to follow with WatchTask, rather than the child's events copied in), told by
whichever replica runs the child (see ``Engine._tell_parent``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from agentmesh.errors import AgentMeshError
from agentmesh.models import EventKind
from agentmesh.orchestrator.engine.journal import Journal
from agentmesh.orchestrator.store import Store

log = structlog.get_logger(__name__)

#: Cancels one task (wherever it runs) and returns once it is final.
CancelTask = Callable[[str, str], Awaitable[None]]


async def cancel_live_children(store: Store, cancel: CancelTask, task_id: str, reason: str) -> None:
    """Cancel every sub-task of ``task_id`` that is not final yet; return once all are."""
    try:
        children = await store.live_children(task_id)
    except Exception as exc:  # the rollback goes on; the children are asked next time
        log.warning("task.children_not_read", task_id=task_id, error=repr(exc))
        return
    if not children:
        return
    log.info("task.cancelling_children", task_id=task_id, children=children)
    why = f"parent task {task_id} is stopping: {reason}"
    results = await asyncio.gather(*(cancel(c, why) for c in children), return_exceptions=True)
    for child, result in zip(children, results, strict=True):
        # One already final (FailedPrecondition) is what we wanted; anything else is logged.
        if isinstance(result, BaseException) and not isinstance(result, AgentMeshError):
            log.warning(
                "task.child_not_cancelled", task_id=task_id, child=child, error=repr(result)
            )


def tell_parent(journal: Journal, child_id: str, step_id: str, what: str) -> None:
    """Put a progress event naming sub-task ``child_id`` on the parent step ``step_id`` that
    submitted it."""
    step = journal.task.steps.get(step_id)
    if step is None:
        return
    journal.emit(
        EventKind.STEP_PROGRESS,
        step,
        agent=step.agent,
        attempt=step.attempts,
        message=f"sub-task {child_id} {what}",
        child_task_id=child_id,
    )

"""A task's spans: ``invoke_workflow`` for the whole task, ``plan`` for its planning.

The task span's context is stored with the task (``TaskRecord.trace_context``), so a run
resumed later, here or by another replica, opens its own ``invoke_workflow`` span in the
same trace, as a child of the first; its steps' ``invoke_agent`` spans (see
:mod:`agentmesh.orchestrator.agents.dispatch`) sit below whichever run sent them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Span

from agentmesh import tracing
from agentmesh.models import TaskRecord, TaskRequest, TaskState

INVOKE_WORKFLOW = "invoke_workflow"
PLAN = "plan"


def task_span(task_id: str, request: TaskRequest) -> Span:
    """The started (not current) span of a new task, a child of the caller's context."""
    if not tracing.enabled():
        return trace.INVALID_SPAN
    name = f"{INVOKE_WORKFLOW} {request.workflow}" if request.workflow else INVOKE_WORKFLOW
    attributes = {tracing.OPERATION: INVOKE_WORKFLOW, tracing.TASK_ID: task_id}
    if request.workflow:
        attributes[tracing.AGENT_NAME] = request.workflow
    return tracing.tracer().start_span(name, attributes=attributes)


def resumed_span(task: TaskRecord) -> Span:
    """A span for a run resumed from the store: in the task's trace, below its first span."""
    if not tracing.enabled():
        return trace.INVALID_SPAN
    return tracing.tracer().start_span(
        INVOKE_WORKFLOW,
        context=tracing.context_of(task.trace_context),
        attributes={
            tracing.OPERATION: INVOKE_WORKFLOW,
            tracing.TASK_ID: task.id,
            "agentmesh.resumed": True,
        },
    )


@contextlib.contextmanager
def planning(task_id: str) -> Iterator[Span]:
    """The current ``plan`` span while a task is planned; ``error.type`` when planning fails."""
    with tracing.span(
        PLAN, attributes=lambda: {tracing.OPERATION: PLAN, tracing.TASK_ID: task_id}
    ) as span:
        try:
            yield span
        except Exception as exc:
            tracing.failed(span, type(exc).__name__, str(exc))
            raise


def running_while_planning(span: Span) -> contextlib.AbstractContextManager[Span]:
    """``span`` is current (so ``plan`` is its child) but stays open when the block ends."""
    if not span.is_recording():
        return contextlib.nullcontext(span)
    return trace.use_span(span, end_on_exit=False, record_exception=False)


@contextlib.contextmanager
def running(span: Span, task: TaskRecord) -> Iterator[None]:
    """``span`` is current while the task runs, and ends with the task's final state."""
    if not span.is_recording():
        yield
        return
    with trace.use_span(span, end_on_exit=True, record_exception=False):
        try:
            yield
        finally:
            span.set_attribute("agentmesh.task.state", task.state.value)
            if task.state.final and task.state is not TaskState.SUCCEEDED:
                tracing.failed(span, task.state.value, task.error)

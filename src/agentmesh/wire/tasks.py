"""Protobuf ⇄ domain conversion: the only place that knows both shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from pydantic import ValidationError as PydanticValidationError

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError
from agentmesh.models import (
    JSON,
    AgentStatus,
    EventKind,
    Plan,
    TaskEvent,
    TaskRecord,
    TaskRequest,
    TaskState,
)
from agentmesh.wire import (
    card_to_proto,
    from_struct,
    step_from_proto,
    step_to_proto,
)

_TASK_STATES = {s: pb.TaskState.Value(f"TASK_STATE_{s.name}") for s in TaskState}
_TASK_STATES_BACK = {int(v): k for k, v in _TASK_STATES.items()}


def task_state_to_proto(state: TaskState) -> pb.TaskState.ValueType:
    """The wire enum of a task state."""
    return _TASK_STATES[state]


def task_state_from_proto(value: int, field: str) -> TaskState:
    """The domain task state of a wire enum value; ValidationError when unknown."""
    try:
        return _TASK_STATES_BACK[value]
    except KeyError:
        raise ValidationError(f"unknown task state {value}", field=field) from None


def _step_state(value: str) -> int:
    return int(pb.StepState.Value(f"STEP_STATE_{value.upper()}"))


def value_to_proto(value: JSON, target: struct_pb2.Value) -> None:
    """Fill a ``google.protobuf.Value`` from any JSON value."""
    json_format.ParseDict(value, target)


def _timestamp(value: datetime | None, target: timestamp_pb2.Timestamp) -> None:
    if value is not None:
        target.FromDatetime(value)


# -- agents -------------------------------------------------------------------------------------


def status_to_proto(status: AgentStatus) -> pb.AgentStatus:
    """A registry snapshot entry on the wire."""
    message = pb.AgentStatus(
        card=card_to_proto(status.card),
        identity=status.identity,
        connected=status.connected,
        draining=status.draining,
        active_assignments=status.active,
        circuit=pb.CircuitState.Value(f"CIRCUIT_STATE_{status.circuit.upper()}"),
    )
    _timestamp(status.registered_at, message.registered_at)
    _timestamp(status.last_seen, message.last_seen)
    return message


# -- tasks --------------------------------------------------------------------------------------


def plan_from_proto(plan: pb.Plan) -> Plan:
    """A wire plan as a domain object (shape only: the orchestrator's planning validates it)."""
    steps = []
    for index, step in enumerate(plan.steps):
        try:
            steps.append(step_from_proto(step))
        except PydanticValidationError as exc:
            raise ValidationError.from_pydantic(exc, field=f"plan.steps[{index}]") from None
    return Plan(steps=tuple(steps), aggregate=from_struct(plan.aggregate))


def plan_to_proto(plan: Plan) -> pb.Plan:
    """A domain plan on the wire."""
    message = pb.Plan()
    for step in plan.steps:
        step_to_proto(step, message.steps.add())
    message.aggregate.update(plan.aggregate)
    return message


def request_from_proto(request: pb.SubmitTaskRequest) -> TaskRequest:
    """A SubmitTask request as a domain object; ValidationError naming the bad field."""
    kind = request.WhichOneof("spec")
    if kind is None:
        raise ValidationError("one of plan, workflow or goal is required", field="spec")
    fields: dict[str, Any] = {
        "input": from_struct(request.input),
        "priority": request.priority,
        "timeout_seconds": request.timeout_seconds,
        "labels": dict(request.labels),
        "idempotency_key": request.idempotency_key,
    }
    if kind == "plan":
        fields["plan"] = plan_from_proto(request.plan)
    else:
        fields[kind] = getattr(request, kind)
    try:
        return TaskRequest(**fields)
    except PydanticValidationError as exc:
        raise ValidationError.from_pydantic(exc, field="request") from None


def task_to_proto(task: TaskRecord, *, omit_outputs: bool = False) -> pb.Task:
    """A task with its steps on the wire; without outputs or result with ``omit_outputs``."""
    message = pb.Task(
        task_id=task.id,
        state=task_state_to_proto(task.state),
        error=task.error,
        partial=task.partial,
        priority=task.priority,
        labels=task.labels,
        owner=task.owner,
    )
    message.input.update(task.input)
    if task.result is not None and not omit_outputs:
        value_to_proto(task.result, message.result)
    for step in task.steps.values():
        item = message.steps.add(
            state=_step_state(step.state.value),
            agent=step.agent,
            attempts=step.attempts,
            error=step.error,
        )
        step_to_proto(step.spec, item.spec)
        if step.output is not None and not omit_outputs:
            value_to_proto(step.output, item.output)
        _timestamp(step.started_at, item.started_at)
        _timestamp(step.finished_at, item.finished_at)
    _timestamp(task.created_at, message.created_at)
    _timestamp(task.updated_at, message.updated_at)
    return message


def event_to_proto(event: TaskEvent) -> pb.TaskEvent:
    """A task event on the wire."""
    message = pb.TaskEvent(task_id=event.task_id, sequence=event.sequence)
    message.time.FromDatetime(event.time)
    if event.kind is EventKind.TASK_STATE:
        message.task_state.state = task_state_to_proto(TaskState(event.state))
        message.task_state.reason = event.reason
        message.task_state.partial = event.partial
        if event.output is not None:
            value_to_proto(event.output, message.task_state.result)
    elif event.kind is EventKind.STEP_STATE:
        change = message.step_state
        change.step_id = event.step_id
        change.state = _step_state(event.state)  # type: ignore[assignment]
        change.agent = event.agent
        change.attempt = event.attempt
        change.reason = event.reason
        if event.output is not None:
            value_to_proto(event.output, change.output)
    else:
        message.step_progress.step_id = event.step_id
        message.step_progress.agent = event.agent
        message.step_progress.attempt = event.attempt
        message.step_progress.fraction = event.fraction
        message.step_progress.message = event.message
    return message

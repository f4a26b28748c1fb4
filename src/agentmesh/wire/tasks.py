"""Protobuf ⇄ domain conversion: the only place that knows both shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2
from pydantic import ValidationError as PydanticValidationError

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError
from agentmesh.models import (
    DEFAULT_WEIGHT,
    JSON,
    AgentChoice,
    AgentOverride,
    AgentScore,
    AgentStatus,
    EventKind,
    ParentStep,
    Plan,
    StepRecord,
    StepState,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskRequest,
    TaskState,
)
from agentmesh.wire import (
    budget_from_proto,
    budget_to_proto,
    card_from_proto,
    card_to_proto,
    from_struct,
    step_from_proto,
    step_to_proto,
    usage_from_proto,
    usage_to_proto,
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


_STEP_STATES_BACK = {_step_state(s.value): s for s in StepState}


def step_state_from_proto(value: int, field: str) -> StepState:
    """The domain step state of a wire enum value; ValidationError when unknown."""
    try:
        return _STEP_STATES_BACK[value]
    except KeyError:
        raise ValidationError(f"unknown step state {value}", field=field) from None


def value_to_proto(value: JSON, target: struct_pb2.Value) -> None:
    """Fill a ``google.protobuf.Value`` from any JSON value."""
    # Objects and arrays (every output on the hot path) through the Struct helpers, at
    # about 40% of json_format's cost; scalars as json_format sets them.
    if isinstance(value, dict):
        target.struct_value.SetInParent()  # set even when empty: {} is not "no value"
        target.struct_value.update(value)
    elif isinstance(value, list):
        target.list_value.SetInParent()
        target.list_value.extend(value)
    else:
        json_format.ParseDict(value, target)


def _value(message: Any, name: str) -> JSON:
    """The JSON in ``message.name`` (a ``google.protobuf.Value``), None when it is unset."""
    if not message.HasField(name):
        return None
    return json_format.MessageToDict(getattr(message, name))


def _timestamp(value: datetime | None, target: timestamp_pb2.Timestamp) -> None:
    if value is not None:
        target.FromDatetime(value)


def _time(message: Any, name: str) -> datetime | None:
    """The aware UTC datetime in ``message.name``, None when it is unset."""
    if not message.HasField(name):
        return None
    stamp: timestamp_pb2.Timestamp = getattr(message, name)
    return stamp.ToDatetime(tzinfo=UTC)


def _time_required(message: Any, name: str) -> datetime:
    return _time(message, name) or datetime.fromtimestamp(0, UTC)


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
        latency_seconds=status.latency or 0.0,
        success_rate=status.success_rate or 0.0,
        successes=status.successes,
        failures=status.failures,
        drained=status.drained,
        weight=status.weight,
    )
    _timestamp(status.registered_at, message.registered_at)
    _timestamp(status.last_seen, message.last_seen)
    return message


def status_from_proto(message: pb.AgentStatus) -> AgentStatus:
    """A ListAgents entry as a domain object."""
    return AgentStatus(
        card=card_from_proto(message.card),
        identity=message.identity,
        connected=message.connected,
        draining=message.draining,
        active=message.active_assignments,
        circuit=pb.CircuitState.Name(message.circuit).removeprefix("CIRCUIT_STATE_").lower(),
        registered_at=_time_required(message, "registered_at"),
        last_seen=_time_required(message, "last_seen"),
        # 0 is "none yet" on the wire (an old orchestrator sends nothing); the rate follows
        # from the counts.
        latency=message.latency_seconds or None,
        successes=message.successes,
        failures=message.failures,
        drained=message.drained,
        # 0 from an orchestrator that predates weights, whose every agent weighs 1.
        weight=message.weight or DEFAULT_WEIGHT,
    )


def override_to_proto(override: AgentOverride) -> pb.AgentOverride:
    """An operator's override on the wire."""
    message = pb.AgentOverride(
        name=override.name,
        drained=override.drained,
        weight=override.weight,
        updated_by=override.updated_by,
    )
    _timestamp(override.updated_at, message.updated_at)
    return message


def override_from_proto(message: pb.AgentOverride) -> AgentOverride:
    """An operator's override as a domain object."""
    return AgentOverride(
        name=message.name,
        drained=message.drained,
        weight=message.weight or DEFAULT_WEIGHT,
        updated_by=message.updated_by,
        updated_at=_time(message, "updated_at"),
    )


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


def parent_from_proto(message: pb.ParentStep) -> ParentStep:
    """The parent step of a sub-task."""
    return ParentStep(task_id=message.task_id, step_id=message.step_id)


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
    if request.HasField("parent"):
        fields["parent"] = parent_from_proto(request.parent)
    if request.HasField("budget"):
        try:
            fields["budget"] = budget_from_proto(request.budget)
        except PydanticValidationError as exc:
            raise ValidationError.from_pydantic(exc, field="budget") from None
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
            waiting_for=step.waiting_for,
        )
        step_to_proto(step.spec, item.spec)
        if step.output is not None and not omit_outputs:
            value_to_proto(step.output, item.output)
        _timestamp(step.started_at, item.started_at)
        _timestamp(step.finished_at, item.finished_at)
    _timestamp(task.created_at, message.created_at)
    _timestamp(task.updated_at, message.updated_at)
    budget_to_proto(task.budget, message.budget)
    usage_to_proto(task.usage, message.usage)
    if task.parent is not None:
        message.parent.task_id = task.parent.task_id
        message.parent.step_id = task.parent.step_id
    return message


def task_from_proto(message: pb.Task) -> TaskRecord:
    """A task as the client sees it. The wire carries no plan and no deadline, so ``plan``
    is None and ``timeout_seconds`` 0; ``steps`` are keyed by step id."""
    steps: dict[str, StepRecord] = {}
    for index, step in enumerate(message.steps):
        where = f"steps[{index}]"
        try:
            spec = step_from_proto(step.spec)
        except PydanticValidationError as exc:
            raise ValidationError.from_pydantic(exc, field=f"{where}.spec") from None
        steps[spec.id] = StepRecord(
            spec=spec,
            state=step_state_from_proto(step.state, f"{where}.state"),
            agent=step.agent,
            attempts=step.attempts,
            output=_value(step, "output"),
            error=step.error,
            waiting_for=step.waiting_for,
            started_at=_time(step, "started_at"),
            finished_at=_time(step, "finished_at"),
        )
    return TaskRecord(
        id=message.task_id,
        owner=message.owner,
        state=task_state_from_proto(message.state, "state"),
        input=from_struct(message.input),
        priority=message.priority,
        labels=dict(message.labels),
        steps=steps,
        result=_value(message, "result"),
        error=message.error,
        partial=message.partial,
        created_at=_time_required(message, "created_at"),
        updated_at=_time_required(message, "updated_at"),
        budget=budget_from_proto(message.budget),
        usage=usage_from_proto(message.usage),
        parent=parent_from_proto(message.parent) if message.HasField("parent") else None,
    )


def page_from_proto(message: pb.ListTasksResponse) -> TaskPage:
    """One ListTasks page as a domain object."""
    return TaskPage(
        tasks=tuple(task_from_proto(t) for t in message.tasks),
        next_page_token=message.next_page_token,
    )


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
        if event.usage is not None:
            usage_to_proto(event.usage, message.task_state.usage)
    elif event.kind is EventKind.STEP_STATE:
        change = message.step_state
        change.step_id = event.step_id
        change.state = _step_state(event.state)  # type: ignore[assignment]
        change.agent = event.agent
        change.attempt = event.attempt
        change.reason = event.reason
        if event.output is not None:
            value_to_proto(event.output, change.output)
        if event.usage is not None:
            usage_to_proto(event.usage, change.usage)
        change.cached = event.cached
        if event.choice is not None:
            choice = event.choice
            change.choice.strategy = choice.strategy
            change.choice.score = choice.score
            change.choice.reason = choice.reason
            change.choice.alternatives.extend(
                pb.AgentScore(agent=a.agent, score=a.score, note=a.note)
                for a in choice.alternatives
            )
    else:
        message.step_progress.step_id = event.step_id
        message.step_progress.agent = event.agent
        message.step_progress.attempt = event.attempt
        message.step_progress.fraction = event.fraction
        message.step_progress.message = event.message
        message.step_progress.child_task_id = event.child_task_id
    return message


def _choice(message: pb.AgentChoice) -> AgentChoice:
    return AgentChoice(
        strategy=message.strategy,
        score=message.score,
        reason=message.reason,
        alternatives=tuple(
            AgentScore(agent=a.agent, score=a.score, note=a.note) for a in message.alternatives
        ),
    )


def event_from_proto(message: pb.TaskEvent) -> TaskEvent:
    """A streamed task event as a domain object; ValidationError when it has no kind."""
    common: dict[str, Any] = {
        "task_id": message.task_id,
        "sequence": message.sequence,
        "time": _time_required(message, "time"),
    }
    kind = message.WhichOneof("kind")
    if kind == "task_state":
        change = message.task_state
        return TaskEvent(
            **common,
            kind=EventKind.TASK_STATE,
            state=task_state_from_proto(change.state, "task_state.state").value,
            reason=change.reason,
            partial=change.partial,
            output=_value(change, "result"),
            usage=usage_from_proto(change.usage) if change.HasField("usage") else None,
        )
    if kind == "step_state":
        step = message.step_state
        return TaskEvent(
            **common,
            kind=EventKind.STEP_STATE,
            state=step_state_from_proto(step.state, "step_state.state").value,
            step_id=step.step_id,
            agent=step.agent,
            attempt=step.attempt,
            reason=step.reason,
            output=_value(step, "output"),
            usage=usage_from_proto(step.usage) if step.HasField("usage") else None,
            cached=step.cached,
            choice=_choice(step.choice) if step.HasField("choice") else None,
        )
    if kind == "step_progress":
        progress = message.step_progress
        return TaskEvent(
            **common,
            kind=EventKind.STEP_PROGRESS,
            step_id=progress.step_id,
            agent=progress.agent,
            attempt=progress.attempt,
            fraction=progress.fraction,
            message=progress.message,
            child_task_id=progress.child_task_id,
        )
    raise ValidationError(
        "one of task_state, step_state or step_progress is required", field="kind"
    )

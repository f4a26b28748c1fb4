"""The HTTP API's JSON shapes: request bodies mirroring the protobuf requests, and views.

A request body becomes the same protobuf message a gRPC client sends (:func:`submit_request`),
so that it passes through the very checks and conversion the gRPC API uses; these models only
describe the JSON (for the OpenAPI schema) and refuse what protobuf could not hold (numbers
out of the field's range, NaN, unknown keys). Answers are views of the domain objects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from google.protobuf import json_format, struct_pb2
from pydantic import BaseModel, ConfigDict, Field

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError, describe
from agentmesh.models import (
    JSON,
    AgentCard,
    AgentOverride,
    AgentStatus,
    Budget,
    StepSpec,
    StepState,
    TaskRecord,
    TaskState,
    Usage,
    WorkflowInfo,
)

Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Seconds = Annotated[float, Field(ge=0)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RetryBody(_Body):
    """How often and how patiently a step is retried (``RetryPolicy``)."""

    max_attempts: UInt32 = 0
    initial_backoff_seconds: Seconds = 0.0
    max_backoff_seconds: Seconds = 0.0


class StepCacheBody(_Body):
    """When a step may reuse an earlier output (``StepCache``)."""

    ttl_seconds: Seconds = 0.0


class HumanInputBody(_Body):
    """What a step of kind ``input`` asks (``HumanInput``)."""

    prompt: str = ""
    answer_schema: dict[str, Any] = Field(default_factory=dict)
    approvers: list[str] = Field(default_factory=list)
    default: Any = None


class StepBody(_Body):
    """One step of a plan (``StepSpec``); see the gRPC API for the meaning of each field."""

    id: str = ""
    capability: str = ""
    version: str = ""
    input: dict[str, Any] = Field(default_factory=dict)
    needs: list[str] = Field(default_factory=list)
    timeout_seconds: Seconds = 0.0
    retry: RetryBody | None = None
    optional: bool = False
    compensation: str = ""
    pin_agent: str = ""
    exclude_agents: list[str] = Field(default_factory=list)
    for_each: str = ""
    cache: StepCacheBody | None = None
    kind: str = ""
    human_input: HumanInputBody | None = None


class PlanBody(_Body):
    """A DAG of steps and how their outputs combine (``Plan``)."""

    steps: list[StepBody] = Field(default_factory=list)
    aggregate: dict[str, Any] = Field(default_factory=dict)


class BudgetBody(_Body):
    """The most a task may use (``Budget``); 0 for no limit."""

    tokens: Annotated[int, Field(ge=0, le=2**64 - 1)] = 0
    cost: Seconds = 0.0
    seconds: Seconds = 0.0
    steps: UInt32 = 0


class SubmitBody(_Body):
    """``POST /v1/tasks`` (``SubmitTaskRequest``): one of ``plan``, ``workflow`` or ``goal``."""

    plan: PlanBody | None = None
    workflow: str | None = None
    goal: str | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    priority: Int32 = 0
    timeout_seconds: Seconds = 0.0
    labels: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str = ""
    budget: BudgetBody | None = None


class InputBody(_Body):
    """``POST /v1/tasks/{task_id}/steps/{step_id}/input``: the answer (any JSON value)."""

    value: Any


class CancelBody(_Body):
    """``POST /v1/tasks/{task_id}/cancel``: why (optional)."""

    reason: str = ""


def _message(document: dict[str, Any], message: Any) -> Any:
    """``message`` filled from ``document``; ValidationError when protobuf cannot hold it."""
    try:
        return json_format.ParseDict(document, message)
    except (json_format.ParseError, ValueError, TypeError, OverflowError) as exc:
        # The models keep the shape right; what remains are values like integers too big
        # for a JSON number in a Struct, or text that is not UTF-8.
        raise ValidationError(f"cannot be represented: {describe(exc)}", field="request") from None


def input_value(body: InputBody) -> struct_pb2.Value:
    """The answer in ``body`` as a protobuf Value; ValidationError when protobuf cannot hold it."""
    value: struct_pb2.Value = _message(body.value, struct_pb2.Value())
    return value


def submit_request(body: SubmitBody) -> pb.SubmitTaskRequest:
    """The SubmitTask request the body stands for."""
    specs = [name for name in ("plan", "workflow", "goal") if getattr(body, name) is not None]
    if len(specs) > 1:
        raise ValidationError(f"only one of plan, workflow or goal, not {specs}", field="spec")
    request: pb.SubmitTaskRequest = _message(
        body.model_dump(exclude_unset=True, exclude_none=True), pb.SubmitTaskRequest()
    )
    return request


# -- views --------------------------------------------------------------------------------------


class ErrorView(BaseModel):
    """Every error answer: the gRPC status name, the offending field (may be empty), why."""

    code: str
    field: str = ""
    reason: str


class StepView(BaseModel):
    """A step's live state inside a task."""

    id: str
    spec: StepSpec
    state: StepState
    agent: str
    attempts: int
    output: JSON = None
    error: str
    #: While waiting: what for (no agent with room, a pool at its limit).
    waiting_for: str = ""
    started_at: datetime | None
    finished_at: datetime | None


class TaskView(BaseModel):
    """A task with its steps, as ``GetTask`` answers it."""

    task_id: str
    owner: str
    state: TaskState
    input: dict[str, JSON]
    priority: int
    labels: dict[str, str]
    steps: list[StepView]
    result: JSON = None
    error: str
    partial: bool
    created_at: datetime
    updated_at: datetime
    budget: Budget = Field(default_factory=Budget)
    usage: Usage = Field(default_factory=Usage)

    @classmethod
    def of(cls, task: TaskRecord, *, omit_outputs: bool = False) -> TaskView:
        """The view of ``task``; without outputs and result with ``omit_outputs``."""
        return cls(
            task_id=task.id,
            owner=task.owner,
            budget=task.budget,
            usage=task.usage,
            state=task.state,
            input=task.input,
            priority=task.priority,
            labels=task.labels,
            steps=[
                StepView(
                    id=step_id,
                    spec=step.spec,
                    state=step.state,
                    agent=step.agent,
                    attempts=step.attempts,
                    output=None if omit_outputs else step.output,
                    error=step.error,
                    waiting_for=step.waiting_for,
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                )
                for step_id, step in task.steps.items()
            ],
            result=None if omit_outputs else task.result,
            error=task.error,
            partial=task.partial,
            created_at=task.created_at,
            updated_at=task.updated_at,
        )


class TaskPageView(BaseModel):
    """One page of ``GET /v1/tasks``; pass ``next_page_token`` for the next ("" at the end)."""

    tasks: list[TaskView]
    next_page_token: str


class AgentView(BaseModel):
    """One registered agent, as ``ListAgents`` answers it."""

    card: AgentCard
    identity: str
    connected: bool
    draining: bool
    active_assignments: int
    circuit: str
    registered_at: datetime
    last_seen: datetime
    #: Exponentially weighted mean attempt latency (null until an attempt ends).
    latency_seconds: float | None
    #: successes / (successes + failures) (null before the first attempt).
    success_rate: float | None
    successes: int
    failures: int
    #: Drained by an operator: no new work until resumed.
    drained: bool
    #: The operator's weight on the agent's share of work (1 by default).
    weight: float

    @classmethod
    def of(cls, status: AgentStatus) -> AgentView:
        """The view of a registry snapshot entry."""
        return cls(
            card=status.card,
            identity=status.identity,
            connected=status.connected,
            draining=status.draining,
            active_assignments=status.active,
            circuit=status.circuit,
            registered_at=status.registered_at,
            last_seen=status.last_seen,
            latency_seconds=status.latency,
            success_rate=status.success_rate,
            successes=status.successes,
            failures=status.failures,
            drained=status.drained,
            weight=status.weight,
        )


class WeightBody(_Body):
    """The body of ``PUT /v1/agents/{name}/weight``."""

    #: More than 0, at most 100; 1 is the default share.
    weight: float


class AgentOverrideView(BaseModel):
    """What operators said of one agent, as every replica applies it."""

    name: str
    drained: bool
    weight: float
    updated_by: str
    updated_at: datetime | None

    @classmethod
    def of(cls, override: AgentOverride) -> AgentOverrideView:
        """The view of an override."""
        return cls(
            name=override.name,
            drained=override.drained,
            weight=override.weight,
            updated_by=override.updated_by,
            updated_at=override.updated_at,
        )


class WorkflowView(BaseModel):
    """A workflow of the catalog: submit it by name with ``{"workflow": name, "input": ...}``."""

    name: str
    description: str
    input_schema: dict[str, JSON] | None
    steps: list[StepSpec]
    aggregate: dict[str, JSON]

    @classmethod
    def of(cls, workflow: WorkflowInfo) -> WorkflowView:
        """The view of a catalog entry."""
        return cls(
            name=workflow.name,
            description=workflow.description,
            input_schema=workflow.input_schema,
            steps=list(workflow.plan.steps),
            aggregate=dict(workflow.plan.aggregate),
        )


class HealthView(BaseModel):
    """``GET /healthz``."""

    status: str

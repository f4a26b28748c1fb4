"""Checks of every request's fields on the wire, before anything converts or stores them.

Each check raises :class:`~agentmesh.errors.ValidationError` naming the field, as
``labels["env"]`` or ``card.capabilities[2].input_schema.properties``. JSON payloads
(``google.protobuf.Struct``) are walked by
:func:`~agentmesh.limits.check_struct` (the same check as agents'
outputs get), iteratively and with the limits of
:class:`~agentmesh.orchestrator.planning.PlanLimits` (depth, string length, size), so
that converting them afterwards is safe; plans are then checked in depth by
:func:`agentmesh.orchestrator.planning.validate_plan`.
A request that fails here has changed nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

from agentmesh import schemas
from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError, field_path
from agentmesh.limits import MAX_CACHE_TTL_SECONDS, ByteBudget, PlanLimits, check_struct
from agentmesh.models import (
    MAX_CAPABILITY_NAME,
    MAX_RESOURCE_NAME,
    MAX_WEIGHT,
    AgentCard,
    is_capability_name,
    is_resource_name,
)
from agentmesh.security.identity import check_name

TASK_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HOST_PORT: Final = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")

MAX_PAGE_SIZE: Final = 500
MAX_STATES: Final = 16
MAX_SEQUENCE: Final = 2**63 - 1
MAX_REASON: Final = 1024
MAX_GOAL: Final = 8192
MAX_NAME: Final = 256
MAX_IDEMPOTENCY_KEY: Final = 256
MAX_LABELS: Final = 64
MAX_LABEL_KEY: Final = 63
MAX_LABEL_VALUE: Final = 256
MAX_TIMEOUT_SECONDS: Final = 30 * 24 * 3600.0
MAX_BACKOFF_SECONDS: Final = 24 * 3600.0
MAX_ATTEMPTS: Final = 100
MAX_CAPABILITIES: Final = 64
MAX_VERSION: Final = 64
MAX_DESCRIPTION: Final = 4096
MAX_TAGS: Final = 32
MAX_TAG: Final = 64
MAX_ENDPOINT: Final = 255
MAX_CONCURRENCY: Final = 10_000


def _length(value: str, limit: int, field: str) -> None:
    if len(value) > limit:
        raise ValidationError(f"{len(value)} characters exceed the limit of {limit}", field=field)


def _token(value: str, limit: int, field: str) -> None:
    _length(value, limit, field)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ValidationError("must not contain spaces or control characters", field=field)


def _seconds(value: float, limit: float, field: str) -> None:
    if not math.isfinite(value) or value < 0 or value > limit:
        raise ValidationError(f"must be a number of seconds from 0 to {limit:g}", field=field)


def check_task_id(task_id: str, field: str = "task_id") -> str:
    """``task_id`` when it has the form of an id SubmitTask returns."""
    if not TASK_ID.fullmatch(task_id):
        raise ValidationError(
            "must be a task id as returned by SubmitTask (a lowercase UUID)", field=field
        )
    return task_id


def check_labels(labels: Mapping[str, str], field: str = "labels") -> None:
    """At most 64 labels, keys of 1-63 printable characters, values of at most 256."""
    if len(labels) > MAX_LABELS:
        raise ValidationError(f"{len(labels)} labels exceed the limit of {MAX_LABELS}", field=field)
    for key, value in labels.items():
        where = field_path(field, key[:MAX_LABEL_KEY])
        if not key:
            raise ValidationError("a label key must not be empty", field=field)
        _token(key, MAX_LABEL_KEY, where)
        _length(value, MAX_LABEL_VALUE, where)
        if not value.isprintable():
            raise ValidationError("must not contain control characters", field=where)


# -- Orchestrator ---------------------------------------------------------------------------------


def _check_step(
    step: common_pb2.StepSpec, where: str, limits: PlanLimits, budget: ByteBudget
) -> None:
    _seconds(step.timeout_seconds, MAX_TIMEOUT_SECONDS, f"{where}.timeout_seconds")
    if step.retry.max_attempts > MAX_ATTEMPTS:
        raise ValidationError(
            f"must be at most {MAX_ATTEMPTS}", field=f"{where}.retry.max_attempts"
        )
    for name in ("initial_backoff_seconds", "max_backoff_seconds"):
        _seconds(getattr(step.retry, name), MAX_BACKOFF_SECONDS, f"{where}.retry.{name}")
    if step.HasField("cache"):
        ttl = step.cache.ttl_seconds
        _seconds(ttl, MAX_CACHE_TTL_SECONDS, f"{where}.cache.ttl_seconds")
        if ttl <= 0:
            raise ValidationError("must be more than 0 seconds", field=f"{where}.cache.ttl_seconds")
    for name in ("needs", "exclude_agents"):
        values = getattr(step, name)
        if len(values) > limits.max_steps:
            raise ValidationError(
                f"{len(values)} entries exceed the limit of {limits.max_steps}",
                field=f"{where}.{name}",
            )
        for k, value in enumerate(values):
            _token(value, MAX_NAME, f"{where}.{name}[{k}]")
    for name in ("id", "capability", "version", "compensation", "pin_agent", "for_each"):
        _length(getattr(step, name), limits.max_string, f"{where}.{name}")
    check_struct(step.input, f"{where}.input", limits, budget)


def check_submit(request: pb.SubmitTaskRequest, limits: PlanLimits) -> None:
    """Every field of a SubmitTask request, before it is converted or planned."""
    kind = request.WhichOneof("spec")
    if kind is None:
        raise ValidationError("one of plan, workflow or goal is required", field="spec")
    budget = ByteBudget(limits.max_input_bytes, what="payloads")
    if kind == "plan":
        steps = request.plan.steps
        # Counted before anything is converted: a huge plan is refused at once.
        if not steps:
            raise ValidationError("a plan needs at least one step", field="plan.steps")
        if len(steps) > limits.max_steps:
            raise ValidationError(
                f"{len(steps)} steps exceed the limit of {limits.max_steps}", field="plan.steps"
            )
        for i, step in enumerate(steps):
            _check_step(step, f"plan.steps[{i}]", limits, budget)
        check_struct(request.plan.aggregate, "plan.aggregate", limits, budget)
    elif kind == "workflow":
        if not request.workflow:
            raise ValidationError("must name a workflow", field="workflow")
        _token(request.workflow, MAX_NAME, "workflow")
    else:
        if not request.goal.strip():
            raise ValidationError("must say what to do", field="goal")
        _length(request.goal, MAX_GOAL, "goal")
    check_struct(request.input, "input", limits, budget)
    _seconds(request.timeout_seconds, MAX_TIMEOUT_SECONDS, "timeout_seconds")
    check_labels(request.labels)
    _length(request.idempotency_key, MAX_IDEMPOTENCY_KEY, "idempotency_key")
    if not request.idempotency_key.isprintable():
        raise ValidationError("must not contain control characters", field="idempotency_key")


def check_list_tasks(request: pb.ListTasksRequest) -> int:
    """The offset a ListTasks request's page token stands for, once its fields are checked."""
    if request.page_size > MAX_PAGE_SIZE:
        raise ValidationError(f"must be at most {MAX_PAGE_SIZE}", field="page_size")
    if len(request.states) > MAX_STATES:
        raise ValidationError(f"at most {MAX_STATES} states", field="states")
    token = request.page_token
    if not token:
        return 0
    if len(token) > 10 or not token.isascii() or not token.isdigit():
        raise ValidationError("not a token returned by ListTasks", field="page_token")
    return int(token)


def check_cancel(request: pb.CancelTaskRequest) -> None:
    """A CancelTask request's fields."""
    check_task_id(request.task_id)
    _length(request.reason, MAX_REASON, "reason")


def check_provide_input(request: pb.ProvideInputRequest) -> None:
    """A ProvideInput request's fields (the value is checked against the step's schema)."""
    check_task_id(request.task_id)
    if not request.step_id:
        raise ValidationError("must name the step to answer", field="step_id")
    _length(request.step_id, MAX_NAME, "step_id")
    if not request.HasField("value"):
        raise ValidationError("an answer needs a value", field="value")


def check_watch(request: pb.WatchTaskRequest) -> None:
    """A WatchTask request's fields."""
    check_task_id(request.task_id)
    if request.after_sequence > MAX_SEQUENCE:
        raise ValidationError(f"must be at most {MAX_SEQUENCE}", field="after_sequence")


def check_list_agents(request: pb.ListAgentsRequest) -> None:
    """A ListAgents request's fields."""
    _token(request.capability, MAX_CAPABILITY_NAME, "capability")


def check_agent_name(name: str) -> None:
    """The agent named by a DrainAgent, ResumeAgent or SetAgentWeight request."""
    check_name(name, "name")


def check_weight(weight: float) -> None:
    """A SetAgentWeight request's weight: finite, more than 0, at most MAX_WEIGHT."""
    if not math.isfinite(weight) or not 0 < weight <= MAX_WEIGHT:
        raise ValidationError(
            f"must be more than 0 and at most {MAX_WEIGHT:g} (1 is the default share),"
            f" not {weight!r}",
            field="weight",
        )


# -- Registry -----------------------------------------------------------------------------------


def check_endpoint(endpoint: str, field: str = "card.endpoint") -> None:
    """``host:port`` (an IPv6 host in brackets) with a port from 1 to 65535."""
    _length(endpoint, MAX_ENDPOINT, field)
    match = _HOST_PORT.fullmatch(endpoint)
    if match is None or not 0 < int(match.group(1)) < 65536:
        raise ValidationError("must be host:port, e.g. 10.0.0.7:50061", field=field)


def check_card(card: common_pb2.AgentCard, limits: PlanLimits) -> None:
    """An agent card's fields: name, endpoint, capabilities and their schemas, labels."""
    check_name(card.name, "card.name")
    check_endpoint(card.endpoint)
    capabilities = card.capabilities
    if not capabilities:
        raise ValidationError(
            "an agent must offer at least one capability", field="card.capabilities"
        )
    if len(capabilities) > MAX_CAPABILITIES:
        raise ValidationError(
            f"{len(capabilities)} capabilities exceed the limit of {MAX_CAPABILITIES}",
            field="card.capabilities",
        )
    if not 0 < card.max_concurrency <= MAX_CONCURRENCY:
        # 0 is also what an unset field reads as: no silent default, the agent says its limit.
        raise ValidationError(
            f"must be from 1 to {MAX_CONCURRENCY} (how many assignments the agent runs at once)",
            field="card.max_concurrency",
        )
    _token(card.version, MAX_VERSION, "card.version")
    check_labels(card.labels, "card.labels")
    seen: set[str] = set()
    budget = ByteBudget(limits.max_input_bytes, what="payloads")
    for i, capability in enumerate(capabilities):
        where = f"card.capabilities[{i}]"
        name = capability.name
        if not is_capability_name(name):
            raise ValidationError(
                f"must be a dotted lowercase name of at most {MAX_CAPABILITY_NAME} characters,"
                " e.g. text.summarize",
                field=f"{where}.name",
            )
        if name in seen:
            raise ValidationError(f"capability {name!r} is listed twice", field=f"{where}.name")
        seen.add(name)
        _token(capability.version, MAX_VERSION, f"{where}.version")
        _length(capability.description, MAX_DESCRIPTION, f"{where}.description")
        if len(capability.tags) > MAX_TAGS:
            raise ValidationError(
                f"{len(capability.tags)} tags exceed the limit of {MAX_TAGS}", field=f"{where}.tags"
            )
        for k, tag in enumerate(capability.tags):
            _token(tag, MAX_TAG, f"{where}.tags[{k}]")
        _check_resources(capability.resources, f"{where}.resources")
        check_struct(capability.input_schema, f"{where}.input_schema", limits, budget)
        check_struct(capability.output_schema, f"{where}.output_schema", limits, budget)


def _check_resources(resources: Sequence[str], where: str) -> None:
    if len(resources) > MAX_TAGS:
        raise ValidationError(
            f"{len(resources)} resources exceed the limit of {MAX_TAGS}", field=where
        )
    for k, resource in enumerate(resources):
        if not is_resource_name(resource):
            raise ValidationError(
                f"{resource[:MAX_RESOURCE_NAME]!r} is not a resource name: letters, digits and"
                f" ._:/@+- (not first), at most {MAX_RESOURCE_NAME} characters,"
                " e.g. 'llm:openai/gpt-4o'",
                field=f"{where}[{k}]",
            )


def check_deregister(request: pb.DeregisterAgentRequest) -> None:
    """A DeregisterAgent request's fields."""
    check_name(request.name, "name")


def check_schemas(card: AgentCard) -> None:
    """Each capability's schemas are valid JSON Schema (draft 2020-12).

    Compiling is CPU-bound (run this in a thread); :mod:`agentmesh.schemas` caches the
    result for the checks of plans and outputs that follow.
    """
    for i, capability in enumerate(card.capabilities):
        for name in ("input_schema", "output_schema"):
            schema = getattr(capability, name)
            problem = schemas.schema_problem(schema) if schema else None
            if problem:
                raise ValidationError(
                    f"not a valid JSON Schema (draft 2020-12): {problem}",
                    field=f"card.capabilities[{i}].{name}",
                )

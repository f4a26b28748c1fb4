"""Protobuf ⇄ domain conversions shared by the orchestrator and the agent SDK."""

from __future__ import annotations

import functools

from google.protobuf import json_format, struct_pb2
from pydantic import ValidationError as PydanticValidationError

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh.errors import ValidationError
from agentmesh.models import (
    JSON,
    AgentCard,
    CachePolicy,
    Capability,
    HumanInput,
    RetryPolicy,
    StepKind,
    StepSpec,
)


def to_struct(value: dict[str, JSON]) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, JSON]:
    """A protobuf Struct as a JSON object (numbers come back as floats)."""
    return json_format.MessageToDict(struct)


def card_to_proto(card: AgentCard) -> common_pb2.AgentCard:
    """An agent card as registered and described."""
    return common_pb2.AgentCard(
        name=card.name,
        endpoint=card.endpoint,
        capabilities=[
            common_pb2.Capability(
                name=c.name,
                version=c.version,
                description=c.description,
                input_schema=to_struct(c.input_schema),
                output_schema=to_struct(c.output_schema),
                tags=list(c.tags),
                resources=list(c.resources),
            )
            for c in card.capabilities
        ],
        max_concurrency=card.max_concurrency,
        version=card.version,
        labels=dict(card.labels),
        reads_batches=card.reads_batches,
    )


def card_from_proto(card: common_pb2.AgentCard) -> AgentCard:
    """The domain card of a protobuf one; ValidationError naming the bad field."""
    try:
        return AgentCard(
            name=card.name,
            endpoint=card.endpoint,
            capabilities=tuple(
                Capability(
                    name=c.name,
                    version=c.version or "1.0.0",
                    description=c.description,
                    input_schema=from_struct(c.input_schema),
                    output_schema=from_struct(c.output_schema),
                    tags=tuple(c.tags),
                    resources=tuple(c.resources),
                )
                for c in card.capabilities
            ),
            max_concurrency=card.max_concurrency or 1,
            version=card.version or "0.0.0",
            labels=dict(card.labels),
            reads_batches=card.reads_batches,
        )
    except PydanticValidationError as exc:
        raise ValidationError.from_pydantic(exc, field="card") from None


@functools.lru_cache(maxsize=256)
def _retry_policy(max_attempts: int, initial: float, longest: float) -> RetryPolicy:
    # Frozen, and a plan's steps share a few: one model for each, not one per step (a step
    # in flight keeps its spec, and ten thousand of them are in flight at once, issue 9).
    return RetryPolicy(
        max_attempts=max_attempts, initial_backoff_seconds=initial, max_backoff_seconds=longest
    )


def step_from_proto(step: common_pb2.StepSpec) -> StepSpec:
    """A wire step spec as a domain object."""
    retry = _retry_policy(
        step.retry.max_attempts,
        step.retry.initial_backoff_seconds or 0.2,
        step.retry.max_backoff_seconds or 5.0,
    )
    return StepSpec(
        id=step.id,
        capability=step.capability,
        version=step.version,
        input=from_struct(step.input),
        needs=tuple(step.needs),
        timeout_seconds=step.timeout_seconds,
        retry=retry,
        optional=step.optional,
        compensation=step.compensation,
        pin_agent=step.pin_agent,
        exclude_agents=tuple(step.exclude_agents),
        for_each=step.for_each,
        cache=CachePolicy(ttl_seconds=step.cache.ttl_seconds) if step.HasField("cache") else None,
        kind=step.kind or StepKind.AGENT,
        human_input=_human_input(step.human_input) if step.HasField("human_input") else None,
    )


def _human_input(message: common_pb2.HumanInput) -> HumanInput:
    return HumanInput(
        prompt=message.prompt,
        answer_schema=from_struct(message.answer_schema),
        approvers=tuple(message.approvers),
        default=(
            json_format.MessageToDict(message.default) if message.HasField("default") else None
        ),
    )


def step_to_proto(step: StepSpec, target: common_pb2.StepSpec) -> None:
    """Fill a wire step spec from a domain one."""
    target.id = step.id
    target.capability = step.capability
    target.version = step.version
    target.input.update(step.input)
    target.needs.extend(step.needs)
    target.timeout_seconds = step.timeout_seconds
    target.retry.max_attempts = step.retry.max_attempts
    target.retry.initial_backoff_seconds = step.retry.initial_backoff_seconds
    target.retry.max_backoff_seconds = step.retry.max_backoff_seconds
    target.optional = step.optional
    target.compensation = step.compensation
    target.pin_agent = step.pin_agent
    target.exclude_agents.extend(step.exclude_agents)
    target.for_each = step.for_each
    if step.cache is not None:
        target.cache.ttl_seconds = step.cache.ttl_seconds
    if step.kind is not StepKind.AGENT:
        target.kind = step.kind.value
    if step.human_input is not None:
        asked = target.human_input
        asked.prompt = step.human_input.prompt
        asked.answer_schema.update(step.human_input.answer_schema)
        asked.approvers.extend(step.human_input.approvers)
        if step.human_input.default is not None:
            json_format.ParseDict(step.human_input.default, asked.default)

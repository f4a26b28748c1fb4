"""Protobuf at the wire, domain types inside: every conversion the agent SDK needs."""

from __future__ import annotations

from datetime import UTC

from google.protobuf import json_format, struct_pb2

from agentmesh._proto.agentmesh.v1 import agent_pb2, common_pb2
from agentmesh.agent.work import Assignment, Completed, Outcome
from agentmesh.models import JSON, AgentCard, Capability


def to_struct(value: dict[str, JSON]) -> struct_pb2.Struct:
    """A JSON object as a protobuf Struct."""
    struct = struct_pb2.Struct()
    json_format.ParseDict(value, struct)
    return struct


def from_struct(struct: struct_pb2.Struct) -> dict[str, JSON]:
    """A protobuf Struct as a JSON object (numbers come back as floats)."""
    return json_format.MessageToDict(struct)


def capability_to_pb(capability: Capability) -> common_pb2.Capability:
    """A capability as sent in cards."""
    return common_pb2.Capability(
        name=capability.name,
        version=capability.version,
        description=capability.description,
        input_schema=to_struct(capability.input_schema),
        output_schema=to_struct(capability.output_schema),
        tags=list(capability.tags),
    )


def card_to_pb(card: AgentCard) -> common_pb2.AgentCard:
    """An agent card as registered and described."""
    return common_pb2.AgentCard(
        name=card.name,
        endpoint=card.endpoint,
        capabilities=[capability_to_pb(c) for c in card.capabilities],
        max_concurrency=card.max_concurrency,
        version=card.version,
        labels=dict(card.labels),
    )


def card_from_pb(card: common_pb2.AgentCard) -> AgentCard:
    """The domain card of a protobuf one."""
    return AgentCard(
        name=card.name,
        endpoint=card.endpoint,
        capabilities=tuple(
            Capability(
                name=c.name,
                version=c.version,
                description=c.description,
                input_schema=from_struct(c.input_schema),
                output_schema=from_struct(c.output_schema),
                tags=tuple(c.tags),
            )
            for c in card.capabilities
        ),
        max_concurrency=card.max_concurrency,
        version=card.version,
        labels=dict(card.labels),
    )


def assignment_from_pb(message: agent_pb2.Assignment) -> Assignment:
    """The domain form of an Assignment message."""
    return Assignment(
        assignment_id=message.assignment_id,
        capability=message.capability,
        input=from_struct(message.input),
        idempotency_key=message.idempotency_key,
        task_id=message.task_id,
        step_id=message.step_id,
        attempt=message.attempt,
        deadline=message.deadline.ToDatetime(tzinfo=UTC) if message.HasField("deadline") else None,
        compensation=message.compensation,
    )


def accepted(assignment_id: str) -> agent_pb2.AgentMessage:
    """The agent took the assignment."""
    return agent_pb2.AgentMessage(accepted=agent_pb2.Accepted(assignment_id=assignment_id))


def progress(assignment_id: str, fraction: float, message: str) -> agent_pb2.AgentMessage:
    """How far the assignment is."""
    return agent_pb2.AgentMessage(
        progress=agent_pb2.Progress(assignment_id=assignment_id, fraction=fraction, message=message)
    )


def outcome(assignment_id: str, result: Outcome) -> agent_pb2.AgentMessage:
    """The final message about an assignment: a Result or a Failure."""
    if isinstance(result, Completed):
        return agent_pb2.AgentMessage(
            result=agent_pb2.Result(assignment_id=assignment_id, output=to_struct(result.output))
        )
    return agent_pb2.AgentMessage(
        failure=agent_pb2.Failure(
            assignment_id=assignment_id,
            code=result.code,
            message=result.message,
            retryable=result.retryable,
        )
    )


def pong(nonce: int, active: int) -> agent_pb2.AgentMessage:
    """The answer to a Ping."""
    return agent_pb2.AgentMessage(pong=agent_pb2.Pong(nonce=nonce, active=active))


def draining() -> agent_pb2.AgentMessage:
    """The agent is shutting down."""
    return agent_pb2.AgentMessage(draining=agent_pb2.Draining())

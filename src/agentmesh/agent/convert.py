"""Protobuf at the wire, domain types inside: every conversion the agent SDK needs."""

from __future__ import annotations

from datetime import UTC

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent.work import Assignment
from agentmesh.models import JSON, FailureCode, Outcome
from agentmesh.wire import from_struct, step_to_proto, to_struct, usage_to_proto


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
        trace_context=dict(message.trace_context),
    )


def accepted(assignment_id: str) -> agent_pb2.AgentMessage:
    """The agent took the assignment."""
    return agent_pb2.AgentMessage(accepted=agent_pb2.Accepted(assignment_id=assignment_id))


def progress(assignment_id: str, fraction: float, message: str) -> agent_pb2.AgentMessage:
    """How far the assignment is."""
    return agent_pb2.AgentMessage(
        progress=agent_pb2.Progress(assignment_id=assignment_id, fraction=fraction, message=message)
    )


def outcome(
    assignment_id: str, result: Outcome, *, max_bytes: int = 4 * 1024 * 1024
) -> agent_pb2.AgentMessage:
    """The final message about an assignment: a Result or a Failure.

    A Result larger than ``max_bytes`` would be refused by the orchestrator's transport and
    take the whole Session down with it; it becomes this assignment's Failure instead.
    """
    if result.output is not None:
        message = agent_pb2.Result(assignment_id=assignment_id, output=to_struct(result.output))
        for step in result.follow_ups:
            step_to_proto(step, message.follow_ups.add())
        if result.usage is not None:
            usage_to_proto(result.usage, message.usage)
        size = message.ByteSize()
        if size <= max_bytes - 1024:  # leave room for the envelope
            return agent_pb2.AgentMessage(result=message)
        usage = result.usage
        result = Outcome.failed(
            FailureCode.INVALID_OUTPUT,
            f"output of {size} bytes exceeds the {max_bytes}-byte message limit",
        )
        result.usage = usage
    failure = agent_pb2.Failure(
        assignment_id=assignment_id,
        code=result.code,
        message=result.message,
        retryable=result.retryable,
    )
    if result.usage is not None:
        usage_to_proto(result.usage, failure.usage)
    return agent_pb2.AgentMessage(failure=failure)


def ask(assignment_id: str, prompt: str, schema: dict[str, JSON]) -> agent_pb2.AgentMessage:
    """The run asks a person ``prompt`` (``ctx.ask``)."""
    return agent_pb2.AgentMessage(
        ask=agent_pb2.Ask(
            assignment_id=assignment_id, prompt=prompt, answer_schema=to_struct(schema)
        )
    )


def pong(nonce: int, active: int) -> agent_pb2.AgentMessage:
    """The answer to a Ping."""
    return agent_pb2.AgentMessage(pong=agent_pb2.Pong(nonce=nonce, active=active))


def draining() -> agent_pb2.AgentMessage:
    """The agent is shutting down."""
    return agent_pb2.AgentMessage(draining=agent_pb2.Draining())

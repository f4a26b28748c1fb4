"""An agent's Result, taken in: its output checked and converted, off the event loop when big.

What an agent returns becomes part of the task, which every reader (GetTask, ListTasks,
WatchTask, the next agents) must be able to decode: an output larger than
``max_output_bytes`` or nested deeper than
:data:`~agentmesh.limits.MAX_OUTPUT_DEPTH` is refused here, before it
is converted.
Walking and converting a payload of megabytes takes seconds of CPU; above
:data:`THREAD_BYTES` that happens in a thread so that the orchestrator keeps answering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pydantic import ValidationError as PydanticValidationError

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.errors import ValidationError
from agentmesh.limits import ByteBudget, check_struct, output_limits
from agentmesh.models import JSON, StepSpec, Usage
from agentmesh.wire import from_struct, step_from_proto, usage_from_proto

#: Payloads larger than this (wire bytes) are checked and converted in a thread; smaller ones
#: take well under a millisecond, less than the hop to a thread.
THREAD_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Taken:
    """A Result's contents once accepted: the output, follow-up steps, the output's size."""

    output: dict[str, JSON]
    follow_ups: tuple[StepSpec, ...]
    #: Wire bytes of the output (decides whether later checks of it run in a thread).
    size: int
    #: What the run used, as the agent reported it; None when it said nothing.
    usage: Usage | None = None


def take(result: agent_pb2.Result, max_output_bytes: int) -> Taken:
    """Check and convert ``result``; ValidationError (naming the field) when it is unfit."""
    size = result.output.ByteSize()
    if size > max_output_bytes:
        raise ValidationError(
            f"an output of {size} bytes exceeds the limit of {max_output_bytes} bytes"
            " (AGENTMESH_MAX_OUTPUT_BYTES)",
            field="result.output",
        )
    # The same check as SubmitTask's inputs get, with the depth every client can decode.
    check_struct(
        result.output,
        "result.output",
        output_limits(max_output_bytes),
        ByteBudget(max_output_bytes, what="the output"),
    )
    try:
        # Follow-up steps are checked as plan steps (validate_plan) when they join the plan.
        follow_ups = tuple(step_from_proto(s) for s in result.follow_ups)
    except PydanticValidationError as exc:
        raise ValidationError.from_pydantic(exc, field="result.follow_ups") from None
    except ValueError as exc:
        # NaN or an infinity in a follow-up's input: not JSON.
        raise ValidationError(str(exc), field="result.follow_ups") from None
    usage = usage_from_proto(result.usage) if result.HasField("usage") else None
    return Taken(from_struct(result.output), follow_ups, size, usage)

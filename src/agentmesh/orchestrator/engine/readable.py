"""A task must stay readable: with its outputs and result it fits in one gRPC message.

Each output is bounded when it arrives (``max_output_bytes``), but a task carries every
output in its step and again in its result, and an aggregate that collects or concatenates
many outputs can outgrow the message limit on its own. Such a task would be stored, and
then no GetTask, ListTasks or WatchTask could carry it: it fails instead, saying why.
"""

from __future__ import annotations

import json
from typing import Final

from google.protobuf import json_format, struct_pb2

from agentmesh.models import JSON, TaskRecord

#: Protobuf bytes per compact-JSON byte at most: a number takes 1 JSON byte ("7,": 2 with its
#: comma) and 11 wire bytes in a list. Below limit / RATIO the exact size need not be computed.
RATIO: Final = 6
#: Wire bytes of a task and of a step besides their payloads and strings (states, numbers,
#: timestamps, field tags), rounded up.
TASK_OVERHEAD: Final = 1024
STEP_OVERHEAD: Final = 256


def _payloads(task: TaskRecord, result: JSON) -> JSON:
    return {
        "input": task.input,
        "steps": [[s.spec.input, s.output] for s in task.steps.values()],
        "result": result,
    }


def _envelope(task: TaskRecord) -> int:
    size = TASK_OVERHEAD + len(task.owner) + len(task.error)
    size += sum(len(k) + len(v) + 4 for k, v in task.labels.items())
    for step in task.steps.values():
        spec = step.spec
        size += STEP_OVERHEAD + len(step.agent) + len(step.error.encode())
        size += sum(len(t) for t in (spec.id, spec.capability, spec.version, spec.compensation))
        size += sum(len(t) for t in (spec.pin_agent, spec.for_each, *spec.needs))
        size += sum(len(t) for t in spec.exclude_agents)
    return size


def task_size(task: TaskRecord, result: JSON, *, below: int = 0) -> int:
    """About how many bytes ``task`` takes on the wire once it holds ``result``.

    Payloads are sized exactly (which costs a conversion: call this in a thread), the
    rest generously. With ``below``, a cheap upper bound is returned instead when it is
    already under ``below``.
    """
    payloads = _payloads(task, result)
    envelope = _envelope(task)
    if below:
        bound = RATIO * len(json.dumps(payloads, separators=(",", ":"))) + envelope
        if bound < below:
            return bound
    message = struct_pb2.Value()
    json_format.ParseDict(payloads, message)
    return message.ByteSize() + envelope


def oversize(task: TaskRecord, result: JSON, limit: int) -> str:
    """Why ``task`` holding ``result`` could not be read in one ``limit``-byte message, or ""."""
    size = task_size(task, result, below=limit)
    if size <= limit:
        return ""
    return (
        f"with its outputs and result the task would take {size} bytes, more than the"
        f" {limit}-byte message limit (AGENTMESH_MAX_MESSAGE_BYTES): no client could read it"
    )

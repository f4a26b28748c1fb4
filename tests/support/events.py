"""Reading task event streams in tests: who ran what, in which order; watching across outages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.client import Client

#: Statuses a watch ends with when the orchestrator goes away under it.
_OUTAGE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED})


def kind(event: pb.TaskEvent) -> str:
    """Which of task_state, step_state and step_progress the event carries."""
    return event.WhichOneof("kind") or ""


def step_events(events: Sequence[pb.TaskEvent], step_id: str | None = None) -> list[pb.TaskEvent]:
    """The step_state events, optionally of one step, in stream order."""
    return [
        e for e in events if kind(e) == "step_state" and step_id in (None, e.step_state.step_id)
    ]


def step_states(events: Sequence[pb.TaskEvent], step_id: str) -> list[int]:
    """The states a step went through, in order."""
    return [e.step_state.state for e in step_events(events, step_id)]


def first_sequence(events: Sequence[pb.TaskEvent], step_id: str, state: int) -> int:
    """The sequence number of the first event putting ``step_id`` in ``state``."""
    for event in step_events(events, step_id):
        if event.step_state.state == state:
            return event.sequence
    raise AssertionError(f"step {step_id!r} never reached state {pb.StepState.Name(state)}")


def task_states(events: Sequence[pb.TaskEvent]) -> list[int]:
    """The states the task went through, in order."""
    return [e.task_state.state for e in events if kind(e) == "task_state"]


def assert_gapless(events: Sequence[pb.TaskEvent]) -> None:
    """Sequence numbers run 1, 2, 3 ... without a hole or a repeat."""
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(events) + 1)), sequences


async def watch_all(client: Client, task_id: str, after_sequence: int = 0) -> list[pb.TaskEvent]:
    """Every event after ``after_sequence`` up to the task's final state."""
    return [e async for e in client.watch(task_id, after_sequence=after_sequence)]


@dataclass
class ResumingWatcher:
    """Watches a task to its end, reconnecting from the last sequence seen after an outage."""

    client: Client
    task_id: str
    events: list[pb.TaskEvent] = field(default_factory=list)
    #: How many times the stream broke and was resumed.
    reconnects: int = 0

    @property
    def last_sequence(self) -> int:
        """The sequence of the last event received (0 before any)."""
        return self.events[-1].sequence if self.events else 0

    async def run(self) -> list[pb.TaskEvent]:
        """Watch until the final task state; return every event received."""
        while True:
            try:
                async for event in self.client.watch(self.task_id, self.last_sequence):
                    self.events.append(event)
                return self.events
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in _OUTAGE:
                    raise
                self.reconnects += 1
                await asyncio.sleep(0.1)  # the orchestrator is restarting


def steps(task: pb.Task) -> dict[str, pb.Step]:
    """A task's steps by id."""
    return {s.spec.id: s for s in task.steps}


def as_json(value: struct_pb2.Value) -> Any:
    """A protobuf Value (a step output, a task result) as plain JSON."""
    return json_format.MessageToDict(value)

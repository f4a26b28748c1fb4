"""Reading task event streams in tests: who ran what, in which order; watching across outages."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentmesh.client import Client
from agentmesh.errors import Cancelled, Unavailable
from agentmesh.models import EventKind, StepState, TaskEvent, TaskState

#: Errors a watch ends with when the orchestrator goes away under it.
_OUTAGE = (Unavailable, Cancelled)


def kind(event: TaskEvent) -> EventKind:
    """Which of task_state, step_state and step_progress the event carries."""
    return event.kind


def step_events(events: Sequence[TaskEvent], step_id: str | None = None) -> list[TaskEvent]:
    """The step_state events, optionally of one step, in stream order."""
    return [e for e in events if e.kind is EventKind.STEP_STATE and step_id in (None, e.step_id)]


def step_states(events: Sequence[TaskEvent], step_id: str) -> list[str]:
    """The states a step went through, in order."""
    return [e.state for e in step_events(events, step_id)]


def first_sequence(events: Sequence[TaskEvent], step_id: str, state: StepState) -> int:
    """The sequence number of the first event putting ``step_id`` in ``state``."""
    for event in step_events(events, step_id):
        if event.state == state:
            return event.sequence
    raise AssertionError(f"step {step_id!r} never reached state {state}")


def task_states(events: Sequence[TaskEvent]) -> list[str]:
    """The states the task went through, in order."""
    return [e.state for e in events if e.kind is EventKind.TASK_STATE]


def final_state(events: Sequence[TaskEvent]) -> TaskState:
    """The state the last event put the task in (it must be a task event)."""
    assert events[-1].kind is EventKind.TASK_STATE, events[-1]
    return TaskState(events[-1].state)


def assert_gapless(events: Sequence[TaskEvent]) -> None:
    """Sequence numbers run 1, 2, 3 ... without a hole or a repeat."""
    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(events) + 1)), sequences


async def watch_all(client: Client, task_id: str, after: int = 0) -> list[TaskEvent]:
    """Every event after sequence ``after`` up to the task's final state."""
    return [e async for e in client.watch(task_id, after=after)]


@dataclass
class ResumingWatcher:
    """Watches a task to its end, reconnecting from the last sequence seen after an outage."""

    client: Client
    task_id: str
    events: list[TaskEvent] = field(default_factory=list)
    #: How many times the stream broke and was resumed.
    reconnects: int = 0

    @property
    def last_sequence(self) -> int:
        """The sequence of the last event received (0 before any)."""
        return self.events[-1].sequence if self.events else 0

    async def run(self) -> list[TaskEvent]:
        """Watch until the final task state; return every event received."""
        while True:
            try:
                async for event in self.client.watch(self.task_id, after=self.last_sequence):
                    self.events.append(event)
                return self.events
            except _OUTAGE:
                self.reconnects += 1
                await asyncio.sleep(0.1)  # the orchestrator is restarting

"""Protobuf ⇄ domain conversion of tasks, events and agent statuses: what goes out comes back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError
from agentmesh.models import (
    AgentCard,
    AgentStatus,
    Capability,
    EventKind,
    RetryPolicy,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.wire.tasks import (
    event_from_proto,
    event_to_proto,
    status_from_proto,
    status_to_proto,
    task_from_proto,
    task_to_proto,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 5, 654321, tzinfo=UTC)


def _task(**fields: object) -> TaskRecord:
    spec = StepSpec(
        id="draft",
        capability="text.write",
        version="1.2",
        input={"text": "${input.topic}", "n": 3},
        needs=("fetch",),
        timeout_seconds=2.5,
        retry=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.5, max_backoff_seconds=4),
        optional=True,
        compensation="text.erase",
        pin_agent="writer",
        exclude_agents=("echo-1",),
    )
    steps = {
        "fetch": StepRecord(
            spec=StepSpec(id="fetch", capability="web.fetch"),
            state=StepState.SUCCEEDED,
            agent="echo-1",
            attempts=2,
            output={"pages": [1, 2], "ok": True, "none": None},
            started_at=T0,
            finished_at=T1,
        ),
        "draft": StepRecord(spec=spec, state=StepState.WAITING, error="no agent has room"),
    }
    values: dict[str, object] = {
        "id": "t-1",
        "owner": "spiffe://agentmesh.test/client/alice",
        "state": TaskState.RUNNING,
        "input": {"topic": "tides", "depth": 2, "tags": ["a", "b"]},
        "priority": 7,
        "labels": {"team": "docs"},
        "steps": steps,
        "result": None,
        "error": "",
        "partial": False,
        "created_at": T0,
        "updated_at": T1,
    }
    values.update(fields)
    return TaskRecord.model_validate(values)


@pytest.mark.parametrize(
    "task",
    [
        _task(),
        _task(state=TaskState.SUCCEEDED, result={"summary": "high", "n": 1.5}, partial=True),
        _task(state=TaskState.ROLLBACK_FAILED, error="charge: refund refused", steps={}),
        _task(state=TaskState.SUCCEEDED, result=["a", 2, None]),
    ],
)
def test_a_task_comes_back_from_the_wire_as_it_went(task: TaskRecord) -> None:
    assert task_from_proto(task_to_proto(task)) == task


def test_the_plan_and_deadline_do_not_travel_with_a_task() -> None:
    sent = _task(timeout_seconds=30.0)
    back = task_from_proto(task_to_proto(sent))
    assert (back.plan, back.timeout_seconds) == (None, 0.0)


@pytest.mark.parametrize(
    "event",
    [
        TaskEvent(task_id="t-1", sequence=1, time=T0, kind=EventKind.TASK_STATE, state="running"),
        TaskEvent(
            task_id="t-1",
            sequence=9,
            time=T1,
            kind=EventKind.TASK_STATE,
            state="succeeded",
            reason="done",
            partial=True,
            output={"summary": "ok", "words": 12},
        ),
        TaskEvent(
            task_id="t-1",
            sequence=2,
            time=T0,
            kind=EventKind.STEP_STATE,
            state="succeeded",
            step_id="analyze[1]",
            agent="analyst-2",
            attempt=2,
            reason="retried after agent_lost",
            output=["x", {"y": 1}],
        ),
        TaskEvent(
            task_id="t-1",
            sequence=3,
            time=T0,
            kind=EventKind.STEP_STATE,
            state="compensated",
            step_id="book",
        ),
        TaskEvent(
            task_id="t-1",
            sequence=4,
            time=T1,
            kind=EventKind.STEP_PROGRESS,
            step_id="draft",
            agent="writer",
            attempt=1,
            fraction=0.25,
            message="outlining",
        ),
    ],
)
def test_an_event_comes_back_from_the_wire_as_it_went(event: TaskEvent) -> None:
    assert event_from_proto(event_to_proto(event)) == event


@pytest.mark.parametrize(
    ("circuit", "latency", "successes", "failures"),
    [("closed", 0.125, 7, 1), ("open", 2.5, 0, 5), ("half_open", None, 0, 0)],
)
def test_an_agent_status_comes_back_from_the_wire_as_it_went(
    circuit: str, latency: float | None, successes: int, failures: int
) -> None:
    card = AgentCard(
        name="writer",
        endpoint="localhost:7001",
        capabilities=(
            Capability(
                name="text.write",
                version="2.0.1",
                description="Write a text.",
                input_schema={"type": "object", "properties": {"topic": {"type": "string"}}},
                output_schema={"type": "object"},
                tags=("llm",),
            ),
        ),
        max_concurrency=4,
        version="1.3.0",
        labels={"zone": "b"},
    )
    status = AgentStatus(
        card=card,
        identity="spiffe://agentmesh.test/agent/writer",
        connected=True,
        draining=circuit == "open",
        active=3,
        circuit=circuit,
        registered_at=T0,
        last_seen=T1,
        latency=latency,
        successes=successes,
        failures=failures,
    )
    message = status_to_proto(status)
    assert status_from_proto(message) == status
    # The rate goes on the wire too, for clients that read it without the counts.
    assert message.success_rate == pytest.approx(status.success_rate or 0.0)


def test_an_event_without_a_kind_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        event_from_proto(pb.TaskEvent(task_id="t-1", sequence=1))
    assert refused.value.field == "kind"


def test_a_task_in_an_unknown_state_is_refused_naming_the_field() -> None:
    message = task_to_proto(_task())
    message.steps[1].state = 99  # type: ignore[assignment]
    with pytest.raises(ValidationError) as refused:
        task_from_proto(message)
    assert refused.value.field == "steps[1].state"

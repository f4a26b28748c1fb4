"""WatchTaskBatches: WatchTask's events, in the same order and with the same cursors and
refusals, several to a message, each message within its bounds unless one event is bigger."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.api.servicers import WATCH_BATCH, WATCH_BATCH_BYTES
from tests.security.helpers import RawAgent, echo, orchestrator_stub, plan_request, refusal


async def _events(alice: Any, task_id: str, after: int = 0) -> list[pb.TaskEvent]:
    request = pb.WatchTaskRequest(task_id=task_id, after_sequence=after)
    return [event async for event in alice.WatchTask(request, timeout=60)]


async def _batches(alice: Any, task_id: str, after: int = 0) -> list[pb.TaskEventBatch]:
    request = pb.WatchTaskRequest(task_id=task_id, after_sequence=after)
    return [batch async for batch in alice.WatchTaskBatches(request, timeout=60)]


def _flat(batches: list[pb.TaskEventBatch]) -> list[pb.TaskEvent]:
    return [event for batch in batches for event in batch.events]


async def test_batches_carry_watch_tasks_events_in_fewer_messages_from_any_cursor(
    orchestrator: Orchestrator, certs: Path
) -> None:
    steps = [(f"s{i}", "test.echo", {"value": i}) for i in range(30)]
    async with (
        RawAgent(certs, "echo-1", echo) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(plan_request(*steps))).task_id
        live = await _batches(alice, task_id)  # from submission on, while the task runs
        one_by_one = await _events(alice, task_id)
        replayed = await _batches(alice, task_id)
        resumed = await _batches(alice, task_id, after=7)
        at_end = await _batches(alice, task_id, after=one_by_one[-1].sequence)
        beyond = await refusal(_batches(alice, task_id, after=one_by_one[-1].sequence + 1))
        other = await refusal(_batches(alice, str(uuid.uuid4())))
    assert one_by_one[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
    assert [e.sequence for e in one_by_one] == list(range(1, len(one_by_one) + 1))
    assert _flat(live) == one_by_one
    assert _flat(replayed) == one_by_one
    assert _flat(resumed) == one_by_one[7:]
    assert all(batch.events for batch in [*live, *replayed, *resumed])
    # A replay reads the store a page at a time: full messages but the last.
    assert len(replayed) == math.ceil(len(one_by_one) / WATCH_BATCH), [
        len(b.events) for b in replayed
    ]
    assert len(live) < len(one_by_one)
    assert at_end == []
    assert beyond.code() is grpc.StatusCode.OUT_OF_RANGE, beyond.details()
    assert (beyond.details() or "").startswith("after_sequence: ")
    assert other.code() is grpc.StatusCode.NOT_FOUND, other.details()


async def test_a_batch_stays_within_its_bytes_and_a_bigger_event_travels_alone(
    orchestrator: Orchestrator, certs: Path
) -> None:
    # Eight outputs of 150 KB: no two of their events fit one message, and the task's result
    # (all eight) is bigger than a batch may be.
    steps = [(f"s{i}", "test.echo", {"value": chr(97 + i) * 150_000}) for i in range(8)]
    async with (
        RawAgent(certs, "echo-1", echo) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(plan_request(*steps), timeout=30)).task_id
        one_by_one = await _events(alice, task_id)
        replayed = await _batches(alice, task_id)
    assert one_by_one[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
    assert one_by_one[-1].ByteSize() > WATCH_BATCH_BYTES
    assert _flat(replayed) == one_by_one
    assert len(replayed) >= 9, [len(b.events) for b in replayed]
    for batch in replayed:
        assert batch.ByteSize() <= WATCH_BATCH_BYTES or len(batch.events) == 1
    assert list(replayed[-1].events) == [one_by_one[-1]]

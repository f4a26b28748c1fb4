"""WatchTask cursors: one beyond the task's last event is refused; one at the end ends with it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import RawAgent, echo, hang, orchestrator_stub, plan_request, refusal


async def _drain(call: Any) -> list[pb.TaskEvent]:
    return [event async for event in call]


async def _running(alice: Any, task_id: str) -> int:
    """Watch until the step runs; the sequence of that event."""
    async for event in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20):
        if (
            event.WhichOneof("kind") == "step_state"
            and event.step_state.state == pb.STEP_STATE_RUNNING
        ):
            return int(event.sequence)
    raise AssertionError("the task ended before its step ran")


async def test_a_cursor_beyond_the_last_event_of_a_running_task_is_refused_as_out_of_range(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", hang) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})))).task_id
        running = await _running(alice, task_id)
        last = await orchestrator.store.last_sequence(task_id)
        assert last >= running
        # Before the fix this waited for a final event that lay behind its cursor: forever.
        error = await refusal(
            _drain(
                alice.WatchTask(
                    pb.WatchTaskRequest(task_id=task_id, after_sequence=last + 1000), timeout=10
                )
            )
        )
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE, error.details()
    details = error.details() or ""
    assert details.startswith("after_sequence: "), details
    assert str(last) in details


async def test_a_cursor_at_the_last_event_of_a_running_task_ends_when_the_task_does(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", hang) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})))).task_id
        await _running(alice, task_id)
        last = await orchestrator.store.last_sequence(task_id)
        watch = asyncio.ensure_future(
            _drain(alice.WatchTask(pb.WatchTaskRequest(task_id=task_id, after_sequence=last)))
        )
        await alice.CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=20)
        async with asyncio.timeout(20):
            events = await watch
    assert events
    assert events[0].sequence == last + 1
    assert events[-1].task_state.state == pb.TASK_STATE_CANCELLED


async def test_a_finished_task_watched_from_its_last_event_ends_at_once_and_beyond_is_refused(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", echo) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})))).task_id
        everything = await _drain(alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20))
        last = everything[-1].sequence
        assert everything[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
        at_end = await _drain(
            alice.WatchTask(pb.WatchTaskRequest(task_id=task_id, after_sequence=last), timeout=10)
        )
        error = await refusal(
            _drain(
                alice.WatchTask(
                    pb.WatchTaskRequest(task_id=task_id, after_sequence=last + 1), timeout=10
                )
            )
        )
    assert at_end == []
    assert error.code() is grpc.StatusCode.OUT_OF_RANGE, error.details()
    assert (error.details() or "").startswith("after_sequence: ")

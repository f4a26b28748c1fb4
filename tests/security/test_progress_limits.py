"""Progress reports are bounded: a flood becomes a trickle of events, huge texts are cut, and
fractions outside 0..1 never reach watchers.

The agent is written against the protos alone, so it can send what the SDK never would.
"""

from __future__ import annotations

import math
from pathlib import Path

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import RawAgent, echo, orchestrator_stub, plan_request

#: What the orchestrator keeps of a progress message (UTF-8 bytes).
MAX_MESSAGE_BYTES = 4096


def _progress(
    assignment: agent_pb2.Assignment, fraction: float, message: str
) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(
        progress=agent_pb2.Progress(
            assignment_id=assignment.assignment_id, fraction=fraction, message=message
        )
    )


async def noisy(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
    """Reports progress as the input asks (a burst, huge messages, one odd fraction), then
    answers."""
    fields = assignment.input.fields
    burst = int(fields["burst"].number_value) if "burst" in fields else 0
    for number in range(burst):
        await agent.send(_progress(assignment, number / burst, str(number)))
    for number in range(int(fields["huge"].number_value) if "huge" in fields else 0):
        await agent.send(_progress(assignment, 0.5, f"{number}:" + "é" * 600_000))
    if "fraction" in fields:
        await agent.send(_progress(assignment, float(fields["fraction"].string_value), "odd"))
    await echo(agent, assignment)


async def _run(
    orchestrator: Orchestrator, certs: Path, request: pb.SubmitTaskRequest
) -> list[pb.TaskEvent]:
    """Every event of the task, which must succeed."""
    async with (
        RawAgent(certs, "echo-1", noisy) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        task_id = (await alice.SubmitTask(request, timeout=20)).task_id
        events = [
            e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=120)
        ]
    assert events[-1].task_state.state == pb.TASK_STATE_SUCCEEDED, events[-1]
    return events


def _progress_events(events: list[pb.TaskEvent], step_id: str = "a") -> list[pb.StepProgress]:
    return [
        e.step_progress
        for e in events
        if e.WhichOneof("kind") == "step_progress" and e.step_progress.step_id == step_id
    ]


async def test_a_burst_of_ten_thousand_progress_reports_becomes_a_few_events_ending_with_the_latest(
    orchestrator: Orchestrator, certs: Path
) -> None:
    events = await _run(orchestrator, certs, plan_request(("a", "test.echo", {"burst": 10_000})))
    progress = _progress_events(events)
    # Coalesced to one per step and interval; the bound leaves room for a very slow machine.
    assert 1 <= len(progress) < 1_000, len(progress)
    # The latest report is kept, and comes before the step's success.
    assert progress[-1].message == "9999"
    last_progress = max(e.sequence for e in events if e.WhichOneof("kind") == "step_progress")
    succeeded = min(
        e.sequence
        for e in events
        if e.WhichOneof("kind") == "step_state" and e.step_state.state == pb.STEP_STATE_SUCCEEDED
    )
    assert last_progress < succeeded


async def test_megabyte_progress_messages_are_cut_to_four_kibibytes(
    orchestrator: Orchestrator, certs: Path
) -> None:
    events = await _run(orchestrator, certs, plan_request(("a", "test.echo", {"huge": 10})))
    progress = _progress_events(events)
    assert progress
    for report in progress:
        size = len(report.message.encode())
        assert size <= MAX_MESSAGE_BYTES, size
        assert report.message.rstrip("…").rstrip("é").endswith(":")  # cut between characters
    stored = await orchestrator.store.events_after(events[0].task_id, 0)
    assert all(len((e.message or "").encode()) <= MAX_MESSAGE_BYTES for e in stored)


#: A raw fraction → the fractions watchers see of it: none when it is refused (above 1.0,
#: NaN or infinite: dropped and logged, see tests/server/test_protocol.py).
ODD_FRACTIONS: dict[str, list[float]] = {
    "nan": [],
    "inf": [],
    "1e308": [],
    "-5": [-1.0],  # negative: unknown, as the protocol says
    "-inf": [],
    "1.5": [],
    "0.25": [0.25],
}


async def test_fractions_outside_zero_to_one_never_reach_watchers(
    orchestrator: Orchestrator, certs: Path
) -> None:
    steps = [(f"s{i}", "test.echo", {"fraction": raw}) for i, raw in enumerate(ODD_FRACTIONS)]
    events = await _run(orchestrator, certs, plan_request(*steps))
    for (step_id, _, _), expected in zip(steps, ODD_FRACTIONS.values(), strict=True):
        fractions = [p.fraction for p in _progress_events(events, step_id)]
        assert fractions == expected, (step_id, fractions)
    every = [
        p.fraction
        for e in events
        if e.WhichOneof("kind") == "step_progress"
        for p in [e.step_progress]
    ]
    assert all(math.isfinite(f) and (0 <= f <= 1 or f == -1) for f in every), every

"""An agent reports only on assignments given to it: replies naming others' are ignored."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import RawAgent, events, orchestrator_stub, plan_request, struct
from tests.support.waiting import eventually

ROGUE = "spiffe://agentmesh.test/agent/echo-2"


async def test_a_result_for_someone_elses_assignment_is_ignored_and_logged(
    mesh: Orchestrator, certs: Path, captured: list[dict[str, Any]]
) -> None:
    release = asyncio.Event()

    async def honest(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        # Holds its assignment until the rogue has had its go at it.
        await release.wait()
        await agent.send(
            agent_pb2.AgentMessage(
                result=agent_pb2.Result(
                    assignment_id=assignment.assignment_id, output=struct({"by": "echo-1"})
                )
            )
        )

    async def rogue(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        await victim.got_assignment.wait()
        stolen = victim.assignments[0].assignment_id
        forged = struct({"by": "echo-2", "forged": True})
        for target in ("made-up-assignment", stolen):
            await agent.send(
                agent_pb2.AgentMessage(accepted=agent_pb2.Accepted(assignment_id=target))
            )
            await agent.send(
                agent_pb2.AgentMessage(
                    progress=agent_pb2.Progress(assignment_id=target, fraction=0.9, message="x")
                )
            )
            await agent.send(
                agent_pb2.AgentMessage(result=agent_pb2.Result(assignment_id=target, output=forged))
            )
            await agent.send(
                agent_pb2.AgentMessage(
                    failure=agent_pb2.Failure(assignment_id=target, code="x", retryable=False)
                )
            )
        # Its own assignment it answers properly, after the forgeries were read.
        await eventually(
            lambda: asyncio.sleep(0, events(captured, "security.foreign_assignment")),
            lambda found: len(found) == 8,
        )
        await agent.send(
            agent_pb2.AgentMessage(
                result=agent_pb2.Result(
                    assignment_id=assignment.assignment_id, output=struct({"by": "echo-2"})
                )
            )
        )
        release.set()

    async with RawAgent(certs, "echo-1", honest) as victim, RawAgent(certs, "echo-2", rogue) as bad:
        await victim.register(mesh)
        await bad.register(mesh)
        request = plan_request(("mine", "test.echo", {}), ("theirs", "test.echo", {}))
        request.plan.steps[0].pin_agent = "echo-1"
        request.plan.steps[1].pin_agent = "echo-2"
        async with orchestrator_stub(mesh, certs) as alice:
            task_id = (await alice.SubmitTask(request, timeout=10)).task_id
            watched = [
                e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20)
            ]
            task = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)

    assert task.state == pb.TASK_STATE_SUCCEEDED
    outputs = {s.spec.id: json_format.MessageToDict(s.output) for s in task.steps}
    assert outputs == {"mine": {"by": "echo-1"}, "theirs": {"by": "echo-2"}}
    # Each step ran once, on its own agent, and no forged progress reached the watchers.
    assert {s.spec.id: s.attempts for s in task.steps} == {"mine": 1, "theirs": 1}
    assert not [e for e in watched if e.WhichOneof("kind") == "step_progress"]
    foreign = events(captured, "security.foreign_assignment")
    assert len(foreign) == 8
    assert {f["identity"] for f in foreign} == {ROGUE}
    assert {f["agent"] for f in foreign} == {"echo-2"}
    assert {f["kind"] for f in foreign} == {"accepted", "progress", "result", "failure"}
    assert {f["assignment_id"] for f in foreign} == {
        "made-up-assignment",
        victim.assignments[0].assignment_id,
    }
    assert all(f["log_level"] == "warning" for f in foreign)


async def test_a_late_answer_for_an_abandoned_attempt_is_not_a_security_event(
    mesh: Orchestrator, certs: Path, captured: list[dict[str, Any]]
) -> None:
    abandoned = asyncio.Event()

    async def slow(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        await abandoned.wait()  # answers once the attempt has timed out
        await agent.send(
            agent_pb2.AgentMessage(
                result=agent_pb2.Result(assignment_id=assignment.assignment_id, output=struct({}))
            )
        )

    async with RawAgent(certs, "echo-1", slow) as agent:
        await agent.register(mesh)
        request = plan_request(("late", "test.echo", {}))
        request.plan.steps[0].timeout_seconds = 0.2
        request.plan.steps[0].retry.max_attempts = 1
        async with orchestrator_stub(mesh, certs) as alice:
            task_id = (await alice.SubmitTask(request, timeout=10)).task_id
            [e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20)]
            task = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        abandoned.set()
        await eventually(lambda: asyncio.sleep(0, events(captured, "assignment.late_reply")), bool)

    assert task.state == pb.TASK_STATE_FAILED
    assert events(captured, "security.foreign_assignment") == []


async def test_an_output_that_is_not_json_fails_the_attempt_instead_of_the_session(
    mesh: Orchestrator, certs: Path
) -> None:
    async def nan(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        output = struct({})
        output.fields["x"].number_value = float("nan")
        await agent.send(
            agent_pb2.AgentMessage(
                result=agent_pb2.Result(assignment_id=assignment.assignment_id, output=output)
            )
        )

    async with RawAgent(certs, "echo-1", nan) as agent:
        await agent.register(mesh)
        request = plan_request(("a", "test.echo", {}))
        async with orchestrator_stub(mesh, certs) as alice:
            task_id = (await alice.SubmitTask(request, timeout=10)).task_id
            [e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20)]
            task = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        (status,) = mesh.registry.statuses()

    assert task.state == pb.TASK_STATE_FAILED
    assert "invalid_output: result.output.x: nan is not a JSON number" in task.error
    assert status.connected  # the Session survived the bad message

"""The agent protocol's answers, as an agent written against the protos alone sees them.

Over real mTLS, with :class:`~tests.security.helpers.RawAgent` (no SDK): jsonschema's own
reason in schema refusals, the drop timeout in the registration answer, a concurrency of 0
refused, the client's cancel reason forwarded, and progress fractions outside 0..1 refused.
"""

from __future__ import annotations

import math
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from structlog.testing import capture_logs

from agentmesh._proto.agentmesh.v1 import agent_pb2, common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import RawAgent, hang, orchestrator_stub, plan_request, refusal
from tests.support.waiting import eventually


def _schema(value: dict[str, object]) -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update(value)
    return schema


async def _events(stub: pb_grpc.OrchestratorAsyncStub, task_id: str) -> list[pb.TaskEvent]:
    return [
        event async for event in stub.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=60)
    ]


async def test_an_invalid_schema_is_refused_with_jsonschemas_own_reason_and_where(
    orchestrator: Orchestrator, certs: Path
) -> None:
    broken = common_pb2.Capability(
        name="test.echo",
        version="1.0.0",
        input_schema=_schema({"type": "object", "properties": {"a": {"type": "strin"}}}),
    )
    async with RawAgent(certs, "echo-1") as agent:
        error = await refusal(agent.register(orchestrator, capabilities=[broken]))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("card.capabilities[0].input_schema: not a valid JSON Schema")
    assert "'strin' is not valid under any of the given schemas" in details
    assert "(at ['properties']['a']['type'])" in details


async def test_the_registration_answer_says_after_how_much_silence_an_agent_is_dropped(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        answer = await agent.register(orchestrator)
    assert answer.identity == "spiffe://agentmesh.test/agent/echo-1"
    assert answer.ping_interval_seconds == orchestrator.settings.ping_interval_seconds
    assert answer.agent_timeout_seconds == orchestrator.settings.agent_timeout_seconds == 1.5


async def test_a_max_concurrency_of_zero_is_refused_naming_the_field(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        error = await refusal(agent.register(orchestrator, max_concurrency=0))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("card.max_concurrency: must be from 1 to")
    assert orchestrator.registry.statuses() == []


async def test_a_max_concurrency_beyond_the_limit_is_refused_the_same_way(
    orchestrator: Orchestrator, certs: Path
) -> None:
    # What a negative int32 of another language's stub reads as in this uint32 field.
    async with RawAgent(certs, "echo-1") as agent:
        error = await refusal(agent.register(orchestrator, max_concurrency=2**32 - 1))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("card.max_concurrency: must be from 1 to")


async def test_the_clients_cancel_reason_reaches_the_agent(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        RawAgent(certs, "echo-1", hang) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        submitted = await alice.SubmitTask(plan_request(("a", "test.echo", {})), timeout=20)
        await eventually(lambda: _true(agent.got_assignment.is_set()), bool, within=30)
        await alice.CancelTask(
            pb.CancelTaskRequest(task_id=submitted.task_id, reason="the user changed her mind"),
            timeout=30,
        )
        await eventually(lambda: _true(agent.got_cancel.is_set()), bool, within=30)
    (cancel,) = agent.cancels
    assert cancel.assignment_id == agent.assignments[0].assignment_id
    assert cancel.reason == "the user changed her mind"


async def test_a_step_whose_timeout_passes_is_cancelled_on_its_agent_saying_so(
    orchestrator: Orchestrator, certs: Path
) -> None:
    request = plan_request(("a", "test.echo", {}))
    request.plan.steps[0].timeout_seconds = 0.5
    request.plan.steps[0].retry.max_attempts = 1
    async with (
        RawAgent(certs, "echo-1", hang) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        submitted = await alice.SubmitTask(request, timeout=20)
        events = await _events(alice, submitted.task_id)
    assert [c.reason for c in agent.cancels] == ["timeout: no result within 0.5s"]
    assert events[-1].task_state.state == pb.TASK_STATE_FAILED
    assert "timeout: no result within 0.5s" in events[-1].task_state.reason


async def _bad_then_good_progress(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
    aid = assignment.assignment_id
    for fraction in (1.7, math.nan, math.inf, 0.5):
        progress = agent_pb2.Progress(assignment_id=aid, fraction=fraction, message=f"{fraction}")
        await agent.send(agent_pb2.AgentMessage(progress=progress))
    result = agent_pb2.Result(assignment_id=aid, output=_schema({"done": True}))
    await agent.send(agent_pb2.AgentMessage(result=result))


async def test_progress_fractions_outside_zero_to_one_never_reach_watchers_and_are_logged(
    orchestrator: Orchestrator, certs: Path
) -> None:
    with capture_logs() as logs:
        async with (
            RawAgent(certs, "echo-1", _bad_then_good_progress) as agent,
            orchestrator_stub(orchestrator, certs) as alice,
        ):
            await agent.register(orchestrator)
            submitted = await alice.SubmitTask(plan_request(("a", "test.echo", {})), timeout=20)
            events = await _events(alice, submitted.task_id)
    progress = [e.step_progress for e in events if e.WhichOneof("kind") == "step_progress"]
    assert [(p.fraction, p.message) for p in progress] == [(0.5, "0.5")]
    assert events[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
    (warning,) = [entry for entry in logs if entry["event"] == "agent.invalid_progress"]
    assert warning["field"] == "progress.fraction"
    assert "at most 1.0" in warning["reason"]
    assert "1.7" in warning["reason"]


async def _true(value: bool) -> bool:
    return value

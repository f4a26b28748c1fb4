"""Outputs a rogue agent returns must leave the task readable and the orchestrator responsive.

Too big, nested too deep for protobuf clients, or so big together that the task outgrows one
message: each is refused or fails the task with a reason, and GetTask, ListTasks and
WatchTask keep working. A multi-megabyte Result must not stall the event loop.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from agentmesh._proto.agentmesh.v1 import agent_pb2, common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import (
    RawAgent,
    Script,
    orchestrator_stub,
    plan_request,
    struct,
)
from tests.support.waiting import eventually

FINAL = {
    pb.TASK_STATE_SUCCEEDED,
    pb.TASK_STATE_FAILED,
    pb.TASK_STATE_ROLLED_BACK,
    pb.TASK_STATE_ROLLBACK_FAILED,
}


def answering(make: Any) -> Script:
    """A script that answers each assignment with ``make(assignment)`` as its output."""

    async def script(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        result = agent_pb2.Result(assignment_id=assignment.assignment_id)
        result.output.update(make(assignment))
        await agent.send(agent_pb2.AgentMessage(result=result))

    return script


def nested(depth: int) -> dict[str, Any]:
    """An object nested ``depth`` levels deep (itself counting 1), a string at the bottom."""
    value: dict[str, Any] = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"next": value}
    return value


def one_shot(request: pb.SubmitTaskRequest) -> pb.SubmitTaskRequest:
    """``request`` with one attempt per step: the agent's fault is seen at once."""
    for step in request.plan.steps:
        step.retry.max_attempts = 1
    return request


async def finished(alice: pb_grpc.OrchestratorAsyncStub, task_id: str) -> pb.Task:
    """The task once final, read without its outputs (which works whatever their size)."""
    request = pb.GetTaskRequest(task_id=task_id, omit_outputs=True)
    return await eventually(
        lambda: alice.GetTask(request, timeout=10), lambda t: t.state in FINAL, within=60
    )


async def read_everywhere(orchestrator: Orchestrator, certs: Path, task_id: str) -> pb.Task:
    """GetTask, WatchTask and ListTasks (the owner's and an admin's) all answer in full."""
    async with (
        orchestrator_stub(orchestrator, certs) as alice,
        orchestrator_stub(orchestrator, certs, "admin", "root") as admin,
    ):
        task = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=20)
        events = [
            e async for e in alice.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=20)
        ]
        assert events[-1].task_state.state == task.state
        for stub in (alice, admin):
            listed = await stub.ListTasks(pb.ListTasksRequest(), timeout=20)
            assert task_id in {t.task_id for t in listed.tasks}
    return task


@pytest.fixture
async def mesh(secure_settings: Settings) -> Any:
    """An orchestrator with the default output and message limits."""
    async with Orchestrator(secure_settings) as running:
        yield running


async def test_an_output_past_the_limit_fails_its_attempt_and_the_task_stays_readable(
    mesh: Orchestrator, certs: Path
) -> None:
    big = answering(lambda a: {"value": "x" * 2_400_000})
    async with RawAgent(certs, "echo-1", big) as agent, orchestrator_stub(mesh, certs) as alice:
        await agent.register(mesh)
        request = one_shot(plan_request(("a", "test.echo", {}), ("b", "test.echo", {})))
        task_id = (await alice.SubmitTask(request, timeout=10)).task_id
        await finished(alice, task_id)
        task = await read_everywhere(mesh, certs, task_id)
        (status,) = mesh.registry.statuses()

    assert task.state == pb.TASK_STATE_FAILED
    assert "invalid_output: result.output: an output of 24000" in task.error
    assert "exceeds the limit of 262144 bytes (AGENTMESH_MAX_OUTPUT_BYTES)" in task.error
    assert status.connected  # refusing the output did not cost the Session


async def test_a_result_that_would_outgrow_a_message_fails_the_task_saying_why(
    mesh: Orchestrator, certs: Path
) -> None:
    # Ten outputs under the limit, collected: 2.5 MB in the steps and again in the result.
    fair = answering(lambda a: {"value": "y" * 250_000})
    steps = [(f"s{i}", "test.echo", {}) for i in range(10)]
    async with RawAgent(certs, "echo-1", fair) as agent, orchestrator_stub(mesh, certs) as alice:
        await agent.register(mesh)
        task_id = (await alice.SubmitTask(one_shot(plan_request(*steps)), timeout=10)).task_id
        await finished(alice, task_id)
        task = await read_everywhere(mesh, certs, task_id)

    assert task.state == pb.TASK_STATE_FAILED
    assert "more than the 4194304-byte message limit" in task.error
    assert not task.HasField("result")
    assert [s.state for s in task.steps] == [pb.STEP_STATE_SUCCEEDED] * 10
    outputs = [s.output.struct_value.fields["value"].string_value for s in task.steps]
    assert outputs == ["y" * 250_000] * 10


async def test_get_and_list_tasks_can_leave_outputs_out(mesh: Orchestrator, certs: Path) -> None:
    echo = answering(lambda a: {"value": "z" * 1000})
    async with RawAgent(certs, "echo-1", echo) as agent, orchestrator_stub(mesh, certs) as alice:
        await agent.register(mesh)
        task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})), timeout=10)).task_id
        await finished(alice, task_id)
        full = await alice.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        bare = await alice.GetTask(pb.GetTaskRequest(task_id=task_id, omit_outputs=True))
        listed = await alice.ListTasks(pb.ListTasksRequest(omit_outputs=True), timeout=10)

    assert full.state == bare.state == pb.TASK_STATE_SUCCEEDED
    assert full.steps[0].output.struct_value.fields["value"].string_value == "z" * 1000
    assert full.HasField("result")
    assert not bare.HasField("result")
    assert not bare.steps[0].HasField("output")
    assert bare.steps[0].agent == "echo-1"
    (summary,) = listed.tasks  # ListTasks carries results (step details only in GetTask)
    assert summary.state == pb.TASK_STATE_SUCCEEDED
    assert not summary.HasField("result")


async def test_an_output_as_deep_as_every_client_decodes_is_accepted_and_readable(
    mesh: Orchestrator, certs: Path
) -> None:
    # A fan-out collected into the result (read through ListTasks) and an aggregating agent's
    # input carry an output deepest of all.
    deep = answering(lambda a: {"ok": True} if a.capability == "test.join" else nested(30))
    async with (
        RawAgent(certs, "echo-1", deep, capabilities=("test.echo", "test.join")) as agent,
        orchestrator_stub(mesh, certs) as alice,
    ):
        await agent.register(mesh)
        collected = plan_request(("a", "test.echo", {}), input=struct({"items": [1, 2]}))
        collected.plan.steps[0].for_each = "${input.items}"
        joined = pb.SubmitTaskRequest()
        joined.CopyFrom(collected)
        joined.plan.aggregate.update({"strategy": "agent", "capability": "test.join"})
        tasks = []
        for request in (collected, joined):
            task_id = (await alice.SubmitTask(request, timeout=10)).task_id
            await finished(alice, task_id)
            tasks.append(await read_everywhere(mesh, certs, task_id))

    assert [t.state for t in tasks] == [pb.TASK_STATE_SUCCEEDED] * 2, [t.error for t in tasks]
    assert tasks[1].result.struct_value.fields["ok"].bool_value
    assert any(a.capability == "test.join" for a in agent.assignments)


@pytest.mark.parametrize("depth", [31, 32])
async def test_an_output_deeper_than_clients_decode_is_refused_and_the_task_reads_fine(
    mesh: Orchestrator, certs: Path, depth: int
) -> None:
    deep = answering(lambda a: nested(depth))
    async with RawAgent(certs, "echo-1", deep) as agent, orchestrator_stub(mesh, certs) as alice:
        await agent.register(mesh)
        task_id = (await alice.SubmitTask(plan_request(("a", "test.echo", {})), timeout=10)).task_id
        await finished(alice, task_id)
        task = await read_everywhere(mesh, certs, task_id)

    assert task.state == pb.TASK_STATE_FAILED
    assert "invalid_output: result.output" in task.error
    assert "nested deeper than 30 levels" in task.error
    # Retryable like other invalid outputs: every attempt went out, all refused.
    assert len(agent.assignments) == 3


#: The repository, where ``python -m tests.support.health_probe`` is found.
ROOT = Path(__file__).resolve().parents[2]


async def probe_health(orchestrator: Orchestrator, certs: Path, stop: Path) -> Any:
    """A health prober in a process of its own (tests/support/health_probe.py), connected.

    Its environment leaves out the subprocess-coverage switch: the prober is the clock here,
    and a traced prober would measure itself.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMESH_COVERAGE")}
    env.pop("COVERAGE_PROCESS_START", None)
    prober = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.health_probe",
        str(orchestrator.port),
        str(certs),
        str(stop),
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert prober.stdout is not None
    async with asyncio.timeout(60):
        assert (await prober.stdout.readline()).strip() == b"ready"
    return prober


@pytest.mark.slow
async def test_the_health_check_answers_while_a_big_result_is_taken_in(
    secure_settings: Settings, certs: Path, tmp_path: Path
) -> None:
    settings = secure_settings.model_copy(update={"max_output_bytes": 4 * 1024 * 1024})
    # ~3.5 MB on the wire, costly to walk. Built here, before any health check: the agent
    # shares this process's event loop with the orchestrator under test, and building the
    # Struct (a Python loop over 250,000 items, slower still under a coverage tracer) inside
    # the script would stall that loop itself; then the test, not the orchestrator, would
    # miss the bound. The script only copies the finished message (one C-level call).
    words = struct({"items": [f"word{i}" for i in range(250_000)]})
    sent = asyncio.Event()

    async def big(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
        result = agent_pb2.Result(assignment_id=assignment.assignment_id)
        result.output.CopyFrom(words)
        await agent.send(agent_pb2.AgentMessage(result=result))
        sent.set()

    items = {"type": "array", "items": {"type": "string"}}
    schema = struct({"type": "object", "properties": {"items": items}})
    echo = common_pb2.Capability(name="test.echo", version="1.0.0", output_schema=schema)
    stop = tmp_path / "stop-probing"
    async with (
        Orchestrator(settings) as orchestrator,
        RawAgent(certs, "echo-1", big) as agent,
        orchestrator_stub(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator, capabilities=[echo])
        prober = await probe_health(orchestrator, certs, stop)
        try:
            request = one_shot(plan_request(("a", "test.echo", {})))
            task_id = (await alice.SubmitTask(request, timeout=10)).task_id
            await sent.wait()
            # The store, not GetTask: this task will be too big to read in full. And only
            # its state: loading the whole task here, on the orchestrator's own event loop,
            # would be this test's work in the way of the health checks, not the
            # orchestrator's.
            await eventually(
                lambda: orchestrator.store.stream_end(task_id),
                lambda end: end is not None and end[0],
                within=60,
            )
        finally:
            stop.touch()
            output, _ = await prober.communicate()
    codes = output.decode().split()

    assert codes, "no health check was made while the result was taken in"
    assert set(codes) == {"SERVING"}, codes

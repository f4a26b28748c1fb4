"""agentmesh.Client over real mTLS: domain objects back, AgentMeshError subclasses on refusal."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from pathlib import Path

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.errors import FailedPrecondition, NotFound, Unavailable, ValidationError
from agentmesh.models import (
    AgentStatus,
    EventKind,
    Plan,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import orchestrator_stub, refusal
from tests.support.events import assert_gapless, final_state, watch_all
from tests.support.mesh import client, unserve, wait_for_agents
from tests.support.network import free_port
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"
#: A well-formed task id no orchestrator ever issued.
NEVER_ISSUED = "00000000-0000-4000-8000-000000000000"

PLAN = Plan(
    steps=(
        StepSpec(
            id="first", capability="test.echo", input={"value": "${input.word}", "progress": 1}
        ),
        StepSpec(
            id="second", capability="test.echo", input={"value": "${steps.first.output.value}!"}
        ),
    ),
    aggregate={"strategy": "pick", "step": "second", "field": "value"},
)


async def _drained(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


async def _run(alice: Client, **input: str) -> tuple[str, list[TaskEvent], TaskRecord]:
    task_id = await alice.submit(plan=PLAN, input=input)
    async with asyncio.timeout(20):
        events = await watch_all(alice, task_id)
    return task_id, events, await alice.get(task_id)


async def test_a_submitted_task_is_watched_and_read_back_as_domain_objects(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id, events, task = await _run(alice, word="mesh")

    assert isinstance(task, TaskRecord)
    assert (task.id, task.state, task.result) == (task_id, TaskState.SUCCEEDED, "mesh!")
    assert task.owner == "spiffe://agentmesh.test/client/alice"
    assert task.input == {"word": "mesh"}
    assert list(task.steps) == ["first", "second"]
    first = task.steps["first"]
    assert (first.state, first.agent, first.attempts, first.output) == (
        StepState.SUCCEEDED,
        "echo-1",
        1,
        {"value": "mesh", "agent": "echo-1"},
    )
    assert first.spec == PLAN.steps[0]
    assert first.started_at is not None
    assert first.finished_at is not None
    assert first.started_at <= first.finished_at
    assert task.created_at <= task.updated_at

    assert all(isinstance(e, TaskEvent) and e.task_id == task_id for e in events)
    assert_gapless(events)
    assert (events[0].kind, events[0].state) == (EventKind.TASK_STATE, TaskState.RUNNING)
    assert final_state(events) == TaskState.SUCCEEDED
    assert events[-1].output == "mesh!"
    (progress,) = [e for e in events if e.kind is EventKind.STEP_PROGRESS]
    assert (progress.step_id, progress.agent, progress.message) == (
        "first",
        "echo-1",
        "step 1 of 1",
    )
    second = [
        (e.state, e.output)
        for e in events
        if e.step_id == "second" and e.kind is EventKind.STEP_STATE
    ]
    assert second == [
        (StepState.RUNNING, None),
        (StepState.SUCCEEDED, {"value": "mesh!", "agent": "echo-1"}),
    ]


async def test_a_watch_after_a_sequence_resumes_with_the_next_event(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id, events, _ = await _run(alice, word="again")
        cut = len(events) // 2
        async with asyncio.timeout(10):
            rest = await watch_all(alice, task_id, after=events[cut - 1].sequence)
            after_the_end = await watch_all(alice, task_id, after=events[-1].sequence)

    assert cut >= 2
    assert rest == events[cut:]
    assert after_the_end == []


async def test_tasks_are_listed_a_page_at_a_time_and_by_state(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice, client(orchestrator, certs, "bob") as bob:
        await wait_for_agents(alice, "echo-1")
        ids = {(await _run(alice, word=str(i)))[0] for i in range(3)}
        first = await alice.list_tasks(page_size=2)
        second = await alice.list_tasks(page_size=2, page_token=first.next_page_token)
        succeeded = await alice.list_tasks(states=[TaskState.SUCCEEDED])
        running = await alice.list_tasks(states=[TaskState.RUNNING, TaskState.PENDING])
        bobs = await bob.list_tasks()

    assert len(first.tasks) == 2
    assert first.next_page_token
    assert len(second.tasks) == 1
    assert second.next_page_token == ""
    assert {t.id for t in first.tasks + second.tasks} == ids
    assert all(isinstance(t, TaskRecord) for t in first.tasks)
    assert {t.id for t in succeeded.tasks} == ids
    assert all(t.state is TaskState.SUCCEEDED for t in succeeded.tasks)
    assert running.tasks == ()
    assert running.next_page_token == ""
    assert bobs.tasks == ()


async def test_agents_are_listed_as_statuses_optionally_by_capability(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        (echo,) = await alice.list_agents("test.echo")
        nobody = await alice.list_agents("test.nothing-offers-this")

    assert isinstance(echo, AgentStatus)
    assert (echo.card.name, echo.identity) == ("echo-1", "spiffe://agentmesh.test/agent/echo-1")
    assert (echo.connected, echo.draining, echo.active, echo.circuit) == (True, False, 0, "closed")
    assert echo.card.capability("test.echo") is not None
    assert echo.registered_at.tzinfo is not None
    assert echo.last_seen.tzinfo is not None
    assert nobody == []


async def test_cancelling_a_running_task_returns_it_cancelled(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={"seconds": 60}),))
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        async with asyncio.timeout(20):
            async for event in alice.watch(task_id):
                if event.step_id == "wait" and event.state == StepState.RUNNING:
                    break
            cancelled = await alice.cancel(task_id, reason="no longer needed")
            with pytest.raises(FailedPrecondition) as again:
                await alice.cancel(task_id)

    assert (cancelled.id, cancelled.state) == (task_id, TaskState.CANCELLED)
    assert cancelled.steps["wait"].state == StepState.CANCELLED
    assert again.value.message


async def test_an_unknown_task_is_not_found_naming_the_task_id(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        with pytest.raises(NotFound) as unknown:
            await alice.get(NEVER_ISSUED)
        with pytest.raises(NotFound) as watched:
            await watch_all(alice, NEVER_ISSUED)

    for refused in (unknown.value, watched.value):
        assert (refused.field, refused.message) == ("task_id", f"no task {NEVER_ISSUED!r}")


async def test_someone_elses_task_is_not_found_just_like_one_never_issued(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    plan = Plan(steps=(StepSpec(id="wait", capability="test.hang", input={"seconds": 60}),))
    async with client(orchestrator, certs) as alice, client(orchestrator, certs, "bob") as bob:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=plan)
        with pytest.raises(NotFound) as read:
            await bob.get(task_id)
        with pytest.raises(NotFound) as cancelled:
            await bob.cancel(task_id)
        assert (await alice.get(task_id)).state is not TaskState.CANCELLED
        # Not left running: the agent would sit out its drain for it when the test ends.
        await alice.cancel(task_id)

    for refused in (read.value, cancelled.value):
        assert (refused.field, refused.message) == ("task_id", f"no task {task_id!r}")


async def test_a_malformed_task_id_is_a_validation_error_naming_it(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.get("not-an-id")
    assert refused.value.field == "task_id"
    assert "lowercase UUID" in refused.value.message


async def test_an_invalid_plan_is_a_validation_error_with_its_field(
    orchestrator: Orchestrator, certs: Path
) -> None:
    plan = Plan(
        steps=(StepSpec(id="a", capability="test.echo", input={"x: y": "${steps.ghost.output}"}),)
    )
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.submit(plan=plan)
        assert (await alice.list_tasks()).tasks == ()
    # The field holds ": " itself; it still comes back whole, apart from the message.
    assert refused.value.field == 'plan.steps[0].input["x: y"]'
    assert "ghost" in refused.value.message
    assert str(refused.value) == f"{refused.value.field}: {refused.value.message}"


async def test_an_unreachable_orchestrator_is_unavailable(certs: Path) -> None:
    async with Client(f"localhost:{free_port()}", certs, "alice") as alice:
        with pytest.raises(Unavailable):
            await alice.get(NEVER_ISSUED)
        with pytest.raises(Unavailable):
            await alice.list_agents()
        with pytest.raises(Unavailable):
            await watch_all(alice, NEVER_ISSUED)


async def test_a_watch_falls_back_to_watch_task_on_an_orchestrator_without_batches(
    settings: Settings, certs: Path, agents: AgentProcesses, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An orchestrator built from protos older than WatchTaskBatches.
    unserve(monkeypatch, "WatchTaskBatches")
    async with Orchestrator(settings) as orchestrator:
        agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")
            task_id, events, task = await _run(alice, word="old")
            again = [e async for e in alice.watch(task_id, after=2)]
        async with orchestrator_stub(orchestrator, certs) as raw:
            batches = raw.WatchTaskBatches(pb.WatchTaskRequest(task_id=task_id), timeout=20)
            refused = await refusal(_drained(batches))
    assert refused.code() is grpc.StatusCode.UNIMPLEMENTED  # the orchestrator is an old one
    assert task.state is TaskState.SUCCEEDED
    assert_gapless(events)
    assert final_state(events) is TaskState.SUCCEEDED
    assert again == events[2:]

"""Every RPC checks its fields and names the bad one; a refused request changes nothing."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import (
    RawAgent,
    capability,
    orchestrator_stub,
    plan_request,
    refusal,
    registry_stub,
    struct,
)


def _nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep: {"a": [[[...]]]} (lists nest deepest in protobuf)."""
    value: list[Any] = []
    for _ in range(depth - 3):
        value = [value]
    return {"a": value}


#: Where the first level beyond PlanLimits.max_depth (32) of ``_nested`` sits.
TOO_DEEP = ".a" + "[0]" * 31


def _submit(**fields: Any) -> pb.SubmitTaskRequest:
    request = plan_request(("a", "test.echo", {}))
    for name, value in fields.items():
        if name == "labels":
            request.labels.update(value)
        elif name == "input":
            request.input.update(value)
        else:
            setattr(request, name, value)
    return request


def _plan(change: Callable[[pb.SubmitTaskRequest], None]) -> pb.SubmitTaskRequest:
    request = plan_request(("a", "test.echo", {}), ("b", "test.echo", {"x": "${steps.a.output}"}))
    change(request)
    return request


def _nan_input(request: pb.SubmitTaskRequest) -> None:
    request.plan.steps[0].input.fields["x"].number_value = math.nan


def _cycle(request: pb.SubmitTaskRequest) -> None:
    request.plan.steps[0].needs.append("b")


SUBMIT_CASES: list[tuple[str, pb.SubmitTaskRequest, str]] = [
    ("no spec", pb.SubmitTaskRequest(), "spec"),
    ("blank goal", pb.SubmitTaskRequest(goal="   "), "goal"),
    ("long goal", pb.SubmitTaskRequest(goal="g" * 9000), "goal"),
    ("spaced workflow", pb.SubmitTaskRequest(workflow="a b"), "workflow"),
    ("many labels", _submit(labels={f"k{i}": "v" for i in range(65)}), "labels"),
    ("long label key", _submit(labels={"k" * 64: "v"}), "labels." + "k" * 63),
    ("long label value", _submit(labels={"k": "v" * 257}), "labels.k"),
    ("odd label", _submit(labels={"a b": "v"}), 'labels["a b"]'),
    ("long idempotency key", _submit(idempotency_key="i" * 257), "idempotency_key"),
    ("NaN timeout", _submit(timeout_seconds=math.nan), "timeout_seconds"),
    ("negative timeout", _submit(timeout_seconds=-1.0), "timeout_seconds"),
    ("infinite timeout", _submit(timeout_seconds=math.inf), "timeout_seconds"),
    ("deep input", _submit(input=_nested(40)), "input" + TOO_DEEP),
    ("long string", _submit(input={"s": "x" * (1024 * 1024 + 1)}), "input.s"),
    ("empty plan", pb.SubmitTaskRequest(plan=pb.Plan()), "plan.steps"),
    ("bad step id", _plan(lambda r: setattr(r.plan.steps[0], "id", "1 a")), "plan.steps[0].id"),
    (
        "unknown capability",
        _plan(lambda r: setattr(r.plan.steps[1], "capability", "no.such")),
        "plan.steps[1].capability",
    ),
    (
        "NaN step timeout",
        _plan(lambda r: setattr(r.plan.steps[0], "timeout_seconds", math.nan)),
        "plan.steps[0].timeout_seconds",
    ),
    (
        "many attempts",
        _plan(lambda r: setattr(r.plan.steps[0].retry, "max_attempts", 1000)),
        "plan.steps[0].retry.max_attempts",
    ),
    ("NaN in input", _plan(_nan_input), "plan.steps[0].input.x"),
    ("cycle", _plan(_cycle), "plan.steps[0].needs[0]"),
    (
        "unknown dependency",
        _plan(lambda r: r.plan.steps[0].needs.append("zzz")),
        "plan.steps[0].needs[0]",
    ),
]


@pytest.fixture
async def agent(mesh: Orchestrator, certs: Path) -> AsyncIterator[RawAgent]:
    """A registered agent offering test.echo (it never answers)."""
    async with RawAgent(certs, "echo-1") as running:
        await running.register(mesh)
        yield running


async def _rows(orchestrator: Orchestrator) -> tuple[list[str], list[str]]:
    tasks = await orchestrator.store.list_tasks(owner=None, states=[], limit=1000, offset=0)
    agents = await orchestrator.store.agents()
    return sorted(t.id for t in tasks), sorted(card.name for card, _, _ in agents)


@pytest.mark.parametrize(
    ("request_", "field"), [(r, f) for _, r, f in SUBMIT_CASES], ids=[c[0] for c in SUBMIT_CASES]
)
async def test_submit_task_names_the_bad_field_and_stores_nothing(
    mesh: Orchestrator, certs: Path, agent: RawAgent, request_: pb.SubmitTaskRequest, field: str
) -> None:
    async with orchestrator_stub(mesh, certs) as alice:
        error = await refusal(alice.SubmitTask(request_, timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(f"{field}: "), error.details()
    assert await _rows(mesh) == ([], ["echo-1"])


READ_CASES: list[tuple[str, str, Any, str]] = [
    ("GetTask", "empty id", pb.GetTaskRequest(), "task_id"),
    ("GetTask", "path", pb.GetTaskRequest(task_id="../../etc/passwd"), "task_id"),
    ("GetTask", "uppercase", pb.GetTaskRequest(task_id=str(uuid.uuid4()).upper()), "task_id"),
    ("ListTasks", "big page", pb.ListTasksRequest(page_size=501), "page_size"),
    ("ListTasks", "bad token", pb.ListTasksRequest(page_token="abc"), "page_token"),
    ("ListTasks", "negative token", pb.ListTasksRequest(page_token="-1"), "page_token"),
    ("ListTasks", "long token", pb.ListTasksRequest(page_token="9" * 30), "page_token"),
    ("ListTasks", "unknown state", pb.ListTasksRequest(states=[99]), "states[0]"),
    ("ListTasks", "no state", pb.ListTasksRequest(states=[0]), "states[0]"),
    ("ListTasks", "many states", pb.ListTasksRequest(states=[1] * 17), "states"),
    ("CancelTask", "bad id", pb.CancelTaskRequest(task_id="x"), "task_id"),
    (
        "CancelTask",
        "long reason",
        pb.CancelTaskRequest(task_id=str(uuid.uuid4()), reason="r" * 1025),
        "reason",
    ),
    ("ListAgents", "spaced capability", pb.ListAgentsRequest(capability="a b"), "capability"),
    ("ListAgents", "long capability", pb.ListAgentsRequest(capability="c" * 129), "capability"),
]


@pytest.mark.parametrize(
    ("method", "request_", "field"),
    [(m, r, f) for m, _, r, f in READ_CASES],
    ids=[f"{m}-{n}" for m, n, _, _ in READ_CASES],
)
async def test_orchestrator_calls_name_the_bad_field(
    mesh: Orchestrator, certs: Path, method: str, request_: Any, field: str
) -> None:
    async with orchestrator_stub(mesh, certs) as alice:
        error = await refusal(getattr(alice, method)(request_, timeout=10))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(f"{field}: "), error.details()


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.WatchTaskRequest(task_id="nope"), "task_id"),
        (pb.WatchTaskRequest(task_id=str(uuid.uuid4()), after_sequence=2**63), "after_sequence"),
    ],
)
async def test_watch_task_names_the_bad_field(
    mesh: Orchestrator, certs: Path, request_: pb.WatchTaskRequest, field: str
) -> None:
    async with orchestrator_stub(mesh, certs) as alice:
        error = await refusal(_drain(alice.WatchTask(request_, timeout=10)))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith(f"{field}: ")


async def _drain(call: Any) -> list[Any]:
    return [item async for item in call]


def _capabilities(count: int) -> list[common_pb2.Capability]:
    return [capability(f"test.c{i}") for i in range(count)]


CARD_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no port", {"endpoint": "nohost"}, "card.endpoint"),
    ("port too big", {"endpoint": "127.0.0.1:70000"}, "card.endpoint"),
    ("url", {"endpoint": "http://127.0.0.1:5000/x"}, "card.endpoint"),
    ("no capabilities", {"capabilities": []}, "card.capabilities"),
    ("many capabilities", {"capabilities": _capabilities(65)}, "card.capabilities"),
    ("bad name", {"capabilities": [capability("Bad Name")]}, "card.capabilities[0].name"),
    (
        "twice",
        {"capabilities": [capability("test.echo"), capability("test.echo")]},
        "card.capabilities[1].name",
    ),
    (
        "invalid schema",
        {
            "capabilities": [
                common_pb2.Capability(name="test.echo", input_schema=struct({"type": 5}))
            ]
        },
        "card.capabilities[0].input_schema",
    ),
    (
        "deep schema",
        {
            "capabilities": [
                common_pb2.Capability(name="test.echo", output_schema=struct(_nested(40)))
            ]
        },
        "card.capabilities[0].output_schema" + TOO_DEEP,
    ),
    (
        "long description",
        {"capabilities": [common_pb2.Capability(name="test.echo", description="d" * 4097)]},
        "card.capabilities[0].description",
    ),
    (
        "many tags",
        {"capabilities": [common_pb2.Capability(name="test.echo", tags=["t"] * 33)]},
        "card.capabilities[0].tags",
    ),
    ("many labels", {"labels": {f"k{i}": "v" for i in range(65)}}, "card.labels"),
    ("huge concurrency", {"max_concurrency": 10_001}, "card.max_concurrency"),
    ("spaced version", {"version": "1 .0"}, "card.version"),
]


@pytest.mark.parametrize(
    ("change", "field"), [(c, f) for _, c, f in CARD_CASES], ids=[c[0] for c in CARD_CASES]
)
async def test_register_agent_names_the_bad_field_and_stores_nothing(
    mesh: Orchestrator, certs: Path, change: dict[str, Any], field: str
) -> None:
    async with RawAgent(certs, "echo-1") as agent:
        error = await refusal(agent.register(mesh, **change))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert (error.details() or "").startswith(f"{field}: "), error.details()
    assert await _rows(mesh) == ([], [])
    assert mesh.registry.statuses() == []


async def test_deregister_agent_names_the_bad_field(mesh: Orchestrator, certs: Path) -> None:
    async with registry_stub(mesh, certs) as stub:
        error = await refusal(
            stub.DeregisterAgent(pb.DeregisterAgentRequest(name="Not A Name"), timeout=10)
        )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("name: ")


async def test_a_message_over_the_size_limit_is_resource_exhausted(
    mesh: Orchestrator, certs: Path, agent: RawAgent
) -> None:
    request = _submit(input={"blob": "x" * (5 * 1024 * 1024)})
    async with orchestrator_stub(mesh, certs) as alice:
        error = await refusal(alice.SubmitTask(request, timeout=10))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await _rows(mesh) == ([], ["echo-1"])


async def test_an_accepted_submission_is_stored_and_refused_ones_around_it_are_not(
    mesh: Orchestrator, certs: Path, agent: RawAgent
) -> None:
    async with (
        orchestrator_stub(mesh, certs) as alice,
        orchestrator_stub(mesh, certs, "agent", "echo-1") as intruder,
    ):
        for _, request, _ in SUBMIT_CASES:
            await refusal(alice.SubmitTask(request, timeout=10))
            await refusal(intruder.SubmitTask(_submit(), timeout=10))
        accepted = (await alice.SubmitTask(_submit(), timeout=10)).task_id
    assert await _rows(mesh) == ([accepted], ["echo-1"])

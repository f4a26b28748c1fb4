"""Hostile input: generated and hand-made messages for every RPC.

Each answer must be OK or a client error (never INTERNAL or UNKNOWN), the orchestrator must
keep serving, and the store must hold only what accepted requests put there.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind
from tests.security.helpers import (
    RawAgent,
    channel,
    echo,
    orchestrator_stub,
    plan_request,
    refusal,
    struct,
)
from tests.support.waiting import eventually

#: Examples per RPC; AGENTMESH_HOSTILE_EXAMPLES=1000 for a longer hunt.
EXAMPLE_COUNT = int(os.environ.get("AGENTMESH_HOSTILE_EXAMPLES", "40"))
EXAMPLES = settings(
    max_examples=EXAMPLE_COUNT,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
OUT_OF_RANGE = grpc.StatusCode.OUT_OF_RANGE
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED


# -- the mesh under attack ------------------------------------------------------------------------


@dataclass
class Target:
    """An orchestrator with one answering agent, alice's stubs, and what should be stored."""

    orchestrator: Orchestrator
    alice: pb_grpc.OrchestratorAsyncStub
    agent_registry: pb_grpc.RegistryAsyncStub
    channel: grpc.aio.Channel
    endpoint: str
    #: A finished task and one that waits forever (pinned to an agent that never comes).
    done_task: str = ""
    waiting_task: str = ""
    tasks: set[str] = field(default_factory=set)

    async def check(self) -> None:
        """The orchestrator still serves, and the store holds only accepted tasks and agents."""
        health = health_pb2_grpc.HealthStub(self.channel)  # type: ignore[no-untyped-call]
        answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        store = self.orchestrator.store
        stored = await store.list_tasks(owner=None, states=[], limit=10_000, offset=0)
        assert {t.id for t in stored} <= self.tasks
        assert {card.name for card, _, _ in await store.agents()} <= {"echo-1"}


@pytest.fixture
def hostile_settings(secure_settings: Settings) -> Settings:
    """Patient with the in-process agent: this process also runs hypothesis and the hostile
    requests, and on a busy machine a Pong can be late by far more than half a second; an
    agent declared lost never comes back here, so its tasks would wait forever. (Generated
    endpoints do not stall registration: they fail to resolve, connect or identify at once.)
    """
    return secure_settings.model_copy(update={"agent_timeout_seconds": 5.0})


@pytest.fixture
async def target(hostile_settings: Settings, certs: Path) -> AsyncIterator[Target]:
    """See :class:`Target`."""
    async with (
        Orchestrator(hostile_settings) as orchestrator,
        RawAgent(certs, "echo-1", echo, capabilities=("test.echo", "test.hang")) as agent,
        channel(orchestrator, certs, "client", "alice") as alice,
        channel(orchestrator, certs, "agent", "echo-1") as as_agent,
    ):
        await agent.register(orchestrator)
        stub = pb_grpc.OrchestratorStub(alice)  # type: ignore[no-untyped-call]
        hit = Target(
            orchestrator,
            stub,
            pb_grpc.RegistryStub(as_agent),  # type: ignore[no-untyped-call]
            alice,
            agent.endpoint,
        )
        hit.done_task = (await stub.SubmitTask(plan_request(("a", "test.echo", {})))).task_id
        waiting = plan_request(("a", "test.echo", {}))
        waiting.plan.steps[0].pin_agent = "ghost"
        hit.waiting_task = (await stub.SubmitTask(waiting)).task_id
        hit.tasks |= {hit.done_task, hit.waiting_task}
        async for _ in stub.WatchTask(pb.WatchTaskRequest(task_id=hit.done_task), timeout=10):
            pass
        yield hit


def _note(code: grpc.StatusCode, details: str | None = "") -> None:
    """Count the answer in hypothesis' statistics (--hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(f"{code.name} {(details or '').split(chr(39))[0][:60]}")


async def _code(call: Any) -> grpc.StatusCode:
    code, details = OK, ""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (code, details)
    _note(code, details)
    return code


# -- strategies -----------------------------------------------------------------------------------

REFERENCES = ["${input.x}", "${steps.a.output}", "${steps.b.output.items}", "${item}", "${", "$$"]
texts = st.text(max_size=12)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, else ``odd``: deep enough to reach the code past the
    first check, hostile enough to hit every check."""
    return st.integers(0, 3).flatmap(lambda pick: odd if pick == 3 else usual)


json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**53), 2**53),
    texts,
    st.sampled_from(REFERENCES),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)
structs = st.dictionaries(texts, json_values, max_size=4).map(struct)
sane_structs = st.dictionaries(
    st.sampled_from(["value", "x", "delay"]), st.one_of(st.integers(0, 9), texts), max_size=2
).map(struct)
any_floats = st.floats(allow_nan=True, allow_infinity=True)
seconds = mostly(st.sampled_from([0.0, 0.5, 2.0]), any_floats)
step_ids = mostly(st.sampled_from(["a", "b", "c"]), texts)
capabilities = mostly(st.just("test.echo"), st.one_of(st.sampled_from(["test.hang", ""]), texts))


@st.composite
def step_specs(draw: st.DrawFn) -> common_pb2.StepSpec:
    return common_pb2.StepSpec(
        id=draw(step_ids),
        capability=draw(capabilities),
        version=draw(mostly(st.sampled_from(["", "1", "1.0"]), texts)),
        input=draw(mostly(sane_structs, structs)),
        needs=draw(mostly(st.just([]), st.lists(step_ids, max_size=3))),
        timeout_seconds=draw(seconds),
        retry=common_pb2.RetryPolicy(
            max_attempts=draw(mostly(st.integers(0, 3), st.integers(0, 2**32 - 1))),
            initial_backoff_seconds=draw(mostly(st.just(0.01), any_floats)),
            max_backoff_seconds=draw(mostly(st.just(0.05), any_floats)),
        ),
        optional=draw(st.booleans()),
        compensation=draw(mostly(st.just(""), capabilities)),
        pin_agent=draw(mostly(st.just(""), st.one_of(st.sampled_from(["echo-1", "ghost"]), texts))),
        exclude_agents=draw(mostly(st.just([]), st.lists(texts, max_size=3))),
        for_each=draw(mostly(st.just(""), st.one_of(st.sampled_from(REFERENCES), texts))),
    )


@st.composite
def submit_requests(draw: st.DrawFn) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest(
        input=draw(mostly(sane_structs, structs)),
        priority=draw(mostly(st.integers(-5, 5), st.integers(-(2**31), 2**31 - 1))),
        timeout_seconds=draw(seconds),
        labels=draw(
            mostly(
                st.dictionaries(st.sampled_from(["env", "team"]), texts, max_size=2),
                st.dictionaries(st.text(max_size=70), st.text(max_size=300), max_size=3),
            )
        ),
        idempotency_key=draw(mostly(st.sampled_from(["", "k1", "k2"]), st.text(max_size=300))),
    )
    spec = draw(st.sampled_from(["plan", "plan", "plan", "workflow", "goal", "none"]))
    if spec == "plan":
        ids = st.sampled_from(["a", "b", "c"])
        steps = draw(
            mostly(
                st.lists(step_specs(), min_size=1, max_size=3, unique_by=lambda s: s.id),
                st.lists(step_specs(), max_size=4),
            )
        )
        for step in steps:
            if not step.id:
                step.id = draw(ids)
        request.plan.steps.extend(steps)
        request.plan.aggregate.CopyFrom(draw(mostly(st.just(struct({})), structs)))
    elif spec == "workflow":
        request.workflow = draw(mostly(st.sampled_from(["document-brief", "nope"]), texts))
    elif spec == "goal":
        request.goal = draw(mostly(st.sampled_from(["summarize a document"]), st.text()))
    return request


def task_ids(target: Target) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([target.done_task, target.waiting_task]),
        st.uuids().map(str),
        st.text(max_size=40),
    )


@st.composite
def cards(draw: st.DrawFn, endpoint: str) -> common_pb2.AgentCard:
    schemas = mostly(
        st.sampled_from([{}, {"type": "object"}, {"type": "object", "required": ["value"]}]).map(
            struct
        ),
        structs,
    )
    return common_pb2.AgentCard(
        name=draw(mostly(st.just("echo-1"), st.one_of(st.sampled_from(["echo-2", ""]), texts))),
        endpoint=draw(mostly(st.just(endpoint), st.one_of(st.sampled_from(["nohost", ""]), texts))),
        capabilities=draw(
            st.lists(
                st.builds(
                    common_pb2.Capability,
                    name=mostly(st.sampled_from(["test.echo", "test.hang", "plan"]), texts),
                    version=mostly(st.just("1.0.0"), texts),
                    description=st.text(max_size=50),
                    input_schema=schemas,
                    output_schema=schemas,
                    tags=st.lists(texts, max_size=3),
                ),
                min_size=1,
                max_size=3,
                unique_by=lambda c: c.name,
            )
        ),
        max_concurrency=draw(mostly(st.integers(0, 8), st.integers(0, 2**32 - 1))),
        version=draw(mostly(st.just("1.0.0"), texts)),
        labels=draw(mostly(st.just({}), st.dictionaries(texts, texts, max_size=3))),
    )


# -- generated messages, one test per RPC ---------------------------------------------------------


@pytest.mark.slow  # over 3 s on a busy 2-core machine
@EXAMPLES
@given(data=st.data())
async def test_submit_task_survives_anything(target: Target, data: st.DataObject) -> None:
    request = data.draw(submit_requests())
    code, details = OK, ""
    try:
        response = await target.alice.SubmitTask(request, timeout=20)
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details() or ""
    else:
        target.tasks.add(response.task_id)
    # ALREADY_EXISTS: a drawn idempotency key that an earlier, different request used.
    assert code in (OK, INVALID, UNAVAILABLE, ALREADY_EXISTS), (code, details)
    _note(code, details)
    await target.check()


@EXAMPLES
@given(data=st.data())
async def test_get_task_survives_anything(target: Target, data: st.DataObject) -> None:
    request = pb.GetTaskRequest(task_id=data.draw(task_ids(target)))
    assert await _code(target.alice.GetTask(request, timeout=10)) in (OK, INVALID, NOT_FOUND)
    await target.check()


@EXAMPLES
@given(
    states=st.lists(st.integers(-5, 20), max_size=20),
    page_size=st.integers(0, 2**32 - 1),
    page_token=st.one_of(st.just(""), st.integers(0, 10**12).map(str), st.text(max_size=30)),
)
async def test_list_tasks_survives_anything(
    target: Target, states: list[int], page_size: int, page_token: str
) -> None:
    request = pb.ListTasksRequest(states=states, page_size=page_size, page_token=page_token)  # type: ignore[arg-type]
    assert await _code(target.alice.ListTasks(request, timeout=10)) in (OK, INVALID)
    await target.check()


@EXAMPLES
@given(data=st.data())
async def test_cancel_task_survives_anything(target: Target, data: st.DataObject) -> None:
    request = pb.CancelTaskRequest(
        task_id=data.draw(task_ids(target)), reason=data.draw(st.text(max_size=1100))
    )
    code = await _code(target.alice.CancelTask(request, timeout=10))
    assert code in (OK, INVALID, NOT_FOUND, PRECONDITION)
    await target.check()


@pytest.mark.slow  # over 3 s on a busy 2-core machine
@EXAMPLES
@given(data=st.data())
async def test_watch_task_survives_anything(target: Target, data: st.DataObject) -> None:
    request = pb.WatchTaskRequest(
        task_id=data.draw(task_ids(target)),
        after_sequence=data.draw(st.one_of(st.integers(0, 10), st.integers(0, 2**64 - 1))),
    )

    async def drain() -> None:
        async for _ in target.alice.WatchTask(request, timeout=0.5):
            pass

    # A live task's stream stays open: the deadline ends it.
    assert await _code(drain()) in (OK, INVALID, NOT_FOUND, OUT_OF_RANGE, DEADLINE)
    await target.check()


@EXAMPLES
@given(capability=st.one_of(st.sampled_from(["test.echo", ""]), st.text(max_size=200)))
async def test_list_agents_survives_anything(target: Target, capability: str) -> None:
    request = pb.ListAgentsRequest(capability=capability)
    assert await _code(target.alice.ListAgents(request, timeout=10)) in (OK, INVALID)
    await target.check()


@EXAMPLES
@given(data=st.data())
async def test_register_agent_survives_anything(target: Target, data: st.DataObject) -> None:
    request = pb.RegisterAgentRequest(card=data.draw(cards(target.endpoint)))
    code = await _code(target.agent_registry.RegisterAgent(request, timeout=10))
    assert code in (OK, INVALID, DENIED, UNAVAILABLE)
    await target.check()


@EXAMPLES
@given(name=st.one_of(st.sampled_from(["echo-1", "echo-2", ""]), st.text(max_size=80)))
async def test_deregister_agent_survives_anything(target: Target, name: str) -> None:
    request = pb.DeregisterAgentRequest(name=name)
    code = await _code(target.agent_registry.DeregisterAgent(request, timeout=10))
    assert code in (OK, INVALID, DENIED, NOT_FOUND)
    await target.check()


METHODS = [
    ("/agentmesh.v1.Orchestrator/SubmitTask", False),
    ("/agentmesh.v1.Orchestrator/GetTask", False),
    ("/agentmesh.v1.Orchestrator/ListTasks", False),
    ("/agentmesh.v1.Orchestrator/CancelTask", False),
    ("/agentmesh.v1.Orchestrator/WatchTask", True),
    ("/agentmesh.v1.Orchestrator/ListAgents", False),
    ("/agentmesh.v1.Registry/RegisterAgent", False),
    ("/agentmesh.v1.Registry/DeregisterAgent", False),
]


@settings(
    max_examples=2 * EXAMPLE_COUNT,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(method=st.sampled_from(METHODS), raw=st.binary(max_size=300))
async def test_random_bytes_for_any_method_are_refused_cleanly(
    target: Target, method: tuple[str, bool], raw: bytes
) -> None:
    name, streaming = method
    if streaming:
        call: Any = target.channel.unary_stream(name)(raw, timeout=0.5)

        async def drain() -> None:
            async for _ in call:
                pass

        code = await _code(drain())
    else:
        code = await _code(target.channel.unary_unary(name)(raw, timeout=10))
    assert code in (OK, INVALID, NOT_FOUND, DENIED, PRECONDITION, UNAVAILABLE, DEADLINE)
    await target.check()


# -- hand-made ------------------------------------------------------------------------------------


def _steps(count: int, *, padding: int = 0) -> pb.SubmitTaskRequest:
    request = pb.SubmitTaskRequest()
    steps = request.plan.steps
    pad = "p" * padding
    for i in range(count):
        steps.add(id=f"s{i}", capability="test.echo", pin_agent=pad)
    return request


async def test_a_cyclic_plan_is_refused(target: Target) -> None:
    request = plan_request(
        ("a", "test.echo", {"x": "${steps.c.output}"}),
        ("b", "test.echo", {"x": "${steps.a.output}"}),
        ("c", "test.echo", {"x": "${steps.b.output}"}),
    )
    error = await refusal(target.alice.SubmitTask(request, timeout=10))
    assert error.code() is INVALID
    assert "dependency cycle: a -> c -> b -> a" in (error.details() or "")
    await target.check()


@pytest.mark.parametrize("count", [5_000, 100_000])
async def test_a_plan_with_too_many_steps_is_refused_quickly(target: Target, count: int) -> None:
    request = _steps(count)
    assert request.ByteSize() < 4 * 1024 * 1024  # under the message limit: our check refuses it
    started = time.monotonic()
    error = await refusal(target.alice.SubmitTask(request, timeout=30))
    took = time.monotonic() - started
    assert error.code() is INVALID
    assert error.details() == f"plan.steps: {count} steps exceed the limit of 1000"
    assert took < 5
    await target.check()


async def test_a_100k_step_plan_over_the_size_limit_is_resource_exhausted(
    target: Target, certs: Path
) -> None:
    request = _steps(100_000, padding=40)
    assert request.ByteSize() > 4 * 1024 * 1024
    async with channel(target.orchestrator, certs, "client", "alice") as opened:
        stub = pb_grpc.OrchestratorStub(opened)  # type: ignore[no-untyped-call]
        error = await refusal(stub.SubmitTask(request, timeout=30))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await target.check()


def _deep_value_bytes(depth: int) -> bytes:
    """A serialized google.protobuf.Value nested ``depth`` lists deep, built byte by byte
    (the Python protobuf runtime refuses to build one that deep)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    value = varint(4 << 3) + varint(1)  # bool_value: true
    for _ in range(depth):
        value = field(6, field(1, value))  # Value.list_value -> ListValue.values
    return value


async def test_payloads_nested_beyond_protobufs_limit_are_invalid_not_internal(
    target: Target,
) -> None:
    entry = b"\x0a\x01k" + b"\x12" + _varint_len(_deep_value_bytes(1000))
    raw_struct = b"\x0a" + _varint_len(entry)
    raw = b"\x1a\x04goal" + b"\x22" + _varint_len(raw_struct)  # goal=3, input=4
    error = await refusal(
        target.channel.unary_unary("/agentmesh.v1.Orchestrator/SubmitTask")(raw, timeout=10)
    )
    assert error.code() is INVALID
    assert (error.details() or "").startswith("request: cannot be parsed")
    await target.check()


def _varint_len(payload: bytes) -> bytes:
    n, out = len(payload), bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out) + payload


@pytest.mark.parametrize("where", ["input", "step", "aggregate"])
async def test_payloads_nested_deeper_than_the_plan_limit_are_invalid(
    target: Target, where: str
) -> None:
    deep: Any = "bottom"
    for _ in range(45):
        deep = [deep]
    request = plan_request(("a", "test.echo", {}))
    holder = {"input": request.input, "step": request.plan.steps[0].input}.get(
        where, request.plan.aggregate
    )
    holder.update({"d": deep})
    error = await refusal(target.alice.SubmitTask(request, timeout=10))
    assert error.code() is INVALID
    assert "nested deeper than 32 levels" in (error.details() or "")
    await target.check()


async def test_an_oversized_message_is_resource_exhausted(target: Target) -> None:
    error = await refusal(target.alice.SubmitTask(pb.SubmitTaskRequest(goal="g" * (5 << 20))))
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    value = struct_pb2.Struct()
    value.update({"blob": "x" * (5 << 20)})
    error = await refusal(
        target.agent_registry.RegisterAgent(
            pb.RegisterAgentRequest(
                card=common_pb2.AgentCard(
                    name="echo-1",
                    endpoint=target.endpoint,
                    capabilities=[common_pb2.Capability(name="test.echo", input_schema=value)],
                )
            )
        )
    )
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    await target.check()


async def test_idle_streams_and_silent_connections_do_not_stop_others_being_served(
    target: Target, certs: Path
) -> None:
    watches = [
        target.alice.WatchTask(pb.WatchTaskRequest(task_id=target.waiting_task)) for _ in range(50)
    ]
    for call in watches:
        await call.read()  # each is open and has had its first event
    port = target.orchestrator.port
    # TCP connections that never say a word, and TLS connections that never speak HTTP/2.
    silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    files = CertFiles.of(certs, IdentityKind.CLIENT, "bob")
    context.load_cert_chain(str(files.cert), str(files.key))
    context.set_alpn_protocols(["h2"])
    mute = [
        await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost")
        for _ in range(10)
    ]
    try:
        assert target.orchestrator.guard.open_streams == 50
        # Served means answered within each call's deadline (generous: the machine is busy),
        # not within a wall-clock budget.
        async with orchestrator_stub(target.orchestrator, certs, "client", "bob") as bob:
            for _ in range(5):
                await bob.ListTasks(pb.ListTasksRequest(), timeout=5)
            task_id = (
                await bob.SubmitTask(plan_request(("a", "test.echo", {"v": 1})), timeout=5)
            ).task_id
            target.tasks.add(task_id)
            events = [
                e async for e in bob.WatchTask(pb.WatchTaskRequest(task_id=task_id), timeout=30)
            ]
        assert events[-1].task_state.state == pb.TASK_STATE_SUCCEEDED
        await target.check()
    finally:
        for call in watches:
            call.cancel()
        for _, writer in silent + mute:
            writer.close()

    async def open_streams() -> int:
        return target.orchestrator.guard.open_streams

    await eventually(open_streams, lambda count: count == 0, within=5)


async def test_unknown_task_ids_of_the_right_shape_are_simply_not_found(target: Target) -> None:
    for _ in range(20):
        request = pb.GetTaskRequest(task_id=str(uuid.uuid4()))
        assert await _code(target.alice.GetTask(request, timeout=5)) is NOT_FOUND
    await target.check()

"""Who may talk to an agent: only orchestrators open Sessions; anyone in the mesh may Describe."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.agent import AgentServer
from agentmesh.security import CertFiles, IdentityKind, channel_credentials, create_ca, issue
from agentmesh.wire import card_from_proto
from tests.agent.agent_support import PATIENCE
from tests.agent.conftest import Connect


@pytest.mark.parametrize(("kind", "name"), [("agent", "intruder"), ("client", "alice")])
async def test_a_session_from_a_non_orchestrator_is_refused(
    server: AgentServer, connect: Connect, kind: str, name: str
) -> None:
    async with connect(server, kind, name) as stub:
        call = stub.Session()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"/{kind}/{name}" in (refused.value.details() or "")


async def test_describe_returns_the_card_to_any_mesh_identity(
    server: AgentServer, connect: Connect
) -> None:
    async with connect(server, "client", "alice") as stub:
        card = await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)

    assert card_from_proto(card) == server.card
    assert card.name == "recorder"
    assert card.endpoint == f"127.0.0.1:{server.port}"
    assert card.max_concurrency == 2
    assert card.version == "2.1.0"
    assert dict(card.labels) == {"team": "tests"}
    echo = next(c for c in card.capabilities if c.name == "test.echo")
    assert echo.version == "1.2.0"
    assert list(echo.tags) == ["test"]
    assert echo.description == "Return the text, reporting progress twice."
    assert echo.input_schema["required"] == ["text"]


async def test_plaintext_is_refused(server: AgentServer) -> None:
    async with grpc.aio.insecure_channel(server.endpoint) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused(
    server: AgentServer, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    create_ca(foreign, "agentmesh.local")
    issue(foreign, IdentityKind.ORCHESTRATOR, "orchestrator")
    files = CertFiles.of(foreign, IdentityKind.ORCHESTRATOR, "orchestrator")

    async with grpc.aio.secure_channel(server.endpoint, channel_credentials(files)) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_health_and_reflection_are_served(
    server: AgentServer, open_channel: Callable[..., AbstractAsyncContextManager[grpc.aio.Channel]]
) -> None:
    async with open_channel(server, "client", "alice") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = await health.Check(
            health_pb2.HealthCheckRequest(service="agentmesh.v1.Agent"), timeout=PATIENCE
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = reflection.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        call.cancel()

    assert status.status == health_pb2.HealthCheckResponse.SERVING
    names = {s.name for s in answer.list_services_response.service}
    assert {"agentmesh.v1.Agent", "grpc.health.v1.Health"} <= names

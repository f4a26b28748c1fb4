"""Agents register over mTLS; the wrong certificates, identities and transports are refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.config import Settings
from agentmesh.models import Plan, RetryPolicy, StepSpec, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind, channel_credentials, create_ca, issue
from tests.security.helpers import RawAgent, echo, hang, registry_stub
from tests.support.events import final_state, watch_all
from tests.support.mesh import client, wait_for_agent_gone, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

AGENT = "tests.support.agents"
SERVING = health_pb2.HealthCheckResponse.SERVING


def _card(name: str) -> common_pb2.AgentCard:
    return common_pb2.AgentCard(
        name=name,
        endpoint="127.0.0.1:1",
        max_concurrency=1,
        capabilities=[common_pb2.Capability(name="test.echo", version="1.0.0")],
    )


async def _register(
    orchestrator: Orchestrator, credentials: grpc.ChannelCredentials, name: str
) -> None:
    async with grpc.aio.secure_channel(f"localhost:{orchestrator.port}", credentials) as channel:
        stub = pb_grpc.RegistryStub(channel)
        await stub.RegisterAgent(pb.RegisterAgentRequest(card=_card(name)), timeout=5)


async def test_agent_process_registers_over_mtls_with_its_certificate_identity(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        listed = await wait_for_agents(alice, "echo-1")
    (echo,) = listed
    assert echo.identity == "spiffe://agentmesh.test/agent/echo-1"
    assert echo.connected
    assert [c.name for c in echo.card.capabilities][:2] == ["test.echo", "test.fail"]
    assert echo.card.capabilities[0].input_schema["type"] == "object"
    assert echo.circuit == "closed"


async def test_agent_that_dies_leaves_list_agents(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    address = f"localhost:{orchestrator.port}"
    agents.start(AGENT, "echo-1", [address])
    agents.start(AGENT, "echo-2", [address])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1", "echo-2")
        agents.kill("echo-1")
        await wait_for_agent_gone(alice, "echo-1", within=10)
        assert [a.card.name for a in await alice.list_agents()] == ["echo-2"]


async def test_agent_stopped_with_sigterm_deregisters_and_exits_cleanly(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        assert await agents.terminate("echo-1") == 0
        await wait_for_agent_gone(alice, "echo-1", within=5)
    # Said goodbye, not merely gone: the orchestrator answered its DeregisterAgent.
    assert "registration.deregistered" in agents.log("echo-1")


async def test_agent_started_before_the_orchestrator_registers_once_it_is_up(
    settings: object, certs: Path, agents: AgentProcesses, unused_tcp_port: int
) -> None:
    from agentmesh.config import Settings

    assert isinstance(settings, Settings)
    address = f"127.0.0.1:{unused_tcp_port}"
    agents.start(AGENT, "echo-1", [f"localhost:{unused_tcp_port}"])
    for _ in range(2):  # the second time: it registers again with a restarted orchestrator
        orchestrator = Orchestrator(settings.model_copy(update={"listen": address}))
        async with orchestrator, client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")


async def test_registering_under_another_agents_name_is_permission_denied(
    orchestrator: Orchestrator, certs: Path
) -> None:
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.AGENT, "echo-1"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, credentials, "echo-2")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "card.name" in (refused.value.details() or "")


async def test_registering_an_endpoint_that_serves_another_agents_certificate_is_denied(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-2", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        (echo_2,) = await wait_for_agents(alice, "echo-2")
    card = _card("echo-1")
    card.endpoint = echo_2.card.endpoint
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.AGENT, "echo-1"))
    async with grpc.aio.secure_channel(f"localhost:{orchestrator.port}", credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.RegistryStub(channel).RegisterAgent(
                pb.RegisterAgentRequest(card=card), timeout=10
            )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://agentmesh.test/agent/echo-2" in (refused.value.details() or "")


async def test_a_client_identity_cannot_register_as_an_agent(
    orchestrator: Orchestrator, certs: Path
) -> None:
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.CLIENT, "alice"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, credentials, "alice")
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_registration_with_an_unreachable_endpoint_is_unavailable_naming_it(
    orchestrator: Orchestrator, certs: Path
) -> None:
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.AGENT, "echo-1"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, credentials, "echo-1")
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "card.endpoint" in (refused.value.details() or "")


def _refused_at_handshake(error: grpc.aio.AioRpcError) -> bool:
    return error.code() is grpc.StatusCode.UNAVAILABLE


async def test_connection_without_a_client_certificate_is_refused(
    orchestrator: Orchestrator, certs: Path
) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, credentials, "echo-1")
    assert _refused_at_handshake(refused.value)


async def test_certificate_from_another_ca_is_refused(
    orchestrator: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    rogue = tmp_path / "rogue"
    create_ca(rogue, "agentmesh.test")  # same trust domain, different key: still refused
    files = issue(rogue, IdentityKind.AGENT, "echo-1")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(certs / "ca.pem").read_bytes(),
        private_key=files.key.read_bytes(),
        certificate_chain=files.cert.read_bytes(),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, credentials, "echo-1")
    assert _refused_at_handshake(refused.value)


async def test_expired_certificate_is_refused(
    orchestrator: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    # Issue into a copy of the CA folder so the shared fixture's certificates stay valid.
    import shutil

    folder = tmp_path / "certs"
    shutil.copytree(certs, folder)
    files = issue(
        folder,
        IdentityKind.AGENT,
        "echo-1",
        not_before=datetime.now(UTC) - timedelta(days=30),
        valid_for=timedelta(days=1),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _register(orchestrator, channel_credentials(files), "echo-1")
    assert _refused_at_handshake(refused.value)


async def test_plaintext_connection_is_refused(orchestrator: Orchestrator) -> None:
    async with grpc.aio.insecure_channel(f"localhost:{orchestrator.port}") as channel:
        stub = pb_grpc.RegistryStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RegisterAgent(pb.RegisterAgentRequest(card=_card("echo-1")), timeout=5)
    assert _refused_at_handshake(refused.value)


async def test_an_idle_connection_is_closed_and_the_channel_connects_again_at_its_next_call(
    settings: Settings, certs: Path
) -> None:
    # Issue 9: an agent's registration channel sits unused between RegisterAgent and
    # DeregisterAgent; at a thousand agents the open connections alone held ~100 MiB.
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.AGENT, "echo-1"))
    check = health_pb2.HealthCheckRequest(service="")
    async with (
        Orchestrator(settings.model_copy(update={"idle_connection_seconds": 1.0})) as orch,
        grpc.aio.secure_channel(f"localhost:{orch.port}", credentials) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(check, timeout=5)).status == SERVING
        assert channel.get_state() is grpc.ChannelConnectivity.READY
        # The orchestrator's GOAWAY takes the channel back to IDLE, with no call failed.
        await eventually(
            lambda: asyncio.sleep(0, channel.get_state()),
            lambda state: state is grpc.ChannelConnectivity.IDLE,
        )
        assert (await health.Check(check, timeout=5)).status == SERVING


async def test_a_registration_given_up_by_its_agent_leaves_no_session_behind(
    settings: Settings, certs: Path
) -> None:
    # Issue 9: under a registration storm agents' RegisterAgent deadlines passed while the
    # orchestrator waited for the first Pong; each abandoned attempt's Session lived on
    # (four per agent at a thousand agents). A long agent timeout: silence alone must not
    # be what ends it.
    patient = settings.model_copy(update={"agent_timeout_seconds": 30.0})
    async with Orchestrator(patient) as orch, RawAgent(certs, "echo-1") as agent:
        agent.answering.clear()
        with pytest.raises(grpc.aio.AioRpcError) as given_up:
            async with registry_stub(orch, certs, "agent", "echo-1") as stub:
                await stub.RegisterAgent(pb.RegisterAgentRequest(card=agent.card()), timeout=0.5)
        assert given_up.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await eventually(lambda: asyncio.sleep(0, agent.sessions), lambda n: n == 1)
        agent.answering.set()  # the abandoned Session would now stay alive
        await eventually(lambda: asyncio.sleep(0, agent.open_sessions), lambda n: n == 0)
        await agent.register(orch)
        await eventually(lambda: asyncio.sleep(0, agent.open_sessions), lambda n: n == 1)
        async with client(orch, certs) as alice:
            (listed,) = await alice.list_agents()
        assert listed.card.name == "echo-1"
        assert listed.connected


async def test_a_result_that_arrives_after_its_agents_deregistration_still_counts(
    settings: Settings, certs: Path
) -> None:
    # A draining agent sends its last result on the Session and then DeregisterAgent on
    # another connection, which the orchestrator may read first. It used to close the
    # Session there and then: the result was lost and the step ran again (with no other
    # agent, the TypeScript SDK's SIGTERM test waited for ever). Here the goodbye is
    # answered before the result is even sent; one attempt only, so a lost result fails.
    # A long agent timeout (the most a deregistered link waits): a slow machine must not
    # be what decides.
    patient = settings.model_copy(update={"agent_timeout_seconds": 30.0})
    async with (
        Orchestrator(patient) as orchestrator,
        RawAgent(certs, "echo-1", hang) as agent,
        client(orchestrator, certs) as alice,
    ):
        await agent.register(orchestrator)
        plan = Plan(
            steps=[
                StepSpec(
                    id="a",
                    capability="test.echo",
                    input={"n": 1},
                    retry=RetryPolicy(max_attempts=1),
                )
            ]
        )
        task_id = await alice.submit(plan=plan)
        await agent.got_assignment.wait()
        (assignment,) = agent.assignments
        async with registry_stub(orchestrator, certs, "agent", "echo-1") as stub:
            await stub.DeregisterAgent(pb.DeregisterAgentRequest(name="echo-1"), timeout=10)
        assert await alice.list_agents() == []  # no new work for it
        await echo(agent, assignment)
        events = await watch_all(alice, task_id)
        task = await alice.get(task_id)
    assert final_state(events) is TaskState.SUCCEEDED, task.error
    assert task.result == {"a": {"n": 1}}
    assert task.steps["a"].attempts == 1

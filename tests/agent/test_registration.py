"""Registration: the agent registers with every orchestrator, keeps at it, and says goodbye.

Every orchestrator here is the real one, in-process, on its own port and SQLite file; what it
made of the agent is read back through ListAgents, and what the agent did from its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import structlog

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.models import AgentStatus
from tests.agent.agent_support import PATIENCE, Recorder
from tests.agent.conftest import (
    Connect,
    Log,
    MeshClient,
    StartAgent,
    StartOrchestrator,
    address_of,
)
from tests.support.mesh import wait_for_agent_gone, wait_for_agents
from tests.support.network import free_port
from tests.support.waiting import eventually

IDENTITY = "spiffe://agentmesh.local/agent/recorder"


def events(captured: Log, event: str, orchestrator: str = "") -> Log:
    """The log entries called ``event`` (about the orchestrator at ``orchestrator``, if given)."""
    return [
        entry
        for entry in captured
        if entry["event"] == event
        and (not orchestrator or entry.get("orchestrator") == orchestrator)
    ]


async def logged(captured: Log, event: str, orchestrator: str = "", count: int = 1) -> Log:
    """Wait until ``event`` was logged at least ``count`` times; return those entries."""
    return await eventually(
        lambda: asyncio.sleep(0, events(captured, event, orchestrator)),
        lambda found: len(found) >= count,
        within=PATIENCE,
    )


def listed(agents: list[AgentStatus], name: str = "recorder") -> AgentStatus:
    (status,) = [a for a in agents if a.card.name == name]
    return status


async def test_the_agent_registers_its_card_with_every_orchestrator(
    recorder: Recorder,
    start_agent: StartAgent,
    start_orchestrator: StartOrchestrator,
    mesh_client: MeshClient,
) -> None:
    async with (
        start_orchestrator(database="first") as first,
        start_orchestrator(database="second") as second,
        start_agent(recorder, orchestrators=[address_of(first), address_of(second)]) as server,
    ):
        for orchestrator in (first, second):
            async with mesh_client(orchestrator) as alice:
                status = listed(await wait_for_agents(alice, "recorder", within=PATIENCE))
            assert status.identity == IDENTITY
            assert status.card == server.card
            assert {c.name for c in status.card.capabilities} == {
                "test.echo",
                "test.fail",
                "test.block",
                "test.stubborn",
            }


async def test_the_agent_serves_while_the_orchestrator_is_down_and_registers_once_it_is_up(
    recorder: Recorder,
    start_agent: StartAgent,
    start_orchestrator: StartOrchestrator,
    mesh_client: MeshClient,
    connect: Connect,
    captured: Log,
) -> None:
    port = free_port()
    address = f"localhost:{port}"
    async with start_agent(recorder, orchestrators=[address]) as server:
        async with connect(server) as stub:
            card = await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)
        assert card.name == "recorder"
        (unreachable, *_) = await logged(captured, "registration.unreachable", address)
        assert unreachable["code"] == "UNAVAILABLE"
        assert not events(captured, "registration.registered")

        async with (
            start_orchestrator(port=port) as orchestrator,
            mesh_client(orchestrator) as alice,
        ):
            status = listed(await wait_for_agents(alice, "recorder", within=PATIENCE))
            assert status.identity == IDENTITY
        (registered,) = events(captured, "registration.registered", address)
        assert registered["identity"] == IDENTITY


async def test_the_agent_registers_again_when_its_session_ends_with_a_restarted_orchestrator(
    recorder: Recorder,
    start_agent: StartAgent,
    start_orchestrator: StartOrchestrator,
    mesh_client: MeshClient,
    captured: Log,
) -> None:
    port = free_port()
    address = f"localhost:{port}"
    session_wait = 0.6
    async with start_agent(recorder, orchestrators=[address], session_wait_seconds=session_wait):
        async with (
            start_orchestrator(port=port) as orchestrator,
            mesh_client(orchestrator) as alice,
        ):
            await wait_for_agents(alice, "recorder", within=PATIENCE)

            # The orchestrator's Session keeps the agent registered past session_wait.
            async def current() -> AgentStatus:
                return listed(await alice.list_agents())

            def session_outlived_the_wait(found: AgentStatus) -> bool:
                alive = (found.last_seen - found.registered_at).total_seconds()
                return found.connected and alive > 2 * session_wait

            await eventually(current, session_outlived_the_wait, within=PATIENCE)
            assert len(events(captured, "registration.registered", address)) == 1
            assert not events(captured, "registration.no_session")

        # Down: the agent notices its Session ended and keeps trying.
        await logged(captured, "registration.session_ended", address)
        await logged(captured, "registration.unreachable", address)

        # A new orchestrator on the same port and database knows the agent only once it
        # registers again.
        async with start_orchestrator(port=port) as restarted, mesh_client(restarted) as alice:
            status = listed(await wait_for_agents(alice, "recorder", within=PATIENCE))
            assert status.identity == IDENTITY
            assert status.connected
        assert len(events(captured, "registration.registered", address)) == 2


def write_policy(path: Path, *capabilities: str) -> None:
    """A policy letting agents register ``capabilities`` (globs) and anyone list agents."""
    document = {
        "version": 1,
        "rules": [
            {
                "name": "agents",
                "kinds": ["agent"],
                "allow": {"register_capabilities": list(capabilities)},
            },
            {"name": "everyone", "identities": ["*"], "allow": {"list_agents": True}},
        ],
    }
    path.write_text(json.dumps(document))


async def test_a_refused_registration_is_retried_slowly_and_succeeds_once_allowed(
    recorder: Recorder,
    start_agent: StartAgent,
    start_orchestrator: StartOrchestrator,
    mesh_client: MeshClient,
    captured: Log,
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.json"
    write_policy(policy, "other.*")
    retry = 1.0
    async with (
        start_orchestrator(policy_file=str(policy), security_reload_seconds=0.1) as orchestrator,
        mesh_client(orchestrator) as alice,
        start_agent(
            recorder, orchestrators=[address_of(orchestrator)], register_retry_seconds=retry
        ),
    ):
        (refused, *_) = await logged(captured, "registration.refused", address_of(orchestrator))
        assert refused["log_level"] == "error"
        assert refused["code"] == "PERMISSION_DENIED"
        assert f"{IDENTITY} may not register capability 'test.echo'" in refused["reason"]
        # Refusals wait register_retry_seconds, not the 0.1-0.2 s of an unreachable backoff.
        assert refused["retry_in"] == retry
        assert "recorder" not in {a.card.name for a in await alice.list_agents()}
        assert not events(captured, "registration.registered")

        write_policy(policy, "test.*")
        status = listed(await wait_for_agents(alice, "recorder", within=PATIENCE))
        assert status.identity == IDENTITY

    refusals = events(captured, "registration.refused")
    assert all(entry["retry_in"] == retry for entry in refusals)
    assert len(events(captured, "registration.registered")) == 1


async def test_draining_deregisters_from_every_orchestrator(
    recorder: Recorder,
    start_agent: StartAgent,
    start_orchestrator: StartOrchestrator,
    mesh_client: MeshClient,
    captured: Log,
) -> None:
    async with (
        start_orchestrator(database="first") as first,
        start_orchestrator(database="second") as second,
        mesh_client(first) as at_first,
        mesh_client(second) as at_second,
    ):
        addresses = [address_of(first), address_of(second)]
        async with start_agent(recorder, orchestrators=addresses) as server:
            for alice in (at_first, at_second):
                await wait_for_agents(alice, "recorder", within=PATIENCE)
            await server.drain()
            for alice in (at_first, at_second):
                await wait_for_agent_gone(alice, "recorder", within=PATIENCE)
            registrations = len(events(captured, "registration.registered"))

        for address in addresses:
            assert len(events(captured, "registration.deregistered", address)) == 1
        assert registrations == 2
        # No re-registering after the drain.
        assert len(events(captured, "registration.registered")) == registrations
        for alice in (at_first, at_second):
            assert "recorder" not in {a.card.name for a in await alice.list_agents()}


async def test_an_orchestrator_slow_to_shake_hands_gets_the_whole_call_timeout(
    certs: Path, captured: Log
) -> None:
    # A listener that accepts and never answers: a handshake that takes long, as on an
    # orchestrator busy with a thousand registrations. The attempt must wait for the call's
    # deadline, not give up on the handshake within a fraction of a second (UNAVAILABLE).
    import socket

    from agentmesh.agent.board import SessionBoard
    from agentmesh.agent.registration import RegistrationKeeper, RegistrationTiming
    from agentmesh.models import AgentCard, Capability
    from agentmesh.security import CertFiles, IdentityKind
    from agentmesh.wire import card_to_proto

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    address = f"127.0.0.1:{silent.getsockname()[1]}"
    card = AgentCard(name="echo-1", endpoint="127.0.0.1:1", capabilities=(Capability(name="x"),))
    keeper = RegistrationKeeper(
        address,
        card_to_proto(card),
        CertFiles.of(certs, IdentityKind.AGENT, "echo-1"),
        SessionBoard(),
        structlog.get_logger(),
        RegistrationTiming(call_timeout=2.0),
    )
    try:
        async with keeper:
            registering = asyncio.create_task(keeper.register())
            (unreachable, *_) = await logged(captured, "registration.unreachable", address)
            registering.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await registering
    finally:
        silent.close()
    assert unreachable["code"] == "DEADLINE_EXCEEDED", unreachable

"""Registration: the agent registers with every orchestrator, keeps at it, and says goodbye."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.wire import card_from_proto
from tests.agent.agent_support import PATIENCE, FakeRegistry, Recorder
from tests.agent.conftest import Connect, OpenSession, StartAgent, free_port

StartRegistry = Callable[..., AbstractAsyncContextManager[Any]]


async def test_the_agent_registers_its_card_with_every_orchestrator(
    recorder: Recorder, start_agent: StartAgent, start_registry: StartRegistry
) -> None:
    async with (
        start_registry(FakeRegistry()) as (first, first_address),
        start_registry(FakeRegistry()) as (second, second_address),
        start_agent(
            recorder, orchestrators=[first_address, second_address], session_wait_seconds=30
        ) as server,
    ):
        for registry in (first, second):
            await registry.wait_until(lambda r=registry: len(r.registrations) == 1)

    for registry in (first, second):
        identity, request = registry.registrations[0]
        assert identity == "spiffe://agentmesh.local/agent/recorder"
        assert card_from_proto(request.card) == server.card


async def test_the_agent_serves_while_the_orchestrator_is_down_and_registers_once_it_is_up(
    recorder: Recorder, start_agent: StartAgent, start_registry: StartRegistry, connect: Connect
) -> None:
    port = free_port()
    async with start_agent(
        recorder, orchestrators=[f"localhost:{port}"], session_wait_seconds=30
    ) as server:
        async with connect(server) as stub:
            card = await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)
        assert card.name == "recorder"
        await asyncio.sleep(0.5)  # several failed attempts by now
        async with start_registry(FakeRegistry(), listen=f"127.0.0.1:{port}") as (registry, _):
            await registry.wait_until(lambda: len(registry.registrations) >= 1)


async def test_without_a_session_the_agent_registers_again(
    recorder: Recorder, start_agent: StartAgent, start_registry: StartRegistry
) -> None:
    async with (
        start_registry(FakeRegistry()) as (registry, address),
        start_agent(recorder, orchestrators=[address], session_wait_seconds=0.2),
    ):
        await registry.wait_until(lambda: len(registry.registrations) >= 3)


async def test_an_ended_session_makes_the_agent_register_again(
    recorder: Recorder,
    start_agent: StartAgent,
    start_registry: StartRegistry,
    open_session: OpenSession,
) -> None:
    async with (
        start_registry(FakeRegistry()) as (registry, address),
        start_agent(recorder, orchestrators=[address], session_wait_seconds=30) as server,
    ):
        await registry.wait_until(lambda: len(registry.registrations) == 1)
        async with open_session(server) as session:
            assert (await session.ping(1)).nonce == 1
            await asyncio.sleep(0.2)
            assert len(registry.registrations) == 1  # an open session keeps it registered
        await registry.wait_until(lambda: len(registry.registrations) == 2)


async def test_a_refused_registration_is_retried_slowly(
    recorder: Recorder, start_agent: StartAgent, start_registry: StartRegistry
) -> None:
    refusing = FakeRegistry(refuse=grpc.StatusCode.PERMISSION_DENIED)
    async with (
        start_registry(refusing) as (registry, address),
        start_agent(recorder, orchestrators=[address], register_retry_seconds=1.0),
    ):
        await registry.wait_until(lambda: len(registry.registrations) == 2)

    first, second = registry.registered_at[:2]
    # Unreachable-style backoff would have retried after 0.1-0.2 s.
    assert second - first >= 0.8


async def test_draining_deregisters_from_every_orchestrator(
    recorder: Recorder, start_agent: StartAgent, start_registry: StartRegistry
) -> None:
    async with (
        start_registry(FakeRegistry()) as (first, first_address),
        start_registry(FakeRegistry()) as (second, second_address),
    ):
        async with start_agent(recorder, orchestrators=[first_address, second_address]) as server:
            await first.wait_until(lambda: len(first.registrations) >= 1)
            await server.drain()
            registrations = len(first.registrations)
        await asyncio.sleep(0.3)

    agent = "spiffe://agentmesh.local/agent/recorder"
    assert first.deregistrations == second.deregistrations == [(agent, "recorder")]
    assert len(first.registrations) == registrations  # no re-registering after the drain

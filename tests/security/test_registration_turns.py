"""Registrations take turns: a few run at once, the rest wait without costing anything, and
one whose deadline would pass while it waits is told when to come back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import structlog
from structlog.testing import capture_logs

from agentmesh.agent.board import SessionBoard
from agentmesh.agent.registration import RegistrationKeeper, RegistrationTiming
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator, metrics
from agentmesh.orchestrator.api import servicers
from agentmesh.security import CertFiles, IdentityKind
from tests.security.helpers import RawAgent, echo, refusal
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually


def _waiting() -> float:
    return metrics.REGISTRY.get_sample_value("agentmesh_registrations_waiting") or 0.0


async def _now(value: float) -> float:
    return value


async def test_a_registration_beyond_the_limit_waits_until_one_ahead_of_it_ends(
    settings: Settings, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicers, "MAX_REGISTERING", 1)  # read when the orchestrator starts
    # Patient with the agent that does not answer yet: the test decides when it does.
    patient = settings.model_copy(update={"agent_timeout_seconds": 60.0})
    async with (
        Orchestrator(patient) as orchestrator,
        RawAgent(certs, "echo-1", echo) as slow,
        RawAgent(certs, "echo-2", echo) as quick,
    ):
        slow.answering.clear()  # its Session opens, its first Pong waits: its turn goes on
        first = asyncio.create_task(slow.register(orchestrator))
        await eventually(lambda: _now(slow.open_sessions), lambda n: n == 1)
        second = asyncio.create_task(quick.register(orchestrator))
        await eventually(lambda: _now(_waiting()), lambda n: n == 1)
        assert not first.done()
        assert quick.sessions == 0  # not dialled: it waits for its turn
        slow.answering.set()
        await first
        await second
        assert _waiting() == 0
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1", "echo-2")


async def test_a_registration_whose_deadline_would_pass_waiting_is_told_when_to_come_back(
    settings: Settings, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicers, "MAX_REGISTERING", 1)
    patient = settings.model_copy(update={"agent_timeout_seconds": 60.0})
    async with (
        Orchestrator(patient) as orchestrator,
        RawAgent(certs, "echo-1", echo) as slow,
        RawAgent(certs, "echo-2", echo) as hurried,
    ):
        slow.answering.clear()  # its turn goes on until the test lets it end
        first = asyncio.create_task(slow.register(orchestrator))
        await eventually(lambda: _now(slow.open_sessions), lambda n: n == 1)
        # Told before its own deadline: the error is RESOURCE_EXHAUSTED, not DEADLINE_EXCEEDED.
        error = await refusal(hurried.register(orchestrator, call_timeout=4))
        slow.answering.set()
        await first
        assert _waiting() == 0

    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error.details() or ""
    assert details.startswith("too many registrations at once (1 waiting, 1 at a time): come")
    hint = dict(error.trailing_metadata() or ())["agentmesh-retry-after-ms"]
    assert f"come back in {int(hint) / 1000:.1f} s" in details
    assert 0 < int(hint) <= 30_000


async def test_an_sdk_agent_told_to_come_back_registers_when_its_turn_comes(
    settings: Settings, certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(servicers, "MAX_REGISTERING", 1)
    patient = settings.model_copy(update={"agent_timeout_seconds": 60.0})
    # A refusal would mean ten minutes' pause: only the orchestrator's hint brings it back.
    timing = RegistrationTiming(call_timeout=3.0, refused_retry=600.0)
    with capture_logs() as captured:
        async with (
            Orchestrator(patient) as orchestrator,
            RawAgent(certs, "echo-1", echo) as slow,
            RawAgent(certs, "echo-2", echo) as endpoint,
        ):
            slow.answering.clear()
            first = asyncio.create_task(slow.register(orchestrator))
            await eventually(lambda: _now(slow.open_sessions), lambda n: n == 1)
            keeper = RegistrationKeeper(
                f"localhost:{orchestrator.port}",
                endpoint.card(),
                CertFiles.of(certs, IdentityKind.AGENT, "echo-2"),
                SessionBoard(),
                structlog.get_logger(),
                timing,
            )
            async with keeper:
                registering = asyncio.create_task(keeper.register())
                await eventually(
                    lambda: _now([e for e in captured if e["event"] == "registration.busy"]),
                    bool,
                )
                slow.answering.set()
                await first
                async with asyncio.timeout(60):
                    answer = await registering

    assert answer.identity == "spiffe://agentmesh.test/agent/echo-2"
    (busy, *_) = [e for e in captured if e["event"] == "registration.busy"]
    assert busy["code"] == "RESOURCE_EXHAUSTED"
    assert "come back in" in busy["reason"]
    assert not [e for e in captured if e["event"] == "registration.refused"]

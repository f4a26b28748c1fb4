"""Registrations take turns: a few run at once, the rest wait without costing anything."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator, metrics
from agentmesh.orchestrator.api import servicers
from tests.security.helpers import RawAgent, echo
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

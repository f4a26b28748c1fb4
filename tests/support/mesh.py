"""Helpers to talk to a test orchestrator as a given identity."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agentmesh.client import Client
from agentmesh.errors import ValidationError
from agentmesh.models import AgentStatus, Plan
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.api.servicers import OrchestratorServicer
from agentmesh.security import IdentityKind
from tests.support.waiting import eventually


def client(
    orchestrator: Orchestrator, certs: Path, name: str = "alice", **kw: IdentityKind
) -> Client:
    """A client of ``orchestrator`` holding the certificate ``client/<name>``."""
    return Client(f"localhost:{orchestrator.port}", certs, name, **kw)


async def wait_for_agents(client: Client, *names: str, within: float = 20) -> list[AgentStatus]:
    """Wait until every named agent is in ListAgents; return the list."""

    async def listed() -> list[AgentStatus]:
        return await client.list_agents()

    return await eventually(
        listed, lambda agents: set(names) <= {a.card.name for a in agents}, within=within
    )


async def wait_for_agent_gone(client: Client, name: str, within: float = 10) -> None:
    """Wait until the named agent has left ListAgents."""

    async def listed() -> list[AgentStatus]:
        return await client.list_agents()

    await eventually(
        listed, lambda agents: name not in {a.card.name for a in agents}, within=within
    )


async def submit_when_offered(client: Client, plan: Plan, within: float = 30) -> str:
    """Submit ``plan`` once the replica ``client`` talks to has the agents it needs.

    With Redis, ListAgents on a replica lists the agents of the whole mesh, so having waited
    for them there does not mean they have registered with this replica yet; a replica plans
    only with its own, and refuses a capability none of them offers (for the moment).
    """

    async def submitted() -> str:
        try:
            return await client.submit(plan=plan)
        except ValidationError as exc:
            if "unknown capability" not in str(exc):
                raise
            return ""

    return await eventually(submitted, bool, within=within)


def unserve(monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """Make the orchestrator's server-streaming ``method`` answer UNIMPLEMENTED, as gRPC does
    for a method a server does not serve (one built from older protos). Call it before the
    orchestrator starts: gRPC binds its methods then."""

    async def unimplemented(
        self: object, request: object, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[object]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield  # an async generator, as gRPC expects of a server-streaming method

    monkeypatch.setattr(OrchestratorServicer, method, unimplemented)

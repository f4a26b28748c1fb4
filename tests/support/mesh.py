"""Helpers to talk to a test orchestrator as a given identity."""

from __future__ import annotations

from pathlib import Path

from agentmesh.client import Client
from agentmesh.models import AgentStatus
from agentmesh.orchestrator import Orchestrator
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

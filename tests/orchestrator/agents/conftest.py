"""An in-process Registry with in-process agents, for the slot tests.

The waiter queue lives inside :class:`Registry` (it needs live links to grant), so the
narrowest real seam is a Registry on its own Store and memory Cache, with agents served
in this process over mTLS: no orchestrator, no subprocess, nothing mocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.config import Settings
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.store import Store
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from tests.support.agents import FaultyAgent

#: Serves an agent (one of the mesh's AGENT_NAMES) with a concurrency and registers it.
ServeAgent = Callable[[str, int], AbstractAsyncContextManager[AgentServer]]


@pytest.fixture
async def registry(settings: Settings, certs: Path) -> AsyncIterator[Registry]:
    """A Registry on a fresh SQLite store and the in-memory cache; no agents yet."""
    files = CertFiles.of(certs, IdentityKind.ORCHESTRATOR, "orchestrator")
    async with (
        Store(settings.database_url) as store,
        Cache(None, default_ttl=settings.cache_ttl_seconds) as cache,
        Registry(store, cache, settings, channel_credentials(files)) as running,
    ):
        yield running


@pytest.fixture
def serve_agent(registry: Registry, certs: Path) -> ServeAgent:
    """Serves ``FaultyAgent`` as ``name`` with ``max_concurrency`` slots, registered."""

    @asynccontextmanager
    async def serve(name: str, max_concurrency: int) -> AsyncIterator[AgentServer]:
        agent = FaultyAgent()
        agent.max_concurrency = max_concurrency  # type: ignore[misc]
        # Nothing listens on localhost:1: the agent's own registration never lands, so
        # the only registration is the one this fixture makes.
        config = AgentSettings(
            certs_dir=certs, name=name, orchestrators=["localhost:1"], drain_timeout_seconds=1
        )
        async with AgentServer(agent, config) as server:
            await registry.register(server.card, f"spiffe://agentmesh.test/agent/{name}")
            yield server

    return serve

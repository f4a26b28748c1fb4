"""Fixtures of the agent SDK tests: a CA in tmp_path, in-process agent servers, sessions and
orchestrators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, MutableMapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
import structlog

from agentmesh._proto.agentmesh.v1 import agent_pb2_grpc
from agentmesh.agent import Agent, AgentServer, AgentSettings
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import (
    CertFiles,
    IdentityKind,
    channel_credentials,
    create_ca,
    issue,
)
from tests.agent.agent_support import Recorder, SessionClient

TRUST_DOMAIN = "agentmesh.local"

StartAgent = Callable[..., AbstractAsyncContextManager[AgentServer]]
Connect = Callable[..., AbstractAsyncContextManager[Any]]
OpenSession = Callable[..., AbstractAsyncContextManager[SessionClient]]
StartOrchestrator = Callable[..., AbstractAsyncContextManager[Orchestrator]]
MeshClient = Callable[[Orchestrator], Client]
#: Captured structlog entries.
Log = list[MutableMapping[str, Any]]


@pytest.fixture
def mesh_certs(tmp_path: Path) -> Path:
    """A fresh mesh CA in tmp_path with an orchestrator certificate."""
    folder = tmp_path / "certs"
    create_ca(folder, TRUST_DOMAIN)
    issue(folder, IdentityKind.ORCHESTRATOR, "orchestrator")
    return folder


def certificate(certs: Path, kind: IdentityKind | str, name: str) -> CertFiles:
    """The certificate of ``kind``/``name``, issued on first use."""
    files = CertFiles.of(certs, kind, name)
    return files if files.exists() else issue(certs, kind, name)


@pytest.fixture
def start_agent(mesh_certs: Path) -> StartAgent:
    """Serves an agent in-process; orchestrators default to an unreachable address."""

    @asynccontextmanager
    async def start(agent: Agent, **settings: Any) -> AsyncIterator[AgentServer]:
        settings.setdefault("orchestrators", ["localhost:1"])
        settings.setdefault("drain_timeout_seconds", 1.0)
        config = AgentSettings(certs_dir=mesh_certs, **settings)
        certificate(mesh_certs, IdentityKind.AGENT, config.name or agent.name)
        async with AgentServer(agent, config) as server:
            yield server

    return start


@pytest.fixture
def open_channel(mesh_certs: Path) -> Callable[..., AbstractAsyncContextManager[grpc.aio.Channel]]:
    """Opens an mTLS channel to a server under the identity ``kind``/``name``."""

    @asynccontextmanager
    async def open_one(
        server: AgentServer | str, kind: str = "orchestrator", name: str = "orchestrator"
    ) -> AsyncIterator[grpc.aio.Channel]:
        target = server if isinstance(server, str) else server.endpoint
        credentials = channel_credentials(certificate(mesh_certs, kind, name))
        async with grpc.aio.secure_channel(target, credentials) as channel:
            yield channel

    return open_one


@pytest.fixture
def connect(open_channel: Callable[..., AbstractAsyncContextManager[grpc.aio.Channel]]) -> Connect:
    """Opens an Agent stub to a server under the identity ``kind``/``name``."""

    @asynccontextmanager
    async def open_stub(server: AgentServer | str, *identity: str) -> AsyncIterator[Any]:
        async with open_channel(server, *identity) as channel:
            yield agent_pb2_grpc.AgentStub(channel)

    return open_stub


@pytest.fixture
def open_session(connect: Connect) -> OpenSession:
    """Opens a Session on a server as the orchestrator; cancels it on the way out."""

    @asynccontextmanager
    async def open_one(server: AgentServer | str) -> AsyncIterator[SessionClient]:
        async with connect(server) as stub:
            call = stub.Session()
            try:
                yield SessionClient(call)
            finally:
                call.cancel()

    return open_one


@pytest.fixture
def recorder() -> Recorder:
    """A fresh test agent."""
    return Recorder()


@pytest.fixture
async def server(recorder: Recorder, start_agent: StartAgent) -> AsyncIterator[AgentServer]:
    """The recorder agent, serving."""
    async with start_agent(recorder) as running:
        yield running


@pytest.fixture
async def session(server: AgentServer, open_session: OpenSession) -> AsyncIterator[SessionClient]:
    """An orchestrator's Session with the recorder agent."""
    async with open_session(server) as client:
        yield client


@pytest.fixture
def start_orchestrator(mesh_certs: Path, tmp_path: Path) -> StartOrchestrator:
    """Serves a real orchestrator of the mesh in-process; each ``database`` is its own SQLite file.

    ``port`` 0 picks a free one; further keyword arguments are :class:`Settings` fields.
    """

    @asynccontextmanager
    async def start(
        *, port: int = 0, database: str = "mesh", **settings: Any
    ) -> AsyncIterator[Orchestrator]:
        config = Settings(
            listen=f"127.0.0.1:{port}",
            certs_dir=mesh_certs,
            database_url=f"sqlite+aiosqlite:///{tmp_path / database}.db",
            redis_url="",
            ping_interval_seconds=0.3,
            agent_timeout_seconds=1.5,
            **settings,
        )
        async with Orchestrator(config) as orchestrator:
            yield orchestrator

    return start


@pytest.fixture
def mesh_client(mesh_certs: Path) -> MeshClient:
    """A Client of an orchestrator holding the mesh's certificate ``client/alice``."""
    certificate(mesh_certs, IdentityKind.CLIENT, "alice")

    def open_one(orchestrator: Orchestrator) -> Client:
        return Client(address_of(orchestrator), mesh_certs, "alice")

    return open_one


def address_of(orchestrator: Orchestrator) -> str:
    """Where agents reach ``orchestrator`` (the name its certificate is issued for)."""
    return f"localhost:{orchestrator.port}"


@pytest.fixture
def captured() -> Iterator[Log]:
    """Every structlog entry logged during the test (as dicts)."""
    with structlog.testing.capture_logs() as entries:
        yield entries

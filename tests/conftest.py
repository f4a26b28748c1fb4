"""Fixtures shared by every test: a mesh CA, databases, orchestrators and agent processes."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.config import Settings
from agentmesh.security import IdentityKind, create_ca, issue
from tests.support.chat import ChatServer
from tests.support.network import free_port
from tests.support.processes import AgentProcesses
from tests.support.redis_server import RedisServer

if TYPE_CHECKING:
    from agentmesh.orchestrator import Orchestrator

#: Fixtures kept beside their helpers: the TypeScript reference agent (``node_agent``).
pytest_plugins = ["tests.support.node"]

POSTGRES_URL = os.environ.get(
    "AGENTMESH_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AGENTMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: The trust domain of the test mesh's CA (and so of every orchestrator's settings).
TRUST_DOMAIN = "agentmesh.test"

#: Fixtures that start real processes (agent subprocesses, ``agentmesh serve`` subprocesses,
#: private redis-servers). A test whose fixture closure holds one is in the slow tier; modules
#: that start processes themselves say so with ``pytestmark = pytest.mark.slow``.
PROCESS_FIXTURES = frozenset(
    {
        "agents",  # AgentProcesses (tests/support/processes.py); Supervisor restarts these
        "redis_server",  # RedisServer (tests/support/redis_server.py)
        "splitter_process",  # an agent subprocess drained by signal (tests/agent/test_drain.py)
    }
)

#: Identities every test mesh has certificates for.
AGENT_NAMES = (
    *("splitter", "analyst-1", "analyst-2", "writer", "echo-1", "echo-2", "flaky", "slow"),
    *("data", "llm", "code-runner", "maths"),
)


def pytest_configure(config: pytest.Config) -> None:
    """With xdist workers, tell scripts/test.sh's subprocess-coverage hook to skip them.

    The hook starts coverage in every Python process but pytest's own (the one whose parent
    is ``AGENTMESH_COVERAGE_PYTEST_PARENT``): pytest-cov traces that one, and with xdist the
    workers too, so from here on the parent to skip is this process. Processes the workers
    start (agents, orchestrators) are still traced by the hook.
    """
    if (
        getattr(config.option, "numprocesses", None)
        and "PYTEST_XDIST_WORKER" not in os.environ
        and os.environ.get("AGENTMESH_COVERAGE_PYTEST_PARENT")
    ):
        os.environ["AGENTMESH_COVERAGE_PYTEST_PARENT"] = str(os.getpid())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put every test that needs a process-starting fixture in the slow tier."""
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mesh CA with an orchestrator, clients alice and bob, an admin and the test agents."""
    folder = tmp_path_factory.mktemp("certs")
    create_ca(folder, TRUST_DOMAIN)
    issue(folder, IdentityKind.ORCHESTRATOR, "orchestrator")
    issue(folder, IdentityKind.CLIENT, "alice")
    issue(folder, IdentityKind.CLIENT, "bob")
    issue(folder, IdentityKind.ADMIN, "root")
    for name in AGENT_NAMES:
        issue(folder, IdentityKind.AGENT, name)
    return folder


async def _fresh_postgres_schema() -> str:
    """A new empty schema in the test database; returns a URL whose connections use it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_async_engine(POSTGRES_URL)
    async with engine.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await engine.dispose()
    return schema


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """Settings of a fresh database; a test using this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
        return
    async with _postgres_schema() as settings:
        yield settings


@pytest.fixture
async def postgres_database() -> AsyncIterator[dict[str, str]]:
    """Settings of a fresh PostgreSQL schema (for what SQLite cannot do, e.g. replicas)."""
    async with _postgres_schema() as settings:
        yield settings


@contextlib.asynccontextmanager
async def _postgres_schema() -> AsyncIterator[dict[str, str]]:
    schema = await _fresh_postgres_schema()
    try:
        yield {"database_url": POSTGRES_URL, "database_schema": schema}
    finally:
        engine = create_async_engine(POSTGRES_URL)
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await engine.dispose()


@pytest.fixture
def settings(certs: Path, tmp_path: Path) -> Settings:
    """Orchestrator settings on an ephemeral port, a SQLite file and the in-memory cache."""
    return Settings(
        listen="127.0.0.1:0",
        certs_dir=certs,
        trust_domain=TRUST_DOMAIN,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}",
        redis_url="",
        ping_interval_seconds=0.3,
        agent_timeout_seconds=1.5,
    )


@pytest.fixture
async def orchestrator(settings: Settings) -> AsyncIterator[Orchestrator]:
    """A running orchestrator."""
    from agentmesh.orchestrator import Orchestrator

    async with Orchestrator(settings) as running:
        yield running


@pytest.fixture
async def agents(certs: Path, tmp_path: Path) -> AsyncIterator[AgentProcesses]:
    """Starts agent processes on demand; stops every one at the end of the test."""
    processes = AgentProcesses(certs, tmp_path / "agent-logs")
    try:
        yield processes
    finally:
        await processes.aclose()


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A running redis-server of the test's own on a free port, which the test may kill and
    restart; killed afterwards. (The cache tests' fixture of this name is not started.)"""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed")
    server = RedisServer(free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


@pytest.fixture
async def chat_server() -> AsyncIterator[ChatServer]:
    """A scripted OpenAI-compatible chat-completions server on an ephemeral port."""
    async with ChatServer() as server:
        yield server

"""The ``agentmesh`` command against a real orchestrator over mTLS, in this process.

Commands run through typer's CliRunner in a worker thread (each command starts its own
event loop, as it does from a shell) while the orchestrator and an in-process agent serve
on this test's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from typer.testing import CliRunner, Result

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.cli import app
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator
from tests.support.agents import FaultyAgent
from tests.support.mesh import client, wait_for_agents

#: Runs ``agentmesh ARGS...`` as alice of the test mesh; returns what it printed and exited.
Cli = Callable[..., Awaitable[Result]]


@dataclass
class Mesh:
    """An orchestrator with agent echo-1, and the command line to talk to it."""

    orchestrator: Orchestrator
    certs: Path
    cli: Cli


@pytest.fixture
def quiet_mesh(tmp_path: Path) -> Iterator[Path]:
    """The mesh's own logs into a file: CliRunner captures this process's stdout, where
    they would mix with what a command prints."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    path = tmp_path / "mesh.log"
    with path.open("w") as stream:
        configure_logging("info", json=True, stream=stream)
        try:
            yield path
        finally:
            structlog.configure(**saved)
            root.handlers[:], root.level = handlers, level


@pytest.fixture
async def mesh(quiet_mesh: Path, orchestrator: Orchestrator, certs: Path) -> AsyncIterator[Mesh]:
    """An orchestrator, the in-process agent echo-1 registered with it, and ``cli``."""
    address = f"localhost:{orchestrator.port}"
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[address], drain_timeout_seconds=1
    )
    runner = CliRunner()

    async def cli(*args: str, name: str = "alice") -> Result:
        connection = ["--address", address, "--certs-dir", str(certs), "--name", name]
        return await asyncio.to_thread(
            runner.invoke, app, [*args, *connection], env={"COLUMNS": "200"}
        )

    async with AgentServer(FaultyAgent(), config):
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")
        yield Mesh(orchestrator, certs, cli)

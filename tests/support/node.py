"""The TypeScript SDK's reference agent (``sdks/typescript/examples/shouter.js``) as real
``node`` processes of a test."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.security import IdentityKind, issue

SDK = Path(__file__).resolve().parents[2] / "sdks" / "typescript"


class NodeAgent:
    """The reference agent as ``node`` processes of one test; SIGTERM for each at the end."""

    def __init__(self, node: str, certs: Path, log: Path) -> None:
        self._node = node
        self._certs = certs
        self.log = log
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, orchestrator: str) -> subprocess.Popen[bytes]:
        """Run ``examples/shouter.js`` (agent ``shouter-js``) registering with ``orchestrator``."""
        with self.log.open("ab") as out:
            process = subprocess.Popen(
                [self._node, str(SDK / "examples" / "shouter.js")],
                env={
                    **os.environ,
                    "AGENTMESH_AGENT_ORCHESTRATORS": orchestrator,
                    "AGENTMESH_AGENT_CERTS_DIR": str(self._certs),
                },
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        """SIGTERM (the agent drains and deregisters), then SIGKILL if it lingers."""
        for process in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@pytest.fixture
async def node_agent(certs: Path, tmp_path: Path) -> AsyncIterator[NodeAgent]:
    """The TypeScript SDK's reference agent, started on demand."""
    node = shutil.which("node")
    # Not a skip: CI installs Node (scripts/test.sh) and must run this test.
    assert node, "node is not installed: bash scripts/test.sh installs nodejs and npm"
    assert (SDK / "node_modules").is_dir(), "run `npm ci` in sdks/typescript (scripts/test.sh does)"
    issue(certs, IdentityKind.AGENT, "shouter-js")
    agent = NodeAgent(node, certs, tmp_path / "shouter-js.log")
    try:
        yield agent
    finally:
        # Off the event loop, as AgentProcesses does: an orchestrator in this process must
        # answer the agents' goodbyes while they stop.
        await asyncio.to_thread(agent.stop_all)

"""An agent process picks up a rotated client certificate without a restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography import x509

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind, issue
from agentmesh.security.revocation import revoke
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow


def _serial(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


async def test_a_rotated_agent_certificate_is_used_for_the_next_registration(
    secure_settings: Settings,
    certs: Path,
    tmp_path: Path,
    revocation_file: Path,
    unused_tcp_port: int,
) -> None:
    # The agent gets a certificates folder of its own, so rotating it leaves the fixture alone.
    agent_certs = tmp_path / "agent-certs"
    shutil.copytree(certs, agent_certs)
    agents = AgentProcesses(agent_certs, tmp_path / "logs")
    settings = secure_settings.model_copy(update={"listen": f"127.0.0.1:{unused_tcp_port}"})
    address = f"localhost:{unused_tcp_port}"
    try:
        async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
            agents.start("tests.support.agents", "echo-1", [address])
            await wait_for_agents(alice, "echo-1")
        # While the orchestrator is down: rotate the agent's certificate, revoke the old one.
        old = _serial(agent_certs / "agent" / "echo-1.pem")
        issue(agent_certs, IdentityKind.AGENT, "echo-1")
        assert _serial(agent_certs / "agent" / "echo-1.pem") != old
        revoke(revocation_file, serials=[old])
        # The same agent process registers again, necessarily with its new certificate.
        async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1", within=30)
        assert "registration.certificate_rotated" in agents.log("echo-1")
    finally:
        await agents.aclose()

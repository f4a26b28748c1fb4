"""One task across languages: a step on a Python agent, the next on the TypeScript SDK's
reference agent (``sdks/typescript/examples/shouter.js``, a real ``node`` process), and a
result that combines both."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.models import Plan, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind, issue
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

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
def node_agent(certs: Path, tmp_path: Path) -> Iterator[NodeAgent]:
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
        agent.stop_all()


async def test_a_task_runs_across_a_python_agent_and_the_node_reference_agent(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, node_agent: NodeAgent
) -> None:
    address = f"localhost:{orchestrator.port}"
    agents.start("tests.support.agents", "echo-1", [address])
    node = node_agent.start(address)
    plan = Plan(
        steps=(
            StepSpec(id="py", capability="test.echo", input={"value": "${input.greeting}"}),
            StepSpec(
                id="js",
                capability="text.shout",
                input={"text": "${steps.py.output.value} from ${steps.py.output.agent}"},
            ),
        )
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1", "shouter-js", within=60)
        task_id = await alice.submit(plan=plan, input={"greeting": "hello"})

        async def current() -> TaskRecord:
            return await alice.get(task_id)

        task = await eventually(current, lambda t: t.state.final, within=60)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.result == {
        "py": {"value": "hello", "agent": "echo-1"},
        "js": {"text": "HELLO FROM ECHO-1!"},
    }
    assert task.steps["py"].agent == "echo-1"
    assert task.steps["js"].agent == "shouter-js"
    assert node.poll() is None, node_agent.log.read_text()

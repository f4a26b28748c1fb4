"""One task, five kinds of worker: a Python agent, the TypeScript SDK's reference agent, a
Celery task (through the Celery bridge and a real worker) and an external A2A agent (through
the A2A bridge); the task's result combines all of them (issue 13's "done when")."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.bridges.a2a import A2ABridge
from agentmesh.bridges.celery import CeleryRunner
from agentmesh.bridges.celery_file import CeleryBridgeFile
from agentmesh.models import Plan, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind
from tests.bridges.test_celery import CELERY_URL, bridge_file
from tests.support.a2a_server import a2a_server
from tests.support.agents import FaultyAgent
from tests.support.celery_app import CeleryWorker
from tests.support.mesh import client, wait_for_agents
from tests.support.node import NodeAgent

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[CeleryWorker]:
    running = CeleryWorker(CELERY_URL, f"interop-{uuid.uuid4().hex[:8]}", tmp_path / "w.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def test_one_task_combines_python_typescript_celery_and_a2a_workers(
    orchestrator: Orchestrator, certs: Path, node_agent: NodeAgent, worker: CeleryWorker
) -> None:
    address = f"localhost:{orchestrator.port}"

    def settings(name: str) -> AgentSettings:
        return AgentSettings(certs_dir=certs, name=name, orchestrators=[address])

    node_agent.start(address)
    celery = CeleryRunner(CeleryBridgeFile.model_validate(bridge_file(worker.queue, "flaky")))
    plan = Plan.model_validate(
        {
            "steps": [
                {"id": "python", "capability": "test.echo", "input": {"value": "${input.who}"}},
                {
                    "id": "typescript",
                    "capability": "text.shout",
                    "input": {"text": "hello ${steps.python.output.value}"},
                },
                {
                    "id": "celery",
                    "capability": "billing.total",
                    "input": {"amounts": "${input.amounts}"},
                },
                {
                    "id": "a2a",
                    "capability": "a2a.reverser.reverse",
                    "input": {"text": "${steps.typescript.output.text}"},
                },
            ],
            "aggregate": {"strategy": "collect"},
        }
    )
    verify = ssl.create_default_context(cafile=certs / "ca.pem")
    async with (
        a2a_server(CertFiles.of(certs, IdentityKind.AGENT, "slow")) as (url, _),
        A2ABridge([url], name="echo-2", verify=verify) as a2a,
        AgentServer(a2a.agent(), settings("echo-2")),
        AgentServer(celery.agent(), settings("flaky")),
        AgentServer(FaultyAgent(), settings("echo-1")),
        client(orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1", "echo-2", "flaky", "shouter-js", within=60)
        task_id = await alice.submit(plan=plan, input={"who": "mesh", "amounts": [2, 3]})
        _ = [event async for event in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert task.state is TaskState.SUCCEEDED, task.error
    assert {step: task.steps[step].agent for step in task.steps} == {
        "python": "echo-1",
        "typescript": "shouter-js",
        "celery": "flaky",
        "a2a": "echo-2",
    }
    assert task.result["python"]["value"] == "mesh"
    assert task.result["typescript"] == {"text": "HELLO MESH!"}
    assert task.result["celery"] == {"total": 5, "currency": "EUR"}
    assert task.result["a2a"]["text"] == "!HSEM OLLEH"

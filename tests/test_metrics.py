"""Prometheus metrics over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from agentmesh.config import Settings
from agentmesh.models import Plan, StepSpec
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses


async def test_metrics_endpoint_counts_tasks_attempts_and_agents(
    settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    configured = settings.model_copy(update={"metrics_listen": "127.0.0.1:0"})
    async with Orchestrator(configured) as orchestrator:
        agents.start("tests.support.agents", "echo-1", [f"localhost:{orchestrator.port}"])
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")
            plan = Plan(steps=(StepSpec(id="a", capability="test.echo", input={"value": 1}),))
            task_id = await alice.submit(plan=plan)
            _ = [e async for e in alice.watch(task_id)]
        async with httpx.AsyncClient() as http:
            page = (await http.get(f"http://127.0.0.1:{orchestrator.metrics_port}/metrics")).text
    assert 'agentmesh_tasks_total{state="succeeded"}' in page
    assert 'agentmesh_attempts_total{agent="echo-1",outcome="ok"}' in page
    assert "agentmesh_agents 1.0" in page
    assert "agentmesh_attempt_seconds_bucket" in page

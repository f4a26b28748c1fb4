"""Goals no workflow fits are delegated to an agent offering the ``plan`` capability."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.errors import ValidationError
from agentmesh.models import TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses


async def test_a_planning_agent_decomposes_a_goal_no_workflow_fits(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    agents.start("tests.support.planner", "echo-1", [f"localhost:{orchestrator.port}"])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal="zebra quantum marmalade")
        _ = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)
    assert task.state == TaskState.SUCCEEDED, task.error
    assert [s.spec.id for s in task.steps.values()] == ["w0", "w1", "w2"]
    result = task.result
    assert [result[f"w{i}"]["value"] for i in range(3)] == ["zebra", "quantum", "marmalade"]


async def test_without_a_planning_agent_an_unmatched_goal_is_invalid(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.submit(goal="zebra quantum marmalade")
    assert refused.value.field == "goal"
    assert "no agent offers 'plan'" in refused.value.message

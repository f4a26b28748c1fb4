"""One task across languages: a step on a Python agent, the next on the TypeScript SDK's
reference agent (``sdks/typescript/examples/shouter.js``, a real ``node`` process), and a
result that combines both."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.models import Plan, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.node import NodeAgent
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


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

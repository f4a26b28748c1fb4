"""Tasks given only a goal: planned from the workflow catalog, or by a model, then run on agents."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.errors import ValidationError
from agentmesh.examples import sample_document
from agentmesh.models import TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.agents import FaultyAgent
from tests.support.chat import ChatServer
from tests.support.events import watch_all
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

AGENT = "tests.support.agents"
#: Shares no word with any built-in workflow's description.
GREETING_GOAL = "Greet Ada loudly, twice"

GREETING_PLAN: dict[str, Any] = {
    "steps": [
        {"id": "greet", "capability": "test.echo", "input": {"value": "hello ${input.name}"}},
        {
            "id": "shout",
            "capability": "test.echo",
            "input": {"value": "${steps.greet.output.value}!!"},
        },
    ],
    "aggregate": {"strategy": "pick", "step": "shout"},
}
#: Names a capability no agent offers.
UNKNOWN_CAPABILITY_PLAN: dict[str, Any] = {
    "steps": [{"id": "greet", "capability": "test.shout", "input": {"value": "hello"}}]
}


async def finished(alice: Any, task_id: str) -> TaskRecord:
    """Watch the task to its final state; return it."""
    async with asyncio.timeout(20):
        await watch_all(alice, task_id)
    task: TaskRecord = await alice.get(task_id)
    return task


async def test_a_goal_alone_is_planned_from_the_catalog_and_runs_on_the_agents(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    address = f"localhost:{orchestrator.port}"
    agents.start("agentmesh.examples.splitter", "splitter", [address])
    agents.start("agentmesh.examples.analyst", "analyst-1", [address])
    agents.start("agentmesh.examples.writer", "writer", [address])
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "splitter", "analyst-1", "writer")
        task_id = await alice.submit(
            goal="Summarize this document into a short brief",
            input={"text": sample_document(), "title": "Solar"},
        )
        task = await finished(alice, task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    # document-brief, not publish-brief: nothing was published.
    assert [s.spec.id for s in task.steps.values()][:3] == ["split", "analyze", "summarize"]
    assert "publish" not in task.steps
    assert task.result["summary"].startswith("Solar")


async def test_a_goal_no_workflow_fits_is_refused_naming_the_goal(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        with pytest.raises(ValidationError) as refused:
            await alice.submit(goal="Bake a chocolate cake", input={"text": "flour"})
        listed = await alice.list_tasks()
    assert refused.value.field == "goal"
    assert "no workflow fits the goal" in refused.value.message
    assert list(listed.tasks) == []


async def test_a_goal_no_workflow_fits_is_planned_by_the_model_and_runs_on_the_agents(
    llm_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{llm_orchestrator.port}"])
    chat_server.answer(GREETING_PLAN)
    async with client(llm_orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GREETING_GOAL, input={"name": "Ada"})
        task = await finished(alice, task_id)

    assert task.state == TaskState.SUCCEEDED, task.error
    assert task.result == {"value": "hello Ada!!", "agent": "echo-1"}
    assert [s.agent for s in task.steps.values()] == ["echo-1", "echo-1"]
    (request,) = chat_server.requests
    system, user = request["json"]["messages"]
    # The model was shown what the live agents offer, and the goal with its input.
    assert '"name": "test.echo"' in system["content"]
    assert GREETING_GOAL in user["content"]
    assert '"name": "Ada"' in user["content"]


async def test_an_invalid_model_plan_is_repaired_in_one_round_and_runs(
    llm_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{llm_orchestrator.port}"])
    chat_server.answer(UNKNOWN_CAPABILITY_PLAN)
    chat_server.answer(GREETING_PLAN)
    async with client(llm_orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GREETING_GOAL, input={"name": "Ada"})
        task = await finished(alice, task_id)

    assert len(chat_server.requests) == 2
    repair = chat_server.messages(1)
    # The second request replays the bad answer and says what was wrong with it.
    assert repair[-2]["role"] == "assistant"
    assert "test.shout" in repair[-2]["content"]
    assert repair[-1]["role"] == "user"
    assert "test.shout" in repair[-1]["content"]
    assert task.state == TaskState.SUCCEEDED, task.error
    assert task.result["value"] == "hello Ada!!"


async def test_a_model_plan_still_invalid_after_the_repair_is_refused_naming_the_goal(
    llm_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path, agents: AgentProcesses
) -> None:
    agents.start(AGENT, "echo-1", [f"localhost:{llm_orchestrator.port}"])
    chat_server.answer(UNKNOWN_CAPABILITY_PLAN)
    chat_server.answer(UNKNOWN_CAPABILITY_PLAN)
    async with client(llm_orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        with pytest.raises(ValidationError) as refused:
            await alice.submit(goal=GREETING_GOAL, input={"name": "Ada"})
        listed = await alice.list_tasks()

    assert refused.value.field == "goal"
    details = refused.value.message
    assert "no valid plan after one repair" in details
    assert "test.shout" in details
    assert len(chat_server.requests) == 2
    assert list(listed.tasks) == []


async def test_every_goal_the_model_plans_goes_over_the_orchestrators_one_connection_pool(
    llm_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path
) -> None:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{llm_orchestrator.port}"]
    )
    chat_server.answer(GREETING_PLAN)
    chat_server.answer(GREETING_PLAN)
    async with AgentServer(FaultyAgent(), config), client(llm_orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1")
        for name in ("Ada", "Grace"):
            await alice.submit(goal=GREETING_GOAL, input={"name": name})

    # The planner was opened with the orchestrator: no plan dialed a connection of its own.
    assert [r["connection"] for r in chat_server.requests] == [1, 1]

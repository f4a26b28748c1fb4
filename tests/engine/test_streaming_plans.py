"""A model's plan streamed a step at a time: steps start before the plan is complete.

The model is a real local server streaming chat-completion chunks (tests/support/chat.py);
it holds the rest of its plan back until the test opens a gate, so what ran before the gate
ran before the planner's final chunk, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.errors import ValidationError
from agentmesh.models import EventKind, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.agents import FaultyAgent
from tests.support.chat import ChatServer
from tests.support.events import watch_all
from tests.support.mesh import client, wait_for_agents

GOAL = "Greet Ada loudly, twice"
GREET = {"id": "greet", "capability": "test.echo", "input": {"value": "hello ${input.name}"}}
SHOUT = {
    "id": "shout",
    "capability": "test.echo",
    "input": {"value": "${steps.greet.output.value}!!"},
}
PICK_SHOUT = {"aggregate": {"strategy": "pick", "step": "shout"}}


@pytest.fixture
async def streaming_orchestrator(
    settings: Settings, chat_server: ChatServer
) -> AsyncIterator[Orchestrator]:
    """An orchestrator whose model planner streams its plans (``llm_stream``)."""
    configured = settings.model_copy(
        update={
            "llm_base_url": chat_server.base_url,
            "llm_model": "test-model",
            "llm_stream": True,
        }
    )
    async with Orchestrator(configured) as running:
        yield running


async def _until(alice: Client, task_id: str, step: str, state: str) -> list[TaskEvent]:
    """The task's events up to the one where ``step`` enters ``state``."""
    seen: list[TaskEvent] = []
    async with asyncio.timeout(30):
        async for event in alice.watch(task_id):
            seen.append(event)
            if event.kind is EventKind.STEP_STATE and (event.step_id, event.state) == (
                step,
                state,
            ):
                return seen
    raise AssertionError(f"{step} never became {state}: {seen}")


async def _finished(alice: Client, task_id: str) -> Any:
    async with asyncio.timeout(30):
        await watch_all(alice, task_id)
    return await alice.get(task_id)


def _agent(orchestrator: Orchestrator, certs: Path) -> AgentServer:
    config = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    return AgentServer(FaultyAgent(), config)


async def test_the_first_step_starts_before_the_planner_sends_its_last_chunk(
    streaming_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path
) -> None:
    gate = asyncio.Event()
    reply = chat_server.stream(
        [json.dumps(GREET), json.dumps(SHOUT), json.dumps(PICK_SHOUT)], gate=gate, hold_at=1
    )
    async with (
        _agent(streaming_orchestrator, certs),
        client(streaming_orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GOAL, input={"name": "Ada"})
        await _until(alice, task_id, "greet", "succeeded")
        # The first step ran to the end while the model still held back the rest.
        assert not reply.final_sent
        assert reply.lines_sent == 1
        gate.set()
        task = await _finished(alice, task_id)

    assert task.state is TaskState.SUCCEEDED, task.error
    assert list(task.steps) == ["greet", "shout"]
    assert task.result["value"] == "hello Ada!!"
    assert reply.final_sent
    body = chat_server.requests[0]["json"]
    assert body["stream"] is True
    assert "one JSON object per line" in body["messages"][0]["content"]


async def test_a_streamed_step_that_breaks_the_plan_fails_the_task_and_rolls_back(
    streaming_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path, tmp_path: Path
) -> None:
    log = tmp_path / "records.log"
    record = {
        "id": "record",
        "capability": "test.record",
        "input": {"log": str(log), "entry": "one"},
        "compensation": "test.undo",
    }
    # References a step the model never planned (or plans later): invalid where it stands.
    broken = {
        "id": "broken",
        "capability": "test.echo",
        "input": {"value": "${steps.later.output}"},
    }
    gate = asyncio.Event()
    chat_server.stream([json.dumps(record), json.dumps(broken)], gate=gate, hold_at=1)
    async with (
        _agent(streaming_orchestrator, certs),
        client(streaming_orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GOAL, input={"name": "Ada"})
        await _until(alice, task_id, "record", "succeeded")
        gate.set()
        task = await _finished(alice, task_id)

    assert task.state is TaskState.ROLLED_BACK
    assert "planning failed" in task.error
    assert "plan.steps[1]" in task.error
    assert "no step 'later'" in task.error
    assert "broken" not in task.steps
    # The step that ran before the plan broke was compensated.
    assert log.read_text().splitlines() == ["do one", "undo one"]


async def test_an_invalid_first_streamed_step_refuses_the_submission(
    streaming_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path
) -> None:
    unknown = {"id": "greet", "capability": "test.shout", "input": {"value": "hi"}}
    chat_server.stream([json.dumps(unknown)])
    async with (
        _agent(streaming_orchestrator, certs),
        client(streaming_orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        with pytest.raises(ValidationError) as refused:
            await alice.submit(goal=GOAL, input={"name": "Ada"})
        listed = await alice.list_tasks()
    assert refused.value.field == "goal"
    assert "test.shout" in refused.value.message
    assert list(listed.tasks) == []


async def test_a_model_that_answers_one_plan_object_is_followed_all_the_same(
    streaming_orchestrator: Orchestrator, chat_server: ChatServer, certs: Path
) -> None:
    whole = {"steps": [GREET, SHOUT], **PICK_SHOUT}
    chat_server.stream(json.dumps(whole, indent=1).splitlines())
    async with (
        _agent(streaming_orchestrator, certs),
        client(streaming_orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GOAL, input={"name": "Ada"})
        task = await _finished(alice, task_id)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.result["value"] == "hello Ada!!"


async def test_a_task_whose_plan_was_still_streaming_when_the_orchestrator_stopped_fails_cleanly(
    settings: Settings, chat_server: ChatServer, certs: Path, tmp_path: Path
) -> None:
    log = tmp_path / "records.log"
    record = {
        "id": "record",
        "capability": "test.record",
        "input": {"log": str(log), "entry": "one"},
        "compensation": "test.undo",
    }
    gate = asyncio.Event()  # never opened: the rest of the plan is lost with the stop
    chat_server.stream([json.dumps(record), json.dumps(SHOUT)], gate=gate, hold_at=1)
    configured = settings.model_copy(
        update={"llm_base_url": chat_server.base_url, "llm_model": "m", "llm_stream": True}
    )
    async with (
        Orchestrator(configured) as first,
        _agent(first, certs),
        client(first, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(goal=GOAL, input={"name": "Ada"})
        await _until(alice, task_id, "record", "succeeded")
    async with (
        Orchestrator(configured) as second,
        _agent(second, certs),
        client(second, certs) as alice,
    ):
        task = await _finished(alice, task_id)

    assert task.state is TaskState.ROLLED_BACK
    assert "planning was interrupted" in task.error
    assert log.read_text().splitlines() == ["do one", "undo one"]

"""A2A in: the a2a-sdk's own client talks to the mesh over HTTPS (certificates and tokens)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_data_parts, new_data_part
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from tests.orchestrator.http.conftest import Https, tls
from tests.security.helpers import RawAgent, hang
from tests.support.waiting import eventually

A2AClient = Callable[..., contextlib.AbstractAsyncContextManager[Client]]

#: A catalog workflow that asks its owner before it echoes the answer.
ASK_THEN_ECHO = """
name: ask-then-echo
description: Ask the owner for a value, then echo it.
steps:
  - id: ask
    kind: input
    human_input:
      prompt: Which value shall I echo?
      answer_schema:
        type: object
        required: [value]
        properties: {value: {type: string}}
  - id: echo
    capability: test.echo
    input: {value: "${steps.ask.output.value}"}
aggregate: {strategy: pick, step: echo, field: value}
"""

#: Echo once, then ask, then echo the answer: the first turn sees ``before`` run.
ECHO_ASK_ECHO = """
name: echo-ask-echo
description: Echo, ask the owner for a value, then echo it.
steps:
  - id: before
    capability: test.echo
    input: {value: first}
  - id: ask
    kind: input
    needs: [before]
    human_input:
      prompt: Which value shall I echo?
      answer_schema:
        type: object
        required: [value]
        properties: {value: {type: string}}
  - id: echo
    capability: test.echo
    input: {value: "${steps.ask.output.value}"}
aggregate: {strategy: pick, step: echo, field: value}
"""


@pytest.fixture
def http_settings(http_settings: Settings, tmp_path: Path) -> Settings:
    """The HTTP API's settings with a catalog folder holding ``ask-then-echo``."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "ask-then-echo.yaml").write_text(ASK_THEN_ECHO)
    (folder / "echo-ask-echo.yaml").write_text(ECHO_ASK_ECHO)
    return http_settings.model_copy(update={"workflows_dir": folder})


@pytest.fixture
def a2a(http_mesh: Orchestrator, certs: Path) -> A2AClient:
    """``async with a2a("alice") as client``: the a2a-sdk client, from the mesh's card."""

    @contextlib.asynccontextmanager
    async def open_client(
        name: str | None = "alice", *, token: str = "", streaming: bool = True
    ) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kind = "client" if name else None
        async with httpx.AsyncClient(
            verify=tls(certs, kind, name), headers=headers, timeout=30
        ) as http:
            factory = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http))
            client = await factory.create_from_url(f"https://localhost:{http_mesh.http_port}")
            try:
                yield client
            finally:
                await client.close()

    return open_client


def message(skill: str, data: dict[str, Any] | None = None, text: str = "") -> SendMessageRequest:
    parts = []
    if text:
        parts.append(Part(text=text))
    if data is not None:
        parts.append(new_data_part(data))
    sent = Message(message_id=f"m-{skill}-{id(parts)}", role=Role.ROLE_USER, parts=parts)
    sent.metadata.update({"skill": skill})
    return SendMessageRequest(message=sent)


async def _status(api: httpx.AsyncClient) -> int:
    return (await api.get("/v1/tasks")).status_code


async def collect(stream: AsyncIterator[StreamResponse]) -> list[StreamResponse]:
    return [response async for response in stream]


async def test_the_agent_card_is_public_and_lists_workflows_capabilities_and_schemes(
    https: Https, echo_agent: RawAgent
) -> None:
    async with https(None, None) as anonymous:
        answer = await anonymous.get("/.well-known/agent-card.json")

    assert answer.status_code == 200
    card = answer.json()
    skills = {skill["id"] for skill in card["skills"]}
    assert {"goal", "capability:test.echo"} <= skills
    assert any(s.startswith("workflow:") for s in skills)
    assert set(card["securitySchemes"]) == {"mtls", "bearer"}
    assert card["supportedInterfaces"][0]["url"].endswith("/a2a/")
    assert card["capabilities"]["streaming"] is True


async def test_a_streamed_message_runs_a_step_and_ends_completed_with_the_result(
    a2a: A2AClient, echo_agent: RawAgent
) -> None:
    async with a2a("alice") as client:
        responses = await collect(
            client.send_message(message("capability:test.echo", {"value": "hi"}))
        )
        task_id = responses[0].task.id
        got = await client.get_task(GetTaskRequest(id=task_id))
        listed = await client.list_tasks(ListTasksRequest())

    assert responses[0].HasField("task")
    final = responses[-1].status_update.status
    assert final.state == TaskState.TASK_STATE_COMPLETED
    assert got.status.state == TaskState.TASK_STATE_COMPLETED
    (artifact,) = got.artifacts
    assert get_data_parts(list(artifact.parts)) == [{"value": "hi"}]
    assert task_id in [t.id for t in listed.tasks]
    # Step progress went out as status updates while it ran.
    texts = [
        part.text
        for r in responses
        if r.HasField("status_update")
        for part in r.status_update.status.message.parts
    ]
    assert "a2a succeeded" in texts, texts


async def test_a_token_caller_gets_a_blocking_answer_and_a_resend_finds_the_same_task(
    a2a: A2AClient, https: Https, echo_agent: RawAgent, token_for: Callable[[str, str], str]
) -> None:
    token = token_for("client", "carol")
    request = message("capability:test.echo", {"value": 7})
    async with https(None, None, token=token) as api:
        await eventually(lambda: _status(api), lambda s: s == 200)  # the file is reloaded
    async with a2a(None, token=token, streaming=False) as client:
        (first,) = await collect(client.send_message(request))
        (again,) = await collect(client.send_message(request))

    assert first.task.status.state == TaskState.TASK_STATE_COMPLETED
    assert again.task.id == first.task.id  # the message id is the idempotency key


async def test_cancelling_through_a2a_cancels_the_mesh_task(
    a2a: A2AClient, http_mesh: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-2", hang) as agent:
        await agent.register(http_mesh)
        request = message("capability:test.echo", {"value": 1})
        request.configuration.return_immediately = True
        async with a2a("alice", streaming=False) as client:
            (sent,) = await collect(client.send_message(request))
            await agent.got_assignment.wait()
            cancelled = await client.cancel_task(CancelTaskRequest(id=sent.task.id))
        async with a2a("alice") as streaming:
            request = SubscribeToTaskRequest(id=sent.task.id)
            subscribed = await collect(streaming.subscribe(request))

    assert cancelled.status.state == TaskState.TASK_STATE_CANCELED
    assert subscribed[0].task.status.state == TaskState.TASK_STATE_CANCELED


async def test_a_caller_without_certificate_or_token_is_refused_with_401(
    https: Https, http_mesh: Orchestrator
) -> None:
    async with https(None, None) as anonymous:
        answer = await anonymous.post("/a2a/", json={"jsonrpc": "2.0", "id": 1})

    assert answer.status_code == 401
    assert answer.json()["code"] == "UNAUTHENTICATED"


async def test_an_unknown_skill_is_refused_naming_the_field(a2a: A2AClient) -> None:
    async with a2a("alice") as client:
        with pytest.raises(Exception, match=r"message\.metadata\.skill: unknown skill 'nope'"):
            await collect(client.send_message(message("nope", {})))


async def test_someone_elses_task_is_not_found(a2a: A2AClient, echo_agent: RawAgent) -> None:
    async with a2a("alice") as alice:
        request = message("capability:test.echo", {"value": 1})
        sent = (await collect(alice.send_message(request)))[0]
    async with a2a("bob") as bob:
        with pytest.raises(Exception, match="no task"):
            await bob.get_task(GetTaskRequest(id=sent.task.id))


async def test_an_input_step_is_input_required_and_a_message_naming_the_task_answers_it(
    a2a: A2AClient, echo_agent: RawAgent
) -> None:
    async with a2a("alice") as client:
        first = await collect(client.send_message(message("workflow:ask-then-echo", {})))
        task_id = first[0].task.id
        asked = first[-1].status_update.status
        bad = message("workflow:ask-then-echo", {"value": 7})
        bad.message.task_id = task_id
        with pytest.raises(Exception, match="value"):
            await collect(client.send_message(bad))
        answer = message("workflow:ask-then-echo", {"value": "yes please"})
        answer.message.task_id = task_id
        second = await collect(client.send_message(answer))
        done = await client.get_task(GetTaskRequest(id=task_id))

    # The turn ended at the question, the prompt as its message.
    assert asked.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert asked.message.parts[0].text == "Which value shall I echo?"
    assert asked.message.metadata["step"] == "ask"
    assert second[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    assert done.status.state == TaskState.TASK_STATE_COMPLETED
    assert get_data_parts(list(done.artifacts[0].parts)) == ["yes please"]


def _texts(responses: list[StreamResponse]) -> list[str]:
    return [
        r.status_update.status.message.parts[0].text
        for r in responses
        if r.HasField("status_update") and r.status_update.status.message.parts
    ]


async def test_the_turn_after_an_answer_goes_on_from_the_answer_not_from_the_start(
    a2a: A2AClient, echo_agent: RawAgent
) -> None:
    async with a2a("alice") as client:
        first = await collect(client.send_message(message("workflow:echo-ask-echo", {})))
        answer = message("workflow:echo-ask-echo", {"value": "again"})
        answer.message.task_id = first[0].task.id
        second = await collect(client.send_message(answer))

    # The first turn saw the step before the question run, and ended at the question.
    assert "before succeeded" in _texts(first)
    assert first[-1].status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    # The second one starts where the first ended: nothing of it again.
    assert not [t for t in _texts(second) if t.startswith("before")]
    assert "echo succeeded" in _texts(second)
    assert TaskState.TASK_STATE_INPUT_REQUIRED not in [
        r.status_update.status.state for r in second if r.HasField("status_update")
    ]
    assert second[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED

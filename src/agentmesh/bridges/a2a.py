"""``agentmesh a2a-bridge URL…``: the skills of external A2A agents as mesh capabilities.

For each URL the bridge reads the remote Agent Card (``/.well-known/agent-card.json``) and
offers every skill as the capability ``a2a.<agent>.<skill>`` (names folded to the mesh's
dotted lowercase). An assignment becomes one A2A message to the remote agent:

- input ``text`` (a string) becomes a text part; the input's other fields, when there are
  any, one data part; the skill's id travels in the message's ``metadata.skill``;
- the remote task's status updates are forwarded as progress (their text as the message);
- a completed task's artifacts become the output: ``{"text": all text parts joined,
  "data": the data parts (one value, or a list when several), "remote_task_id": id}``;
- a failed task fails the step retryably (``a2a_failed``), a rejected one for good
  (``a2a_rejected``); a task that asks for input or authentication fails for good too
  (``a2a_input_required``): a bridged step cannot answer its remote agent's questions;
- a cancelled step (or one past its deadline) cancels the remote task (A2A ``CancelTask``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part
from a2a.types.a2a_pb2 import (
    AgentCard,
    AgentSkill,
    CancelTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskState,
)
from google.protobuf import struct_pb2

from agentmesh.agent.context import AssignmentContext
from agentmesh.agent.routed import Route, RoutedAgent, routed_agent
from agentmesh.errors import ConfigError, StepFailed
from agentmesh.models import MAX_CAPABILITY_NAME, Capability, FailureCode

#: Failure codes of bridged steps.
A2A_FAILED = "a2a_failed"
A2A_REJECTED = "a2a_rejected"
A2A_INPUT_REQUIRED = "a2a_input_required"

#: What a bridged capability takes and gives (the remote skill says no more than modes).
INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "sent as a text part"}},
    "description": "text becomes a text part; any other fields, one data part",
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "data": {},
        "remote_task_id": {"type": "string"},
    },
    "required": ["text", "remote_task_id"],
}

_TERMINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
    TaskState.TASK_STATE_INPUT_REQUIRED,
    TaskState.TASK_STATE_AUTH_REQUIRED,
}


def _slug(text: str) -> str:
    """``text`` folded to one segment of a capability name (lowercase, digits, ``_``)."""
    folded = re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")
    if not folded or not folded[0].isalpha():
        folded = "x" + folded
    return folded


def skill_capability(card: AgentCard, skill: AgentSkill) -> Capability:
    """The capability a remote agent's skill is offered as."""
    name = f"a2a.{_slug(card.name)}.{_slug(skill.id)}"
    if len(name) > MAX_CAPABILITY_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[: MAX_CAPABILITY_NAME - 13]}_{digest}"
    return Capability(
        name=name,
        version=card.version or "1.0.0",
        description=skill.description or skill.name or skill.id,
        input_schema=INPUT_SCHEMA,
        output_schema=OUTPUT_SCHEMA,
        tags=("a2a", *skill.tags),
    )


def message_of(data: dict[str, Any], skill: AgentSkill, ctx: AssignmentContext) -> Message:
    """The A2A message an assignment's input is sent as."""
    parts: list[Part] = []
    rest = dict(data)
    text = rest.pop("text", None)
    if isinstance(text, str):
        parts.append(Part(text=text))
    elif text is not None:
        rest["text"] = text
    if rest or not parts:
        parts.append(new_data_part(rest))
    metadata = struct_pb2.Struct()
    metadata.update({"skill": skill.id, "mesh_task_id": ctx.task_id, "mesh_step_id": ctx.step_id})
    return Message(
        # The same for every re-send of the same work, so that a remote agent that
        # deduplicates by message id sees it once.
        message_id=hashlib.sha256((ctx.idempotency_key or ctx.assignment_id).encode()).hexdigest(),
        role=Role.ROLE_USER,
        parts=parts,
        metadata=metadata,
    )


def output_of(task: Task) -> dict[str, Any]:
    """The step output of a completed remote task."""
    parts = [part for artifact in task.artifacts for part in artifact.parts]
    if not parts and task.status.HasField("message"):
        parts = list(task.status.message.parts)
    data = get_data_parts(parts)
    output: dict[str, Any] = {"text": "\n".join(get_text_parts(parts)), "remote_task_id": task.id}
    if data:
        output["data"] = data[0] if len(data) == 1 else data
    return output


def _status_text(task: Task) -> str:
    if task.status.HasField("message"):
        return "\n".join(get_text_parts(task.status.message.parts))
    return ""


@dataclass(frozen=True, slots=True)
class RemoteAgent:
    """One external A2A agent: its card and a client speaking to it."""

    url: str
    card: AgentCard
    client: Client


class A2ABridge:
    """The bridge's connections to its remote agents; ``async with`` opens and closes them.

    ``verify`` checks the remote agents' TLS (an ``ssl.SSLContext`` holding their CA);
    ``headers`` go with every request (e.g. ``Authorization: Bearer …``).
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        name: str = "a2a-bridge",
        verify: ssl.SSLContext | bool = True,
        headers: dict[str, str] | None = None,
        max_concurrency: int = 16,
        timeout_seconds: float = 30.0,
    ) -> None:
        if not urls:
            raise ConfigError("name at least one A2A agent URL")
        self.urls = tuple(urls)
        self.name = name
        self.max_concurrency = max_concurrency
        self.remotes: list[RemoteAgent] = []
        # Reads of a stream may wait long between events: only connecting is bounded.
        timeout = httpx.Timeout(timeout_seconds, read=None)
        self._http = httpx.AsyncClient(verify=verify, headers=headers, timeout=timeout)

    async def __aenter__(self) -> A2ABridge:
        factory = ClientFactory(ClientConfig(streaming=True, httpx_client=self._http))
        try:
            for url in self.urls:
                try:
                    card = await A2ACardResolver(self._http, url).get_agent_card()
                except Exception as exc:
                    raise ConfigError(f"cannot read the Agent Card of {url}: {exc}") from exc
                if not card.skills:
                    raise ConfigError(f"the A2A agent at {url} ({card.name}) lists no skills")
                self.remotes.append(RemoteAgent(url, card, factory.create(card)))
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        for remote in self.remotes:
            with contextlib.suppress(Exception):
                await remote.client.close()
        await self._http.aclose()

    def agent(self) -> RoutedAgent:
        """The mesh agent offering every skill of every remote agent."""
        routes = []
        for remote in self.remotes:
            for skill in remote.card.skills:
                routes.append(Route(skill_capability(remote.card, skill), _runner(remote, skill)))
        return routed_agent(
            self.name,
            routes,
            version="a2a",
            max_concurrency=self.max_concurrency,
            labels={"bridge": "a2a"},
        )


def _runner(remote: RemoteAgent, skill: AgentSkill) -> Any:
    async def run(data: dict[str, Any], ctx: AssignmentContext) -> dict[str, Any]:
        return await run_remote(remote, skill, data, ctx)

    return run


async def run_remote(
    remote: RemoteAgent, skill: AgentSkill, data: dict[str, Any], ctx: AssignmentContext
) -> dict[str, Any]:
    """Send one assignment to ``remote`` and follow its task to the end."""
    request = SendMessageRequest(message=message_of(data, skill, ctx))
    task: Task | None = None
    try:
        async for response in remote.client.send_message(request):
            task = _apply(task, response)
            if task is not None and task.status.state in _TERMINAL:
                break
            if response.HasField("status_update"):
                text = "\n".join(get_text_parts(response.status_update.status.message.parts))
                if text:
                    await ctx.progress(-1.0, text)
    except A2AClientError as exc:
        # The remote agent (or the way to it) broke the exchange: maybe passing, so retryable.
        where = f"A2A agent {remote.card.name} ({remote.url})"
        raise StepFailed(f"{where}: {type(exc).__name__}: {exc}", code=A2A_FAILED) from exc
    except asyncio.CancelledError:
        if task is not None and task.status.state not in _TERMINAL:
            # Shielded: the handler is going away, the remote work must not run on.
            with contextlib.suppress(Exception):
                await asyncio.shield(remote.client.cancel_task(CancelTaskRequest(id=task.id)))
        raise
    return _outcome(remote, task)


def _apply(task: Task | None, response: StreamResponse) -> Task | None:
    """The remote task as known after ``response`` (a snapshot or an update of it)."""
    if response.HasField("task"):
        return response.task
    if response.HasField("message"):
        # An answer without a task: the message is the whole result.
        done = Task(id=response.message.task_id or response.message.message_id)
        done.status.state = TaskState.TASK_STATE_COMPLETED
        done.status.message.CopyFrom(response.message)
        return done
    if task is None:
        return None
    if response.HasField("status_update"):
        task.status.CopyFrom(response.status_update.status)
    elif response.HasField("artifact_update"):
        update = response.artifact_update
        for artifact in task.artifacts:
            if artifact.artifact_id == update.artifact.artifact_id:
                if update.append:
                    artifact.parts.extend(update.artifact.parts)
                else:
                    artifact.CopyFrom(update.artifact)
                break
        else:
            task.artifacts.append(update.artifact)
    return task


def _outcome(remote: RemoteAgent, task: Task | None) -> dict[str, Any]:
    where = f"A2A agent {remote.card.name} ({remote.url})"
    if task is None:
        raise StepFailed(f"{where} answered without a task", code=A2A_FAILED)
    state = task.status.state
    why = _status_text(task)
    if state == TaskState.TASK_STATE_COMPLETED:
        return output_of(task)
    if state == TaskState.TASK_STATE_REJECTED:
        raise StepFailed(f"{where} rejected the task: {why}", code=A2A_REJECTED, retryable=False)
    if state == TaskState.TASK_STATE_CANCELED:
        raise StepFailed(
            f"{where} cancelled the task: {why}", code=FailureCode.CANCELLED, retryable=False
        )
    if state in (TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED):
        raise StepFailed(
            f"{where} asks for {TaskState.Name(state).removeprefix('TASK_STATE_').lower()}"
            f" ({why}); a bridged step cannot answer",
            code=A2A_INPUT_REQUIRED,
            retryable=False,
        )
    if state == TaskState.TASK_STATE_FAILED:
        raise StepFailed(f"{where} failed the task: {why}", code=A2A_FAILED)
    raise StepFailed(
        f"{where} ended its stream with the task {TaskState.Name(state)}", code=A2A_FAILED
    )

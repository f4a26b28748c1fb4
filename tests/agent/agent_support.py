"""Test agents and an orchestrator-side Session client for the agent SDK tests."""

from __future__ import annotations

import asyncio
import collections
from datetime import datetime
from typing import Any, Literal

import grpc
from google.protobuf import timestamp_pb2
from pydantic import BaseModel

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import Agent, AssignmentContext, capability
from agentmesh.errors import StepFailed
from agentmesh.wire import from_struct, to_struct
from agentmesh.wire.batches import unbatched

#: Generous bound on any single wait in these tests; nothing legitimate comes close.
PATIENCE = 10.0


class EchoIn(BaseModel):
    text: str
    delay: float = 0.0


class EchoOut(BaseModel):
    text: str


class FailIn(BaseModel):
    mode: Literal["crash", "step", "output", "own_timeout"]


class BlockIn(BaseModel):
    seconds: float = 3600.0


class Recorder(Agent):
    """Counts its runs and the cancellations it saw."""

    name = "recorder"
    version = "2.1.0"
    max_concurrency = 2
    labels = {"team": "tests"}

    def __init__(self) -> None:
        self.runs: collections.Counter[str] = collections.Counter()
        self.cancelled: list[str] = []
        self.contexts: list[AssignmentContext] = []

    @capability("test.echo", version="1.2.0", tags=("test",))
    async def echo(self, data: EchoIn, ctx: AssignmentContext) -> EchoOut:
        """Return the text, reporting progress twice."""
        self.runs[data.text] += 1
        self.contexts.append(ctx)
        await ctx.progress(0.25, "started")
        if data.delay:
            await asyncio.sleep(data.delay)
        await ctx.progress(0.75, "almost")
        return EchoOut(text=data.text)

    @capability("test.fail")
    async def fail(self, data: FailIn, ctx: AssignmentContext) -> EchoOut:
        if data.mode == "step":
            raise StepFailed("the text is unacceptable", code="rejected", retryable=False)
        if data.mode == "crash":
            raise RuntimeError("boom")
        if data.mode == "own_timeout":
            raise TimeoutError("upstream took too long")
        return {"txt": "not an EchoOut"}  # type: ignore[return-value]

    @capability("test.block")
    async def block(self, data: BlockIn, ctx: AssignmentContext) -> EchoOut:
        self.runs[ctx.assignment_id] += 1
        try:
            await asyncio.sleep(data.seconds)
        except asyncio.CancelledError:
            self.cancelled.append(ctx.assignment_id)
            raise
        return EchoOut(text="unblocked")

    @capability("test.stubborn")
    async def stubborn(self, data: BlockIn, ctx: AssignmentContext) -> EchoOut:
        """Ignores the first cancellation (a badly written handler)."""
        try:
            await asyncio.sleep(data.seconds)
        except asyncio.CancelledError:
            self.cancelled.append(ctx.assignment_id)
            await asyncio.sleep(data.seconds)
        return EchoOut(text="finally")


def kind_of(message: agent_pb2.AgentMessage) -> str:
    """Which reply ``message`` is: accepted, progress, result, failure, pong or draining."""
    return message.WhichOneof("kind") or ""


def about(message: agent_pb2.AgentMessage) -> str:
    """The assignment id a reply names ('' for pong and draining)."""
    return str(getattr(getattr(message, kind_of(message)), "assignment_id", ""))


def timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


class SessionClient:
    """The orchestrator's end of an ``Agent.Session`` stream, for tests."""

    def __init__(
        self, call: grpc.aio.StreamStreamCall[agent_pb2.OrchestratorMessage, agent_pb2.AgentMessage]
    ) -> None:
        self.call = call
        self.received: list[agent_pb2.AgentMessage] = []
        self._inbox: dict[str, collections.deque[agent_pb2.AgentMessage]] = collections.defaultdict(
            collections.deque
        )
        self._counter = 0

    async def assign(
        self,
        capability: str,
        payload: dict[str, Any] | None = None,
        *,
        assignment_id: str = "",
        key: str = "",
        **fields: Any,
    ) -> str:
        """Send an Assignment; returns its id."""
        message = self.assignment(
            capability, payload, assignment_id=assignment_id, key=key, **fields
        )
        await self.call.write(message)
        return message.assignment.assignment_id

    def assignment(
        self,
        capability: str,
        payload: dict[str, Any] | None = None,
        *,
        assignment_id: str = "",
        key: str = "",
        **fields: Any,
    ) -> agent_pb2.OrchestratorMessage:
        """An Assignment message as :meth:`assign` sends it (to send later, e.g. in a batch)."""
        self._counter += 1
        aid = assignment_id or f"a{self._counter}-{id(self)}"
        assignment = agent_pb2.Assignment(
            assignment_id=aid,
            capability=capability,
            input=to_struct(payload or {}),
            idempotency_key=key,
            task_id="t1",
            step_id=f"s{self._counter}",
            **fields,
        )
        return agent_pb2.OrchestratorMessage(assignment=assignment)

    @staticmethod
    def batch_message(*messages: agent_pb2.OrchestratorMessage) -> agent_pb2.OrchestratorMessage:
        """One ``OrchestratorMessage.batch`` of ``messages``."""
        batch = agent_pb2.OrchestratorMessage()
        batch.batch.messages.extend(messages)
        return batch

    async def send_batch(self, *messages: agent_pb2.OrchestratorMessage) -> None:
        """Send ``messages`` as one ``OrchestratorMessage.batch``."""
        await self.call.write(self.batch_message(*messages))

    async def cancel(self, assignment_id: str, reason: str = "") -> None:
        await self.call.write(self.cancel_message(assignment_id, reason))

    @staticmethod
    def cancel_message(assignment_id: str, reason: str = "") -> agent_pb2.OrchestratorMessage:
        """A Cancel message as :meth:`cancel` sends it."""
        cancel = agent_pb2.Cancel(assignment_id=assignment_id, reason=reason)
        return agent_pb2.OrchestratorMessage(cancel=cancel)

    async def ping(self, nonce: int, *, reads_batches: bool = False) -> agent_pb2.Pong:
        ping = agent_pb2.Ping(nonce=nonce, reads_batches=reads_batches)
        await self.call.write(agent_pb2.OrchestratorMessage(ping=ping))
        return (await self.next_for("")).pong

    async def receive(self) -> agent_pb2.AgentMessage | None:
        """The next message on the stream (a batch as it came), or None when the agent ended it.

        Every message is kept in :attr:`received` as it came.
        """
        async with asyncio.timeout(PATIENCE):
            message = await self.call.read()
        if message is grpc.aio.EOF:
            return None
        assert isinstance(message, agent_pb2.AgentMessage)
        self.received.append(message)
        return message

    async def next_for(self, assignment_id: str) -> agent_pb2.AgentMessage:
        """The next message about ``assignment_id``, keeping others for later."""
        while not self._inbox[assignment_id]:
            message = await self.receive()
            assert message is not None, f"stream ended while waiting for {assignment_id!r}"
            self._file(message)
        return self._inbox[assignment_id].popleft()

    async def replies(self, assignment_id: str) -> list[agent_pb2.AgentMessage]:
        """Every message about ``assignment_id`` up to and including its Result or Failure."""
        found = [await self.next_for(assignment_id)]
        while kind_of(found[-1]) not in ("result", "failure"):
            found.append(await self.next_for(assignment_id))
        return found

    async def outcome(self, assignment_id: str) -> agent_pb2.AgentMessage:
        """The Result or Failure of ``assignment_id``."""
        return (await self.replies(assignment_id))[-1]

    async def ended(self) -> bool:
        """True once the agent closed the stream (everything still unread is kept)."""
        while (message := await self.receive()) is not None:
            self._file(message)
        return True

    def _file(self, message: agent_pb2.AgentMessage) -> None:
        # A batch's messages are filed one by one, in order, as if each had come alone.
        for carried in unbatched(message)[0]:
            self._inbox[about(carried)].append(carried)


def output_of(message: agent_pb2.AgentMessage) -> dict[str, Any]:
    """The output of a Result message."""
    assert kind_of(message) == "result", message
    return from_struct(message.result.output)

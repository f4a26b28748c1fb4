"""One orchestrator's Session stream: its requests go to the executor, replies queue back to it.

Replies queued together (in one event-loop turn, or while a write is under way) go out as one
``AgentMessage.batch`` once the orchestrator has said it reads batches (``Ping.reads_batches``);
to an orchestrator that never says so, each goes alone. The agent says it reads batches in its
card (``AgentCard.reads_batches``), and it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf import json_format
from structlog.typing import FilteringBoundLogger

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh._tasks import cancel_and_wait
from agentmesh.agent import convert
from agentmesh.agent.executor import Executor
from agentmesh.models import JSON, FailureCode, Outcome
from agentmesh.security import Identity
from agentmesh.wire import batches

Write = Callable[[agent_pb2.AgentMessage], Awaitable[None]]

#: Loop turns an ``Accepted`` with nothing else queued waits for company before it goes out
#: in a batch (any other lone reply waits one). Nothing waits for it (protocol), and a short
#: run's result (a cached answer, a quick tool) comes a few turns later: the two then share
#: one message, and the orchestrator reads one message a step instead of two (a chain of
#: no-op steps: about a fifth faster).
ACCEPTED_TURNS = 7


class Session:
    """An open ``Agent.Session`` stream from one orchestrator.

    Replies about an assignment go to the session that sent it, in order, through
    the session's own queue. When the orchestrator half-closes, the stream stays
    open until every assignment it was given has been answered.
    """

    def __init__(
        self,
        executor: Executor,
        peer: Identity,
        log: FilteringBoundLogger,
        *,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.peer = peer
        self._max_message_bytes = max_message_bytes
        self._executor = executor
        self._log = log
        # Unbounded on purpose: outcomes must never block the run that reports them.
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self._pending: set[str] = set()
        self._reading = True
        self._closed = False
        #: Set by the first Ping that says the orchestrator reads batches.
        self._batches = False

    # -- Replies (called by the executor) --------------------------------------------

    def accepted(self, assignment_id: str) -> None:
        """Queue ``Accepted``; the assignment now awaits its outcome on this session."""
        self._pending.add(assignment_id)
        self._send(convert.accepted(assignment_id))

    def progress(self, assignment_id: str, fraction: float, message: str) -> None:
        """Queue ``Progress``."""
        self._send(convert.progress(assignment_id, fraction, message))

    def asked(self, assignment_id: str, prompt: str, schema: dict[str, JSON]) -> None:
        """Queue ``Ask``."""
        self._send(convert.ask(assignment_id, prompt, schema))

    def finished(self, assignment_id: str, outcome: Outcome) -> None:
        """Queue the ``Result`` or ``Failure``."""
        self._pending.discard(assignment_id)
        self._send(convert.outcome(assignment_id, outcome, max_bytes=self._max_message_bytes))
        self._close_when_done()

    # -- lifecycle ---------------------------------------------------------------------

    def draining(self) -> None:
        """Queue ``Draining``: the orchestrator should send no more work."""
        self._send(convert.draining())

    def close(self) -> None:
        """End the stream once the replies queued so far are written."""
        if not self._closed:
            self._closed = True
            self._outbox.put_nowait(None)

    async def serve(
        self, requests: AsyncIterator[agent_pb2.OrchestratorMessage], write: Write
    ) -> None:
        """Read ``requests`` and ``write`` replies until the session is closed or cancelled."""
        reader = asyncio.create_task(self._read(requests), name=f"session-reader-{self.peer.name}")
        try:
            while (message := await self._outbox.get()) is not None:
                if not self._batches:
                    await write(message)
                    continue
                if self._outbox.empty():
                    # A loop turn for company: the replies other runs queue in this very
                    # turn (a batch of assignments accepted, no-op runs ending) go along.
                    await self._company(ACCEPTED_TURNS if message.HasField("accepted") else 1)
                queued, closing = self._take(message)
                for run in batches.chunks(queued, self._max_message_bytes, _size):
                    await write(batches.agent_message(run))
                if closing:
                    break
        finally:
            self._closed = True
            await cancel_and_wait(reader)
            self._executor.detach(self)

    async def _company(self, turns: int) -> None:
        """Wait up to ``turns`` loop turns for another reply to be queued."""
        for _ in range(turns):
            if not self._outbox.empty():
                return
            await asyncio.sleep(0)

    def _take(self, first: agent_pb2.AgentMessage) -> tuple[list[agent_pb2.AgentMessage], bool]:
        """``first`` and every reply queued after it; True when the end of the stream was."""
        queued = [first]
        while not self._outbox.empty():
            message = self._outbox.get_nowait()
            if message is None:
                return queued, True
            queued.append(message)
        return queued, False

    def _send(self, message: agent_pb2.AgentMessage) -> None:
        if not self._closed:
            self._outbox.put_nowait(message)

    def _close_when_done(self) -> None:
        if not self._reading and not self._pending:
            self.close()

    async def _read(self, requests: AsyncIterator[agent_pb2.OrchestratorMessage]) -> None:
        try:
            async for message in requests:
                carried, refused = batches.unbatched(message)
                for problem in refused:
                    # Logged, not fatal: the stream cannot carry a status for one message.
                    self._log.warning("session.invalid_batch", reason=problem)
                for request in carried:
                    self._dispatch(request)
        except Exception as exc:
            # The stream broke under us; nothing more will arrive or be delivered.
            self._log.warning("session.read_failed", error=f"{type(exc).__name__}: {exc}")
            self.close()
        finally:
            self._reading = False
            self._close_when_done()

    def _dispatch(self, message: agent_pb2.OrchestratorMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "assignment":
            if not message.assignment.assignment_id:
                refused = Outcome.failed(FailureCode.INVALID_INPUT, "assignment_id: required")
                self.finished("", refused)
                return
            self._executor.submit(convert.assignment_from_pb(message.assignment), self)
        elif kind == "cancel":
            self._executor.cancel(message.cancel.assignment_id, message.cancel.reason)
        elif kind == "answer":
            value = json_format.MessageToDict(message.answer.value)
            self._executor.answer(message.answer.assignment_id, value)
        elif kind == "ping":
            if message.ping.reads_batches:
                self._batches = True
            self._send(convert.pong(message.ping.nonce, self._executor.active))
        else:
            self._log.warning("session.empty_message")


def _size(message: agent_pb2.AgentMessage) -> int:
    return message.ByteSize()

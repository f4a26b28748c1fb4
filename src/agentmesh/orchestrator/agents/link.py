"""The orchestrator's end of one agent's Session stream.

One :class:`AgentLink` per live agent multiplexes every assignment sent to it,
pings it, and declares it lost when the stream breaks or pings go unanswered.
Everything in flight on a lost link ends with a retryable ``agent_lost``
failure, which is what makes failover work: an assignment waiting on an answer to its
``Ask`` (``ctx.ask``) included, whose question then goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import structlog

from agentmesh import schemas
from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh._tasks import TaskSet
from agentmesh.errors import ValidationError
from agentmesh.models import JSON, AgentCard, FailureCode, HumanInput, Outcome
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.intake import THREAD_BYTES, Taken, take
from agentmesh.orchestrator.agents.writer import SessionWriter
from agentmesh.wire import batches, from_struct, usage_from_proto
from agentmesh.wire.tasks import value_to_proto

log = structlog.get_logger(__name__)


ProgressCallback = Callable[[float, str], None]
#: Told of an assignment's question (``Ask``); the answer goes back with AgentLink.answer.
AskCallback = Callable[[HumanInput], None]

#: Replies that name an assignment; each must name one sent on this very link.
_REPLIES = ("accepted", "progress", "result", "failure", "ask")
#: How many recently sent assignment ids a link remembers, to tell late answers from forged ones.
_REMEMBERED = 10_000
#: The most characters of a reason a Cancel carries (a client's reason is bounded anyway).
_MAX_REASON = 1024
#: The most characters of an agent's question (it is shown to people and kept in events).
MAX_PROMPT = 4096


@dataclass(slots=True)
class _Pending:
    done: asyncio.Future[Outcome]
    on_progress: ProgressCallback
    #: Who hears the assignment's questions; None: this work may not ask (it fails if it does).
    on_ask: AskCallback | None = None
    #: A refused progress report was logged already (once per assignment, not per report).
    warned: bool = False


def ask_problem(ask: agent_pb2.Ask) -> str | None:
    """Why an agent's question cannot be put to anyone, naming its field, or None."""
    if not ask.prompt.strip():
        return "ask.prompt: must say what to answer"
    if len(ask.prompt) > MAX_PROMPT:
        return f"ask.prompt: at most {MAX_PROMPT} characters, not {len(ask.prompt)}"
    schema = from_struct(ask.answer_schema)
    if schema and schemas.validator(schema) is None:
        return "ask.answer_schema: is not a JSON Schema (draft 2020-12)"
    return None


def progress_problem(fraction: float) -> str | None:
    """Why a reported fraction breaks the protocol, or None: 0..1, or negative for unknown."""
    if not math.isfinite(fraction):
        return f"must be a number from 0.0 to 1.0 (negative when unknown), not {fraction}"
    if fraction > 1.0:
        return f"must be at most 1.0 (negative when unknown), not {fraction:g}"
    return None


class AgentLink:
    """A live Session with one agent: send assignments, receive their outcomes."""

    def __init__(
        self,
        card: AgentCard,
        identity: str,
        credentials: grpc.ChannelCredentials,
        *,
        ping_interval: float,
        timeout: float,
        max_message_bytes: int,
        max_output_bytes: int | None = None,
        on_lost: Callable[[AgentLink, str], None],
    ) -> None:
        self.card = card
        self.identity = identity
        self.draining = False
        self.active = 0
        self.last_seen = time.monotonic()
        self._credentials = credentials
        self._ping_interval = ping_interval
        self._timeout = timeout
        self._options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        self._max_message_bytes = max_message_bytes
        self._on_lost = on_lost
        #: Larger outputs are refused as invalid_output: the task must stay readable.
        self._max_output_bytes = max_output_bytes or max_message_bytes
        self._pending: dict[str, _Pending] = {}
        self._sent: OrderedDict[str, None] = OrderedDict()
        self._writer: SessionWriter | None = None
        self._nonces = itertools.count(1)
        self._first_pong = asyncio.Event()
        #: The reader, the writer, the pinger, results taken in threads, closing the channel.
        self._tasks = TaskSet()
        self._channel: grpc.aio.Channel | None = None
        self._call: (
            grpc.aio.StreamStreamCall[agent_pb2.OrchestratorMessage, agent_pb2.AgentMessage] | None
        ) = None
        self._closed = False
        self._log = log.bind(agent=card.name, endpoint=card.endpoint)

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.card.name

    @property
    def alive(self) -> bool:
        """True while the Session is open."""
        return not self._closed

    async def open(self, wait: float) -> None:
        """Dial the agent, open the Session and wait for the first Pong (raise when none comes)."""
        self._channel = grpc.aio.secure_channel(
            self.card.endpoint, self._credentials, options=self._options
        )
        self._call = agent_pb2_grpc.AgentStub(self._channel).Session()
        self._writer = SessionWriter(
            self._call.write,
            # Read at each write: a registration that updates the card counts from then on.
            batches=lambda: self.card.reads_batches,
            max_bytes=self._max_message_bytes,
            on_batch=self._batch_sent,
        )
        self._tasks.spawn(self._writer.run(), name=f"link-{self.name}-write")
        self._tasks.spawn(self._read(), name=f"link-{self.name}-read")
        self._tasks.spawn(self._ping(), name=f"link-{self.name}-ping")
        try:
            async with asyncio.timeout(wait):
                await self._first_pong.wait()
        except TimeoutError:
            await self.close("no answer on the Session stream")
            raise

    async def _send(self, message: agent_pb2.OrchestratorMessage) -> None:
        if self._writer is None or self._closed:
            raise ConnectionError("session closed")
        await self._writer.send(message)

    def _batch_sent(self, size: int) -> None:
        metrics.SESSION_BATCHES.labels(self.name, "sent").inc()
        metrics.SESSION_BATCHED_MESSAGES.labels(self.name, "sent").inc(size)

    async def _ping(self) -> None:
        while True:
            # Every Ping says the orchestrator reads batches: the agent may batch its replies.
            ping = agent_pb2.Ping(nonce=next(self._nonces), reads_batches=True)
            try:
                await self._send(agent_pb2.OrchestratorMessage(ping=ping))
            except (ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
                self._lose(f"ping failed: {exc}")
                return
            await asyncio.sleep(self._ping_interval)
            if time.monotonic() - self.last_seen > self._timeout:
                self._lose(f"no answer for {self._timeout:.1f}s")
                return

    async def _read(self) -> None:
        assert self._call is not None
        reason = "agent closed the session"
        try:
            async for message in self._call:
                self.last_seen = time.monotonic()
                self._dispatch(message)
        except grpc.aio.AioRpcError as exc:
            reason = f"session broke: {exc.code().name} {exc.details()}"
        self._lose(reason)

    def _foreign(self, kind: str, assignment_id: str) -> bool:
        """True (and logged) when a reply names no assignment pending on this link."""
        if assignment_id in self._pending:
            return False
        if assignment_id in self._sent:
            # A late answer for an attempt abandoned (timed out, cancelled): harmless.
            self._log.debug("assignment.late_reply", kind=kind, assignment_id=assignment_id)
        else:
            # Never given to this agent: another agent's id, or made up. Ignored.
            self._log.warning(
                "security.foreign_assignment",
                identity=self.identity,
                kind=kind,
                assignment_id=assignment_id[:64],
            )
        return True

    def _dispatch(self, message: agent_pb2.AgentMessage) -> None:
        kind = message.WhichOneof("kind")
        if kind == "batch":
            self._dispatch_batch(message)
            return
        if kind in _REPLIES and self._foreign(kind, getattr(message, kind).assignment_id):
            return
        if kind == "pong":
            self._first_pong.set()
        elif kind == "draining":
            self.draining = True
            self._log.info("agent.draining")
        elif kind == "accepted":
            pass  # nothing waits for it: the result (or the attempt's timeout) ends the attempt
        elif kind == "progress":
            pending = self._pending.get(message.progress.assignment_id)
            if pending:
                self._progress(pending, message.progress)
        elif kind == "result":
            result = message.result
            if result.ByteSize() > THREAD_BYTES:
                # Checked and converted in a thread: the reader (and the loop) go on meanwhile.
                self._tasks.spawn(self._take_in_thread(result), name=f"link-{self.name}-result")
            else:
                self._take(result)
        elif kind == "ask":
            pending = self._pending.get(message.ask.assignment_id)
            if pending:
                self._ask(pending, message.ask)
        elif kind == "failure":
            f = message.failure
            usage = usage_from_proto(f.usage) if f.HasField("usage") else None
            self._finish(
                f.assignment_id,
                Outcome(code=f.code, message=f.message, retryable=f.retryable, usage=usage),
            )

    def _dispatch_batch(self, message: agent_pb2.AgentMessage) -> None:
        carried, refused = batches.unbatched(message)
        metrics.SESSION_BATCHES.labels(self.name, "received").inc()
        metrics.SESSION_BATCHED_MESSAGES.labels(self.name, "received").inc(len(carried))
        for problem in refused:
            # The agent's fault; its other messages still count. The stream cannot carry a
            # status for one message, so the refusal is logged, naming the field.
            self._log.warning("agent.invalid_batch", reason=problem)
        for inner in carried:
            self._dispatch(inner)

    def _ask(self, pending: _Pending, ask: agent_pb2.Ask) -> None:
        problem = (
            ask_problem(ask)
            if pending.on_ask is not None
            else ("this work may not ask (only a step's attempt may)")
        )
        if problem is None:
            assert pending.on_ask is not None
            schema = from_struct(ask.answer_schema)
            pending.on_ask(HumanInput(prompt=ask.prompt, answer_schema=schema))
            return
        # The agent's fault, and final: its run waits for an answer that will never come, so
        # it is told to stop, and the attempt fails as the agent's (tried elsewhere).
        self._log.warning("agent.invalid_ask", assignment_id=ask.assignment_id, reason=problem)
        self._finish(ask.assignment_id, Outcome(code=FailureCode.INVALID_OUTPUT, message=problem))
        cancel = agent_pb2.Cancel(assignment_id=ask.assignment_id, reason=problem[:_MAX_REASON])
        self._tasks.spawn(
            self._send_quietly(agent_pb2.OrchestratorMessage(cancel=cancel)),
            name=f"link-{self.name}-refuse-ask",
        )

    async def _send_quietly(self, message: agent_pb2.OrchestratorMessage) -> None:
        with contextlib.suppress(ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._send(message)

    async def answer(self, assignment_id: str, value: JSON) -> None:
        """Send the answer to ``assignment_id``'s question (nothing once it is over)."""
        if assignment_id not in self._pending or self._closed:
            return
        answer = agent_pb2.Answer(assignment_id=assignment_id)
        value_to_proto(value, answer.value)
        await self._send_quietly(agent_pb2.OrchestratorMessage(answer=answer))

    def _progress(self, pending: _Pending, progress: agent_pb2.Progress) -> None:
        problem = progress_problem(progress.fraction)
        if problem is None:
            pending.on_progress(progress.fraction, progress.message)
            return
        # Refused, not clamped: watchers never see a made-up fraction. The stream cannot
        # carry a status for one message, and ending the Session would fail every
        # assignment on it for a cosmetic fault, so the report is dropped and logged.
        if not pending.warned:
            pending.warned = True
            self._log.warning(
                "agent.invalid_progress",
                assignment_id=progress.assignment_id,
                field="progress.fraction",
                reason=problem,
            )

    def _take(self, result: agent_pb2.Result) -> None:
        try:
            taken = take(result, self._max_output_bytes)
        except ValidationError as exc:
            self._refuse(result.assignment_id, exc)
            return
        self._accept(result.assignment_id, taken)

    async def _take_in_thread(self, result: agent_pb2.Result) -> None:
        try:
            taken = await asyncio.to_thread(take, result, self._max_output_bytes)
        except ValidationError as exc:
            self._refuse(result.assignment_id, exc)
            return
        self._accept(result.assignment_id, taken)

    def _accept(self, assignment_id: str, taken: Taken) -> None:
        outcome = Outcome(
            output=taken.output, follow_ups=taken.follow_ups, size=taken.size, usage=taken.usage
        )
        self._finish(assignment_id, outcome)

    def _refuse(self, assignment_id: str, error: ValidationError) -> None:
        # Too big, too deep, not JSON: the agent's fault, and it must not kill the reader.
        self._log.warning("agent.invalid_output", assignment_id=assignment_id, error=str(error))
        self._finish(assignment_id, Outcome(code=FailureCode.INVALID_OUTPUT, message=str(error)))

    def _finish(self, assignment_id: str, outcome: Outcome) -> None:
        # A late answer for an abandoned attempt finds nothing pending and is dropped.
        pending = self._pending.pop(assignment_id, None)
        if pending is not None and not pending.done.done():
            pending.done.set_result(outcome)

    async def run(
        self,
        assignment: agent_pb2.Assignment,
        on_progress: ProgressCallback,
        *,
        seconds: float | None = None,
        on_ask: AskCallback | None = None,
    ) -> Outcome:
        """Send ``assignment`` and wait for its outcome, at most ``seconds``.

        ``on_ask`` hears the assignment's questions (``Ask``); without it a question fails
        the assignment. The ``seconds`` include any time spent waiting for an answer.

        When the time is up the agent gets a Cancel saying so and the outcome is a
        ``timeout`` failure. Cancelling the caller sends Cancel too, with the message the
        caller was cancelled with (``task.cancel(msg=...)``: the client's reason) or
        ``"cancelled"``.
        """
        loop = asyncio.get_running_loop()
        pending = _Pending(loop.create_future(), on_progress, on_ask=on_ask)
        aid = assignment.assignment_id
        outgoing = agent_pb2.OrchestratorMessage(assignment=assignment)
        # It holds a copy; neither is kept while the agent works (about 3 KiB a
        # step in flight, mostly protobuf's arena: issue 9). The caller holds none either.
        del assignment
        self._pending[aid] = pending
        self._sent[aid] = None
        if len(self._sent) > _REMEMBERED:
            self._sent.popitem(last=False)
        self.active += 1
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                await self._send(outgoing)
                del outgoing  # written
                return await pending.done
        except (ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            return Outcome(code=FailureCode.AGENT_LOST, message=str(exc), retryable=True)
        except TimeoutError:
            if not scope.expired():
                raise
            message = f"no result within {seconds:g}s"
            await self._cancel_on_agent(aid, f"timeout: {message}")
            return Outcome(code=FailureCode.TIMEOUT, message=message)
        except asyncio.CancelledError as exc:
            reason = str(exc.args[0]) if exc.args and exc.args[0] else "cancelled"
            await self._cancel_on_agent(aid, reason)
            raise
        finally:
            self._pending.pop(aid, None)
            self.active -= 1

    async def _cancel_on_agent(self, assignment_id: str, reason: str) -> None:
        """Tell the agent to stop ``assignment_id`` if it is still ours (best effort)."""
        if self._pending.pop(assignment_id, None) is None or self._closed:
            return
        cancel = agent_pb2.Cancel(assignment_id=assignment_id, reason=reason[:_MAX_REASON])
        with contextlib.suppress(ConnectionError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await asyncio.shield(self._send(agent_pb2.OrchestratorMessage(cancel=cancel)))

    def _lose(self, reason: str) -> None:
        if self._closed:
            return
        self._log.warning("agent.lost", reason=reason)
        self._fail_pending(reason)
        self._closed = True
        if self._writer is not None:
            self._writer.close(reason)
        self._on_lost(self, reason)
        # Closing the channel must not cancel the task calling us; do it on its own.
        self._tasks.spawn(self._shutdown(), name=f"link-{self.name}-close")

    def _fail_pending(self, reason: str) -> None:
        for assignment_id in list(self._pending):
            self._finish(
                assignment_id, Outcome(code=FailureCode.AGENT_LOST, message=reason, retryable=True)
            )

    async def _shutdown(self) -> None:
        await self._tasks.aclose()
        if self._call is not None:
            self._call.cancel()
        if self._channel is not None:
            await self._channel.close()

    async def settle(self, seconds: float) -> None:
        """Wait until the assignments in flight now have their outcomes (the Session ending
        gives them ``agent_lost``), at most ``seconds``."""
        waiting = [p.done for p in self._pending.values() if not p.done.done()]
        if waiting:
            await asyncio.wait(waiting, timeout=seconds)

    async def close(self, reason: str = "closed") -> None:
        """End the Session; assignments in flight fail as ``agent_lost``."""
        if not self._closed:
            self._fail_pending(reason)
            self._closed = True
            if self._writer is not None:
                self._writer.close(reason)
        await self._shutdown()

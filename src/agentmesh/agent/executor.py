"""Runs assignments: admission, the concurrency limit, idempotency, deadlines, cancel and drain.

Runs belong to the executor, not to the session an assignment came on: when a
session ends its runs go on, and their outcomes are remembered for the
orchestrator to collect by re-sending the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

import pydantic
import structlog
from pydantic import BaseModel
from structlog.typing import FilteringBoundLogger

from agentmesh._tasks import TaskSet
from agentmesh.agent.base import Agent
from agentmesh.agent.capability import CapabilitySpec
from agentmesh.agent.context import AssignmentContext
from agentmesh.agent.idempotency import OutcomeCache
from agentmesh.agent.subtasks import SubTasks
from agentmesh.agent.work import INTERRUPTIONS, Assignment
from agentmesh.errors import StepFailed
from agentmesh.logs import exception_fields
from agentmesh.models import JSON, FailureCode, Outcome, StepSpec
from agentmesh.tracing import (
    AGENT_NAME,
    ATTEMPT,
    OPERATION,
    STEP_ID,
    TASK_ID,
    TOOL_NAME,
    Span,
    SpanKind,
    failed,
    span,
)

#: How long cancelled handlers get to unwind before a drain stops waiting for them.
_CANCEL_GRACE_SECONDS = 1.0


class Replies(Protocol):
    """Whoever must hear about an assignment: in practice the Session it arrived on."""

    def accepted(self, assignment_id: str) -> None:
        """The assignment was taken."""

    def progress(self, assignment_id: str, fraction: float, message: str) -> None:
        """The handler reported progress."""

    def asked(self, assignment_id: str, prompt: str, schema: dict[str, JSON]) -> None:
        """The handler asks a person (``ctx.ask``)."""

    def finished(self, assignment_id: str, outcome: Outcome) -> None:
        """The assignment ended (or was refused) with ``outcome``."""


@dataclass(eq=False)
class _Run:
    """One execution of a handler, which several assignments may be waiting on."""

    assignment: Assignment
    spec: CapabilitySpec
    log: FilteringBoundLogger
    #: Assignment id → where to report it; re-sends of the same key add entries.
    listeners: dict[str, Replies] = field(default_factory=dict)
    task: asyncio.Task[Outcome] | None = None
    #: Set when the executor itself stops the run; reported instead of whatever the handler did.
    interruption: Outcome | None = None
    #: While the handler waits for the answer to its question: that answer, to come.
    asking: asyncio.Future[JSON] | None = None


def describe_errors(exc: pydantic.ValidationError) -> str:
    """Pydantic errors as ``field.path: message`` pairs, so the offending field is named."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class Executor:
    """Admits assignments to an agent's handlers and reports what becomes of them.

    ``async with Executor(...)``: leaving the block hands back (``draining``) any
    run still going.
    """

    def __init__(
        self,
        agent: Agent,
        *,
        cache_size: int,
        log: FilteringBoundLogger | None = None,
        name: str = "",
        subtasks: SubTasks | None = None,
    ) -> None:
        self._agent = agent
        #: The name the agent serves under (its class's unless the server renamed it).
        self._name = name or agent.name
        self._subtasks = subtasks
        self._limit = agent.max_concurrency
        self._log: FilteringBoundLogger = log or structlog.get_logger("agentmesh.agent")
        self._tasks = TaskSet()
        self._runs: set[_Run] = set()
        self._by_key: dict[str, _Run] = {}
        self._by_assignment: dict[str, _Run] = {}
        self._outcomes = OutcomeCache(cache_size)
        self._idle = asyncio.Event()
        self._idle.set()
        self._accepting = True

    async def __aenter__(self) -> Executor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain(0)
        await self._tasks.aclose()

    @property
    def active(self) -> int:
        """Handlers running right now (not those waiting for an answer to ``ctx.ask``)."""
        return sum(1 for run in self._runs if run.asking is None)

    def answer(self, assignment_id: str, value: JSON) -> None:
        """The answer to the question of the run behind ``assignment_id``: it goes on."""
        run = self._by_assignment.get(assignment_id)
        if run is None or run.asking is None or run.asking.done():
            self._log.debug("answer.ignored", assignment_id=assignment_id)
            return
        run.asking.set_result(value)

    async def _ask(self, run: _Run, prompt: str, schema: dict[str, JSON]) -> JSON:
        if run.asking is not None:
            raise StepFailed("ask one question at a time", code="ask_failed", retryable=False)
        if not run.listeners:
            raise StepFailed("no orchestrator to ask", code="ask_failed", retryable=True)
        run.asking = asyncio.get_running_loop().create_future()
        try:
            for aid, replies in run.listeners.items():
                replies.asked(aid, prompt, schema)
            return await run.asking
        finally:
            run.asking = None

    def submit(self, assignment: Assignment, replies: Replies) -> None:
        """Take ``assignment`` or refuse it; either way ``replies`` hears the answer."""
        aid = assignment.assignment_id
        log = self._log.bind(
            assignment_id=aid,
            task_id=assignment.task_id,
            step_id=assignment.step_id,
            capability=assignment.capability,
        )
        if not self._accepting:
            return self._refuse(log, replies, aid, FailureCode.DRAINING, "the agent is draining")
        spec = self._agent.specs().get(assignment.capability)
        if spec is None:
            return self._refuse(
                log,
                replies,
                aid,
                FailureCode.UNKNOWN_CAPABILITY,
                f"this agent does not offer {assignment.capability!r}",
            )
        key = assignment.idempotency_key
        if key and (done := self._outcomes.get(key)) is not None:
            replies.accepted(aid)
            replies.finished(aid, done)
            log.info("assignment.replayed", idempotency_key=key)
            return None
        running = self._by_key.get(key) if key else None
        running = running or self._by_assignment.get(aid)
        if running is not None and running.interruption is not None:
            # Its run is being stopped (the orchestrator cancelled it, then restarted and sent
            # it again): joining would report that cancellation; try again once it is gone.
            return self._refuse(
                log, replies, aid, FailureCode.BUSY, "the previous run of this work is stopping"
            )
        if running is not None:
            # The same work sent again (an orchestrator restarted or failed over):
            # report the run in progress instead of starting a second one.
            self._listen(running, aid, replies)
            replies.accepted(aid)
            log.info("assignment.attached", idempotency_key=key)
            return None
        # A run waiting for an answer holds no slot (the orchestrator gave it back).
        if self.active >= self._limit:
            return self._refuse(
                log, replies, aid, FailureCode.BUSY, f"already running {self._limit} assignments"
            )
        try:
            data = spec.input_model.model_validate(assignment.input)
        except pydantic.ValidationError as exc:
            return self._refuse(log, replies, aid, FailureCode.INVALID_INPUT, describe_errors(exc))
        self._start(assignment, spec, data, log, replies)
        return None

    def cancel(self, assignment_id: str, reason: str = "") -> bool:
        """Stop the run behind ``assignment_id``; False when there is none (it may have ended)."""
        run = self._by_assignment.get(assignment_id)
        if run is None or run.task is None or run.task.done():
            self._log.debug("cancel.ignored", assignment_id=assignment_id)
            return False
        run.log.info("assignment.cancelling", reason=reason)
        self._interrupt(
            run, Outcome.failed(FailureCode.CANCELLED, reason or "cancelled by orchestrator")
        )
        return True

    def detach(self, replies: Replies) -> None:
        """Forget ``replies`` (its session ended); the runs it listened to go on."""
        for run in self._runs:
            for aid in [a for a, r in run.listeners.items() if r is replies]:
                del run.listeners[aid]
                self._by_assignment.pop(aid, None)
            if run.asking is not None and not run.listeners:
                # Its answer would come on that session only; its orchestrator has failed
                # the attempt (agent_lost) and tries it again.
                self._interrupt(
                    run, Outcome.failed(FailureCode.CANCELLED, "the session that asked ended")
                )

    def stop_accepting(self) -> None:
        """Refuse every assignment from now on (``draining``)."""
        self._accepting = False

    async def drain(self, grace_seconds: float) -> None:
        """Refuse new work, give running handlers ``grace_seconds``, then hand the rest back.

        Handed-back runs are cancelled and reported as retryable ``draining`` failures.
        """
        self.stop_accepting()
        if not self._runs:
            return
        self._log.info("executor.draining", running=len(self._runs), grace=grace_seconds)
        if await self._idle_within(grace_seconds):
            return
        for run in list(self._runs):
            self._interrupt(
                run,
                Outcome.failed(
                    FailureCode.DRAINING, "the agent shut down before the work finished"
                ),
            )
        if await self._idle_within(_CANCEL_GRACE_SECONDS):
            return
        # A handler that swallows cancellation must not hold the shutdown hostage:
        # report it handed back now; its task is cancelled again when the executor closes.
        for run in list(self._runs):
            run.log.error("assignment.unresponsive")
            handed_back = Outcome.failed(FailureCode.DRAINING, "unresponsive")
            self._finish(run, run.interruption or handed_back)

    async def _idle_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def _refuse(
        self,
        log: FilteringBoundLogger,
        replies: Replies,
        aid: str,
        code: FailureCode,
        message: str,
    ) -> None:
        log.info("assignment.refused", code=code.value, reason=message)
        replies.finished(aid, Outcome.failed(code, message))

    def _listen(self, run: _Run, aid: str, replies: Replies) -> None:
        run.listeners[aid] = replies
        self._by_assignment[aid] = run

    def _start(
        self,
        assignment: Assignment,
        spec: CapabilitySpec,
        data: BaseModel,
        log: FilteringBoundLogger,
        replies: Replies,
    ) -> None:
        run = _Run(assignment, spec, log)
        self._listen(run, assignment.assignment_id, replies)
        self._runs.add(run)
        if assignment.idempotency_key:
            self._by_key[assignment.idempotency_key] = run
        self._idle.clear()
        replies.accepted(assignment.assignment_id)
        log.debug("assignment.accepted", attempt=assignment.attempt)
        run.task = self._tasks.spawn(
            self._invoke(run, data), name=f"assignment-{assignment.assignment_id}"
        )
        # A done-callback, not code after the await: it also runs when the task is
        # cancelled before it ever started.
        run.task.add_done_callback(functools.partial(self._on_done, run))

    def _interrupt(self, run: _Run, why: Outcome) -> None:
        if run.task is not None and not run.task.done():
            run.interruption = why
            run.task.cancel()

    async def _invoke(self, run: _Run, data: BaseModel) -> Outcome:
        ctx = AssignmentContext.of(
            run.assignment,
            functools.partial(self._progress, run),
            self._subtasks,
            functools.partial(self._ask, run),
        )
        outcome = await self._call(run, data, ctx)
        outcome.usage = ctx.usage  # what the handler reported, whichever way it ended
        return outcome

    async def _call(self, run: _Run, data: BaseModel, ctx: AssignmentContext) -> Outcome:
        assignment = run.assignment
        with handler_span(self._name, assignment) as span:
            outcome = await self._handle(run, data, ctx)
            if not outcome.ok:
                failed(span, outcome.code, outcome.message)
            return outcome

    async def _handle(self, run: _Run, data: BaseModel, ctx: AssignmentContext) -> Outcome:
        assignment = run.assignment
        handler = self._agent.handler(run.spec)
        timeout = asyncio.timeout_at(_loop_time(assignment.deadline))
        try:
            async with timeout:
                value = await handler(data, ctx)
        except TimeoutError as exc:
            if timeout.expired():
                return Outcome.failed(FailureCode.TIMEOUT, f"deadline {assignment.deadline} passed")
            return self._crashed(run, exc)
        except StepFailed as exc:
            return Outcome(code=exc.failure_code, message=exc.message, retryable=exc.retryable)
        except Exception as exc:
            return self._crashed(run, exc)
        return _validated_output(run.spec, value, ctx.follow_ups)

    def _crashed(self, run: _Run, exc: Exception) -> Outcome:
        # Never exc_info: a rich traceback with the frames' locals (the input among them)
        # can hold the loop for seconds, long enough to lose the Session (see agentmesh.logs).
        run.log.error("assignment.crashed", **exception_fields(exc))
        return Outcome.failed(FailureCode.ERROR, f"{type(exc).__name__}: {exc}")

    def _progress(self, run: _Run, fraction: float, message: str) -> None:
        for aid, replies in run.listeners.items():
            replies.progress(aid, fraction, message)

    def _on_done(self, run: _Run, task: asyncio.Task[Outcome]) -> None:
        if run not in self._runs:
            return  # already reported (an unresponsive handler during drain)
        outcome: Outcome
        if task.cancelled():
            outcome = run.interruption or Outcome.failed(FailureCode.CANCELLED, "cancelled")
        elif (exc := task.exception()) is not None:
            # BaseException other than cancellation (e.g. KeyboardInterrupt) escaped the handler.
            outcome = Outcome.failed(FailureCode.ERROR, f"{type(exc).__name__}: {exc}")
        else:
            # A handler that swallowed our cancellation still counts as interrupted.
            outcome = run.interruption or task.result()
        self._finish(run, outcome)

    def _finish(self, run: _Run, outcome: Outcome) -> None:
        self._runs.discard(run)
        key = run.assignment.idempotency_key
        if key and self._by_key.get(key) is run:
            del self._by_key[key]
        if key and outcome.code not in INTERRUPTIONS:  # a success has no code
            self._outcomes.put(key, outcome)
        for aid, replies in run.listeners.items():
            self._by_assignment.pop(aid, None)
            replies.finished(aid, outcome)
        if outcome.ok:
            run.log.debug("assignment.succeeded")
        else:
            run.log.info(
                "assignment.failed",
                code=outcome.code,
                retryable=outcome.retryable,
                reason=outcome.message,
            )
        if not self._runs:
            self._idle.set()


def handler_span(agent: str, assignment: Assignment) -> contextlib.AbstractContextManager[Span]:
    """The agent-side span of one run: ``execute_tool {capability}``, a child of the
    orchestrator's ``invoke_agent`` span carried in the assignment."""
    return span(
        f"execute_tool {assignment.capability}",
        parent=assignment.trace_context,
        kind=SpanKind.SERVER,
        attributes=lambda: {
            OPERATION: "execute_tool",
            TOOL_NAME: assignment.capability,
            AGENT_NAME: agent,
            TASK_ID: assignment.task_id,
            STEP_ID: assignment.step_id,
            ATTEMPT: assignment.attempt,
        },
    )


def _loop_time(deadline: datetime | None) -> float | None:
    if deadline is None:
        return None
    remaining = (deadline - datetime.now(UTC)).total_seconds()
    return asyncio.get_running_loop().time() + remaining


def _validated_output(
    spec: CapabilitySpec, value: Any, follow_ups: tuple[StepSpec, ...] = ()
) -> Outcome:
    if isinstance(value, BaseModel) and not isinstance(value, spec.output_model):
        value = value.model_dump()
    try:
        output = spec.output_model.model_validate(value)
    except pydantic.ValidationError as exc:
        return Outcome.failed(FailureCode.INVALID_OUTPUT, describe_errors(exc))
    return Outcome(output=output.model_dump(mode="json"), follow_ups=follow_ups)

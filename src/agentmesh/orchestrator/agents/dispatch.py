"""Everything sent to an agent goes through one attempt loop: the :class:`Dispatcher`.

Steps, compensations, delegated aggregation and agent planning all get the same attempts,
retries with backoff, failover (an agent that failed is avoided by the next attempt), output
checks against the agent's declared schema, circuit and stats accounting, metrics and logs.
What differs is who watches: a step's state follows its attempts through an
:class:`AttemptObserver`; a compensation or a planning request passes none.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from google.protobuf import timestamp_pb2

from agentmesh import schemas, tracing
from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh._tasks import TaskSet
from agentmesh.config import Settings
from agentmesh.errors import StepFailed
from agentmesh.models import (
    JSON,
    AgentChoice,
    FailureCode,
    HumanInput,
    Outcome,
    RetryPolicy,
    Usage,
)
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.circuits import AGENT_FAULTS
from agentmesh.orchestrator.agents.intake import THREAD_BYTES
from agentmesh.orchestrator.agents.link import AgentLink, AskCallback
from agentmesh.orchestrator.agents.matching import Requirement
from agentmesh.orchestrator.agents.progress import ProgressLimiter
from agentmesh.orchestrator.agents.registry import Registry

log = structlog.get_logger(__name__)


class AttemptObserver(Protocol):
    """Follows the attempts of one job (a step's state does)."""

    def waiting(self, attempt: int, reason: str) -> None:
        """No capable agent has room for ``attempt`` yet."""

    def started(self, agent: str, attempt: int, choice: AgentChoice | None = None) -> None:
        """``attempt`` was given to ``agent`` (``choice``: why, by matching)."""

    def progress(self, agent: str, attempt: int, fraction: float, message: str) -> None:
        """The agent reported progress (already bounded in rate and size)."""

    def retrying(self, attempt: int, reason: str) -> None:
        """``attempt`` failed and may be retried (the retry policy may still give up)."""

    def used(self, usage: Usage | None, seconds: float) -> None:
        """An attempt ended (either way) having used ``usage`` (as its agent said) in
        ``seconds``."""


class AskObserver(Protocol):
    """Puts an agent's mid-step questions (``ctx.ask``) to people: a step does."""

    async def ask(self, attempt: int, question: HumanInput) -> JSON:
        """``attempt``'s agent asks ``question``: the (checked) answer, once given."""

    def resumed(self, agent: str, attempt: int) -> None:
        """The answer goes back to ``agent``, which holds a slot for ``attempt`` again."""


class _HeldSlot:
    """One attempt's concurrency slot: let go while its agent waits for an answer, and
    taken again (on the same agent) before the answer goes back."""

    def __init__(
        self,
        registry: Registry,
        requirement: Requirement,
        priority: int,
        on_wait: Callable[[str], None],
    ) -> None:
        self._registry = registry
        self._requirement = requirement
        self._priority = priority
        self._on_wait = on_wait
        self._held: contextlib.AbstractAsyncContextManager[AgentLink] | None = None

    async def take(self) -> AgentLink:
        """Wait for a slot on the best matching agent and hold it."""
        held = self._registry.slot(self._requirement, self._priority, self._on_wait)
        link = await held.__aenter__()
        self._held = held  # no await in between: a cancellation cannot leak the slot
        return link

    async def take_on(self, agent: str) -> None:
        """Wait for a slot on ``agent`` itself (a resumed run stays where it is) and hold it."""
        self._requirement = dataclasses.replace(
            self._requirement, pin=agent, prefer="", avoid=frozenset()
        )
        await self.take()

    async def release(self) -> None:
        """Give the slot back (nothing when none is held)."""
        held, self._held = self._held, None
        if held is not None:
            await held.__aexit__(None, None, None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """Work for an agent: ``capability`` on ``payload``, and how hard to try."""

    task_id: str
    step_id: str
    capability: str
    payload: JSON
    version: str = ""
    pin: str = ""
    exclude: frozenset[str] = frozenset()
    priority: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: 0: the settings' default step timeout.
    timeout: float = 0.0
    #: An undo: its attempts get their own idempotency keys (``undo-N``).
    compensation: bool = False
    #: The number of the first attempt (a step's earlier attempts count).
    first_attempt: int = 1
    #: Re-send the first attempt to this agent (same idempotency key): a resumed step.
    resume_on: str = ""
    #: Event-loop time by which an agent must have room and the attempt be over.
    deadline: float | None = None

    def idempotency_key(self, attempt: int) -> str:
        """``{task}/{step}/{n}``; compensations ``{task}/{step}/undo-{n}``; "" without a task."""
        if not self.task_id:
            return ""
        # One key per attempt; compensations get their own so that retrying an undo on the
        # same agent runs it again instead of replaying its failure.
        number = f"undo-{attempt}" if self.compensation else str(attempt)
        return f"{self.task_id}/{self.step_id}/{number}"


def backoff(policy: RetryPolicy, failures: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``failures``-th failed attempt: exponential, with jitter.

    Jitter of one initial backoff keeps retries of many steps from moving in lockstep.
    """
    draw = (rng or random).uniform(0, policy.initial_backoff_seconds)
    try:
        grown = policy.initial_backoff_seconds * 2 ** (failures - 1) + draw
    except OverflowError:
        grown = policy.max_backoff_seconds
    return float(max(0.0, min(grown, policy.max_backoff_seconds)))


class Dispatcher:
    """Sends jobs to agents until an attempt succeeds or the retry policy gives up."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self._registry = registry
        self._settings = settings

    async def send(
        self,
        job: Job,
        observer: AttemptObserver | None = None,
        asks: AskObserver | None = None,
    ) -> Outcome:
        """The successful outcome of ``job``; StepFailed when it failed for good.

        ``asks`` puts the agent's questions to people; without it an attempt that asks fails.

        TimeoutError when ``job.deadline`` passes before an agent has room.
        """
        max_attempts = job.retry.max_attempts or self._settings.default_max_attempts
        last = max(job.first_attempt, max_attempts)
        if job.resume_on:
            # The re-sent attempt carries the same idempotency key, which only the agent that
            # ran it can honour (replay its result or join the run): give it a moment to
            # register again after our restart before going elsewhere.
            await self._registry.wait_for_agent(
                job.resume_on, self._settings.agent_timeout_seconds + 5
            )
        failed_on: set[str] = set()
        number = job.first_attempt
        while True:
            prefer = job.resume_on if number == job.first_attempt else ""
            try:
                return await self._attempt(job, number, failed_on, observer, prefer, asks)
            except StepFailed as exc:
                if not exc.retryable or number >= last:
                    raise
            await asyncio.sleep(backoff(job.retry, number - job.first_attempt + 1))
            number += 1

    async def _attempt(
        self,
        job: Job,
        number: int,
        failed_on: set[str],
        observer: AttemptObserver | None,
        prefer: str,
        asks: AskObserver | None = None,
    ) -> Outcome:
        requirement = Requirement(
            prefer=prefer,
            capability=job.capability,
            version=job.version,
            pin=job.pin,
            exclude=job.exclude,
            avoid=frozenset(failed_on),
            payload=job.payload,
            matcher=self._registry.matcher,
        )

        def waiting(reason: str) -> None:
            if observer is not None:
                observer.waiting(number, reason)

        slot = _HeldSlot(self._registry, requirement, job.priority, waiting)
        try:
            if job.deadline is None:
                link = await slot.take()
            else:
                async with asyncio.timeout_at(job.deadline):
                    link = await slot.take()
            outcome, elapsed, circuit = await self._run(
                job,
                number,
                link,
                failed_on,
                observer,
                # Taken, not read: neither this frame nor the requirement holds it meanwhile.
                requirement.take_choice(),
                _Asking(slot, asks),
            )
        finally:
            await slot.release()
        if outcome.ok:
            log.debug(
                "step.attempt_succeeded",
                task_id=job.task_id,
                step=job.step_id,
                attempt=number,
                agent=link.name,
                seconds=round(elapsed, 3),
            )
            return outcome
        failed_on.add(link.name)
        message = f"{outcome.code}: {outcome.message}" if outcome.message else outcome.code
        if circuit == "open":
            # Watchers see why this agent gets no more work for a while.
            message += f" (circuit of {link.name} is open)"
        log.warning(
            "step.attempt_failed",
            task_id=job.task_id,
            step=job.step_id,
            agent=link.name,
            attempt=number,
            code=outcome.code,
            retryable=outcome.retryable,
            reason=outcome.message[:500],
        )
        if observer is not None and outcome.retryable:
            observer.retrying(number, f"attempt {number} failed: {message}")
        raise StepFailed(message, code=outcome.code, retryable=outcome.retryable)

    async def _run(
        self,
        job: Job,
        number: int,
        link: AgentLink,
        failed_on: set[str],
        observer: AttemptObserver | None,
        choice: AgentChoice | None = None,
        asking: _Asking | None = None,
    ) -> tuple[Outcome, float, str]:
        """One attempt on ``link``: its (checked) outcome, seconds and the circuit after it."""
        loop = asyncio.get_running_loop()
        if observer is not None:
            observer.started(link.name, number, choice)
        choice = None  # in the event now: not held for as long as the attempt runs
        timeout = job.timeout or self._settings.default_step_timeout_seconds
        if job.deadline is not None:
            timeout = max(0.0, min(timeout, job.deadline - loop.time()))
        aid = uuid.uuid4().hex

        def progress(fraction: float, message: str) -> None:
            if observer is not None:
                observer.progress(link.name, number, fraction, message)

        limiter = ProgressLimiter(progress)
        log.debug(
            "step.assigned",
            task_id=job.task_id,
            step=job.step_id,
            attempt=number,
            agent=link.name,
            assignment_id=aid,
            capability=job.capability,
            compensation=job.compensation,
        )
        with _attempt_span(job, number, link) as span:
            on_ask = asking.callback(link, aid, number) if asking else None
            started = loop.time()
            try:
                try:
                    # Made in the call and held by no frame of ours: the link lets go of it
                    # once written (about 3 KiB a step in flight, most of it protobuf's
                    # arena, which no attempt needs while it waits; issue 9).
                    outcome = await link.run(
                        _assignment(job, number, aid, timeout, span),
                        limiter.report,
                        seconds=timeout,
                        on_ask=on_ask,
                    )
                finally:
                    limiter.close()  # the latest report held back goes out before the outcome
                elapsed = loop.time() - started
            finally:
                if asking is not None:
                    await asking.aclose()
            if observer is not None:
                observer.used(outcome.usage, elapsed)
            if outcome.usage is not None and outcome.usage.tokens:
                # Before the attempt is over: the next step of the pool sees the tokens.
                await self._registry.charge(link, job.capability, outcome.usage.tokens)
            if outcome.ok:
                declared = link.card.capability(job.capability)
                outcome.version = declared.version if declared else ""
                problem = declared and await _schema_error(declared.output_schema, outcome)
                if problem:
                    # The agent broke its own contract: counted against it (before its circuit
                    # and stats see the attempt), tried elsewhere.
                    outcome = Outcome(code=FailureCode.INVALID_OUTPUT, message=problem)
            elif outcome.code == FailureCode.INVALID_OUTPUT:
                # Also when the agent's own SDK caught it (and called it final): the fault is
                # the agent's, not the input's, so another agent may well answer correctly.
                outcome.retryable = True
            if not outcome.ok:
                tracing.failed(span, outcome.code, outcome.message)
        circuit = self._registry.record(
            link.name,
            elapsed,
            outcome.ok,
            agent_fault=outcome.code in AGENT_FAULTS,
            capability=job.capability,
        )
        metrics.ATTEMPTS.labels(link.name, outcome.code or "ok").inc()
        metrics.ATTEMPT_SECONDS.labels(job.capability).observe(elapsed)
        if number > 1:
            metrics.RETRIES.inc()
            if failed_on and link.name not in failed_on:
                metrics.FAILOVERS.inc()
        return outcome, elapsed, circuit


class _Asking:
    """One attempt's questions: each frees the slot, waits for its answer, takes a slot on
    the same agent again and sends the answer. Ended with the attempt (an attempt that ends
    while its agent waits, e.g. the Session broke: ``agent_lost``, leaves its question)."""

    def __init__(self, slot: _HeldSlot, asks: AskObserver | None) -> None:
        self._slot = slot
        self._asks = asks
        #: Made at the first question: most attempts ask none (one set fewer per attempt).
        self._tasks: TaskSet | None = None

    def callback(self, link: AgentLink, aid: str, attempt: int) -> AskCallback | None:
        """What hears the attempt's questions; None when nobody can answer them."""
        asks = self._asks
        if asks is None:
            return None

        def on_ask(question: HumanInput) -> None:
            if self._tasks is None:
                self._tasks = TaskSet()
            self._tasks.spawn(
                self._answer(asks, link, aid, attempt, question),
                name=f"ask-{aid}",
            )

        return on_ask

    async def _answer(
        self, asks: AskObserver, link: AgentLink, aid: str, attempt: int, question: HumanInput
    ) -> None:
        # A waiting run holds no slot: other work may run on the agent meanwhile.
        await self._slot.release()
        value = await asks.ask(attempt, question)
        await self._slot.take_on(link.name)
        asks.resumed(link.name, attempt)
        await link.answer(aid, value)

    async def aclose(self) -> None:
        """Stop waiting for answers (the attempt is over)."""
        if self._tasks is not None:
            await self._tasks.aclose()


def _assignment(
    job: Job, number: int, aid: str, timeout: float, span: tracing.Span
) -> agent_pb2.Assignment:
    """Attempt ``number`` of ``job`` as the agent gets it, due in ``timeout`` seconds."""
    deadline = timestamp_pb2.Timestamp()
    deadline.FromNanoseconds(time.time_ns() + int(timeout * 1e9))
    assignment = agent_pb2.Assignment(
        assignment_id=aid,
        idempotency_key=job.idempotency_key(number),
        task_id=job.task_id,
        step_id=job.step_id,
        capability=job.capability,
        attempt=number,
        deadline=deadline,
        compensation=job.compensation,
    )
    # Set even when empty, as json_format set it: some agents may tell {} from no input.
    assignment.input.SetInParent()
    if isinstance(job.payload, dict):
        assignment.input.update(job.payload)
    assignment.trace_context.update(tracing.carrier(span))
    return assignment


def _attempt_span(
    job: Job, number: int, link: AgentLink
) -> contextlib.AbstractContextManager[tracing.Span]:
    """The ``invoke_agent {agent}`` client span of one attempt (GenAI conventions)."""
    card = link.card
    return tracing.span(
        f"invoke_agent {card.name}",
        kind=tracing.SpanKind.CLIENT,
        attributes=lambda: {
            tracing.OPERATION: "invoke_agent",
            tracing.AGENT_NAME: card.name,
            tracing.AGENT_ID: link.identity,
            tracing.AGENT_VERSION: card.version,
            tracing.TOOL_NAME: job.capability,
            tracing.TASK_ID: job.task_id,
            tracing.STEP_ID: job.step_id,
            tracing.ATTEMPT: number,
        },
    )


async def _schema_error(schema: Mapping[str, JSON], outcome: Outcome) -> str | None:
    # Validating megabytes takes seconds: in a thread, so the orchestrator keeps answering.
    if outcome.size > THREAD_BYTES:
        return await asyncio.to_thread(schemas.first_error, schema, outcome.output)
    return schemas.first_error(schema, outcome.output)

"""One task's execution: dependency-driven, parallel, retried, failed over, rolled back.

The story of a task: it starts RUNNING; each step starts the moment the steps it depends on
have succeeded (the :class:`~agentmesh.orchestrator.engine.scheduler.Scheduler` says which,
with no level-by-level barriers); each is sent to an agent by the
:class:`~agentmesh.orchestrator.agents.dispatch.Dispatcher`; the plan may grow as it goes
(:mod:`~agentmesh.orchestrator.engine.growth`); the outputs are aggregated; and a task that
will not finish is rolled back (:mod:`~agentmesh.orchestrator.engine.saga`). Every change
goes through the task's :class:`~agentmesh.orchestrator.engine.journal.Journal`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from datetime import timedelta
from typing import Protocol

import structlog
from opentelemetry.trace import Span

from agentmesh.config import Settings
from agentmesh.errors import AgentMeshError, StepFailed, ValidationError
from agentmesh.models import (
    JSON,
    AgentChoice,
    EventKind,
    FailureCode,
    HumanInput,
    Outcome,
    StepKind,
    StepRecord,
    StepState,
    TaskRecord,
    TaskState,
    Usage,
)
from agentmesh.orchestrator.agents.dispatch import Dispatcher, Job
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.engine import children, growth, readable, saga, spans
from agentmesh.orchestrator.engine.budget import BudgetKeeper
from agentmesh.orchestrator.engine.inputs import AgentAsks, InputWait
from agentmesh.orchestrator.engine.journal import Journal, now
from agentmesh.orchestrator.engine.scheduler import Scheduler
from agentmesh.orchestrator.engine.stepcache import StepCache
from agentmesh.orchestrator.engine.streaming import PlanFollower
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import PlanPiece, dependencies, resolve
from agentmesh.orchestrator.planning.aggregate import DelegatedAggregate, aggregate, check_result
from agentmesh.orchestrator.store import Answer, Lease, Store

log = structlog.get_logger(__name__)


class TaskFailed(AgentMeshError):
    """A required step failed for good; the task cannot finish."""


class _Budgeted(Protocol):
    """Where a step's attempts report to the task's budget."""

    def starting(self, first: bool) -> None:
        """An attempt is about to go out (``first``: the step's first); StepFailed when the
        budget forbids it."""

    def used(self, usage: Usage | None, seconds: float) -> None:
        """An attempt ended, having used this much."""


class _StepObserver:
    """A step's state follows its attempts."""

    def __init__(
        self, journal: Journal, step: StepRecord, budget: _Budgeted, asks: AgentAsks
    ) -> None:
        self._journal = journal
        self._step = step
        self._budget = budget
        self._asks = asks
        #: Who gave the latest answer to the agent's question.
        self._answered_by = ""

    async def ask(self, attempt: int, question: HumanInput) -> JSON:
        step = self._step
        step.asked = question
        self._journal.step_state(step, StepState.INPUT_REQUIRED, question.prompt, attempt=attempt)
        try:
            answer = await self._asks.wait(step.spec.id)
        finally:
            step.asked = None
        self._answered_by = answer.answered_by
        return answer.value

    def resumed(self, agent: str, attempt: int) -> None:
        reason = f"answered by {self._answered_by}"
        self._journal.step_state(self._step, StepState.RUNNING, reason, attempt=attempt)

    def used(self, usage: Usage | None, seconds: float) -> None:
        self._budget.used(usage, seconds)

    def waiting(self, attempt: int, reason: str) -> None:
        self._journal.step_state(self._step, StepState.WAITING, reason, attempt=attempt)

    def started(self, agent: str, attempt: int, choice: AgentChoice | None = None) -> None:
        # StepFailed when the budget is spent. A step resumed after a restart re-sends an
        # attempt it counted already (its record has it).
        self._budget.starting(first=self._step.attempts == 0)
        step = self._step
        step.agent, step.attempts = agent, attempt
        step.started_at = step.started_at or now()
        self._journal.step_state(step, StepState.RUNNING, attempt=attempt, choice=choice)

    def progress(self, agent: str, attempt: int, fraction: float, message: str) -> None:
        self._journal.emit(
            EventKind.STEP_PROGRESS,
            self._step,
            agent=agent,
            attempt=attempt,
            fraction=fraction,
            message=message,
        )

    def retrying(self, attempt: int, reason: str) -> None:
        self._journal.step_state(self._step, StepState.PENDING, reason, attempt=attempt)


class TaskRun:
    """Runs one task to a final state; survives being stopped and resumed from the store."""

    def __init__(
        self,
        task: TaskRecord,
        last_sequence: int,
        *,
        store: Store,
        bus: EventBus,
        registry: Registry,
        settings: Settings,
        lease: Lease | None = None,
        span: Span | None = None,
        plan_rest: AsyncGenerator[PlanPiece, None] | None = None,
        cancel: children.CancelTask | None = None,
    ) -> None:
        self.task = task
        #: The task's ``invoke_workflow`` span (a resumed run opens its own when it starts).
        self._span = span
        self._store = store
        #: Cancels another task (a live child, before this one rolls back).
        self._cancel_task = cancel
        self._journal = Journal(task, last_sequence, store=store, bus=bus, lease=lease)
        self._dispatcher = Dispatcher(registry, settings)
        self._registry = registry
        self._settings = settings
        self._scheduler = Scheduler()
        self._step_cache = StepCache(store, registry)
        self._inputs = InputWait(store, task.id)
        self._agent_asks = AgentAsks()
        #: Each running step's task; their ends arrive on ``_finished``.
        self._running: dict[str, asyncio.Task[Outcome]] = {}
        #: Each step's end; None when a streamed plan grew (or its planner finished).
        self._finished: asyncio.Queue[tuple[StepRecord, asyncio.Task[Outcome]] | None] = (
            asyncio.Queue()
        )
        #: The rest of a plan still streaming in (``task.planning``), until it is followed.
        self._plan_rest = plan_rest
        self._following: PlanFollower | None = None
        #: Fan-out steps expanded so far → their instances' ids.
        self._fanouts: dict[str, list[str]] = {}
        #: Cancelled instances of a failed fan-out, awaited before the run moves on.
        self._stopping: set[asyncio.Task[Outcome]] = set()
        self._cancel_reason = ""
        self._budget = BudgetKeeper(task)
        #: Why the run cut its own work short (its budget was passed), once it did.
        self._failure = ""
        #: The task's work (steps, aggregation) while it runs: a cancel cuts this short.
        self._work: asyncio.Timeout | None = None
        #: Past its work (rolling back or finishing): a cancel changes nothing any more.
        self._settled = False
        self.finished = asyncio.Event()

    async def flush(self) -> None:
        """Write every change made so far, with its events, in one transaction."""
        await self._journal.flush()

    def cancel(self, reason: str) -> bool:
        """Ask the run to stop scheduling, cancel its running steps and roll back.

        Only the task's work is cut short, never the run itself: once it rolls back (or
        finishes), cancelling again changes nothing and the rollback runs each
        compensation once. True if this request is the one that stops the task.
        """
        if self._settled or self._cancel_reason:
            return False
        if self._work is not None:
            if self._work.expired():
                return False  # the task's deadline came first; its rollback says so
            # Expiring the work's own scope ends it with TimeoutError inside this run,
            # whereas cancelling the runner would cut off the rollback that follows.
            self._work.reschedule(asyncio.get_running_loop().time())
        self._cancel_reason = reason or "cancelled"
        return True

    async def run(self) -> None:
        """Drive the task to a final state (or until the orchestrator stops)."""
        runner = asyncio.current_task()
        assert runner is not None
        span = self._span or spans.resumed_span(self.task)
        try:
            with spans.running(span, self.task):
                async with self._journal.flushing(on_fenced=runner.cancel):
                    await self._run()
        finally:
            if self._plan_rest is not None:  # never followed (cancelled before it ran)
                await self._plan_rest.aclose()
            if self.task.state.final:
                self.finished.set()

    async def _run(self) -> None:
        if self.task.state is TaskState.PENDING:
            self._journal.task_state(TaskState.RUNNING)
        elif self.task.state is TaskState.RUNNING:
            self._resume_stopped_steps()
        if self.task.state is TaskState.COMPENSATING:
            self._settled = True
            await self._roll_back(self.task.error or "resumed rollback")
            return
        if self._cancel_reason:  # cancelled before its work began
            self._settled = True
            await self._roll_back(self._cancel_reason, cancelled=True)
            return
        deadline = None
        if self.task.timeout_seconds:
            deadline = self.task.created_at + timedelta(seconds=self.task.timeout_seconds)
        # A CancelledError from here on means the orchestrator is stopping (or lost the
        # lease): it propagates and leaves the task, rollback included, for recovery.
        try:
            try:
                async with asyncio.timeout(
                    None if deadline is None else max(0.0, (deadline - now()).total_seconds())
                ) as self._work:
                    outputs = await self._execute()
                    result = await self._aggregate(outputs)
                    await self._check_readable(result)
            finally:
                self._work, self._settled = None, True
        except TaskFailed as exc:
            # A step refused for the budget fails too: the budget is the reason to give.
            await self._roll_back(self._failure or exc.message)
            return
        except TimeoutError:
            if self._failure:
                await self._roll_back(self._failure)
            elif self._cancel_reason:
                await self._roll_back(self._cancel_reason, cancelled=True)
            else:
                await self._roll_back("task deadline exceeded")
            return
        self.task.result = result
        self._journal.task_state(TaskState.SUCCEEDED)

    def _resume_stopped_steps(self) -> None:
        # Steps cancelled because the run stopped (orchestrator stopping) do not count as
        # done. One that had an attempt out resumes that attempt (RUNNING: the same
        # idempotency key is sent again) instead of starting a new one: its agent may have
        # finished it before our Cancel arrived, and then answers from its cache.
        for step in self.task.steps.values():
            if step.state is StepState.CANCELLED and not self._fanout_ended(step):
                resumed = StepState.RUNNING if step.attempts else StepState.PENDING
                self._journal.step_state(step, resumed, "resumed after a stop")

    def _fanout_ended(self, step: StepRecord) -> bool:
        """True for a fan-out instance whose fan-out has ended (it will not run again)."""
        parent = growth.fanout_of(step.spec.id)
        return (
            parent is not None and parent in self.task.steps and self.task.steps[parent].state.final
        )

    def child_changed(self, child_id: str, step_id: str, what: str) -> None:
        """Sub-task ``child_id`` of step ``step_id`` was submitted or ended: the step's
        watchers hear."""
        children.tell_parent(self._journal, child_id, step_id, what)

    async def _roll_back(self, reason: str, *, cancelled: bool = False) -> None:
        if self._cancel_task is not None:  # children first: they may be using what we undo
            await children.cancel_live_children(
                self._store, self._cancel_task, self.task.id, reason
            )
        await saga.roll_back(self._journal, self._dispatcher, reason, cancelled=cancelled)

    # -- the steps ----------------------------------------------------------------------------

    async def _execute(self) -> Mapping[str, JSON]:
        """Run the steps as they become ready; the outputs once none is left to run."""
        self._plan_steps()
        try:
            self._follow_plan()
            while True:
                # Starting a step can make others ready (a fan-out's instances): until none is.
                while ready := self._scheduler.ready():
                    # The successes that made them ready are durable before they are sent.
                    await self._journal.dependable()
                    for step_id in ready:
                        self._start(self.task.steps[step_id])
                if not self._running and not self.task.planning:
                    return self._scheduler.outputs
                ended = await self._finished.get()
                if ended is None:
                    self._planned()
                    continue
                step, finished = ended
                if self._running.get(step.spec.id) is not finished:
                    continue  # a cancelled sibling of a failed fan-out instance
                del self._running[step.spec.id]
                try:
                    self._succeeded(step, finished.result())
                except StepFailed as exc:
                    self._failed(step, exc)
        finally:
            await self._stop()

    def _plan_steps(self) -> None:
        plan = self.task.plan
        assert plan is not None
        graph = dependencies(plan)
        for spec in plan.steps:
            step = self.task.steps[spec.id]
            if step.state is StepState.SUCCEEDED:
                self._scheduler.restore(spec.id, step.output)
        for spec in plan.steps:
            if not self.task.steps[spec.id].state.final:
                self._scheduler.add(spec.id, graph[spec.id])
        for spec in plan.steps:
            step = self.task.steps[spec.id]
            if step.state is StepState.SKIPPED:
                self._skip_dependants(spec.id)
            elif step.state.final and step.state is not StepState.SUCCEEDED:
                self._scheduler.failed(spec.id)

    def _follow_plan(self) -> None:
        if not self.task.planning:
            return
        if self._plan_rest is None:
            # Its planner's stream was lost with the replica that read it.
            raise TaskFailed("planning was interrupted: the plan was still streaming in")
        rest, self._plan_rest = self._plan_rest, None
        self._following = PlanFollower(
            rest, lambda: self._finished.put_nowait(None), task_id=self.task.id
        )

    def _planned(self) -> None:
        assert self._following is not None
        problem = self._following.take(self.task, self._journal, self._scheduler)
        if problem:
            raise TaskFailed(problem)

    def _start(self, step: StepRecord) -> None:
        if step.spec.for_each:
            if step.spec.id in self._fanouts:
                self._join(step)
            else:
                try:
                    self._expand(step)
                except StepFailed as exc:
                    self._failed(step, exc)
            return
        work = self._ask(step) if step.spec.kind is StepKind.INPUT else self._attempts(step)
        task = asyncio.create_task(work, name=f"step-{step.spec.id}")
        self._running[step.spec.id] = task
        task.add_done_callback(lambda done: self._finished.put_nowait((step, done)))

    def answered(self, step_id: str) -> None:
        """An answer to input step ``step_id`` is in the store: its wait ends."""
        self._inputs.answered(step_id)

    def agent_asking(self, step_id: str) -> bool:
        """True while the agent running step ``step_id`` waits for an answer (``ctx.ask``)."""
        return self._agent_asks.asking(step_id)

    def agent_answered(self, step_id: str, answer: Answer) -> None:
        """Give the agent waiting in step ``step_id`` its answer (FailedPrecondition: it has
        one)."""
        self._agent_asks.answer(step_id, answer)

    async def _ask(self, step: StepRecord) -> Outcome:
        if step.state is not StepState.INPUT_REQUIRED:
            asked = step.spec.human_input
            # Kept across restarts: the timeout counts from the first time the step asked.
            step.started_at = step.started_at or now()
            self._journal.step_state(
                step, StepState.INPUT_REQUIRED, asked.prompt if asked is not None else ""
            )
        return await self._inputs.wait(step)

    async def _attempts(self, step: StepRecord) -> Outcome:
        spec = step.spec
        try:
            payload = resolve(spec.input, input=self.task.input, outputs=self._scheduler.outputs)
        except AgentMeshError as exc:
            raise StepFailed(
                f"cannot resolve input: {exc}", code=FailureCode.BAD_REFERENCE, retryable=False
            ) from None
        if spec.cache is not None and (hit := await self._step_cache.lookup(spec, payload)):
            step.started_at = step.started_at or now()
            return hit
        # A step found RUNNING after a restart re-sends its last attempt (same idempotency key).
        resume = step.state is StepState.RUNNING and step.attempts > 0
        job = Job(
            task_id=self.task.id,
            step_id=spec.id,
            capability=spec.capability,
            payload=payload,
            version=spec.version,
            pin=spec.pin_agent,
            exclude=frozenset(spec.exclude_agents),
            priority=self.task.priority,
            retry=spec.retry,
            timeout=spec.timeout_seconds,
            first_attempt=step.attempts if resume else step.attempts + 1,
            resume_on=step.agent if resume else "",
        )
        observer = _StepObserver(self._journal, step, self, self._agent_asks)
        outcome = await self._dispatcher.send(job, observer, observer)
        await self._step_cache.keep(spec, payload, outcome, task_id=self.task.id, step_id=spec.id)
        return outcome

    def starting(self, first: bool) -> None:
        """A step's attempt is about to go to its agent: StepFailed once the budget is spent
        (and the task fails for its budget). Only a step's first attempt counts as a step."""
        if spent := self._budget.spent():
            self._fail_now(spent)
            raise StepFailed(spent, code=FailureCode.BUDGET_EXCEEDED, retryable=False)
        if first:
            self._budget.started()

    def used(self, usage: Usage | None, seconds: float) -> None:
        """A step's attempt ended having used ``usage``: the task stops once over budget."""
        self._budget.used(usage, seconds)
        if passed := self._budget.passed():
            self._fail_now(passed)

    def _fail_now(self, reason: str) -> None:
        """Cut the task's work short, as a cancel does, and fail it with ``reason``."""
        if self._work is None or self._work.expired() or self._settled:
            return  # already stopping (cancelled, past its deadline) or past its work
        self._failure = reason
        self._work.reschedule(asyncio.get_running_loop().time())

    def _succeeded(self, step: StepRecord, outcome: Outcome) -> None:
        if outcome.follow_ups:
            grown = growth.follow_ups(
                self.task, step, outcome.follow_ups, self._registry.capabilities()
            )
            self.task.plan = grown.plan
            self._journal.add_steps(grown.steps)
            for record in grown.steps:
                self._journal.step_state(record, StepState.PENDING, f"added by {step.spec.id}")
                self._scheduler.add(record.spec.id, grown.needs[record.spec.id])
        step.output = outcome.output
        # The message of a success says where its output came from: a cache, a person.
        self._journal.step_state(step, StepState.SUCCEEDED, outcome.message, cached=outcome.cached)
        self._scheduler.succeeded(step.spec.id, step.output)

    def _failed(self, step: StepRecord, exc: StepFailed) -> None:
        parent = growth.fanout_of(step.spec.id)
        if parent is not None and parent in self._fanouts:
            # The first failure fails the fan-out; its other instances are stopped.
            self._journal.step_state(step, StepState.FAILED, str(exc))
            self._scheduler.stopped(step.spec.id)
            for sibling in self._fanouts[parent]:
                if sibling in self._running:
                    stopped = self._running.pop(sibling)
                    stopped.cancel("fan-out stopped")
                    self._stopping.add(stopped)
                    self._journal.step_state(
                        self.task.steps[sibling], StepState.CANCELLED, "fan-out stopped"
                    )
            step = self.task.steps[parent]
        if step.spec.optional:
            self.task.partial = True
            self._journal.step_state(step, StepState.SKIPPED, f"optional step failed: {exc}")
            self._skip_dependants(step.spec.id)
            return
        self._journal.step_state(step, StepState.FAILED, str(exc))
        self._scheduler.failed(step.spec.id)
        raise TaskFailed(f"step {step.spec.id!r} failed: {exc}")

    def _skip_dependants(self, step_id: str) -> None:
        for dependant, cause in self._scheduler.skipped(step_id):
            self.task.partial = True
            skipped = self.task.steps[dependant]
            self._journal.step_state(skipped, StepState.SKIPPED, f"depends on skipped {[cause]}")

    def _expand(self, step: StepRecord) -> None:
        specs, fresh = growth.instances(self.task, step, self._scheduler.outputs)
        self._journal.add_steps(fresh)
        if step.state is not StepState.RUNNING:
            step.started_at = now()
            count = f"{len(specs)} item{'' if len(specs) == 1 else 's'}"
            self._journal.step_state(step, StepState.RUNNING, f"fan-out over {count}")
        self._fanouts[step.spec.id] = [s.id for s in specs]
        self._scheduler.expand(
            step.spec.id,
            {s.id: self.task.steps[s.id].state is StepState.SUCCEEDED for s in specs},
        )

    def _join(self, step: StepRecord) -> None:
        step.output = [self.task.steps[i].output for i in self._fanouts[step.spec.id]]
        self._journal.step_state(step, StepState.SUCCEEDED)
        self._scheduler.succeeded(step.spec.id, step.output)

    async def _stop(self) -> None:
        """Cancel what still runs; its steps (and unfinished fan-outs) end CANCELLED."""
        if self._following is not None:
            await self._following.stop()
        elif self._plan_rest is not None:
            await self._plan_rest.aclose()
        tasks = {*self._running.values(), *self._stopping}
        # The message reaches the agent as Cancel.reason (see AgentLink.run): the client's
        # own reason when a client cancelled the task.
        reason = self._cancel_reason or "task stopped"
        for task in tasks:
            task.cancel(reason)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for step_id in self._running:
            step = self.task.steps[step_id]
            if not step.state.final:
                stopped = "fan-out stopped" if growth.fanout_of(step_id) else "task stopped"
                self._journal.step_state(step, StepState.CANCELLED, stopped)
        for step_id in self._fanouts:
            step = self.task.steps[step_id]
            if not step.state.final:
                self._journal.step_state(step, StepState.CANCELLED, "task stopped")

    # -- the result ---------------------------------------------------------------------------

    async def _aggregate(self, outputs: Mapping[str, JSON]) -> JSON:
        plan = self.task.plan
        assert plan is not None
        try:
            result = aggregate(plan.aggregate, dict(outputs))
        except AgentMeshError as exc:
            raise TaskFailed(f"aggregation failed: {exc}") from None
        if not isinstance(result, DelegatedAggregate):
            return result
        job = Job(
            task_id=self.task.id,
            step_id="aggregate",
            capability=result.capability,
            payload=dict(result.input),
            version=result.version,
            priority=self.task.priority,
        )
        try:
            answer = await self._dispatcher.send(job)
            return check_result(result, answer.output)
        except (StepFailed, ValidationError) as exc:
            raise TaskFailed(f"aggregation by {result.capability!r} failed: {exc}") from None

    async def _check_readable(self, result: JSON) -> None:
        """TaskFailed when the task holding ``result`` would be too big for anyone to read."""
        limit = self._settings.max_message_bytes
        problem = await asyncio.to_thread(readable.oversize, self.task, result, limit)
        if problem:
            raise TaskFailed(problem)

"""One task's execution: dependency-driven, parallel, retried, failed over, rolled back.

A step starts the moment every step it depends on has succeeded: there are no
level-by-level barriers. State changes are applied in memory at once and
written (with their events) by one flusher per task, in order and in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from google.protobuf import json_format, timestamp_pb2
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from agentmesh import schemas
from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.config import Settings
from agentmesh.errors import AgentMeshError, StepFailed, ValidationError
from agentmesh.models import (
    JSON,
    EventKind,
    Plan,
    StepRecord,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.circuits import AGENT_FAULTS
from agentmesh.orchestrator.agents.intake import THREAD_BYTES
from agentmesh.orchestrator.agents.link import Outcome
from agentmesh.orchestrator.agents.matching import Requirement
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.engine import readable
from agentmesh.orchestrator.engine.progress import ProgressLimiter
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import (
    dependencies,
    expand_for_each,
    for_each_items,
    resolve,
    split_instance_id,
    validate_plan,
)
from agentmesh.orchestrator.planning.aggregate import DelegatedAggregate, aggregate, check_result
from agentmesh.orchestrator.store import Lease, LeaseLost, Store

log = structlog.get_logger(__name__)


class TaskFailed(AgentMeshError):
    """A required step failed for good; the task cannot finish."""


def _now() -> datetime:
    return datetime.now(UTC)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, StepFailed) and exc.retryable


async def _schema_error(schema: Mapping[str, JSON], outcome: Outcome) -> str | None:
    # Validating megabytes takes seconds: in a thread, so the orchestrator keeps answering.
    if outcome.size > THREAD_BYTES:
        return await asyncio.to_thread(schemas.first_error, schema, outcome.output)
    return schemas.first_error(schema, outcome.output)


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
    ) -> None:
        self.task = task
        self._lease = lease
        self._store = store
        self._bus = bus
        self._registry = registry
        self._settings = settings
        self._sequence = last_sequence
        self._events: list[TaskEvent] = []
        self._dirty: dict[str, StepRecord] = {}
        self._new: list[tuple[int, StepRecord]] = []
        self._write_lock = asyncio.Lock()
        #: Set by every change; an idle task's flusher sleeps instead of polling.
        self._changed = asyncio.Event()
        self._cancel_reason = ""
        #: The task's work (steps, aggregation) while it runs: a cancel cuts this short.
        self._work: asyncio.Timeout | None = None
        #: Past its work (rolling back or finishing): a cancel changes nothing any more.
        self._settled = False
        self._fenced = False
        self._log = log.bind(task_id=task.id)
        self.finished = asyncio.Event()

    # -- events and persistence ---------------------------------------------------------------

    def _emit(self, kind: EventKind, step: StepRecord | None = None, **fields: Any) -> None:
        self._sequence += 1
        now = _now()
        self.task.updated_at = now
        if step is not None:
            self._dirty[step.spec.id] = step
            fields.setdefault("step_id", step.spec.id)
        self._events.append(
            TaskEvent(task_id=self.task.id, sequence=self._sequence, time=now, kind=kind, **fields)
        )
        self._changed.set()

    def _set_task_state(self, state: TaskState, reason: str = "") -> None:
        self.task.state = state
        if state in (TaskState.FAILED, TaskState.ROLLBACK_FAILED) and reason:
            self.task.error = reason
        self._emit(
            EventKind.TASK_STATE,
            state=state.value,
            reason=reason,
            output=self.task.result if state is TaskState.SUCCEEDED else None,
            partial=self.task.partial,
        )
        self._log.info("task.state", state=state.value, reason=reason)
        if state.final:
            metrics.TASKS.labels(state.value).inc()
        if state is TaskState.ROLLBACK_FAILED:
            self._log.error("task.rollback_failed", reason=reason)

    def _set_step_state(
        self, step: StepRecord, state: StepState, reason: str = "", *, attempt: int = 0
    ) -> None:
        step.state = state
        if state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED):
            step.error = reason
        if state.final:
            step.finished_at = _now()
            metrics.STEPS.labels(state.value).inc()
        self._emit(
            EventKind.STEP_STATE,
            step,
            state=state.value,
            agent=step.agent,
            attempt=attempt or step.attempts,
            reason=reason,
            output=step.output if state is StepState.SUCCEEDED else None,
        )

    def _add_steps(self, steps: list[StepRecord]) -> None:
        for step in steps:
            self._new.append((len(self.task.steps), step))
            self.task.steps[step.spec.id] = step

    async def flush(self) -> None:
        """Write every change made so far, with its events, in one transaction."""
        async with self._write_lock:
            if not (self._events or self._dirty or self._new):
                return
            events, self._events = self._events, []
            dirty, self._dirty = self._dirty, {}
            new, self._new = self._new, []
            new_ids = {s.spec.id for _, s in new}
            # The task as of these events: the run goes on while we wait for the database,
            # and a final state written without its final event would end the lease early.
            task = self.task.model_copy()
            try:
                await self._store.commit(
                    task,
                    [s for i, s in dirty.items() if i not in new_ids],
                    events,
                    new_steps=new,
                    lease=self._lease,
                )
            except Exception:
                # Put the batch back (in order, before anything newer) so nothing is lost.
                self._events[:0] = events
                self._dirty = {**dirty, **self._dirty}
                self._new[:0] = new
                raise
        await self._bus.published(self.task.id)

    async def _flusher(self, runner: asyncio.Task[None]) -> None:
        while True:
            await self._changed.wait()
            await asyncio.sleep(0.02)  # gather what else happens meanwhile into one commit
            self._changed.clear()
            try:
                await self.flush()
            except LeaseLost:
                # Another replica took the task over: stop without writing anything more.
                self._log.error("task.lease_lost")
                self._fenced = True
                runner.cancel()
                return
            except Exception as exc:
                # The batch went back into memory: nothing is lost, it is written next time.
                self._log.error("task.flush_failed", error=repr(exc))
                await asyncio.sleep(1)
                self._changed.set()

    # -- the run ----------------------------------------------------------------------------

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
        flusher = asyncio.create_task(self._flusher(runner), name=f"flush-{self.task.id}")
        try:
            await self._run()
        finally:
            # Never cut a flush off mid-commit: it has taken its batch out of memory.
            async with self._write_lock:
                flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            if not self._fenced:
                with contextlib.suppress(LeaseLost):
                    await asyncio.shield(self.flush())
            if self.task.state.final:
                self.finished.set()

    async def _run(self) -> None:
        if self.task.state is TaskState.PENDING:
            self._set_task_state(TaskState.RUNNING)
        elif self.task.state is TaskState.RUNNING:
            # Resumed: steps cancelled because the run stopped (orchestrator stopping) do not
            # count as done. One that had an attempt out resumes that attempt (RUNNING: the
            # same idempotency key is sent again) instead of starting a new one: its agent may
            # have finished it before our Cancel arrived, and then answers from its cache.
            for step in self.task.steps.values():
                if step.state is StepState.CANCELLED and not self._parent_final(step):
                    resumed = StepState.RUNNING if step.attempts else StepState.PENDING
                    self._set_step_state(step, resumed, "resumed after a stop")
        if self.task.state is TaskState.COMPENSATING:
            self._settled = True
            await self._rollback(TaskState.FAILED, self.task.error or "resumed rollback")
            return
        if self._cancel_reason:  # cancelled before its work began
            self._settled = True
            await self._rollback(TaskState.CANCELLED, self._cancel_reason)
            return
        deadline = None
        if self.task.timeout_seconds:
            deadline = self.task.created_at + timedelta(seconds=self.task.timeout_seconds)
        # A CancelledError from here on means the orchestrator is stopping (or lost the
        # lease): it propagates and leaves the task, rollback included, for recovery.
        try:
            try:
                async with asyncio.timeout(
                    None if deadline is None else max(0.0, (deadline - _now()).total_seconds())
                ) as self._work:
                    outputs = await self._execute()
                    result = await self._aggregate(outputs)
                    await self._check_readable(result)
            finally:
                self._work, self._settled = None, True
        except TaskFailed as exc:
            await self._rollback(TaskState.FAILED, exc.message)
            return
        except TimeoutError:
            if self._cancel_reason:
                await self._rollback(TaskState.CANCELLED, self._cancel_reason)
            else:
                await self._rollback(TaskState.FAILED, "task deadline exceeded")
            return
        self.task.result = result
        self._set_task_state(TaskState.SUCCEEDED)

    def _parent_final(self, step: StepRecord) -> bool:
        """True for a fan-out instance whose fan-out has ended (it will not run again)."""
        parent, index = split_instance_id(step.spec.id)
        return (
            index is not None and parent in self.task.steps and self.task.steps[parent].state.final
        )

    def _outputs(self) -> dict[str, JSON]:
        return {
            step_id: step.output
            for step_id, step in self.task.steps.items()
            if step.state is StepState.SUCCEEDED and "[" not in step_id
        }

    async def _execute(self) -> dict[str, JSON]:
        running: dict[asyncio.Task[None], StepRecord] = {}
        plan: Plan | None = None
        graph: dict[str, set[str]] = {}
        try:
            while True:
                if plan is not self.task.plan:  # follow-up steps grew the plan
                    plan = self.task.plan
                    graph = dependencies(plan) if plan else {}
                self._start_ready(plan.steps if plan else (), graph, running)
                if not running:
                    return self._outputs()
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for finished in done:
                    step = running.pop(finished)
                    exc = finished.exception()
                    if exc is None:
                        continue
                    if not isinstance(exc, StepFailed):
                        raise exc
                    if step.spec.optional:
                        self.task.partial = True
                        self._set_step_state(
                            step, StepState.SKIPPED, f"optional step failed: {exc}"
                        )
                        continue
                    self._set_step_state(step, StepState.FAILED, str(exc))
                    raise TaskFailed(f"step {step.spec.id!r} failed: {exc}")
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
                for step in running.values():
                    if not step.state.final:
                        self._set_step_state(step, StepState.CANCELLED, "task stopped")

    def _start_ready(
        self,
        specs: tuple[StepSpec, ...],
        graph: Mapping[str, set[str]],
        running: dict[asyncio.Task[None], StepRecord],
    ) -> None:
        active = {s.spec.id for s in running.values()}
        changed = True
        while changed:  # skipping a step may make its dependants skippable in the same pass
            changed = False
            for spec in specs:
                step = self.task.steps[spec.id]
                if step.state.final or spec.id in active:
                    continue
                needs = [self.task.steps[d] for d in graph.get(spec.id, ())]
                skipped = [d.spec.id for d in needs if d.state is StepState.SKIPPED]
                if skipped:
                    self.task.partial = True
                    self._set_step_state(step, StepState.SKIPPED, f"depends on skipped {skipped}")
                    changed = True
                    continue
                if all(d.state is StepState.SUCCEEDED for d in needs):
                    task = asyncio.create_task(self._run_step(step), name=f"step-{spec.id}")
                    running[task] = step
                    active.add(spec.id)

    async def _run_step(self, step: StepRecord) -> None:
        if step.spec.for_each:
            await self._run_fanout(step)
            return
        outputs = self._outputs()
        try:
            payload = resolve(step.spec.input, input=self.task.input, outputs=outputs)
        except AgentMeshError as exc:
            raise StepFailed(
                f"cannot resolve input: {exc}", code="bad_reference", retryable=False
            ) from None
        outcome = await self._attempts(step, step.spec.capability, payload)
        step.output = outcome.output
        if outcome.follow_ups:
            self._add_follow_ups(step, outcome.follow_ups)
        self._set_step_state(step, StepState.SUCCEEDED)

    def _add_follow_ups(self, parent: StepRecord, specs: tuple[StepSpec, ...]) -> None:
        """Grow the plan with steps an agent asked for; they run after ``parent``."""
        plan = self.task.plan
        assert plan is not None
        if "[" in parent.spec.id:
            raise StepFailed(
                "fan-out instances cannot add follow-up steps",
                code="invalid_output",
                retryable=False,
            )
        added = tuple(
            s.model_copy(update={"needs": tuple(dict.fromkeys((*s.needs, parent.spec.id)))})
            for s in specs
        )
        grown = Plan(steps=plan.steps + added, aggregate=plan.aggregate)
        try:
            validate_plan(grown, capabilities=self._registry.capabilities())
        except ValidationError as exc:
            raise StepFailed(
                f"invalid follow-up steps: {exc}", code="invalid_output", retryable=False
            ) from None
        self.task.plan = grown
        records = [StepRecord(spec=s) for s in added]
        self._add_steps(records)
        for record in records:
            self._set_step_state(record, StepState.PENDING, f"added by {parent.spec.id}")

    async def _run_fanout(self, step: StepRecord) -> None:
        try:
            items = for_each_items(step.spec, input=self.task.input, outputs=self._outputs())
            specs = expand_for_each(step.spec, items)
        except AgentMeshError as exc:
            raise StepFailed(
                f"cannot fan out: {exc}", code="bad_reference", retryable=False
            ) from None
        # Instances survive a restart in the store; reuse those that exist.
        fresh = [StepRecord(spec=s) for s in specs if s.id not in self.task.steps]
        self._add_steps(fresh)
        if step.state is not StepState.RUNNING:
            step.started_at = _now()
            count = f"{len(specs)} item{'' if len(specs) == 1 else 's'}"
            self._set_step_state(step, StepState.RUNNING, f"fan-out over {count}")
        instances = [self.task.steps[s.id] for s in specs]
        try:
            async with asyncio.TaskGroup() as group:
                for instance in instances:
                    if instance.state is not StepState.SUCCEEDED:
                        group.create_task(self._run_instance(instance))
        except ExceptionGroup as group_error:
            # The first failure fails the fan-out; the TaskGroup cancelled its siblings.
            raise group_error.exceptions[0] from None
        step.output = [i.output for i in instances]
        self._set_step_state(step, StepState.SUCCEEDED)

    async def _run_instance(self, instance: StepRecord) -> None:
        try:
            await self._run_step(instance)
        except StepFailed as exc:
            self._set_step_state(instance, StepState.FAILED, str(exc))
            raise
        except asyncio.CancelledError:
            self._set_step_state(instance, StepState.CANCELLED, "fan-out stopped")
            raise

    async def _attempts(
        self,
        step: StepRecord,
        capability: str,
        payload: JSON,
        *,
        compensation: bool = False,
        tracked: bool = True,
    ) -> Outcome:
        """Run ``capability`` until an attempt succeeds or the retry policy gives up.

        ``tracked``: the step's own state follows the attempts (not so for its compensation
        or for an aggregation run on an agent).
        """
        spec = step.spec
        max_attempts = spec.retry.max_attempts or self._settings.default_max_attempts
        # A step found RUNNING after a restart re-sends its last attempt (same idempotency key).
        resume = tracked and step.state is StepState.RUNNING and step.attempts > 0
        first = step.attempts if resume else (step.attempts + 1 if tracked else 1)
        failed_on: set[str] = set()
        prefer = ""
        if resume and step.agent:
            # The re-sent attempt carries the same idempotency key, which only the agent that
            # ran it can honour (replay its result or join the run): give it a moment to
            # register again after our restart before going elsewhere.
            prefer = step.agent
            await self._registry.wait_for_agent(prefer, self._settings.agent_timeout_seconds + 5)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(max(1, max_attempts - first + 1)),
            # Jitter of one initial backoff keeps retries of many steps from moving in lockstep.
            wait=wait_exponential_jitter(
                multiplier=spec.retry.initial_backoff_seconds,
                max=spec.retry.max_backoff_seconds,
                jitter=spec.retry.initial_backoff_seconds,
            ),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = first + attempt.retry_state.attempt_number - 1
                return await self._attempt(
                    step,
                    capability,
                    payload,
                    number,
                    failed_on,
                    compensation=compensation,
                    tracked=tracked,
                    prefer=prefer if number == first else "",
                )
        raise AssertionError("unreachable: tenacity reraises")

    async def _attempt(
        self,
        step: StepRecord,
        capability: str,
        payload: JSON,
        number: int,
        failed_on: set[str],
        *,
        compensation: bool,
        tracked: bool,
        prefer: str = "",
    ) -> Outcome:
        spec = step.spec
        requirement = Requirement(
            prefer=prefer,
            capability=capability,
            version="" if compensation else spec.version,
            pin=spec.pin_agent,
            exclude=frozenset(spec.exclude_agents),
            avoid=frozenset(failed_on),
            payload=payload,
        )

        def waiting() -> None:
            if tracked:
                self._set_step_state(
                    step,
                    StepState.WAITING,
                    f"no agent with {capability!r} has room",
                    attempt=number,
                )

        async with self._registry.slot(requirement, self.task.priority, waiting) as link:
            if tracked:
                step.agent, step.attempts = link.name, number
                step.started_at = step.started_at or _now()
                self._set_step_state(step, StepState.RUNNING, attempt=number)
            timeout = spec.timeout_seconds or self._settings.default_step_timeout_seconds
            deadline = timestamp_pb2.Timestamp()
            deadline.FromDatetime(_now() + timedelta(seconds=timeout))
            # One key per attempt; compensations get their own ("undo-N") so that retrying
            # an undo on the same agent runs it again instead of replaying its failure.
            attempt_key = f"undo-{number}" if compensation else str(number)
            assignment = agent_pb2.Assignment(
                assignment_id=uuid.uuid4().hex,
                idempotency_key=f"{self.task.id}/{spec.id}/{attempt_key}",
                task_id=self.task.id,
                step_id=spec.id,
                capability=capability,
                attempt=number,
                deadline=deadline,
                compensation=compensation,
            )
            json_format.ParseDict(payload if isinstance(payload, dict) else {}, assignment.input)

            def progress(fraction: float, message: str) -> None:
                self._emit(
                    EventKind.STEP_PROGRESS,
                    step,
                    agent=link.name,
                    attempt=number,
                    fraction=fraction,
                    message=message,
                )

            limiter = ProgressLimiter(progress)
            self._log.info(
                "step.assigned",
                step=spec.id,
                attempt=number,
                agent=link.name,
                assignment_id=assignment.assignment_id,
                capability=capability,
                compensation=compensation,
            )
            started = asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(timeout):
                    outcome = await link.run(assignment, limiter.report)
            except TimeoutError:
                outcome = Outcome(code="timeout", message=f"no result within {timeout:g}s")
            finally:
                limiter.close()  # the latest report held back goes out before the outcome
            elapsed = asyncio.get_running_loop().time() - started
            if outcome.ok:
                declared = link.card.capability(capability)
                problem = declared and await _schema_error(declared.output_schema, outcome)
                if problem:
                    # The agent broke its own contract: counted against it (before its
                    # circuit and stats see the attempt), tried elsewhere.
                    outcome = Outcome(code="invalid_output", message=problem, retryable=True)
            elif outcome.code == "invalid_output":
                # Also when the agent's own SDK caught it (and called it final): the fault is
                # the agent's, not the input's, so another agent may well answer correctly.
                outcome.retryable = True
            circuit = self._registry.record(
                link.name, elapsed, outcome.ok, agent_fault=outcome.code in AGENT_FAULTS
            )
            metrics.ATTEMPTS.labels(link.name, outcome.code or "ok").inc()
            metrics.ATTEMPT_SECONDS.labels(capability).observe(elapsed)
            if number > 1:
                metrics.RETRIES.inc()
                if failed_on and link.name not in failed_on:
                    metrics.FAILOVERS.inc()
        if outcome.ok:
            self._log.info(
                "step.attempt_succeeded",
                step=spec.id,
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
        self._log.warning(
            "step.attempt_failed",
            step=spec.id,
            agent=link.name,
            attempt=number,
            code=outcome.code,
            retryable=outcome.retryable,
            reason=outcome.message[:500],
        )
        if tracked and outcome.retryable:
            self._set_step_state(
                step, StepState.PENDING, f"attempt {number} failed: {message}", attempt=number
            )
        raise StepFailed(message, code=outcome.code, retryable=outcome.retryable)

    async def _check_readable(self, result: JSON) -> None:
        """TaskFailed when the task holding ``result`` would be too big for anyone to read."""
        limit = self._settings.max_message_bytes
        problem = await asyncio.to_thread(readable.oversize, self.task, result, limit)
        if problem:
            raise TaskFailed(problem)

    async def _aggregate(self, outputs: dict[str, JSON]) -> JSON:
        plan = self.task.plan
        assert plan is not None
        try:
            result = aggregate(plan.aggregate, outputs)
        except AgentMeshError as exc:
            raise TaskFailed(f"aggregation failed: {exc}") from None
        if isinstance(result, DelegatedAggregate):
            holder = StepRecord(
                spec=StepSpec(id="aggregate", capability=result.capability, version=result.version)
            )
            try:
                answer = await self._attempts(
                    holder, result.capability, dict(result.input), tracked=False
                )
                return check_result(result, answer.output)
            except (StepFailed, ValidationError) as exc:
                raise TaskFailed(f"aggregation by {result.capability!r} failed: {exc}") from None
        return result

    # -- rollback ---------------------------------------------------------------------------

    async def _rollback(self, failed_state: TaskState, reason: str) -> None:
        """Run the compensations of completed steps in reverse completion order."""
        done = [
            s
            for s in self.task.steps.values()
            if s.state is StepState.SUCCEEDED and s.spec.compensation
        ]
        if not done:
            self._set_task_state(failed_state, reason)
            return
        self.task.error = reason
        if self.task.state is not TaskState.COMPENSATING:
            self._set_task_state(TaskState.COMPENSATING, reason)
        done.sort(key=lambda s: s.finished_at or s.started_at or _now(), reverse=True)
        remaining = []
        for step in done:
            try:
                payload = resolve(step.spec.input, input=self.task.input, outputs=self._outputs())
            except AgentMeshError:
                payload = dict(step.spec.input)
            payload = {**(payload if isinstance(payload, dict) else {}), "output": step.output}
            try:
                await self._attempts(
                    step, step.spec.compensation, payload, compensation=True, tracked=False
                )
            except StepFailed as exc:
                remaining.append(step.spec.id)
                self._log.error("task.compensation_failed", step=step.spec.id, error=str(exc))
                continue
            self._set_step_state(step, StepState.COMPENSATED, f"undone by {step.spec.compensation}")
        if remaining:
            self._set_task_state(
                TaskState.ROLLBACK_FAILED, f"{reason}; compensation failed for {remaining}"
            )
        else:
            self._set_task_state(TaskState.ROLLED_BACK, reason)

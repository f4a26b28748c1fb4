"""The engine: accepts tasks, plans them, runs each to a final state, resumes after restarts.

Replicas sharing one database split the work through leases: each task is run
by the replica holding its lease, which renews it while the task runs. When a
replica dies its leases run out and the others claim its tasks, resuming them
from the store the way a restarted orchestrator resumes its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime

import structlog
from opentelemetry.trace import Span

from agentmesh import tracing
from agentmesh._tasks import TaskSet
from agentmesh.config import Settings
from agentmesh.errors import FailedPrecondition, NotFound
from agentmesh.logs import exception_fields
from agentmesh.models import StepRecord, TaskRecord, TaskRequest, TaskState
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.engine import spans
from agentmesh.orchestrator.engine.idempotency import fingerprint
from agentmesh.orchestrator.engine.run import TaskRun
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import Planner, PlanPiece, draft_plan
from agentmesh.orchestrator.store import Answer, Lease, Store

log = structlog.get_logger(__name__)

_CANCEL_CHANNEL = "task-cancel"
_ANSWER_CHANNEL = "task-answer"
_CHILD_CHANNEL = "task-child"


class Engine:
    """Owns every task this replica runs; ``async with Engine(...)`` claims and resumes tasks."""

    def __init__(
        self,
        *,
        store: Store,
        cache: Cache,
        bus: EventBus,
        registry: Registry,
        planner: Planner,
        settings: Settings,
    ) -> None:
        self._store = store
        self._cache = cache
        self._bus = bus
        self._registry = registry
        self._planner = planner
        self._settings = settings
        self.lease = Lease(settings.replica, settings.lease_seconds)
        self._runs: dict[str, TaskRun] = {}
        #: Every run's asyncio task by task id (the handles live in ``_background`` too).
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: The lease keeper, the cancel listener and every run.
        self._background = TaskSet()

    async def __aenter__(self) -> Engine:
        await self._claim()  # resume our own unfinished tasks before serving
        self._background.spawn(self._keep_leases(), name="engine-leases")
        self._background.spawn(
            self._listen(_CANCEL_CHANNEL, self._cancel_heard), name="engine-cancels"
        )
        self._background.spawn(
            self._listen(_ANSWER_CHANNEL, self._answer_heard), name="engine-answers"
        )
        self._background.spawn(
            self._listen(_CHILD_CHANNEL, self._child_heard), name="engine-children"
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        # Stopping is not cancelling: runs stop where they are and resume after a restart
        # (here, or on another replica once the lease runs out).
        await self._background.aclose()

    # -- leases ------------------------------------------------------------------------------

    async def _claim(self) -> None:
        # Skipping what we already run keeps the claim cheap and, more importantly, lets a
        # dead replica's tasks be found however many of our own are older.
        for task_id in await self._store.claim_tasks(self.lease, skip=set(self._runs)):
            if task_id in self._runs:
                continue
            task = await self._store.get_task(task_id)
            if task is not None and not task.state.final:
                log.info("task.resumed", task_id=task_id, state=task.state.value)
                self._start(task, await self._store.last_sequence(task_id))

    async def _keep_leases(self) -> None:
        interval = self._settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                running = list(self._runs)
                owned = await self._store.renew_leases(self.lease, running)
                # Only those asked about: a task submitted meanwhile is ours, not lost; one
                # that finished meanwhile gave its lease back.
                for task_id in set(running) - owned:
                    run = self._runs.get(task_id)
                    if run is None or run.task.state.final:
                        continue
                    log.error("task.lease_lost", task_id=task_id)
                    self._stop(task_id)
                for task_id, reason in (await self._store.cancel_requests(owned)).items():
                    self._cancel_local(task_id, reason)
                await self._claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Leases are long enough to survive a missed renewal; try again next round.
                log.warning("engine.lease_round_failed", error=repr(exc))

    async def _listen(self, channel: str, heard: Callable[[dict[str, object]], None]) -> None:
        """Hand ``heard`` every message another replica (or this one) publishes on
        ``channel``."""
        async with self._cache.subscribe(channel) as messages:
            async for message in messages:
                if isinstance(message, dict):
                    heard(message)

    def _cancel_heard(self, message: dict[str, object]) -> None:
        # The fast path for cancellations asked of another replica; the lease loop is the
        # slow path that also works while Redis is down.
        self._cancel_local(str(message.get("task_id")), str(message.get("reason")))

    def _answer_heard(self, message: dict[str, object]) -> None:
        # The fast path for answers given to another replica; without it a waiting step
        # finds its answer in the store on its next look.
        run = self._runs.get(str(message.get("task_id")))
        if run is not None:
            run.answered(str(message.get("step_id")))

    def _child_heard(self, message: dict[str, object]) -> None:
        # A sub-task that runs on another replica than its parent (one whose store had
        # seen the parent step running took it first) sends its news through Redis.
        run = self._runs.get(str(message.get("task_id")))
        if run is not None:
            run.child_changed(
                str(message.get("child_id")), str(message.get("step_id")), str(message.get("what"))
            )

    async def provide_input(self, task_id: str, step_id: str, answer: Answer) -> None:
        """Keep ``answer`` to an input step (FailedPrecondition when it has one) and wake
        the run waiting for it, wherever it runs. An agent's question (``ctx.ask``) is
        answered in memory, on the replica whose run waits for it."""
        run = self._runs.get(task_id)
        if run is not None and run.agent_asking(step_id):
            run.agent_answered(step_id, answer)
            log.info("step.answered", task_id=task_id, step=step_id, by=answer.answered_by)
            return
        await self._store.save_answer(task_id, step_id, answer)
        log.info("step.answered", task_id=task_id, step=step_id, by=answer.answered_by)
        run = self._runs.get(task_id)
        if run is not None:
            run.answered(step_id)
            return
        try:
            await self._cache.publish(_ANSWER_CHANNEL, {"task_id": task_id, "step_id": step_id})
        except Exception as exc:  # the answer is stored: the run finds it on its next look
            log.warning("step.answer_not_published", task_id=task_id, error=repr(exc))

    # -- runs --------------------------------------------------------------------------------

    def _start(
        self,
        task: TaskRecord,
        last_sequence: int,
        span: Span | None = None,
        plan_rest: AsyncGenerator[PlanPiece, None] | None = None,
    ) -> TaskRun:
        run = TaskRun(
            task,
            last_sequence,
            store=self._store,
            bus=self._bus,
            registry=self._registry,
            settings=self._settings,
            lease=self.lease,
            span=span,
            plan_rest=plan_rest,
            cancel=self.cancel,
        )
        self._runs[task.id] = run
        self._tasks[task.id] = self._background.spawn(self._drive(run), name=f"task-{task.id}")
        return run

    def _stop(self, task_id: str) -> None:
        handle = self._tasks.get(task_id)
        if handle is not None:
            handle.cancel()

    async def _drive(self, run: TaskRun) -> None:
        try:
            await run.run()
        except Exception as exc:
            # A bug must not leave the task silently stuck: record it as failed.
            log.error("task.crashed", task_id=run.task.id, **exception_fields(exc))
            run.task.error = "internal error; see orchestrator logs"
            run.task.state = TaskState.FAILED
            try:
                await run.flush()
            except Exception as flush_error:  # CancelledError (stopping) goes through
                # Stays unfinished in the store: whoever resumes it runs it again.
                log.error(
                    "task.failure_not_recorded",
                    task_id=run.task.id,
                    **exception_fields(flush_error),
                )
        finally:
            self._runs.pop(run.task.id, None)
            self._tasks.pop(run.task.id, None)
            if run.task.state.final:
                self._tell_parent(run.task, run.task.state.value)

    def _tell_parent(self, task: TaskRecord, what: str) -> None:
        """The parent step of sub-task ``task`` hears that it was submitted or ended: here,
        or on the replica that runs the parent (through Redis; without it, one orchestrator
        runs them all)."""
        if task.parent is None:
            return
        parent = self._runs.get(task.parent.task_id)
        if parent is not None:
            parent.child_changed(task.id, task.parent.step_id, what)
            return
        news = {
            "task_id": task.parent.task_id,
            "step_id": task.parent.step_id,
            "child_id": task.id,
            "what": what,
        }
        self._background.spawn(self._publish_child(news), name=f"engine-child-{task.id}")

    async def _publish_child(self, news: dict[str, str]) -> None:
        try:
            await self._cache.publish(_CHILD_CHANNEL, news)
        except Exception as exc:  # a reference missed; the child's own events are whole
            log.warning("task.child_news_not_published", error=repr(exc), **news)

    async def submit(self, request: TaskRequest, owner: str) -> TaskRecord:
        """Plan and persist a task, start running it, and return it at once.

        With an idempotency key the caller used before: the first task when the request is
        the same, AlreadyExists when it differs (checked before planning, which may cost a
        model call, and again by the store, which settles concurrent submissions).
        """
        key = request.idempotency_key
        digest = fingerprint(request) if key else ""
        if key and (earlier := await self._store.task_for_key(owner, key, digest)) is not None:
            return earlier
        task_id = str(uuid.uuid4())
        # Started here, ended by the run: the task's span outlives this call.
        span = spans.task_span(task_id, request)
        try:
            with spans.running_while_planning(span), spans.planning(task_id):
                # A streaming planner answers with its first steps: the task starts with
                # them and its run takes the rest as it comes (task.planning until then).
                draft = await draft_plan(self._planner, request, self._registry.capabilities())
        except BaseException:
            span.end()
            raise
        plan = draft.plan
        now = datetime.now(UTC)
        task = TaskRecord(
            id=task_id,
            owner=owner,
            input=request.input,
            priority=request.priority,
            labels=request.labels,
            timeout_seconds=request.timeout_seconds,
            budget=request.budget,
            parent=request.parent,
            plan=plan,
            steps={s.id: StepRecord(spec=s) for s in plan.steps},
            created_at=now,
            updated_at=now,
            trace_context=tracing.carrier(span),
            planning=not draft.complete,
        )
        try:
            stored = await self._store.create_task(task, key, fingerprint=digest, lease=self.lease)
        except BaseException:
            span.end()
            await draft.close()
            raise
        if stored.id != task.id:
            span.end()  # an earlier submission's task: it has a span of its own
            await draft.close()
            return stored
        log.info(
            "task.submitted",
            task_id=task.id,
            owner=owner,
            steps=len(plan.steps),
            planning=task.planning,
        )
        metrics.TASKS_SUBMITTED.inc()
        # Durable as created: readers of Redis (GetTask, ListTasks of live tasks) see it now.
        self._bus.committed(task.id, (), task.model_copy())
        self._start(task, 0, span, draft.rest)
        self._tell_parent(task, "submitted")
        return stored

    def _cancel_local(self, task_id: str, reason: str) -> None:
        # Only the run may stop itself: cancelling its asyncio task is what stopping the
        # orchestrator does, and would cut a rollback off halfway.
        run = self._runs.get(task_id)
        if run is not None:
            run.cancel(reason)

    async def _record_cancel(self, task_id: str, reason: str) -> None:
        # The run has the request already; the store keeps it should we stop before the
        # run has written its rollback: whoever resumes the task is asked again.
        try:
            await self._store.request_cancel(task_id, reason)
        except Exception as exc:  # the run cancels all the same; the caller need not fail
            log.warning("task.cancel_not_recorded", task_id=task_id, error=repr(exc))

    async def cancel(self, task_id: str, reason: str) -> None:
        """Cancel a task, wherever it runs: stop scheduling, cancel its steps, roll back.

        Returns once the task has reached a final state. The run belongs to the engine,
        not to the caller: a caller that gives up (a deadline, a second cancel) stops
        waiting, never the run or its rollback.
        """
        log.info("task.cancel_requested", task_id=task_id, reason=reason)
        run, handle = self._runs.get(task_id), self._tasks.get(task_id)
        if run is not None and handle is not None:
            if run.cancel(reason):
                await self._record_cancel(task_id, reason)
            # asyncio.wait, unlike gather, leaves the run alone when this call is cancelled.
            await asyncio.wait([handle])
            return
        task = await self._store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}", field="task_id")
        if task.state.final:
            raise FailedPrecondition(
                f"task is {task.state.value} and cannot be cancelled", field="task_id"
            )
        # Another replica runs it: ask, then follow its events to the end.
        await self._store.request_cancel(task_id, reason)
        await self._cache.publish(_CANCEL_CHANNEL, {"task_id": task_id, "reason": reason})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._settings.lease_seconds * 3):
                async for _ in self._bus.watch(task_id):
                    pass

    def live(self, task_id: str) -> TaskRecord | None:
        """The in-memory (freshest) record of a task this replica runs."""
        run = self._runs.get(task_id)
        return None if run is None else run.task

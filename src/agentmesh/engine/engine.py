"""The engine: accepts tasks, plans them, runs each to a final state, resumes after restarts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import structlog

from agentmesh.config import Settings
from agentmesh.engine.run import TaskRun
from agentmesh.errors import FailedPrecondition, NotFound
from agentmesh.events import EventBus
from agentmesh.models import StepRecord, TaskRecord, TaskRequest, TaskState
from agentmesh.planning import Planner
from agentmesh.registry import Registry
from agentmesh.store import Store

log = structlog.get_logger(__name__)


class Engine:
    """Owns every running task; ``async with Engine(...)`` resumes unfinished ones."""

    def __init__(
        self,
        *,
        store: Store,
        bus: EventBus,
        registry: Registry,
        planner: Planner,
        settings: Settings,
    ) -> None:
        self._store = store
        self._bus = bus
        self._registry = registry
        self._planner = planner
        self._settings = settings
        self._runs: dict[str, TaskRun] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def __aenter__(self) -> Engine:
        for task_id in await self._store.unfinished_task_ids():
            task = await self._store.get_task(task_id)
            if task is not None:
                log.info("task.resumed", task_id=task_id, state=task.state.value)
                self._start(task, await self._store.last_sequence(task_id))
        return self

    async def __aexit__(self, *_: object) -> None:
        # Stopping is not cancelling: runs stop where they are and resume after a restart.
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, task: TaskRecord, last_sequence: int) -> TaskRun:
        run = TaskRun(
            task,
            last_sequence,
            store=self._store,
            bus=self._bus,
            registry=self._registry,
            settings=self._settings,
        )
        self._runs[task.id] = run
        handle = asyncio.create_task(self._drive(run), name=f"task-{task.id}")
        self._tasks[task.id] = handle
        return run

    async def _drive(self, run: TaskRun) -> None:
        try:
            await run.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not leave the task silently stuck: record it as failed.
            log.exception("task.crashed", task_id=run.task.id)
            run.task.error = "internal error; see orchestrator logs"
            run.task.state = TaskState.FAILED
            await run.flush()
        finally:
            self._runs.pop(run.task.id, None)
            self._tasks.pop(run.task.id, None)

    async def submit(self, request: TaskRequest, owner: str) -> TaskRecord:
        """Plan and persist a task, start running it, and return it at once."""
        plan = await self._planner.plan(request, self._registry.capabilities())
        now = datetime.now(UTC)
        task = TaskRecord(
            id=str(uuid.uuid4()),
            owner=owner,
            input=request.input,
            priority=request.priority,
            labels=request.labels,
            timeout_seconds=request.timeout_seconds,
            plan=plan,
            steps={s.id: StepRecord(spec=s) for s in plan.steps},
            created_at=now,
            updated_at=now,
        )
        stored = await self._store.create_task(task, request.idempotency_key)
        if stored.id == task.id:
            log.info("task.submitted", task_id=task.id, owner=owner, steps=len(plan.steps))
            self._start(task, 0)
        return stored

    async def cancel(self, task_id: str, reason: str) -> None:
        """Cancel a running task: stop scheduling, cancel its steps on the agents, roll back."""
        run = self._runs.get(task_id)
        handle = self._tasks.get(task_id)
        if run is None or handle is None:
            task = await self._store.get_task(task_id)
            if task is None:
                raise NotFound(f"no task {task_id!r}", field="task_id")
            raise FailedPrecondition(
                f"task is {task.state.value} and cannot be cancelled", field="task_id"
            )
        run.cancel(reason)
        handle.cancel()
        await asyncio.gather(handle, return_exceptions=True)

    def live(self, task_id: str) -> TaskRecord | None:
        """The in-memory (freshest) record of a running task, if this engine runs it."""
        run = self._runs.get(task_id)
        return None if run is None else run.task

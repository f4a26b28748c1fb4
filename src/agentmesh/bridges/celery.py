"""``agentmesh celery-bridge FILE``: existing Celery tasks as mesh capabilities.

Each assignment becomes one Celery task, sent by name (the bridge never imports the
worker's code) with the step's input as keyword arguments, and followed in the result
backend until it ends:

- ``STARTED``, ``RETRY`` and a custom ``PROGRESS`` state (``self.update_state(state=
  "PROGRESS", meta={"fraction": 0.5, "message": "…"})``) are forwarded as progress;
- ``SUCCESS`` is the step's output (an object as it is, any other value as
  ``{"result": value}``);
- ``FAILURE`` fails the step with code ``celery_failure`` and the exception's type and
  message. It is not retryable unless the file says so: Celery says FAILURE only after its
  own retries (``autoretry_for``, ``self.retry``), and retrying on top would multiply them;
- ``REVOKED`` fails it as cancelled.

A cancelled step (or one past its deadline) revokes its Celery task. The Celery task id is
derived from the assignment's idempotency key, and a ``SENT`` marker is stored in the
result backend before the task is sent: an assignment re-sent after the bridge restarted
finds its task and follows it instead of running the work twice.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.result import AsyncResult

from agentmesh.agent.context import AssignmentContext
from agentmesh.agent.routed import Route, RoutedAgent, routed_agent
from agentmesh.bridges.celery_file import CeleryBridgeFile, CeleryTaskSpec
from agentmesh.errors import StepFailed
from agentmesh.models import FailureCode

#: The custom state a bridged task reports progress with.
PROGRESS = "PROGRESS"
#: Stored before sending: the task is on its way (Celery itself says PENDING for "unknown").
SENT = "SENT"
#: The failure code of a task that failed in Celery.
CELERY_FAILURE = "celery_failure"


def celery_app(spec: CeleryBridgeFile) -> Celery:
    """A Celery client app for the bridge file's broker and result backend."""
    app = Celery("agentmesh-celery-bridge", broker=spec.broker, backend=spec.backend or spec.broker)
    # The bridge only sends and reads results; these keep a broker outage from hanging a
    # send for minutes (Celery's default retries a publish forever).
    app.conf.broker_connection_retry_on_startup = True
    app.conf.task_publish_retry_policy = {"max_retries": 3, "interval_start": 0.2}
    return app


def celery_task_id(ctx: AssignmentContext) -> str:
    """The Celery task id of an assignment: the same for every re-send of the same work."""
    key = ctx.idempotency_key or ctx.assignment_id
    return "agentmesh-" + hashlib.sha256(key.encode()).hexdigest()[:32]


class CeleryRunner:
    """Runs assignments of one bridge file on Celery."""

    def __init__(self, spec: CeleryBridgeFile, app: Celery | None = None) -> None:
        self.spec = spec
        self.app = app or celery_app(spec)

    def agent(self) -> RoutedAgent:
        """The mesh agent offering every task of the file."""
        routes = [Route(task.as_capability(), self._handler(task)) for task in self.spec.tasks]
        return routed_agent(
            self.spec.name,
            routes,
            version="celery",
            max_concurrency=self.spec.max_concurrency,
            labels={"bridge": "celery"},
        )

    def _handler(self, task: CeleryTaskSpec) -> Callable[[dict[str, Any], AssignmentContext], Any]:
        async def run(data: dict[str, Any], ctx: AssignmentContext) -> dict[str, Any]:
            return await self.run(task, data, ctx)

        return run

    async def run(
        self, task: CeleryTaskSpec, data: dict[str, Any], ctx: AssignmentContext
    ) -> dict[str, Any]:
        """Send ``task`` with ``data`` (unless this work was sent already) and follow it."""
        task_id = celery_task_id(ctx)
        result: AsyncResult = AsyncResult(task_id, app=self.app)
        state = await asyncio.to_thread(lambda: result.state)
        if state == "PENDING":  # Celery's word for "never heard of it"
            await asyncio.to_thread(self._send, task, data, task_id)
        try:
            return await self._follow(task, result, ctx)
        except asyncio.CancelledError:
            # Cancelled or past its deadline: the Celery task must not run on unobserved.
            # Shielded, so that the revoke is sent even though this handler is going away.
            await asyncio.shield(asyncio.to_thread(self._revoke, task_id))
            raise

    def _revoke(self, task_id: str) -> None:
        # terminate: a task already running is stopped too (by workers of the prefork
        # pool; workers of other pools only drop tasks that have not started).
        self.app.control.revoke(task_id, terminate=True)

    def _send(self, task: CeleryTaskSpec, data: dict[str, Any], task_id: str) -> None:
        self.app.backend.store_result(task_id, None, SENT)
        options: dict[str, Any] = {"queue": task.queue} if task.queue else {}
        self.app.send_task(task.task, kwargs=data, task_id=task_id, **options)

    async def _follow(
        self, task: CeleryTaskSpec, result: AsyncResult, ctx: AssignmentContext
    ) -> dict[str, Any]:
        reported: tuple[str, Any] | None = None
        while True:
            state, info = await asyncio.to_thread(_read, result)
            if state == "SUCCESS":
                return info if isinstance(info, dict) else {"result": info}
            if state == "FAILURE":
                raise StepFailed(
                    f"Celery task {task.task} failed: {type(info).__name__}: {info}",
                    code=CELERY_FAILURE,
                    retryable=task.retryable,
                )
            if state == "REVOKED":
                raise StepFailed(
                    f"Celery task {task.task} was revoked",
                    code=FailureCode.CANCELLED,
                    retryable=False,
                )
            if (state, repr(info)) != reported:
                reported = (state, repr(info))
                fraction, message = _progress_of(state, info)
                if message:
                    await ctx.progress(fraction, message)
            await asyncio.sleep(self.spec.poll_seconds)


def _read(result: AsyncResult) -> tuple[str, Any]:
    # One read of the backend: .state and .info separately could straddle a change.
    meta = result.backend.get_task_meta(result.id)
    return str(meta.get("status", "PENDING")), meta.get("result")


def _progress_of(state: str, info: Any) -> tuple[float, str]:
    """The progress a Celery state reports: (fraction, message), message empty for none."""
    # A fraction the task does not give is unknown (negative), as in ctx.progress.
    if state == PROGRESS and isinstance(info, dict):
        fraction, message = info.get("fraction"), str(info.get("message", "working"))
        if isinstance(fraction, int | float) and not isinstance(fraction, bool):
            return float(fraction), message
        return -1.0, message
    if state == "STARTED":
        return -1.0, "started on a Celery worker"
    if state == "RETRY":
        return -1.0, f"Celery is retrying: {type(info).__name__}: {info}"
    if state == SENT:
        return -1.0, "queued for a Celery worker"
    return -1.0, ""

"""The rest of a streamed plan, read into a running task while its first steps run.

The engine starts a task as soon as the planner has its first valid step (see
:mod:`agentmesh.orchestrator.planning.stream`); a :class:`PlanFollower` reads the later
pieces in the background and wakes the run for each, which adds the step to the plan and
the scheduler (it starts once its inputs are ready), or, with the complete plan, takes its
aggregation. A planning error (an invalid step, a lost endpoint) is the run's to raise.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, Callable

import structlog

from agentmesh.errors import AgentMeshError
from agentmesh.models import Plan, StepRecord, StepState, TaskRecord
from agentmesh.orchestrator.engine.journal import Journal
from agentmesh.orchestrator.engine.scheduler import Scheduler
from agentmesh.orchestrator.planning import PlanPiece, dependencies

log = structlog.get_logger(__name__)


class PlanFollower:
    """Reads ``rest`` until it ends; ``wake`` is called after each piece and at the end."""

    def __init__(
        self, rest: AsyncGenerator[PlanPiece, None], wake: Callable[[], None], task_id: str
    ) -> None:
        self.pieces: deque[PlanPiece] = deque()
        #: Why planning failed, once it did.
        self.error: AgentMeshError | None = None
        #: True once the planner has said everything it will.
        self.done = False
        self._wake = wake
        self._task_id = task_id
        self._reader = asyncio.create_task(self._read(rest), name=f"plan-{task_id}")

    async def _read(self, rest: AsyncGenerator[PlanPiece, None]) -> None:
        try:
            async for piece in rest:
                self.pieces.append(piece)
                self._wake()
        except AgentMeshError as exc:
            log.info("plan.stream_failed", task_id=self._task_id, error=str(exc))
            self.error = exc
        finally:
            self.done = True
            await rest.aclose()
            self._wake()

    def take(self, task: TaskRecord, journal: Journal, scheduler: Scheduler) -> str:
        """Add what arrived to ``task``: new steps (pending, scheduled), then the complete
        plan. Returns why planning failed ("" while it has not)."""
        assert task.plan is not None
        while self.pieces:
            piece = self.pieces.popleft()
            if isinstance(piece, Plan):
                task.plan, task.planning = piece, False
                journal.plan_changed()
                continue
            plan = Plan(steps=(*task.plan.steps, piece), aggregate=task.plan.aggregate)
            task.plan = plan
            record = StepRecord(spec=piece)
            journal.add_steps([record])
            journal.step_state(record, StepState.PENDING, "planned")
            scheduler.add(piece.id, dependencies(plan)[piece.id])
        if self.error is not None:
            return f"planning failed: {self.error}"
        if self.done and task.planning:
            return "planning failed: the planner ended without a complete plan"
        return ""

    async def stop(self) -> None:
        """Stop reading (the planner's request ends with it)."""
        self._reader.cancel()
        # wait, not await: the reader's cancellation is not ours to raise.
        await asyncio.wait([self._reader])

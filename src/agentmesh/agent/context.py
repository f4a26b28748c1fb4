"""What a capability handler knows about the assignment it runs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agentmesh.agent.work import Assignment

ProgressReporter = Callable[[float, str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AssignmentContext:
    """The assignment a handler is running, and its channel back to the orchestrator.

    One context per run. When an orchestrator re-sends the same work (same
    idempotency key) the handler is not run again, so the ids here are those of
    the assignment that started the run.
    """

    assignment_id: str
    task_id: str
    step_id: str
    attempt: int
    idempotency_key: str
    #: True when this run undoes an earlier completed step (saga rollback).
    compensation: bool
    #: When the orchestrator gives up on this assignment; the SDK cancels the handler then.
    deadline: datetime | None
    _report: ProgressReporter = field(repr=False)

    @classmethod
    def of(cls, assignment: Assignment, report: ProgressReporter) -> AssignmentContext:
        """The context of a run of ``assignment`` whose progress goes to ``report``."""
        return cls(
            assignment_id=assignment.assignment_id,
            task_id=assignment.task_id,
            step_id=assignment.step_id,
            attempt=assignment.attempt,
            idempotency_key=assignment.idempotency_key,
            compensation=assignment.compensation,
            deadline=assignment.deadline,
            _report=report,
        )

    def time_left(self) -> float | None:
        """Seconds until the deadline (negative once past), or None without one."""
        if self.deadline is None:
            return None
        return (self.deadline - datetime.now(UTC)).total_seconds()

    async def progress(self, fraction: float, message: str = "") -> None:
        """Report how far the work is: ``fraction`` in 0..1, or negative when unknown."""
        self._report(_clamp(fraction), message)
        # Yield once so the session can put the update on the wire before the
        # handler goes back to (possibly CPU-bound) work.
        await asyncio.sleep(0)


def _clamp(fraction: float) -> float:
    if math.isnan(fraction) or fraction < 0:
        return -1.0
    return min(fraction, 1.0)

"""What a capability handler knows about the assignment it runs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agentmesh.agent.subtasks import SubTasks
from agentmesh.agent.work import Assignment
from agentmesh.errors import StepFailed
from agentmesh.models import JSON, Budget, ParentStep, Plan, StepSpec, Usage

ProgressReporter = Callable[[float, str], None]
#: Puts a question (prompt, answer schema) to the orchestrator and waits for the answer.
Asker = Callable[[str, Mapping[str, JSON]], Awaitable[JSON]]


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
    _follow_ups: list[StepSpec] = field(default_factory=list, repr=False)
    _usage: list[Usage] = field(default_factory=list, repr=False)
    _subtasks: SubTasks | None = field(default=None, repr=False)
    _children: list[str] = field(default_factory=list, repr=False)
    _ask: Asker | None = field(default=None, repr=False)

    @classmethod
    def of(
        cls,
        assignment: Assignment,
        report: ProgressReporter,
        subtasks: SubTasks | None = None,
        ask: Asker | None = None,
    ) -> AssignmentContext:
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
            _subtasks=subtasks,
            _ask=ask,
        )

    def time_left(self) -> float | None:
        """Seconds until the deadline (negative once past), or None without one."""
        if self.deadline is None:
            return None
        return (self.deadline - datetime.now(UTC)).total_seconds()

    def add_step(self, step: StepSpec) -> None:
        """Ask for ``step`` to be added to the running plan when this handler succeeds.

        The step runs after this one and may reference its output as
        ``${steps.<this step id>.output...}``; the orchestrator validates it like
        any plan step.
        """
        self._follow_ups.append(step)

    @property
    def follow_ups(self) -> tuple[StepSpec, ...]:
        """The steps added with :meth:`add_step` so far."""
        return tuple(self._follow_ups)

    def report_usage(
        self, *, input_tokens: int = 0, output_tokens: int = 0, cost: float = 0.0
    ) -> None:
        """Say what this run used (say, after each model call); the reports add up.

        The total goes back with the run's Result (or Failure: a failed call may still
        cost) and counts against the task's budget. ValueError on a negative or
        non-finite figure.
        """
        self._usage.append(Usage(input_tokens=input_tokens, output_tokens=output_tokens, cost=cost))

    @property
    def usage(self) -> Usage | None:
        """The sum of every :meth:`report_usage` so far; None before the first."""
        if not self._usage:
            return None
        total = Usage()
        for report in self._usage:
            total = total + report
        return total

    async def submit(
        self,
        *,
        plan: Plan | None = None,
        workflow: str = "",
        goal: str = "",
        input: dict[str, JSON] | None = None,
        timeout_seconds: float = 0.0,
        budget: Budget | None = None,
    ) -> JSON:
        """Run a sub-task of this step (a plan, a workflow or a goal) and return its result.

        The child belongs to this task's owner and records this step as its parent; it is
        cancelled before this task rolls back or is cancelled. StepFailed
        (``subtask_failed``, not retried) when it ends other than succeeded. A re-sent
        assignment (same idempotency key) gets the same children back.
        """
        if self._subtasks is None:
            raise StepFailed(
                "this run cannot submit sub-tasks (it was not given by an orchestrator)",
                code="subtask_failed",
                retryable=False,
            )
        self._children.append("")
        key = f"{self.idempotency_key}/child-{len(self._children)}" if self.idempotency_key else ""
        return await self._subtasks.run(
            ParentStep(task_id=self.task_id, step_id=self.step_id),
            key=key,
            plan=plan,
            workflow=workflow,
            goal=goal,
            input=input,
            timeout_seconds=timeout_seconds,
            budget=budget,
        )

    async def ask(self, prompt: str, schema: Mapping[str, JSON] | None = None) -> JSON:
        """Ask a person ``prompt`` and return the answer, which matches ``schema`` (a JSON
        Schema; None or empty for any JSON value).

        The step shows ``INPUT_REQUIRED`` with the prompt until the task's owner answers
        (ProvideInput, as for a step of kind ``input``). The run holds none of the agent's
        concurrency meanwhile, so other work may run on it; the step's timeout still counts.
        StepFailed (``ask_failed``) when no orchestrator gave this run.
        """
        if self._ask is None:
            raise StepFailed(
                "this run cannot ask (it was not given by an orchestrator)",
                code="ask_failed",
                retryable=False,
            )
        return await self._ask(prompt, dict(schema or {}))

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

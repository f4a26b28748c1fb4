"""A task's budget: what its steps used, summed across parallel steps, against its limits.

Usage arrives with every attempt's end (the agent's tokens and cost, the attempt's seconds),
succeeded or failed, from however many steps run at once; each is added to the task's
totals at once (the event loop orders them, so no lock is needed). Two questions follow:
may another step start (no limit *reached*), and must the running ones stop (a limit
*passed*). Either way the task fails with the non-retryable ``budget_exceeded`` reason.
"""

from __future__ import annotations

from agentmesh.models import Budget, FailureCode, TaskRecord, Usage
from agentmesh.orchestrator import metrics

#: The first words of the error of a task its budget stopped.
REASON = FailureCode.BUDGET_EXCEEDED.value


def _limits(budget: Budget, usage: Usage) -> list[tuple[str, float, float]]:
    """(limit name, used, allowed) of every limit the budget sets."""
    pairs = [
        ("tokens", float(usage.tokens), float(budget.tokens)),
        ("cost", usage.cost, budget.cost),
        ("seconds", usage.seconds, budget.seconds),
        ("steps", float(usage.steps), float(budget.steps)),
    ]
    return [(name, used, allowed) for name, used, allowed in pairs if allowed > 0]


def _describe(name: str, used: float, allowed: float) -> str:
    return f"{REASON}: {name} {used:g} of {allowed:g} used"


class BudgetKeeper:
    """Adds a task's usage up (in ``task.usage``) and says when its budget is spent."""

    def __init__(self, task: TaskRecord) -> None:
        self._task = task
        #: The limit that stopped the task, once one did (counted in the metrics once).
        self._stopped_by = ""

    def started(self) -> None:
        """An agent step starts: it counts against the ``steps`` limit."""
        self._task.usage = self._task.usage + Usage(steps=1)

    def used(self, usage: Usage | None, seconds: float) -> None:
        """One attempt ended, having used ``usage`` (as its agent said) over ``seconds``."""
        reported = usage or Usage()
        added = Usage(
            input_tokens=reported.input_tokens,
            output_tokens=reported.output_tokens,
            cost=reported.cost,
            seconds=max(0.0, seconds),
        )
        self._task.usage = self._task.usage + added
        if added.input_tokens:
            metrics.USAGE_TOKENS.labels("input").inc(added.input_tokens)
        if added.output_tokens:
            metrics.USAGE_TOKENS.labels("output").inc(added.output_tokens)
        if added.cost:
            metrics.USAGE_COST.inc(added.cost)

    def spent(self) -> str:
        """Why no further step may start (a limit reached), or "" while one may."""
        for name, used, allowed in _limits(self._task.budget, self._task.usage):
            if used >= allowed:
                return self._exceeded(name, used, allowed)
        return ""

    def passed(self) -> str:
        """Why the running steps must stop (a limit passed), or "" while none is."""
        for name, used, allowed in _limits(self._task.budget, self._task.usage):
            if used > allowed:
                return self._exceeded(name, used, allowed)
        return ""

    def _exceeded(self, name: str, used: float, allowed: float) -> str:
        if not self._stopped_by:
            self._stopped_by = name
            metrics.BUDGETS_EXCEEDED.labels(name).inc()
        return _describe(name, used, allowed)

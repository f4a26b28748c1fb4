"""Planning delegated to an agent: goals go to whoever offers the ``plan`` capability."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pydantic

from agentmesh.config import Settings
from agentmesh.errors import AgentUnavailable, StepFailed, ValidationError
from agentmesh.models import (
    JSON,
    AgentChoice,
    Capability,
    FailureCode,
    Plan,
    RetryPolicy,
    TaskRequest,
    Usage,
)
from agentmesh.orchestrator.agents.dispatch import Dispatcher, Job
from agentmesh.orchestrator.agents.matching import Requirement
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.planning import PlanLimits, validate_plan

#: The capability a planning agent offers. Input: ``goal``, ``input`` and ``capabilities``
#: (name, description and input schema of each); output: ``plan`` (steps and aggregate).
PLAN_CAPABILITY = "plan"


class _Watch:
    """Remembers which agent took the request (for the error when it fails)."""

    def __init__(self) -> None:
        self.agent = ""

    def waiting(self, attempt: int, reason: str) -> None:
        """Nothing to report while no planning agent has room."""

    def started(self, agent: str, attempt: int, choice: AgentChoice | None = None) -> None:
        self.agent = agent

    def progress(self, agent: str, attempt: int, fraction: float, message: str) -> None:
        """A planning agent's progress goes nowhere: there is no task yet."""

    def retrying(self, attempt: int, reason: str) -> None:
        """One attempt only: nothing to report."""

    def used(self, usage: Usage | None, seconds: float) -> None:
        """Planning happens before the task exists: no budget to count it against."""


class AgentPlanner:
    """A :class:`~agentmesh.orchestrator.planning.Planner` that asks a live agent offering ``plan``.

    Declines (``ValidationError`` on ``goal``) when the request has no goal or no such agent is
    registered, so a chain of planners moves on; the agent's plan is validated like any other.
    The request goes through the :class:`~agentmesh.orchestrator.agents.dispatch.Dispatcher`
    like any step (one attempt): its outcome is checked and accounted for the agent.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        timeout: float = 60.0,
        limits: PlanLimits | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._registry = registry
        self._dispatcher = Dispatcher(registry, settings or Settings())
        self._timeout = timeout
        self._limits = limits or PlanLimits()

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        """The plan the planning agent proposes for ``request.goal``, validated."""
        if not request.goal:
            raise ValidationError("only goals are delegated to planning agents", field="goal")
        payload: dict[str, JSON] = {
            "goal": request.goal,
            "input": request.input,
            "capabilities": [
                {"name": c.name, "description": c.description, "input_schema": c.input_schema}
                for c in sorted(capabilities.values(), key=lambda c: c.name)
                if c.name != PLAN_CAPABILITY
            ],
        }
        # Only a planning agent whose own schema accepts the request gets it.
        if not self._registry.could_serve(Requirement(PLAN_CAPABILITY, payload=payload)):
            raise ValidationError(f"no agent offers {PLAN_CAPABILITY!r}", field="goal")
        job = Job(
            task_id="",
            step_id="plan",
            capability=PLAN_CAPABILITY,
            payload=payload,
            retry=RetryPolicy(max_attempts=1),
            timeout=self._timeout,
            deadline=asyncio.get_running_loop().time() + self._timeout,
        )
        watch = _Watch()
        try:
            outcome = await self._dispatcher.send(job, watch)
        except TimeoutError:
            raise AgentUnavailable(
                f"no planning agent had room within {self._timeout:g}s"
            ) from None
        except StepFailed as exc:
            if not watch.agent:  # every planning agent's schema refuses this request
                raise ValidationError(str(exc), field="goal") from None
            raise AgentUnavailable(f"planning agent {watch.agent} failed: {exc}") from None
        if outcome.output is None:
            raise AgentUnavailable(f"planning agent {watch.agent} failed: {FailureCode.ERROR}")
        try:
            plan = Plan.model_validate(outcome.output.get("plan", outcome.output))
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(exc, field="plan") from None
        return validate_plan(plan, capabilities=capabilities, limits=self._limits)

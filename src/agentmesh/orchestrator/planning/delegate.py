"""Planning delegated to an agent: goals go to whoever offers the ``plan`` capability."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

import pydantic

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.errors import AgentUnavailable, StepFailed, ValidationError
from agentmesh.models import JSON, Capability, Plan, TaskRequest
from agentmesh.orchestrator.agents.circuits import AGENT_FAULTS
from agentmesh.orchestrator.agents.link import Outcome
from agentmesh.orchestrator.agents.matching import Requirement
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.planning import PlanLimits, validate_plan
from agentmesh.wire import to_struct

#: The capability a planning agent offers. Input: ``goal``, ``input`` and ``capabilities``
#: (name, description and input schema of each); output: ``plan`` (steps and aggregate).
PLAN_CAPABILITY = "plan"


class AgentPlanner:
    """A :class:`~agentmesh.orchestrator.planning.Planner` that asks a live agent offering ``plan``.

    Declines (``ValidationError`` on ``goal``) when the request has no goal or no such agent is
    registered, so a chain of planners moves on; the agent's plan is validated like any other.
    """

    def __init__(
        self, registry: Registry, *, timeout: float = 60.0, limits: PlanLimits | None = None
    ) -> None:
        self._registry = registry
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
        requirement = Requirement(PLAN_CAPABILITY, payload=payload)
        if not self._registry.could_serve(requirement):
            raise ValidationError(f"no agent offers {PLAN_CAPABILITY!r}", field="goal")
        assignment = agent_pb2.Assignment(
            assignment_id=uuid.uuid4().hex,
            capability=PLAN_CAPABILITY,
            step_id="plan",
            attempt=1,
            input=to_struct(payload),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout_at(deadline):
                    link = await stack.enter_async_context(self._registry.slot(requirement))
            except StepFailed as exc:  # every planning agent's schema refuses this request
                raise ValidationError(str(exc), field="goal") from None
            except TimeoutError:
                raise AgentUnavailable(
                    f"no planning agent had room within {self._timeout:g}s"
                ) from None
            started = loop.time()
            try:
                async with asyncio.timeout_at(deadline):
                    outcome = await link.run(assignment, lambda fraction, message: None)
            except TimeoutError:
                outcome = Outcome(code="timeout", message=f"no plan within {self._timeout:g}s")
            # Like any step's attempt: its stats and circuit see it (a half-open probe ends).
            self._registry.record(
                link.name,
                loop.time() - started,
                outcome.ok,
                agent_fault=outcome.code in AGENT_FAULTS,
            )
        if not outcome.ok or outcome.output is None:
            raise AgentUnavailable(
                f"planning agent {link.name} failed: {outcome.code} {outcome.message}".strip()
            )
        try:
            plan = Plan.model_validate(outcome.output.get("plan", outcome.output))
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(exc, field="plan") from None
        return validate_plan(plan, capabilities=capabilities, limits=self._limits)

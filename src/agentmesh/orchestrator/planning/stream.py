"""Plans that arrive a step at a time, so that the first steps run while the rest is planned.

A streaming planner hands the engine a :class:`PlanDraft`: the valid plan of the steps it
has so far, and the rest as they come (each a :class:`~agentmesh.models.StepSpec`, then
the complete :class:`~agentmesh.models.Plan` with its aggregation). Every step is checked
as it arrives (:class:`StepByStep`): together with the steps before it, it must make a
valid plan, so a step may use only steps streamed before it. A step that would make the
plan invalid ends the stream with a :class:`~agentmesh.errors.ValidationError`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import pydantic

from agentmesh.errors import ValidationError
from agentmesh.limits import PlanLimits
from agentmesh.models import JSON, Capability, Plan, StepSpec, TaskRequest
from agentmesh.orchestrator.planning.validate import validate_plan

#: What a streamed plan yields: each new step, and last the complete plan.
PlanPiece = StepSpec | Plan


@dataclass(frozen=True, slots=True)
class PlanDraft:
    """A validated plan that may still grow.

    ``plan`` holds the steps planned so far; ``rest`` (None once the plan is complete)
    yields each later step and finally the complete plan. Whoever takes the draft owns
    ``rest`` and closes it (:meth:`close`), which ends the planner's request.
    """

    plan: Plan
    rest: AsyncGenerator[PlanPiece, None] | None = None

    @property
    def complete(self) -> bool:
        """True when ``plan`` is the whole plan."""
        return self.rest is None

    async def close(self) -> None:
        """Stop planning the rest (when it is still coming)."""
        if self.rest is not None:
            await self.rest.aclose()


@runtime_checkable
class StreamingPlanner(Protocol):
    """A planner that can hand over a plan before it is complete."""

    async def draft(
        self, request: TaskRequest, capabilities: Mapping[str, Capability]
    ) -> PlanDraft:
        """The first steps of the plan for ``request`` as soon as there are some."""
        ...


class StepByStep:
    """Checks a plan as its steps arrive: each must keep the plan so far valid."""

    def __init__(self, capabilities: Mapping[str, Capability], limits: PlanLimits) -> None:
        self._capabilities = capabilities
        self._limits = limits
        self._steps: list[StepSpec] = []

    def add(self, data: object) -> StepSpec:
        """The step ``data`` describes, once the plan with it is still valid."""
        where = f"plan.steps[{len(self._steps)}]"
        if not isinstance(data, dict):
            raise ValidationError("a step must be a JSON object", field=where)
        try:
            step = StepSpec.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(exc, field=where) from None
        # The whole prefix again: cheap for the tens of steps a model plans, and exactly
        # the checks a one-shot plan gets (a reference to a later step is "no such step").
        validate_plan(
            Plan(steps=(*self._steps, step)), capabilities=self._capabilities, limits=self._limits
        )
        self._steps.append(step)
        return step

    def finish(self, aggregate: JSON) -> Plan:
        """The complete plan, with ``aggregate`` (None: the default), validated whole."""
        if aggregate is not None and not isinstance(aggregate, dict):
            raise ValidationError("must be a JSON object", field="plan.aggregate")
        plan = Plan(steps=tuple(self._steps), aggregate=aggregate or {})
        return validate_plan(plan, capabilities=self._capabilities, limits=self._limits)


async def json_lines(chunks: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects in streamed text, one a line, each as soon as its line is complete.

    Blank lines and Markdown code fences are skipped; a whole multi-line JSON object (a
    model that answered with one plan object after all) is read at the end.
    """
    buffer = ""
    pending: list[str] = []  # lines that are not JSON alone: parts of one multi-line object
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split("\n")
        for line in lines:
            found = _object(line, pending)
            if found is not None:
                yield found
    found = _object(buffer, pending)
    if found is not None:
        yield found
    if pending:
        text = "\n".join(pending)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"the answer is not JSON lines: {exc}", field="plan") from None
        if not isinstance(data, dict):
            raise ValidationError("the answer is not a JSON object", field="plan")
        yield data


def _object(line: str, pending: list[str]) -> dict[str, Any] | None:
    text = line.strip()
    if not text or text.startswith("```"):
        return None
    if not pending:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            pass
        else:
            if isinstance(data, dict):
                return data
            raise ValidationError("each line must be one JSON object", field="plan")
    pending.append(line)
    return None


async def pieces(
    objects: AsyncIterator[dict[str, Any]], steps: StepByStep
) -> AsyncIterator[PlanPiece]:
    """Steps and then the complete plan, from a model's streamed objects.

    Each object is a step, ``{"aggregate": {...}}``, or one whole plan object
    (``{"steps": [...], "aggregate": ...}``) from a model that did not stream.
    """
    aggregate: JSON = None
    async for data in objects:
        if isinstance(data.get("steps"), list):
            for step in data["steps"]:
                yield steps.add(step)
            aggregate = data.get("aggregate", aggregate)
        elif "aggregate" in data and "capability" not in data:
            aggregate = data["aggregate"]
        else:
            yield steps.add(data)
    yield steps.finish(aggregate)

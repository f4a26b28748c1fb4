"""How a plan grows while it runs: follow-up steps an agent asks for, fan-out instances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentmesh.errors import AgentMeshError, StepFailed, ValidationError
from agentmesh.models import JSON, FailureCode, Plan, StepRecord, StepSpec, TaskRecord
from agentmesh.orchestrator.agents.offers import Offers
from agentmesh.orchestrator.planning import (
    dependencies,
    expand_for_each,
    for_each_items,
    split_instance_id,
    validate_plan,
)


@dataclass(frozen=True, slots=True)
class Growth:
    """The plan with follow-up steps added, their records, and what each one waits for."""

    plan: Plan
    steps: list[StepRecord]
    needs: dict[str, set[str]]


def follow_ups(
    task: TaskRecord, parent: StepRecord, specs: tuple[StepSpec, ...], capabilities: Offers
) -> Growth:
    """Grow the plan with steps an agent asked for; they run after ``parent``.

    StepFailed (``invalid_output``, final) when the parent is a fan-out instance or the
    grown plan is invalid: the agent's answer is at fault.
    """
    plan = task.plan
    assert plan is not None
    if split_instance_id(parent.spec.id)[1] is not None:
        raise StepFailed(
            "fan-out instances cannot add follow-up steps",
            code=FailureCode.INVALID_OUTPUT,
            retryable=False,
        )
    added = tuple(
        s.model_copy(update={"needs": tuple(dict.fromkeys((*s.needs, parent.spec.id)))})
        for s in specs
    )
    grown = Plan(steps=plan.steps + added, aggregate=plan.aggregate)
    try:
        validate_plan(grown, capabilities=capabilities)
    except ValidationError as exc:
        raise StepFailed(
            f"invalid follow-up steps: {exc}", code=FailureCode.INVALID_OUTPUT, retryable=False
        ) from None
    graph = dependencies(grown)
    return Growth(
        plan=grown,
        steps=[StepRecord(spec=s) for s in added],
        needs={s.id: graph[s.id] for s in added},
    )


def instances(
    task: TaskRecord, step: StepRecord, outputs: Mapping[str, JSON]
) -> tuple[list[StepSpec], list[StepRecord]]:
    """The instances of fan-out ``step``, and the records of those not stored yet.

    Instances survive a restart in the store; those that exist are reused. StepFailed
    (``bad_reference``, final) when the list to fan out over cannot be found.
    """
    try:
        items = for_each_items(step.spec, input=task.input, outputs=outputs)
        specs = expand_for_each(step.spec, items)
    except AgentMeshError as exc:
        raise StepFailed(
            f"cannot fan out: {exc}", code=FailureCode.BAD_REFERENCE, retryable=False
        ) from None
    return specs, [StepRecord(spec=s) for s in specs if s.id not in task.steps]


def fanout_of(step_id: str) -> str | None:
    """The fan-out step that ``step_id`` is an instance of, None for a plain step."""
    parent, index = split_instance_id(step_id)
    return None if index is None else parent

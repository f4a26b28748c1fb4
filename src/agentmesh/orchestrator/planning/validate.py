"""Checking a plan before it is accepted: shape, size, references, the DAG, capabilities.

Every rejection is a :class:`~agentmesh.errors.ValidationError` whose ``field`` names the
offending part as ``plan.steps[2].input.url`` or ``plan.steps[1].needs[0]``. The checks run
cheapest first: the step count before anything else, so an oversized plan is refused before
any graph is built.

The checks against the capabilities on offer are in
:mod:`~agentmesh.orchestrator.planning.capabilities`, the graph in
:mod:`~agentmesh.orchestrator.planning.dag`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from agentmesh import schemas
from agentmesh.errors import ValidationError, field_path
from agentmesh.limits import MAX_CACHE_TTL_SECONDS, ByteBudget, PlanLimits
from agentmesh.models import JSON, Capability, Plan, StepKind, StepSpec
from agentmesh.orchestrator.agents.offers import Offers
from agentmesh.orchestrator.planning.aggregate import parse_aggregate_spec
from agentmesh.orchestrator.planning.capabilities import check_capability
from agentmesh.orchestrator.planning.dag import Edges, edges

# Looked up here by validate_plan, so that a test can tell the graph is never built too soon.
from agentmesh.orchestrator.planning.dag import order as _order
from agentmesh.orchestrator.planning.references import STEP_ID_PATTERN, Reference, parse
from agentmesh.security.policy import check_identity_pattern

_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_NAME_LIMIT: Final = 256


def validate_plan(
    plan: Plan,
    *,
    capabilities: Mapping[str, Capability] | None = None,
    limits: PlanLimits = PlanLimits(),  # noqa: B008 - frozen, so one shared default is safe
) -> Plan:
    """``plan`` itself, once it is a well-formed DAG within ``limits``.

    With ``capabilities`` (name → capability, or the registry's :class:`Offers` of each
    connected agent), every step's capability and compensation must be known, its version
    prefix must match, and its literal input must fit the input schema of one agent that could
    serve it. Raises :class:`~agentmesh.errors.ValidationError` naming the first problem found.
    """
    steps = plan.steps
    if not steps:
        raise ValidationError("a plan needs at least one step", field="plan.steps")
    if len(steps) > limits.max_steps:
        raise ValidationError(
            f"{len(steps)} steps exceed the limit of {limits.max_steps}", field="plan.steps"
        )
    position = _check_ids(steps)
    budget = ByteBudget(limits.max_input_bytes, what="the plan's inputs")
    graph = {
        step.id: _check_step(i, step, position, limits, budget) for i, step in enumerate(steps)
    }
    _scan(plan.aggregate, "plan.aggregate", limits, budget, references=False)
    if capabilities is not None:
        offers = Offers.of(capabilities)
        for i, step in enumerate(steps):
            if step.kind is StepKind.AGENT:
                check_capability(i, step, offers)
    _order(steps, graph, position)
    parse_aggregate_spec(plan.aggregate, step_ids=position)
    return plan


def _check_ids(steps: tuple[StepSpec, ...]) -> dict[str, int]:
    position: dict[str, int] = {}
    for i, step in enumerate(steps):
        if not STEP_ID_PATTERN.fullmatch(step.id):
            raise ValidationError(
                f"{step.id[:80]!r} is not a step id: a letter, then up to 63 letters, digits,"
                " '_' or '-'",
                field=f"plan.steps[{i}].id",
            )
        if step.id in position:
            raise ValidationError(
                f"duplicate step id {step.id!r}, first used by plan.steps[{position[step.id]}]",
                field=f"plan.steps[{i}].id",
            )
        position[step.id] = i
    return position


def _check_step(
    i: int, step: StepSpec, position: Mapping[str, int], limits: PlanLimits, budget: ByteBudget
) -> Edges:
    where = f"plan.steps[{i}]"
    for name in ("capability", "compensation", "pin_agent"):
        value: str = getattr(step, name)
        if len(value) > _NAME_LIMIT or any(c.isspace() for c in value):
            raise ValidationError(
                f"must be at most {_NAME_LIMIT} characters without spaces", field=f"{where}.{name}"
            )
    if step.kind is StepKind.INPUT:
        _check_human_input(step, where)
    elif step.human_input is not None:
        raise ValidationError(
            "only a step of kind 'input' asks a person", field=f"{where}.human_input"
        )
    elif not step.capability:
        raise ValidationError("a step needs a capability", field=f"{where}.capability")
    if step.version and not _VERSION.fullmatch(step.version):
        raise ValidationError(
            f"{step.version[:40]!r} is not a version prefix such as '1' or '1.2'",
            field=f"{where}.version",
        )
    if len(step.needs) > limits.max_steps:
        raise ValidationError(
            f"{len(step.needs)} needs exceed the limit of {limits.max_steps}",
            field=f"{where}.needs",
        )
    refs = _scan(step.input, f"{where}.input", limits, budget, references=True)
    for field, ref in refs:
        if ref.root in ("item", "index") and not step.for_each:
            raise ValidationError(f"{ref} is only defined in a for_each step", field=field)
    if step.for_each:
        _check_for_each(i, step)
    if step.cache is not None:
        _check_cache(i, step)
    found = edges(i, step, refs)
    for dep, field in found.items():
        if dep not in position:
            raise ValidationError(f"no step {dep!r} in the plan", field=field)
    return found


def _check_human_input(step: StepSpec, where: str) -> None:
    asked = step.human_input
    if asked is None:
        raise ValidationError(
            "a step of kind 'input' needs human_input (its prompt)", field=f"{where}.human_input"
        )
    # What an agent step has and a question cannot: nobody to run, undo, cache or fan out.
    for name in ("capability", "compensation", "pin_agent", "for_each"):
        if getattr(step, name):
            raise ValidationError(
                "not for a step of kind 'input' (a person answers it)", field=f"{where}.{name}"
            )
    if step.cache is not None:
        raise ValidationError("an answer is never cached", field=f"{where}.cache")
    if not asked.prompt.strip():
        raise ValidationError("must say what to answer", field=f"{where}.human_input.prompt")
    for k, pattern in enumerate(asked.approvers):
        try:
            check_identity_pattern(pattern)
        except ValueError as exc:
            raise ValidationError(str(exc), field=f"{where}.human_input.approvers[{k}]") from None
    if asked.answer_schema and schemas.validator(asked.answer_schema) is None:
        raise ValidationError(
            "is not a JSON Schema (draft 2020-12)", field=f"{where}.human_input.answer_schema"
        )
    if asked.default is not None:
        problem = schemas.first_error(asked.answer_schema, asked.default)
        if problem:
            raise ValidationError(
                f"does not match the answer schema: {problem}",
                field=f"{where}.human_input.default",
            )


def _check_cache(i: int, step: StepSpec) -> None:
    assert step.cache is not None
    field = f"plan.steps[{i}].cache"
    if step.compensation:
        # Refused rather than ignored: a reused output had no run of its own, so there would
        # be nothing for the compensation to undo, and a rollback would undo someone else's.
        raise ValidationError(
            "a step with a compensation is never cached: drop cache or compensation",
            field=field,
        )
    if step.cache.ttl_seconds > MAX_CACHE_TTL_SECONDS:
        raise ValidationError(
            f"must be at most {MAX_CACHE_TTL_SECONDS:g} seconds (30 days)",
            field=f"{field}.ttl_seconds",
        )


def _check_for_each(i: int, step: StepSpec) -> None:
    field = f"plan.steps[{i}].for_each"
    parts = parse(step.for_each, field=field)
    if len(parts) != 1 or not isinstance(parts[0], Reference):
        raise ValidationError(
            "must be exactly one reference to a list, such as ${steps.ID.output.items}",
            field=field,
        )
    if parts[0].root not in ("input", "steps"):
        raise ValidationError(
            f"{parts[0]} cannot be fanned out over; use ${{input...}} or ${{steps...}}",
            field=field,
        )


def _scan(
    value: JSON, field: str, limits: PlanLimits, budget: ByteBudget, *, references: bool
) -> list[tuple[str, Reference]]:
    """Check that ``value`` is JSON within the limits; return the references it holds.

    Iterative, with the depth checked as it goes, so even a value nested far beyond the
    interpreter's recursion limit is refused cleanly.
    """
    found: list[tuple[str, Reference]] = []
    stack: list[tuple[JSON, str, int]] = [(value, field, 1)]
    while stack:
        current, path, depth = stack.pop()
        if isinstance(current, str):
            _check_string(current, path, limits)
            budget.spend(len(current.encode("utf-8", "surrogatepass")) + 2, path)
            if references and "$" in current:
                found.extend(
                    (path, p) for p in parse(current, field=path) if isinstance(p, Reference)
                )
        elif isinstance(current, Mapping | list | tuple):
            if depth > limits.max_depth:
                raise ValidationError(f"nested deeper than {limits.max_depth} levels", field=path)
            budget.spend(2 + len(current), path)
            if isinstance(current, Mapping):
                for key, item in reversed(list(current.items())):
                    if not isinstance(key, str):
                        raise ValidationError(f"object key {key!r} is not a string", field=path)
                    _check_string(key, path, limits)
                    budget.spend(len(key.encode("utf-8", "surrogatepass")) + 3, path)
                    stack.append((item, field_path(path, key), depth + 1))
            else:
                for k in range(len(current) - 1, -1, -1):
                    stack.append((current[k], field_path(path, k), depth + 1))
        elif current is None or isinstance(current, bool | int):
            budget.spend(5, path)
        elif isinstance(current, float):
            if not math.isfinite(current):
                raise ValidationError(f"{current} is not a JSON number", field=path)
            budget.spend(len(repr(current)), path)
        else:
            raise ValidationError(f"a {type(current).__name__} is not a JSON value", field=path)
    return found


def _check_string(text: str, field: str, limits: PlanLimits) -> None:
    if len(text) > limits.max_string:
        raise ValidationError(
            f"a string of {len(text)} characters exceeds the limit of {limits.max_string}",
            field=field,
        )

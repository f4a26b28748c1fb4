"""Checking a plan before it is accepted: shape, size, references, the DAG, capabilities.

Every rejection is a :class:`~agentmesh.errors.ValidationError` whose ``field`` names the
offending part as ``plan.steps[2].input.url`` or ``plan.steps[1].needs[0]``. The checks run
cheapest first: the step count before anything else, so an oversized plan is refused before
any graph is built.

With ``capabilities``, each step's literal input is also checked against the ``input_schema``
(JSON Schema 2020-12) of the connected agents that could serve the step (capability, version
prefix, pin and exclusions): it is acceptable when one of them accepts it. A schema belongs to
the agent that declares it, so an agent declaring a schema nothing fits does not get other
agents' steps refused. A capability no connected agent offers, but one did since start-up, is
accepted unchecked: its steps wait for an agent to come.

A value holding a reference is known only at run time, so it is left out: its key counts as
present for ``required`` (and ``minProperties`` and ``dependentRequired``), and
``anyOf``/``oneOf``/``not``/``if``/``contains`` errors on an object that had such keys removed
are not reported, since the missing value could have satisfied them. Every other literal value
is checked fully; the run-time values are checked by whoever runs the step.
"""

from __future__ import annotations

import heapq
import math
import re
from collections.abc import Iterable, Mapping
from typing import Final

from agentmesh import schemas
from agentmesh.errors import ValidationError, field_path
from agentmesh.limits import ByteBudget, PlanLimits
from agentmesh.models import JSON, Capability, Plan, StepSpec, version_matches
from agentmesh.orchestrator.agents.offers import Offer, Offers
from agentmesh.orchestrator.planning.aggregate import parse_aggregate_spec
from agentmesh.orchestrator.planning.references import (
    STEP_ID_PATTERN,
    Reference,
    has_references,
    iter_references,
    parse,
)

_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*")
_NAME_LIMIT: Final = 256
# Schema keywords whose verdict may change when a key is left out of the object they judge.
_KEY_SENSITIVE: Final = frozenset(
    {"required", "minProperties", "dependentRequired", "dependentSchemas", "dependencies"}
    | {"anyOf", "oneOf", "not", "if", "contains"}
)

Edges = dict[str, str]
"""A step's dependencies: step id → the field that makes it one (for error messages)."""


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
            _check_capability(i, step, offers)
    _order(steps, graph, position)
    parse_aggregate_spec(plan.aggregate, step_ids=position)
    return plan


def dependencies(plan: Plan) -> dict[str, set[str]]:
    """Each step's id → the ids it waits for: referenced steps, ``needs`` and ``for_each``."""
    return {
        step.id: set(_edges(i, step, _references(i, step))) for i, step in enumerate(plan.steps)
    }


def topological_order(plan: Plan) -> list[str]:
    """Step ids with every step after the steps it depends on; ties keep plan order.

    Raises :class:`~agentmesh.errors.ValidationError` for a dependency on an unknown step or a
    cycle.
    """
    position = {step.id: i for i, step in enumerate(plan.steps)}
    graph: dict[str, Edges] = {}
    for i, step in enumerate(plan.steps):
        graph[step.id] = _edges(i, step, _references(i, step))
        for dep, where in graph[step.id].items():
            if dep not in position:
                raise ValidationError(f"no step {dep!r} in the plan", field=where)
    return _order(plan.steps, graph, position)


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
    if not step.capability:
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
    edges = _edges(i, step, refs)
    for dep, field in edges.items():
        if dep not in position:
            raise ValidationError(f"no step {dep!r} in the plan", field=field)
    return edges


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


def _references(i: int, step: StepSpec) -> list[tuple[str, Reference]]:
    return list(iter_references(step.input, field=f"plan.steps[{i}].input"))


def _edges(i: int, step: StepSpec, refs: Iterable[tuple[str, Reference]]) -> Edges:
    edges: Edges = {}
    for field, ref in refs:
        if ref.root == "steps":
            edges.setdefault(ref.step, field)
    for k, need in enumerate(step.needs):
        edges.setdefault(need, f"plan.steps[{i}].needs[{k}]")
    if step.for_each:
        field = f"plan.steps[{i}].for_each"
        for part in parse(step.for_each, field=field):
            if isinstance(part, Reference) and part.root == "steps":
                edges.setdefault(part.step, field)
    return edges


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


def _check_capability(i: int, step: StepSpec, offers: Offers) -> None:
    where = f"plan.steps[{i}]"
    if not offers.known(step.capability):
        raise ValidationError(
            f"unknown capability {step.capability!r}: no agent offers it",
            field=f"{where}.capability",
        )
    serving = offers.serving(step.capability, pin=step.pin_agent, exclude=step.exclude_agents)
    if step.version and serving:
        fitting = tuple(o for o in serving if version_matches(step.version, o.capability.version))
        if not fitting:
            versions = ", ".join(sorted({o.capability.version for o in serving}))
            raise ValidationError(
                f"{step.capability} is at version {versions}, not {step.version}",
                field=f"{where}.version",
            )
        serving = fitting
    if step.compensation and not offers.known(step.compensation):
        raise ValidationError(
            f"unknown capability {step.compensation!r}: no agent offers it",
            field=f"{where}.compensation",
        )
    _check_literal_input(step, serving, f"{where}.input")


def _check_literal_input(step: StepSpec, serving: tuple[Offer, ...], field: str) -> None:
    """Refuse the input when every offer refuses it, with the first offer's reason.

    No offer (no connected agent could serve the step): nothing to check it against yet.
    """
    literal: dict[str, JSON] | None = None
    pruned: set[tuple[tuple[str | int, ...], str]] = set()
    first: ValidationError | None = None
    for offer in serving:
        if not offer.capability.input_schema:
            return
        if literal is None:
            literal, pruned = _literal_view(step.input)
        problem = _literal_problem(literal, pruned, offer.capability, field)
        if problem is None:
            return
        first = first or problem
    if first is not None:
        raise first


def _literal_problem(
    literal: dict[str, JSON],
    pruned: set[tuple[tuple[str | int, ...], str]],
    capability: Capability,
    field: str,
) -> ValidationError | None:
    validator = schemas.validator(capability.input_schema)
    if validator is None:
        return ValidationError(
            f"capability {capability.name!r} declares an invalid input schema",
            field=field.removesuffix(".input") + ".capability",
        )
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for error in validator.iter_errors(literal):
        at = tuple(error.absolute_path)
        removed = {key for path, key in pruned if path[: len(at)] == at}
        if removed and error.validator in _KEY_SENSITIVE:
            if error.validator != "required" or not isinstance(error.instance, Mapping):
                continue
            missing = [
                name
                for name in error.validator_value
                if name not in error.instance and (at, name) not in pruned
            ]
            if not missing:
                continue
            problems.append((at, f"{missing[0]!r} is a required property"))
        else:
            problems.append((at, error.message))
    if problems:
        # The shallowest problem first: it is usually the cause of those below it.
        at, message = min(problems, key=lambda problem: len(problem[0]))
        path = field
        for key in at:
            path = field_path(path, key)
        return ValidationError(
            f"does not match {capability.name}'s input schema: {message}", field=path
        )
    return None


def _literal_view(
    value: Mapping[str, JSON],
) -> tuple[dict[str, JSON], set[tuple[tuple[str | int, ...], str]]]:
    """A copy of an input without the values that hold references, and where those were.

    A reference inside a list takes the whole list out: its length and order are unknown.
    """
    pruned: set[tuple[tuple[str | int, ...], str]] = set()

    def strip(obj: Mapping[str, JSON], at: tuple[str | int, ...]) -> dict[str, JSON]:
        kept: dict[str, JSON] = {}
        for key, item in obj.items():
            if isinstance(item, Mapping):
                kept[key] = strip(item, (*at, key))
            elif has_references(item):
                pruned.add((at, key))
            else:
                kept[key] = item
        return kept

    return strip(value, ()), pruned


def _order(
    steps: tuple[StepSpec, ...], graph: Mapping[str, Edges], position: Mapping[str, int]
) -> list[str]:
    waiting = {step_id: len(edges) for step_id, edges in graph.items()}
    dependents: dict[str, list[str]] = {step_id: [] for step_id in graph}
    for step_id, edges in graph.items():
        for dep in edges:
            dependents[dep].append(step_id)
    ready = [position[step_id] for step_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        step_id = steps[heapq.heappop(ready)].id
        order.append(step_id)
        for dependent in dependents[step_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    if len(order) < len(steps):
        cycle = _find_cycle({s for s, count in waiting.items() if count}, graph, position)
        raise ValidationError(
            f"dependency cycle: {' -> '.join(cycle)} (each step depends on the next)",
            field=graph[cycle[0]][cycle[1]],
        )
    return order


def _find_cycle(
    stuck: set[str], graph: Mapping[str, Edges], position: Mapping[str, int]
) -> list[str]:
    # Every stuck step waits for another stuck step, so walking those edges must come back
    # to a step already visited: that closes a cycle.
    def first(step_ids: Iterable[str]) -> str:
        return min(step_ids, key=position.__getitem__)

    path: list[str] = []
    seen: dict[str, int] = {}
    step_id = first(stuck)
    while step_id not in seen:
        seen[step_id] = len(path)
        path.append(step_id)
        step_id = first(dep for dep in graph[step_id] if dep in stuck)
    cycle = path[seen[step_id] :]
    start = cycle.index(first(cycle))
    cycle = cycle[start:] + cycle[:start]
    return [*cycle, cycle[0]]

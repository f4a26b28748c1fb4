"""A plan as a graph: each step's dependencies, and an order that respects them.

A step depends on the steps its input references (``${steps.ID...}``), those it ``needs``
and the one its ``for_each`` fans out over. Every error names the field that made the edge.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from agentmesh.errors import ValidationError
from agentmesh.models import Plan, StepSpec
from agentmesh.orchestrator.planning.references import Reference, iter_references, parse

Edges = dict[str, str]
"""A step's dependencies: step id → the field that makes it one (for error messages)."""


def dependencies(plan: Plan) -> dict[str, set[str]]:
    """Each step's id → the ids it waits for: referenced steps, ``needs`` and ``for_each``."""
    return {step.id: set(edges(i, step, references(i, step))) for i, step in enumerate(plan.steps)}


def topological_order(plan: Plan) -> list[str]:
    """Step ids with every step after the steps it depends on; ties keep plan order.

    Raises :class:`~agentmesh.errors.ValidationError` for a dependency on an unknown step or a
    cycle.
    """
    position = {step.id: i for i, step in enumerate(plan.steps)}
    graph: dict[str, Edges] = {}
    for i, step in enumerate(plan.steps):
        graph[step.id] = edges(i, step, references(i, step))
        for dep, where in graph[step.id].items():
            if dep not in position:
                raise ValidationError(f"no step {dep!r} in the plan", field=where)
    return order(plan.steps, graph, position)


def references(i: int, step: StepSpec) -> list[tuple[str, Reference]]:
    """The references in the input of step ``i``, each with its field."""
    return list(iter_references(step.input, field=f"plan.steps[{i}].input"))


def edges(i: int, step: StepSpec, refs: Iterable[tuple[str, Reference]]) -> Edges:
    """What step ``i`` depends on, given the references ``refs`` of its input."""
    found: Edges = {}
    for field, ref in refs:
        if ref.root == "steps":
            found.setdefault(ref.step, field)
    for k, need in enumerate(step.needs):
        found.setdefault(need, f"plan.steps[{i}].needs[{k}]")
    if step.for_each:
        field = f"plan.steps[{i}].for_each"
        for part in parse(step.for_each, field=field):
            if isinstance(part, Reference) and part.root == "steps":
                found.setdefault(part.step, field)
    return found


def order(
    steps: tuple[StepSpec, ...], graph: Mapping[str, Edges], position: Mapping[str, int]
) -> list[str]:
    """The step ids in dependency order, ties in plan order; ValidationError on a cycle."""
    waiting = {step_id: len(deps) for step_id, deps in graph.items()}
    dependents: dict[str, list[str]] = {step_id: [] for step_id in graph}
    for step_id, deps in graph.items():
        for dep in deps:
            dependents[dep].append(step_id)
    ready = [position[step_id] for step_id, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        step_id = steps[heapq.heappop(ready)].id
        ordered.append(step_id)
        for dependent in dependents[step_id]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, position[dependent])
    if len(ordered) < len(steps):
        cycle = _find_cycle({s for s, count in waiting.items() if count}, graph, position)
        raise ValidationError(
            f"dependency cycle: {' -> '.join(cycle)} (each step depends on the next)",
            field=graph[cycle[0]][cycle[1]],
        )
    return ordered


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

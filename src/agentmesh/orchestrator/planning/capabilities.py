"""Checking a plan's steps against the capabilities on offer: names, versions, literal inputs.

Each step's literal input is checked against the ``input_schema``
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

from collections.abc import Mapping
from typing import Final

from agentmesh import schemas
from agentmesh.errors import ValidationError, field_path
from agentmesh.models import JSON, Capability, StepSpec, version_matches
from agentmesh.orchestrator.agents.offers import Offer, Offers
from agentmesh.orchestrator.planning.references import has_references

# Schema keywords whose verdict may change when a key is left out of the object they judge.
_KEY_SENSITIVE: Final = frozenset(
    {"required", "minProperties", "dependentRequired", "dependentSchemas", "dependencies"}
    | {"anyOf", "oneOf", "not", "if", "contains"}
)


def check_capability(i: int, step: StepSpec, offers: Offers) -> None:
    """Refuse step ``i`` unless its capability, version and literal input fit an offer."""
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
    if schemas.matches(capability.input_schema, literal):
        return None  # the usual case, decided without walking jsonschema's errors
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

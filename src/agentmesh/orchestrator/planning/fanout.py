"""``for_each`` fan-out: one step becomes ``ID[0]``, ``ID[1]``, ... once its list is known."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from agentmesh.errors import ValidationError
from agentmesh.limits import PlanLimits
from agentmesh.models import JSON, StepSpec
from agentmesh.orchestrator.planning.references import Reference, bind_item, parse, resolve

DEFAULT_MAX_FANOUT: Final = PlanLimits().max_fanout

_INSTANCE_ID = re.compile(r"(?P<base>.+)\[(?P<index>0|[1-9][0-9]*)\]")


def instance_id(step_id: str, index: int) -> str:
    """The id of a fan-out instance: ``instance_id("analyze", 2) == "analyze[2]"``."""
    return f"{step_id}[{index}]"


def split_instance_id(step_id: str) -> tuple[str, int | None]:
    """``("analyze", 2)`` for ``"analyze[2]"``; ``(step_id, None)`` for a plain step id."""
    match = _INSTANCE_ID.fullmatch(step_id)
    if match is None:
        return step_id, None
    return match["base"], int(match["index"])


def for_each_items(
    spec: StepSpec,
    *,
    input: Mapping[str, JSON],
    outputs: Mapping[str, JSON],
    max_fanout: int = DEFAULT_MAX_FANOUT,
) -> list[JSON]:
    """The list a ``for_each`` step fans out over, resolved from the task input and outputs.

    Raises :class:`~agentmesh.errors.ValidationError` when the reference is missing, does not
    name a list, or names one longer than ``max_fanout``.
    """
    field = _field(spec)
    parts = parse(spec.for_each, field=field)
    if len(parts) != 1 or not isinstance(parts[0], Reference):
        raise ValidationError("for_each must be exactly one reference to a list", field=field)
    items = resolve(spec.for_each, input=input, outputs=outputs, field=field)
    return _checked(items, field, max_fanout)


def expand_for_each(
    spec: StepSpec, items: list[JSON], *, max_fanout: int = DEFAULT_MAX_FANOUT
) -> list[StepSpec]:
    """One step per element of ``items``, ids ``ID[i]``, ``${item}``/``${index}`` bound.

    Every other field is kept and ``for_each`` is cleared. Other references stay in the
    instances' inputs for :func:`~agentmesh.orchestrator.planning.references.resolve` to fill
    in when an instance runs; text taken from ``items`` is escaped so it is never read as a
    reference.
    """
    field = _field(spec)
    if not spec.for_each:
        raise ValidationError(f"step {spec.id!r} has no for_each to expand", field=field)
    _checked(items, field, max_fanout)
    return [
        spec.model_copy(
            update={
                "id": instance_id(spec.id, index),
                "for_each": "",
                "input": bind_item(
                    spec.input, item=item, index=index, field=f"steps.{spec.id}.input"
                ),
            }
        )
        for index, item in enumerate(items)
    ]


def _checked(items: JSON, field: str, max_fanout: int) -> list[JSON]:
    if not isinstance(items, list):
        raise ValidationError(f"for_each needs a list, got {type(items).__name__}", field=field)
    if len(items) > max_fanout:
        raise ValidationError(
            f"for_each over {len(items)} items exceeds the limit of {max_fanout}", field=field
        )
    return items


def _field(spec: StepSpec) -> str:
    return f"steps.{spec.id}.for_each"

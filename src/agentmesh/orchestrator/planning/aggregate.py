"""Combining step outputs into a task's result, as the plan's ``aggregate`` spec says.

A spec is a JSON object; ``strategy`` picks how (``collect`` when absent):

- ``collect``: ``{step_id: output}`` for the listed ``steps`` (default: every step);
- ``merge``: the outputs deep-merged in step order; later values win, lists are replaced;
- ``concat``: the lists found at ``field`` in each output, concatenated in step order;
- ``pick``: the output of ``step``, or the value at ``field`` inside it;
- ``vote``: the majority value (of ``field``, or of the whole output), ties to the first seen,
  with the counts: ``{"value", "votes", "total", "counts": [{"value", "votes"}]}``;
- ``best``: the output whose numeric ``field`` (default ``score``) is highest, or lowest with
  ``order: min``; ties to the first seen;
- ``agent``: not computed here: :func:`aggregate` returns a :class:`DelegatedAggregate` for the
  engine to run on an agent offering ``capability``.

Every strategy may list ``steps`` (all but ``pick``) and give an ``output_schema`` that the
result must satisfy. ``field`` is a dotted path; numeric segments index lists. Outputs of a
``for_each`` step arrive as the list of its instances' outputs: ``collect`` and ``pick`` keep
that list, the other strategies treat each instance's output as one candidate. Listed steps
without an output (skipped optional steps) are left out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import jsonschema

from agentmesh import schemas
from agentmesh.errors import ValidationError
from agentmesh.models import JSON

FIELD: Final = "plan.aggregate"

Strategy = Literal["collect", "merge", "concat", "pick", "vote", "best", "agent"]

_COMMON = frozenset({"strategy", "steps", "output_schema"})
_KEYS: Final[dict[str, frozenset[str]]] = {
    "collect": _COMMON,
    "merge": _COMMON,
    "concat": _COMMON | {"field"},
    "pick": frozenset({"strategy", "output_schema", "step", "field"}),
    "vote": _COMMON | {"field"},
    "best": _COMMON | {"field", "order"},
    "agent": _COMMON | {"capability", "version", "input"},
}


@dataclass(frozen=True, slots=True)
class AggregateSpec:
    """A checked aggregate spec; build it with :func:`parse_aggregate_spec`."""

    strategy: Strategy = "collect"
    #: The steps to combine, in order; ``None`` for every step.
    steps: tuple[str, ...] | None = None
    #: ``pick``'s step.
    step: str = ""
    #: Path inside each output; empty for the whole output.
    field: tuple[str, ...] = ()
    order: Literal["max", "min"] = "max"
    capability: str = ""
    version: str = ""
    input: Mapping[str, JSON] = dataclasses.field(default_factory=dict)
    output_schema: Mapping[str, JSON] | None = None


@dataclass(frozen=True, slots=True)
class DelegatedAggregate:
    """An aggregation for the engine to run as a step on an agent offering ``capability``.

    ``input`` is the spec's ``input`` plus ``outputs``, the collected outputs. The agent's
    answer is the task result, once :func:`check_result` accepts it.
    """

    capability: str
    version: str
    input: Mapping[str, JSON]
    output_schema: Mapping[str, JSON] | None = None


def parse_aggregate_spec(
    spec: Mapping[str, JSON], *, step_ids: Collection[str] | None = None
) -> AggregateSpec:
    """Check an aggregate spec; with ``step_ids``, also that every named step exists.

    Raises :class:`~agentmesh.errors.ValidationError` whose ``field`` starts with
    ``plan.aggregate``.
    """
    if not isinstance(spec, Mapping):
        raise ValidationError("must be an object", field=FIELD)
    if not spec:
        return AggregateSpec()
    strategy = spec.get("strategy", "collect")
    if strategy not in _KEYS:
        raise ValidationError(
            f"unknown strategy {strategy!r}; one of {', '.join(_KEYS)}",
            field=f"{FIELD}.strategy",
        )
    for key in spec:
        if key not in _KEYS[strategy]:
            raise ValidationError(f"not an option of strategy {strategy!r}", field=f"{FIELD}.{key}")
    steps = _steps(spec, step_ids)
    path = _path(spec)
    schema = _schema(spec)
    if strategy == "pick":
        step = spec.get("step")
        if not isinstance(step, str) or not step:
            raise ValidationError("pick needs the id of a step", field=f"{FIELD}.step")
        if step_ids is not None and step not in step_ids:
            raise ValidationError(f"no step {step!r} in the plan", field=f"{FIELD}.step")
        return AggregateSpec(strategy="pick", step=step, field=path, output_schema=schema)
    if strategy == "concat" and not path:
        raise ValidationError("concat needs the field holding each list", field=f"{FIELD}.field")
    if strategy == "best":
        order = spec.get("order", "max")
        if order not in ("max", "min"):
            raise ValidationError("must be 'max' or 'min'", field=f"{FIELD}.order")
        return AggregateSpec(
            strategy="best",
            steps=steps,
            field=path or ("score",),
            order=order,
            output_schema=schema,
        )
    if strategy == "agent":
        return _agent_spec(spec, steps, schema)
    return AggregateSpec(strategy=strategy, steps=steps, field=path, output_schema=schema)


def aggregate(spec: Mapping[str, JSON], outputs: Mapping[str, JSON]) -> JSON:
    """The task result: ``outputs`` (step id → output) combined as ``spec`` says.

    Returns a :class:`DelegatedAggregate` for ``strategy: agent``. Raises
    :class:`~agentmesh.errors.ValidationError` for a bad spec, outputs that do not fit it
    (a missing ``field``, a non-list to concatenate, a non-number score), or a result that
    violates ``output_schema``.
    """
    parsed = parse_aggregate_spec(spec)
    if parsed.strategy == "pick":
        if parsed.step not in outputs:
            raise ValidationError(f"step {parsed.step!r} has no output", field=f"{FIELD}.step")
        result = _at(outputs[parsed.step], parsed.field, parsed.step)
        return check_result(parsed, result)
    ids = [s for s in (parsed.steps if parsed.steps is not None else outputs) if s in outputs]
    collected = {step_id: outputs[step_id] for step_id in ids}
    if parsed.strategy == "agent":
        return DelegatedAggregate(
            capability=parsed.capability,
            version=parsed.version,
            input={**parsed.input, "outputs": collected},
            output_schema=parsed.output_schema,
        )
    if parsed.strategy == "collect":
        result = collected
    else:
        candidates = _candidates(collected)
        if parsed.strategy == "merge":
            result = _merge(candidates)
        elif parsed.strategy == "concat":
            result = _concat(candidates, parsed.field)
        elif parsed.strategy == "vote":
            result = _vote(candidates, parsed.field)
        else:
            result = _best(candidates, parsed.field, parsed.order)
    return check_result(parsed, result)


def check_result(spec: AggregateSpec | DelegatedAggregate, result: JSON) -> JSON:
    """``result`` itself once it satisfies the spec's ``output_schema`` (if any).

    For ``strategy: agent``, pass the :class:`DelegatedAggregate` and the agent's answer.
    """
    if spec.output_schema is None:
        return result
    error = schemas.first_error(spec.output_schema, result, whole="the result")
    if error is not None:
        raise ValidationError(f"the result does not match: {error}", field=f"{FIELD}.output_schema")
    return result


def _steps(spec: Mapping[str, JSON], step_ids: Collection[str] | None) -> tuple[str, ...] | None:
    steps = spec.get("steps")
    if steps is None:
        return None
    if not isinstance(steps, list) or not steps:
        raise ValidationError("must be a non-empty list of step ids", field=f"{FIELD}.steps")
    for i, step in enumerate(steps):
        if not isinstance(step, str) or (step_ids is not None and step not in step_ids):
            raise ValidationError(f"no step {step!r} in the plan", field=f"{FIELD}.steps[{i}]")
    return tuple(steps)


def _path(spec: Mapping[str, JSON]) -> tuple[str, ...]:
    raw = spec.get("field", "")
    if not isinstance(raw, str):
        raise ValidationError("must be a dotted path such as 'a.b.0'", field=f"{FIELD}.field")
    if not raw:
        return ()
    path = tuple(raw.split("."))
    if not all(path):
        raise ValidationError(f"empty segment in {raw!r}", field=f"{FIELD}.field")
    return path


def _schema(spec: Mapping[str, JSON]) -> Mapping[str, JSON] | None:
    schema = spec.get("output_schema")
    if schema is None:
        return None
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            f"not a JSON schema: {exc.message}", field=f"{FIELD}.output_schema"
        ) from None
    if not isinstance(schema, Mapping):
        # True/False are valid schemas, but an object is what anyone means here.
        raise ValidationError("must be an object", field=f"{FIELD}.output_schema")
    return schema


def _agent_spec(
    spec: Mapping[str, JSON], steps: tuple[str, ...] | None, schema: Mapping[str, JSON] | None
) -> AggregateSpec:
    capability = spec.get("capability")
    if not isinstance(capability, str) or not capability:
        raise ValidationError("agent needs a capability name", field=f"{FIELD}.capability")
    version = spec.get("version", "")
    if not isinstance(version, str):
        raise ValidationError("must be a string", field=f"{FIELD}.version")
    extra = spec.get("input", {})
    if not isinstance(extra, Mapping):
        raise ValidationError("must be an object", field=f"{FIELD}.input")
    return AggregateSpec(
        strategy="agent",
        steps=steps,
        capability=capability,
        version=version,
        input=extra,
        output_schema=schema,
    )


def _candidates(collected: Mapping[str, JSON]) -> list[tuple[str, JSON]]:
    # A list output can only come from a for_each step (a step's own output is an object),
    # so each element is one instance's output.
    candidates: list[tuple[str, JSON]] = []
    for step_id, output in collected.items():
        if isinstance(output, list):
            candidates.extend((f"{step_id}[{i}]", item) for i, item in enumerate(output))
        else:
            candidates.append((step_id, output))
    return candidates


def _at(value: JSON, path: tuple[str, ...], label: str) -> JSON:
    for depth, segment in enumerate(path):
        if isinstance(value, Mapping) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            where = ".".join(path[: depth + 1])
            raise ValidationError(f"output of {label!r} has no {where!r}", field=f"{FIELD}.field")
    return value


def _merge(candidates: list[tuple[str, JSON]]) -> dict[str, JSON]:
    merged: dict[str, JSON] = {}
    for label, output in candidates:
        if not isinstance(output, Mapping):
            raise ValidationError(
                f"merge needs objects; output of {label!r} is {type(output).__name__}",
                field=f"{FIELD}.strategy",
            )
        _merge_into(merged, output)
    return merged


def _merge_into(target: dict[str, JSON], source: Mapping[str, JSON]) -> None:
    for key, value in source.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            _merge_into(current, value)
        elif isinstance(value, Mapping):
            # A copy, so later merges never write into a step's own output.
            target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = value


def _concat(candidates: list[tuple[str, JSON]], path: tuple[str, ...]) -> list[JSON]:
    result: list[JSON] = []
    for label, output in candidates:
        items = _at(output, path, label)
        if not isinstance(items, list):
            raise ValidationError(
                f"{'.'.join(path)!r} of {label!r} is {type(items).__name__}, not a list",
                field=f"{FIELD}.field",
            )
        result.extend(items)
    return result


def _vote(candidates: list[tuple[str, JSON]], path: tuple[str, ...]) -> dict[str, JSON]:
    if not candidates:
        raise ValidationError("no step output to vote on", field=f"{FIELD}.steps")
    counts: dict[str, list[Any]] = {}  # canonical JSON -> [value, votes], in first-seen order
    for label, output in candidates:
        value = _at(output, path, label)
        key = json.dumps(value, sort_keys=True, separators=(",", ":"))
        counts.setdefault(key, [value, 0])[1] += 1
    # sorted() is stable, so equal counts keep their first-seen order.
    ranked = sorted(counts.values(), key=lambda entry: -entry[1])
    return {
        "value": ranked[0][0],
        "votes": ranked[0][1],
        "total": len(candidates),
        "counts": [{"value": value, "votes": votes} for value, votes in ranked],
    }


def _best(
    candidates: list[tuple[str, JSON]], path: tuple[str, ...], order: Literal["max", "min"]
) -> JSON:
    if not candidates:
        raise ValidationError("no step output to choose from", field=f"{FIELD}.steps")
    scored: list[tuple[float, JSON]] = []
    for label, output in candidates:
        score = _at(output, path, label)
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValidationError(
                f"score {'.'.join(path)!r} of {label!r} is not a number", field=f"{FIELD}.field"
            )
        scored.append((score, output))
    # max() and min() return the first of equal scores, which is the tie rule.
    pick = max if order == "max" else min
    return pick(scored, key=lambda entry: entry[0])[1]

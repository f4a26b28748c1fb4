"""What the LLM planner tells the model, and how it reads the model's answer."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from agentmesh.errors import ValidationError
from agentmesh.models import JSON, Capability, TaskRequest


def system_prompt(capabilities: Mapping[str, Capability]) -> str:
    """What the model is told: the plan format, the reference syntax, the capabilities."""
    listed = [
        {
            "name": c.name,
            "version": c.version,
            "description": c.description,
            "input_schema": c.input_schema,
            "output_schema": c.output_schema,
        }
        for c in sorted(capabilities.values(), key=lambda c: c.name)
    ]
    return _SYSTEM.replace("{capabilities}", json.dumps(listed, indent=1, ensure_ascii=False))


_SYSTEM: Final = """\
You plan work for agentmesh, a mesh of AI agents. Turn the user's goal into a plan: a DAG
of steps, each run by an agent that offers the step's capability.

Answer with one JSON object and nothing else, shaped like:
{"steps": [{"id": "fetch", "capability": "NAME", "input": {...}},
           {"id": "next", "capability": "NAME", "input": {"x": "${steps.fetch.output.x}"}}],
 "aggregate": {"strategy": "pick", "step": "next"}}

Rules:
- "id": a letter, then up to 63 letters, digits, "_" or "-"; unique in the plan.
- "capability": one of the capabilities listed below; "input" must fit its input_schema.
- A value in "input" may be a reference, filled in when the step runs:
  "${input.KEY}" is a value of the task input shown by the user;
  "${steps.ID.output}" or "${steps.ID.output.FIELD}" is an output of step ID (see the
  capability's output_schema; numbers index lists, as in "${steps.ID.output.items.0}").
  A string that is exactly one reference becomes the referenced value, of any type; inside
  longer text it is inserted as text. Write "$$" for a literal "$".
- A step runs after every step it references; "needs": ["ID"] adds more such dependencies.
  No cycles.
- "for_each": "${steps.ID.output.LIST}" runs the step once per element of that list; in its
  input "${item}" is the element and "${index}" its position. A later reference to
  "${steps.THIS.output}" is the list of all those outputs.
- Optional step fields: "optional": true (its failure is skipped), "timeout_seconds",
  "compensation": "CAPABILITY" (undoes the step if the task fails later).
- "aggregate" (optional) makes the task result: {"strategy": "pick", "step": "ID"} for one
  step's output; "collect" (every output by step id, the default), "merge", "concat"
  (with "field"), "vote" (with "field"), "best" (with "field" and "order": "max" or "min").
- Use as few steps as the goal needs.

Capabilities:
{capabilities}
"""


def streaming_prompt(capabilities: Mapping[str, Capability]) -> str:
    """The system prompt for a plan streamed a step at a time (see ``planning.stream``)."""
    return system_prompt(capabilities) + _STREAMING


_STREAMING: Final = """
Stream the plan instead of writing one object: one JSON object per line and nothing else.
Write each step on its own line as soon as you have decided on it, every step after the
steps it references or needs, so that it can start while you plan the rest. If the task
needs an "aggregate", write it last, on a line of its own: {"aggregate": {...}}.
"""

_PREVIEW_TEXT: Final = 200
_PREVIEW_ITEMS: Final = 10
_PREVIEW_DEPTH: Final = 6


def goal_prompt(request: TaskRequest) -> str:
    """The user message: the goal, and the task input in brief."""
    shown = json.dumps(_preview(request.input, 0), indent=1, ensure_ascii=False)
    return (
        f"Goal: {request.goal}\n\n"
        f"Task input (long values shortened; reference it as ${{input.KEY}}):\n{shown}"
    )


def _preview(value: JSON, depth: int) -> JSON:
    # The model needs the input's shape, not all of it: the plan references it.
    if isinstance(value, str):
        return value if len(value) <= _PREVIEW_TEXT else value[:_PREVIEW_TEXT] + "..."
    if depth >= _PREVIEW_DEPTH and isinstance(value, dict | list):
        return "..."
    if isinstance(value, dict):
        return {key: _preview(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        shown = [_preview(item, depth + 1) for item in value[:_PREVIEW_ITEMS]]
        return shown + (
            [f"... {len(value) - _PREVIEW_ITEMS} more"] if len(value) > _PREVIEW_ITEMS else []
        )
    return value


def repair_prompt(error: ValidationError) -> str:
    """The message that sends the model's invalid plan back with the reason."""
    return (
        f"That plan was rejected: {error}\n"
        "Answer with the corrected plan, as one JSON object and nothing else."
    )


def json_object(answer: str) -> dict[str, Any]:
    """The JSON object in the model's answer; ValidationError(field="plan") when there is none."""
    text = answer.strip()
    # Some servers ignore response_format and wrap the JSON in a Markdown code fence.
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the answer is not JSON: {exc}", field="plan") from None
    if isinstance(data, dict) and "steps" not in data and isinstance(data.get("plan"), dict):
        data = data["plan"]
    if not isinstance(data, dict):
        raise ValidationError("the answer is not a JSON object", field="plan")
    return data

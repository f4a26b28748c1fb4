"""Helpers of the planning tests: plan building and the demo capabilities.

The fake model server lives in :mod:`tests.support.chat`.
"""

from __future__ import annotations

from typing import Any

from agentmesh.models import Capability, Plan, StepSpec

JSONObject = dict[str, Any]


def make_plan(*steps: JSONObject, aggregate: JSONObject | None = None) -> Plan:
    """A plan of steps given as plain dicts; ``capability`` defaults to ``test.echo``."""
    return Plan(
        steps=tuple(StepSpec(**{"capability": "test.echo", **step}) for step in steps),
        aggregate=aggregate or {},
    )


_ANALYSIS = {
    "type": "object",
    "required": ["words", "keywords", "sentiment", "sentences"],
    "properties": {
        "words": {"type": "integer", "minimum": 0},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "sentiment": {"type": "number"},
        "sentences": {"type": "array", "items": {"type": "string"}},
    },
}

DEMO_CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (
        Capability(
            name="text.split",
            description="Split a text into at most max_sections sections.",
            input_schema={
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string"},
                    "max_sections": {"type": "integer", "minimum": 1},
                },
                "additionalProperties": False,
            },
            output_schema={
                "type": "object",
                "required": ["sections"],
                "properties": {"sections": {"type": "array", "items": {"type": "string"}}},
            },
        ),
        Capability(
            name="text.analyze",
            description="Count words and sentences, find keywords and sentiment of a text.",
            input_schema={
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
            },
            output_schema=_ANALYSIS,
        ),
        Capability(
            name="text.summarize",
            description="Summarize analyses of sections into one brief.",
            input_schema={
                "type": "object",
                "required": ["analyses"],
                "properties": {
                    "analyses": {"type": "array", "items": _ANALYSIS, "minItems": 1},
                    "title": {"type": "string"},
                },
            },
            output_schema={
                "type": "object",
                "required": ["summary", "keywords", "sentiment", "words"],
                "properties": {
                    "summary": {"type": "string"},
                    "keywords": {"type": "array", "items": {"type": "string"}},
                    "sentiment": {"type": "number"},
                    "words": {"type": "integer"},
                },
            },
        ),
        Capability(
            name="text.publish",
            description="Publish a summary; answers its URL.",
            input_schema={
                "type": "object",
                "required": ["summary"],
                "properties": {"summary": {"type": "string"}},
            },
            output_schema={"type": "object", "properties": {"url": {"type": "string"}}},
        ),
        Capability(
            name="text.unpublish",
            description="Remove a published summary.",
            input_schema={
                "type": "object",
                "required": ["summary", "output"],
                "properties": {
                    "summary": {"type": "string"},
                    "output": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {"url": {"type": "string"}},
                    },
                },
            },
            output_schema={"type": "object", "properties": {"removed": {"type": "boolean"}}},
        ),
    )
}

"""Schema checks: jsonschema-rs says whether a value matches, jsonschema says why not, and
jsonschema's verdict stands wherever the two differ."""

from __future__ import annotations

import jsonschema
import pytest

from agentmesh import schemas
from agentmesh.models import JSON

#: Schemas and values, valid and not, over the keywords capabilities use.
CASES: list[tuple[dict[str, JSON], list[JSON]]] = [
    (
        {
            "type": "object",
            "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 60}},
            "required": ["seconds"],
            "additionalProperties": False,
        },
        [{"seconds": 0}, {"seconds": 61}, {"seconds": "1"}, {}, {"seconds": 1, "x": 2}, []],
    ),
    (
        {"type": "array", "items": {"type": "integer"}, "minItems": 1, "uniqueItems": True},
        [[1, 2], [], [1, 1], [1.0], [1.5], ["1"], {"a": 1}],
    ),
    (
        {"type": "string", "pattern": "^[a-z]+-[0-9]{2}$", "maxLength": 8},
        ["abc-12", "abc-1", "ABC-12", "abcdefg-12", 12],
    ),
    (
        {"oneOf": [{"type": "string"}, {"type": "integer"}], "not": {"const": 3}},
        ["x", 2, 3, 2.5, None, True],
    ),
    (
        {
            "$defs": {"leaf": {"enum": ["a", "b"]}},
            "type": "object",
            "additionalProperties": {"$ref": "#/$defs/leaf"},
        },
        [{"k": "a"}, {"k": "c"}, {}],
    ),
    # Neither asserts formats: an email schema takes any string.
    ({"type": "string", "format": "email"}, ["not an email", "a@b.c"]),
    # jsonschema-rs cannot read integers past 64 bits, nor call NaN a number: jsonschema
    # decides those.
    ({"type": "integer"}, [10**30, -(10**30), 1]),
    ({"type": "number"}, [float("nan"), 1e308]),
]


@pytest.mark.parametrize(("schema", "values"), CASES)
def test_the_verdict_and_the_reason_are_jsonschemas_own(
    schema: dict[str, JSON], values: list[JSON]
) -> None:
    reference = jsonschema.Draft202012Validator(schema)
    for value in values:
        problem = schemas.first_error(schema, value)
        best = jsonschema.exceptions.best_match(reference.iter_errors(value))
        if best is None:
            assert problem is None, (value, problem)
        else:
            assert problem is not None, value
            assert problem.startswith(best.message), (value, problem)


def test_a_schema_jsonschema_rs_cannot_compile_is_checked_by_jsonschema_alone() -> None:
    # A reference out of the mesh: jsonschema-rs would have to fetch it (it never does);
    # jsonschema checks what it can without it.
    schema: dict[str, JSON] = {
        "type": "object",
        "properties": {"remote": {"$ref": "http://127.0.0.1:9/never.json"}},
        "required": ["name"],
    }
    assert schemas.validator(schema) is not None
    assert schemas.first_error(schema, {}) == "'name' is a required property (at the top level)"


def test_matches_is_sure_or_says_false() -> None:
    number: dict[str, JSON] = {"type": "number"}
    assert schemas.matches(number, 1.5)
    assert not schemas.matches(number, "1.5")
    # NaN is a number to jsonschema, not to jsonschema-rs: not sure, so False (ask jsonschema).
    assert not schemas.matches(number, float("nan"))
    assert schemas.first_error(number, float("nan")) is None
    assert not schemas.matches({"type": "nope"}, 1)  # not a valid schema

"""JSON Schema checks, compiled once per distinct schema (compiling is the costly part)."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import jsonschema

from agentmesh.models import JSON


@functools.lru_cache(maxsize=512)
def _compiled(schema_json: str) -> jsonschema.Draft202012Validator | None:
    schema = json.loads(schema_json)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return jsonschema.Draft202012Validator(schema)


def validator(schema: Mapping[str, JSON]) -> jsonschema.Draft202012Validator | None:
    """A Draft 2020-12 validator of ``schema``, or None when ``schema`` is not a valid schema."""
    return _compiled(json.dumps(schema, sort_keys=True))


def first_error(
    schema: Mapping[str, JSON], value: JSON, *, whole: str = "the top level"
) -> str | None:
    """Why ``value`` does not match ``schema`` ("message (at ['a'][0])"), or None when it does.

    ``whole`` names the value itself when the error is about all of it.

    An invalid schema checks nothing (None): refusing schemas is registration's job.
    """
    compiled = validator(schema)
    if compiled is None:
        return None
    error = jsonschema.exceptions.best_match(compiled.iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" for p in error.absolute_path) or whole
    return f"{error.message} (at {where})"

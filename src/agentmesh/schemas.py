"""JSON Schema checks, compiled once per distinct schema (compiling is the costly part).

Two validators per schema: jsonschema-rs says whether a value matches, in about a
microsecond, and jsonschema (pure Python, some 50 µs for a small object) says why when it
does not. Every step's input and result is checked, nearly always valid (issue 9), and the
reasons stay jsonschema's own words. A value jsonschema-rs accepts is valid; one it refuses,
or cannot read, is checked again by jsonschema, whose verdict stands (so a value only
jsonschema-rs refuses, such as NaN for ``number``, is still accepted); a schema
jsonschema-rs cannot compile is checked by jsonschema alone. jsonschema-rs never fetches a
remote ``$ref`` (``offline``) and, like jsonschema here, asserts no ``format``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass

import jsonschema
import jsonschema_rs

from agentmesh.models import JSON


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A valid schema's validators: jsonschema's, and jsonschema-rs's when it compiles."""

    validator: jsonschema.Draft202012Validator
    fast: jsonschema_rs.Validator | None

    def matches(self, value: JSON) -> bool:
        """True when ``value`` surely matches (False: ask jsonschema why not)."""
        if self.fast is None:
            return False
        try:
            return self.fast.is_valid(value)
        except ValueError:  # a value it cannot read (e.g. an integer past 64 bits)
            return False


def _fast(schema: JSON) -> jsonschema_rs.Validator | None:
    try:
        return jsonschema_rs.Draft202012Validator(schema, validate_formats=False, offline=True)
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
        return None  # e.g. a remote $ref, or a pattern Rust's regex cannot compile


@functools.lru_cache(maxsize=512)
def _compiled(schema_json: str) -> _Compiled | jsonschema.SchemaError:
    schema = json.loads(schema_json)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return exc
    return _Compiled(jsonschema.Draft202012Validator(schema), _fast(schema))


#: Validators by the identity of the schema object they were asked for: a capability's
#: schema is one object for as long as its declaration lives, so the per-result lookup
#: costs a dict access instead of a json.dumps of the whole schema. Each entry keeps its
#: schema alive, so a recycled id() can never match another schema.
_BY_ID: dict[int, tuple[Mapping[str, JSON], _Compiled | jsonschema.SchemaError]] = {}
_MAX_BY_ID = 512


def _lookup(schema: Mapping[str, JSON]) -> _Compiled | jsonschema.SchemaError:
    entry = _BY_ID.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1]
    compiled = _compiled(json.dumps(schema, sort_keys=True))
    if len(_BY_ID) >= _MAX_BY_ID:
        _BY_ID.clear()  # rare (that many distinct live schemas): compiling stays cached
    _BY_ID[id(schema)] = (schema, compiled)
    return compiled


def validator(schema: Mapping[str, JSON]) -> jsonschema.Draft202012Validator | None:
    """A Draft 2020-12 validator of ``schema``, or None when ``schema`` is not a valid schema.

    ``schema`` must not be changed in place after it was first given here (declarations
    are frozen): the validator is cached by the object's identity.
    """
    compiled = _lookup(schema)
    return None if isinstance(compiled, jsonschema.SchemaError) else compiled.validator


def schema_problem(schema: Mapping[str, JSON]) -> str | None:
    """Why ``schema`` is not a valid Draft 2020-12 schema, in jsonschema's own words and
    where in the schema (``"'strin' is not valid under any of the given schemas (at
    ['properties']['a']['type'])"``), or None when it is valid. Cached like :func:`validator`.
    """
    compiled = _lookup(schema)
    if not isinstance(compiled, jsonschema.SchemaError):
        return None
    where = "".join(f"[{p!r}]" for p in compiled.absolute_path) or "the top level"
    return f"{compiled.message} (at {where})"


def matches(schema: Mapping[str, JSON], value: JSON) -> bool:
    """True when ``value`` surely matches ``schema`` (by jsonschema-rs, about a microsecond);
    False when jsonschema must say: the value does not match, or jsonschema-rs could not
    tell (see the module's text), or the schema is not valid."""
    compiled = _lookup(schema)
    return not isinstance(compiled, jsonschema.SchemaError) and compiled.matches(value)


def first_error(
    schema: Mapping[str, JSON], value: JSON, *, whole: str = "the top level"
) -> str | None:
    """Why ``value`` does not match ``schema`` ("message (at ['a'][0])"), or None when it does.

    ``whole`` names the value itself when the error is about all of it.

    An invalid schema checks nothing (None): refusing schemas is registration's job.
    """
    compiled = _lookup(schema)
    if isinstance(compiled, jsonschema.SchemaError) or compiled.matches(value):
        return None
    error = jsonschema.exceptions.best_match(compiled.validator.iter_errors(value))
    if error is None:
        return None
    where = "".join(f"[{p!r}]" for p in error.absolute_path) or whole
    return f"{error.message} (at {where})"

"""Pydantic's validation errors as agentmesh's, with the field written the agentmesh way."""

from __future__ import annotations

import pydantic

from agentmesh.errors import ValidationError
from agentmesh.planning.references import field_path


def from_pydantic(exc: pydantic.ValidationError, *, field: str = "") -> ValidationError:
    """The most telling of ``exc``'s errors, its location appended to ``field``.

    An unknown key comes first: it is usually a misspelling, and the "missing" error for the
    intended key is its consequence.
    """
    errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
    first = errors[0]
    where = field
    for key in first["loc"]:
        where = field_path(where, key)
    return ValidationError(first["msg"], field=where)

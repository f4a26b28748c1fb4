"""Size limits that keep a submitted plan cheap to check and safe to run."""

from __future__ import annotations

import math
from typing import Final

from google.protobuf import struct_pb2
from pydantic import BaseModel, ConfigDict, Field

from agentmesh.errors import ValidationError, field_path

MiB = 1024 * 1024


class PlanLimits(BaseModel):
    """How large a plan may be; every check against these runs before any costly work."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Steps in one plan.
    max_steps: int = Field(default=1000, ge=1)
    #: Nesting of objects and arrays in one step's input, the input object itself counting 1.
    max_depth: int = Field(default=32, ge=1)
    #: Characters in any one string (or object key) of an input.
    max_string: int = Field(default=MiB, ge=1)
    #: Approximate compact-JSON size of every step input of the plan together.
    max_input_bytes: int = Field(default=4 * MiB, ge=1)
    #: Instances one ``for_each`` step may fan out to.
    max_fanout: int = Field(default=1000, ge=1)


class ByteBudget:
    """Bytes that several JSON payloads may take together; each ``spend`` draws from it."""

    def __init__(self, limit: int, *, what: str) -> None:
        self.limit = limit
        self.used = 0
        #: What is counted, for the error ("the plan's inputs", "payloads").
        self.what = what

    def spend(self, size: int, field: str) -> None:
        """Count ``size`` more bytes; ValidationError naming ``field`` once over the limit."""
        self.used += size
        if self.used > self.limit:
            raise ValidationError(
                f"{self.what} exceed the limit of {self.limit} bytes", field=field
            )


#: Nesting of objects and arrays in one step output that every protobuf client can decode.
#:
#: Protobuf decoders (upb in Python, C++, Java) refuse messages nested more than 100 levels
#: below the top message. In a Struct an object level costs 3 message levels (Struct, map
#: entry, Value), and the scalars of the innermost object 2 more. The deepest place an output
#: travels is the input of an aggregating agent (``strategy: agent``) collecting a fan-out:
#: OrchestratorMessage > Assignment > input > entry > Value > outputs > entry > Value >
#: ListValue > Value puts the output's own Struct 10 levels down, and 10 + 3(d - 1) + 2 <= 100
#: gives d <= 30. (Readers of the task need less: ListTasks of a collected fan-out puts it 8
#: down, which allows 31.)
MAX_OUTPUT_DEPTH: Final = 30


def output_limits(max_bytes: int) -> PlanLimits:
    """The limits of one step output of at most ``max_bytes``: any string, decodable depth."""
    return PlanLimits(max_depth=MAX_OUTPUT_DEPTH, max_string=max_bytes, max_input_bytes=max_bytes)


_JSONNode = struct_pb2.Struct | struct_pb2.ListValue | struct_pb2.Value
#: Where a node sits: a field path, or (where its container sits, key or index), joined into a
#: path only for an error; building every node's path would cost more than the whole check.
_Where = str | tuple["_Where", str | int]


def _path(where: _Where) -> str:
    keys: list[str | int] = []
    while isinstance(where, tuple):
        where, key = where
        keys.append(key)
    for key in reversed(keys):
        where = field_path(where, key[:64] if isinstance(key, str) else key)
    return where


def check_struct(
    struct: struct_pb2.Struct, field: str, limits: PlanLimits, budget: ByteBudget | None = None
) -> None:
    """``struct`` is JSON within ``limits``: depth, string length, size, finite numbers.

    Iterative, so a payload nested far beyond the interpreter's recursion limit is refused
    cleanly rather than crashing the check. Raises ValidationError naming the field.
    """
    budget = budget or ByteBudget(limits.max_input_bytes, what="payloads")
    max_depth, max_string = limits.max_depth, limits.max_string

    def spend(size: int, where: _Where) -> None:
        if budget.used + size > budget.limit:
            budget.spend(size, _path(where))  # raises, naming where the budget ran out
        budget.used += size

    stack: list[tuple[_JSONNode, _Where, int]] = [(struct, field, 1)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, struct_pb2.Struct):
            if depth > max_depth:
                raise ValidationError(f"nested deeper than {max_depth} levels", field=_path(where))
            fields = node.fields
            size = 2 + len(fields)
            for key, value in fields.items():
                if len(key) > max_string:
                    raise ValidationError(
                        f"a key of {len(key)} characters exceeds the limit of {max_string}",
                        field=_path(where),
                    )
                size += len(key.encode()) + 3
                stack.append((value, (where, key), depth + 1))
            spend(size, where)
            continue
        if isinstance(node, struct_pb2.ListValue):
            if depth > max_depth:
                raise ValidationError(f"nested deeper than {max_depth} levels", field=_path(where))
            values = node.values
            spend(2 + len(values), where)
            stack.extend((v, (where, i), depth + 1) for i, v in enumerate(values))
            continue
        kind = node.WhichOneof("kind")
        if kind == "struct_value":
            stack.append((node.struct_value, where, depth))
        elif kind == "list_value":
            stack.append((node.list_value, where, depth))
        elif kind == "string_value":
            text = node.string_value
            if len(text) > max_string:
                raise ValidationError(
                    f"a string of {len(text)} characters exceeds the limit of {max_string}",
                    field=_path(where),
                )
            spend(len(text.encode()) + 2, where)
        elif kind == "number_value":
            if not math.isfinite(node.number_value):
                raise ValidationError(
                    f"{node.number_value} is not a JSON number", field=_path(where)
                )
            spend(8, where)
        else:
            spend(5, where)


#: The oldest an output reused from the step cache may be (``StepSpec.cache.ttl_seconds``).
MAX_CACHE_TTL_SECONDS: Final = 30 * 24 * 3600.0

"""Size limits that keep a submitted plan cheap to check and safe to run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.errors import ValidationError

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

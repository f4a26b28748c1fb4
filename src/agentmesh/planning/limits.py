"""Size limits that keep a submitted plan cheap to check and safe to run."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

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
